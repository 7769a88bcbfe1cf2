package benchtree

import (
	"os"
	"testing"

	"github.com/gitmesh/gitmesh/schema"
)

// TestTreeIsValid: both forms of the tree load without a finding, with the
// resources the shape says.
func TestTreeIsValid(t *testing.T) {
	s := Shape{Dataplanes: 80, Services: 8, Permissions: 19, PerFile: 10}
	for _, single := range []bool{false, true} {
		s.Single = single
		dir := t.TempDir()
		files, err := Write(dir, s)
		if err != nil {
			t.Fatal(err)
		}
		l, err := schema.NewLoader(schema.Options{})
		if err != nil {
			t.Fatal(err)
		}
		res, err := l.Load(os.DirFS(dir))
		if err != nil {
			t.Fatal(err)
		}
		// Services are the destination of several permissions with other
		// sources, as in a large tree written for gitmesh: the only
		// findings are the warnings that Kuma would apply one of them.
		var other []schema.Finding
		for _, f := range res.Findings {
			if f.Code != schema.CodeKumaDiffers || f.IsError() {
				other = append(other, f)
			}
		}
		if len(other) > 0 || res.Resources != s.Resources() || res.Files != files {
			t.Errorf("single=%v: %d resources in %d files (want %d in %d), findings %v", single, res.Resources, res.Files,
				s.Resources(), files, other)
		}
		if len(res.Set.Dataplanes) != 80 || len(res.Set.TrafficPermissions) != 19 {
			t.Errorf("single=%v: %d dataplanes, %d permissions", single, len(res.Set.Dataplanes), len(res.Set.TrafficPermissions))
		}
	}
	if got := Scaled(1); got.Resources() != 10_000 {
		t.Errorf("scale 1 has %d resources", got.Resources())
	}
}
