package benchtree

import (
	"flag"
	"testing"
)

var writeDir = flag.String("write", "", "write the benchmark tree at -scale into this directory")
var writeScale = flag.Int("scale", 1, "with -write: the tree's scale (1 for 10,000 resources)")
var writeSingle = flag.Bool("single", false, "with -write: one resource per file")

// TestWrite writes the tree for tools outside Go (make bench-peers); without
// -write it checks that a small tree writes.
func TestWrite(t *testing.T) {
	dir := *writeDir
	if dir == "" {
		dir = t.TempDir()
	}
	s := Scaled(*writeScale)
	if *writeDir == "" {
		s = Shape{Dataplanes: 16, Services: 4, Permissions: 3, PerFile: 10}
	}
	s.Single = *writeSingle
	files, err := Write(dir, s)
	if err != nil || files == 0 {
		t.Fatalf("%d files, %v", files, err)
	}
	t.Logf("%d resources in %d files under %s", s.Resources(), files, dir)
}
