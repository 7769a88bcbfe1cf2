package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gitmesh/gitmesh/internal/benchtree"
)

// migrate rewrites the bundled trees and a generated 1,000-dataplane tree
// into Kuma 2.x forms that translate byte-identically; the result has no
// legacy form left that migrate handles.
func TestMigrateEquivalent(t *testing.T) {
	gen := t.TempDir()
	if _, err := benchtree.Write(gen, benchtree.Shape{Dataplanes: 1000, Services: 100, Permissions: 99, PerFile: 10}); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{"../../policies", "../../examples/bookinfo/policies", gen} {
		out := filepath.Join(t.TempDir(), "out")
		code, stdout, stderr := gitmesh(t, "migrate", dir, "--out", out)
		if code != 0 || !strings.Contains(stdout, "byte-identical") {
			t.Fatalf("migrate %s: %d\n%s%s", dir, code, stdout, stderr)
		}
		code, stdout, stderr = gitmesh(t, "validate", "--deprecations", "--format", "json", out)
		if code != 0 {
			t.Fatalf("validate %s: %d\n%s%s", out, code, stdout, stderr)
		}
		for _, legacy := range []string{"TrafficPermission is a legacy kind", "`interface`", `tag \"service\"`, "outbound `service`", "mtls.enabled"} {
			if strings.Contains(stdout, legacy) {
				t.Errorf("%s: still has %s:\n%s", dir, legacy, stdout)
			}
		}
	}
}

// A permission whose meaning would change is refused: a source selected by
// a tag certificates do not carry is widened by TrafficPermission and
// failed closed by MeshTrafficPermission. Nothing is written.
func TestMigrateRefusesAChange(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("mesh.yaml", "type: Mesh\nname: default\nmtls:\n  enabled: true\n  ca:\n    builtin: {}\n")
	write("dp.yaml", "type: Dataplane\nname: web-1\nnetworking:\n  inbound:\n    - interface: 10.0.0.1:10001:8080\n      tags: {service: web}\n"+
		"---\ntype: Dataplane\nname: api-1\nnetworking:\n  address: 10.0.0.2\n  inbound:\n    - port: 10001\n      tags: {service: api, version: v1}\n")
	tp := "type: TrafficPermission\nname: web-from-api-v1\nsources: [{match: {service: api, version: v1}}]\ndestinations: [{match: {service: web}}]\n"
	write("tp.yaml", tp)
	code, stdout, stderr := gitmesh(t, "migrate", dir)
	if code != 1 || !strings.Contains(stderr, "default.web-1 (envoy): resources differ") || !strings.Contains(stderr, "nothing was written") {
		t.Fatalf("migrate: %d\n%s%s", code, stdout, stderr)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "tp.yaml")); string(b) != tp {
		t.Errorf("tp.yaml was rewritten:\n%s", b)
	}
}
