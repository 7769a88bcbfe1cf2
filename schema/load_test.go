package schema

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	goldenfile "github.com/gitmesh/gitmesh/internal/golden"
)

func newTestLoader(t testing.TB, opts Options) *Loader {
	t.Helper()
	l, err := NewLoader(opts)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// loadDir loads a directory through os.Root, as the CLI does.
func loadDir(t testing.TB, l *Loader, dir string) *Result {
	t.Helper()
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { root.Close() })
	res, err := l.Load(root.FS())
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// formatFindings renders findings one per line: position, severity, code,
// pointer, message and hint. The expected files hold exactly this.
func formatFindings(fs []Finding) string {
	var b strings.Builder
	for _, f := range fs {
		fmt.Fprintf(&b, "%s:%d:%d doc=%d %s %s %q\n    %s\n", f.File, f.Line, f.Column, f.Document, f.Severity, f.Code, f.Pointer, f.Message)
		if f.Hint != "" {
			fmt.Fprintf(&b, "    hint: %s\n", f.Hint)
		}
	}
	return b.String()
}

// golden compares got with the file, or rewrites it under -update.
func golden(t *testing.T, file, got string) {
	t.Helper()
	goldenfile.Check(t, file, []byte(got))
}

// TestInvalidCases loads each folder under testdata/invalid and compares every
// finding (file, line, column, document, code, pointer, message, hint) with
// the folder's findings.txt.
func TestInvalidCases(t *testing.T) {
	l := newTestLoader(t, Options{})
	dirs, _ := filepath.Glob("testdata/invalid/*")
	if len(dirs) == 0 {
		t.Fatal("no invalid cases")
	}
	for _, dir := range dirs {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			res := loadDir(t, l, dir)
			if res.Valid() || res.Set != nil {
				t.Fatalf("loaded as valid:\n%s", formatFindings(res.Findings))
			}
			golden(t, filepath.Join(dir, "findings.txt"), formatFindings(res.Findings))
		})
	}
}

// TestValidCases loads each folder under testdata/valid (and the bundled
// policies and Kuma 2.x example, which must have no finding) and compares its warnings and its normalised set with the
// folder's findings.txt and set.json.
func TestValidCases(t *testing.T) {
	l := newTestLoader(t, Options{})
	dirs, _ := filepath.Glob("testdata/valid/*")
	dirs = append(dirs, "../policies", "../examples/kuma2")
	for _, dir := range dirs {
		name := filepath.Base(dir)
		t.Run(name, func(t *testing.T) {
			res := loadDir(t, l, dir)
			if !res.Valid() || res.Set == nil {
				t.Fatalf("not valid:\n%s", formatFindings(res.Findings))
			}
			if res.Resources != res.Set.Len() {
				t.Errorf("Resources = %d, set has %d", res.Resources, res.Set.Len())
			}
			if name == "policies" || name == "kuma2" {
				if len(res.Findings) != 0 {
					t.Errorf("bundled policies have findings:\n%s", formatFindings(res.Findings))
				}
				return
			}
			golden(t, filepath.Join(dir, "findings.txt"), formatFindings(res.Findings))
			setJSON, err := json.MarshalIndent(res.Set, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			golden(t, filepath.Join(dir, "set.json"), string(setJSON)+"\n")
		})
	}
}

func TestSelectorMatches(t *testing.T) {
	tags := map[string]string{"service": "web", "version": "v1"}
	for _, tc := range []struct {
		sel  Selector
		want bool
	}{
		{Selector{"service": "web"}, true},
		{Selector{"service": "*"}, true},
		{Selector{"service": "web", "version": "v2"}, false},
		{Selector{"service": "web", "zone": "*"}, false},
		{Selector{"service": "api"}, false},
		{Selector{}, true},
	} {
		if got := tc.sel.Matches(tags); got != tc.want {
			t.Errorf("%v.Matches(%v) = %v, want %v", tc.sel, tags, got, tc.want)
		}
	}
}

func TestSetLookups(t *testing.T) {
	res := loadDir(t, newTestLoader(t, Options{}), "testdata/valid/kuma-04-forms")
	s := res.Set
	if m := s.Mesh("prod"); m == nil || !m.MTLS.Enabled || m.MTLS.CA.Kind != CAProvided {
		t.Errorf("Mesh(prod) = %+v", m)
	}
	if m := s.Mesh("default"); m == nil || !m.Implicit || m.MTLS.Enabled {
		t.Errorf("implicit default mesh = %+v", m)
	}
	dp := s.Dataplane("prod", "api-01")
	if dp == nil || dp.NodeID().String() != "prod.api-01" {
		t.Fatalf("Dataplane(prod, api-01) = %+v", dp)
	}
	if got := dp.Inbound[0]; got.Service() != "api" || got.Protocol() != ProtocolGRPC || got.ServicePort != 10001 || got.HostPort() != "192.168.0.10:10001" {
		t.Errorf("inbound 0 = %+v", got)
	}
	if got := dp.Inbound[1]; got.Address != "192.168.0.11" || got.ServicePort != 10002 {
		t.Errorf("inbound 1 = %+v", got)
	}
	if s.Dataplane("prod", "nope") != nil || s.Dataplane("nope", "api-01") != nil {
		t.Error("lookup of a missing dataplane returned one")
	}
	if n := len(s.PermissionsIn("prod")); n != 1 {
		t.Errorf("PermissionsIn(prod) = %d", n)
	}
}
