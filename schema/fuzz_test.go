package schema

import (
	"os"
	"path/filepath"
	"testing"
	"testing/fstest"
)

// FuzzLoad feeds arbitrary bytes to the loader as one file. Whatever the
// input, it must not panic or hang, every finding must be well formed, and a
// set comes back exactly when there are no errors.
func FuzzLoad(f *testing.F) {
	files, _ := filepath.Glob("testdata/*/*/*.yaml")
	for _, name := range files {
		if b, err := os.ReadFile(name); err == nil {
			f.Add(b)
		}
	}
	l, err := NewLoader(Options{MaxNodes: 10_000})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		res, err := l.Load(fstest.MapFS{"f.yaml": {Data: data}})
		if err != nil {
			t.Fatal(err)
		}
		for _, fnd := range res.Findings {
			if fnd.File != "f.yaml" || fnd.Code == "" || fnd.Message == "" || fnd.Line < 0 || fnd.Column < 0 ||
				(fnd.Severity != SeverityError && fnd.Severity != SeverityWarning) {
				t.Fatalf("malformed finding %+v", fnd)
			}
		}
		if res.Valid() != (res.Set != nil) {
			t.Fatalf("Valid() = %v but Set = %v", res.Valid(), res.Set)
		}
		if res.Set == nil {
			return
		}
		seen := map[string]bool{}
		for _, dp := range res.Set.Dataplanes {
			if seen[dp.NodeID().String()] {
				t.Fatalf("duplicate node id %s in a valid set", dp.NodeID().String())
			}
			seen[dp.NodeID().String()] = true
			for _, in := range dp.Inbound {
				if in.Service() == "" || in.Port == 0 || in.ServicePort == 0 || in.Address == "" {
					t.Fatalf("incomplete inbound %+v in a valid set", in)
				}
			}
		}
	})
}
