package schema

import (
	"fmt"
	"testing"
	"testing/fstest"

	"github.com/google/go-cmp/cmp"
)

func loadMap(t *testing.T, files map[string]string) *Set {
	t.Helper()
	fsys := fstest.MapFS{}
	for name, content := range files {
		fsys[name] = &fstest.MapFile{Data: []byte(content)}
	}
	l, err := NewLoader(Options{})
	if err != nil {
		t.Fatal(err)
	}
	res, err := l.Load(fsys)
	if err != nil || !res.Valid() {
		t.Fatalf("load: %v %v", err, res.Findings)
	}
	return res.Set
}

const (
	diffDP = `type: Dataplane
mesh: default
name: %s
networking:
  address: %s
  inbound:
    - port: 10000
      tags: {service: web}
`
	diffTP = `type: TrafficPermission
mesh: default
name: all
sources: [{match: {service: '*'}}]
destinations: [{match: {service: '*'}}]
`
)

func TestDiffSets(t *testing.T) {
	dp := func(name, addr string) string { return fmt.Sprintf(diffDP, name, addr) }
	before := loadMap(t, map[string]string{
		"a.yaml": dp("a", "10.0.0.1"), "b.yaml": dp("b", "10.0.0.2"), "c.yaml": dp("c", "10.0.0.3"), "tp.yaml": diffTP,
	})
	after := loadMap(t, map[string]string{
		// a moves to another file and line: not a change.
		"moved/a.yaml": "# moved\n\n" + dp("a", "10.0.0.1"),
		"b.yaml":       dp("b", "10.0.0.20"),
		"d.yaml":       dp("d", "10.0.0.4"),
		"tp.yaml":      diffTP,
		"mesh.yaml":    "type: Mesh\nname: default\n",
	})
	got := DiffSets(before, after)
	want := SetDiff{
		Added:   []Key{{TypeDataplane, "default", "d"}, {TypeMesh, "", "default"}},
		Changed: []Key{{TypeDataplane, "default", "b"}},
		Removed: []Key{{TypeDataplane, "default", "c"}},
	}
	sortKeys := cmp.Transformer("sort", func(ks []Key) []Key {
		out := append([]Key(nil), ks...)
		for i := range out {
			for j := i + 1; j < len(out); j++ {
				if out[j].less(out[i]) {
					out[i], out[j] = out[j], out[i]
				}
			}
		}
		return out
	})
	if d := cmp.Diff(want, got, sortKeys); d != "" {
		t.Errorf("diff (-want +got):\n%s", d)
	}
	if got.Len() != 4 || got.Empty() {
		t.Errorf("Len %d Empty %v", got.Len(), got.Empty())
	}
	// Dropping the declaration of the default mesh removes it; against
	// nothing, everything declared is added.
	if d := DiffSets(after, before); len(d.Removed) != 2 || d.Removed[0].Type != TypeDataplane || d.Removed[1].Type != TypeMesh {
		t.Errorf("reverse: removed %v", d.Removed)
	}
	if d := DiffSets(nil, before); len(d.Added) != 4 || d.Len() != 4 {
		t.Errorf("from nothing: %+v", d)
	}
	if d := DiffSets(before, before); !d.Empty() {
		t.Errorf("a set against itself: %+v", d)
	}
}
