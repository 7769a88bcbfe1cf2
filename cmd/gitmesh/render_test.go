package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/gitmesh/gitmesh/schema"
)

const renderPolicies = `type: Mesh
name: prod
mtls:
  enabled: true
  ca:
    builtin: {}
---
type: Dataplane
mesh: prod
name: web-1
networking:
  address: 10.0.0.1
  inbound:
    - port: 10001
      servicePort: 8080
      tags:
        service: web
  outbound:
    - port: 20001
      service: api
---
type: Dataplane
mesh: prod
name: api-1
networking:
  address: 10.0.0.2
  inbound:
    - port: 10002
      tags:
        service: api
        protocol: http
---
type: TrafficPermission
mesh: prod
name: web-to-api
sources:
  - match:
      service: web
destinations:
  - match:
      service: api
`

// policyDir writes files (name to content) into a temporary directory.
func policyDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func runRenderCmd(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	return gitmesh(t, append([]string{"render"}, args...)...)
}

func TestRenderYAML(t *testing.T) {
	dir := policyDir(t, map[string]string{"mesh.yaml": renderPolicies})
	code, out, errs := runRenderCmd(t, "--dataplane", "prod/web-1", dir)
	if code != exitOK {
		t.Fatalf("exit %d, stderr:\n%s", code, errs)
	}
	var doc struct {
		Node       string           `yaml:"node"`
		MTLS       bool             `yaml:"mtls"`
		Identities []string         `yaml:"identities"`
		Hash       string           `yaml:"hash"`
		Listeners  []map[string]any `yaml:"listeners"`
		Clusters   []map[string]any `yaml:"clusters"`
		Endpoints  []map[string]any `yaml:"endpoints"`
		Routes     []map[string]any `yaml:"routes"`
	}
	if err := yaml.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if doc.Node != "prod.web-1" || !doc.MTLS || len(doc.Hash) != 64 ||
		len(doc.Identities) != 1 || doc.Identities[0] != "spiffe://prod/web" {
		t.Errorf("header = %+v", doc)
	}
	var names []string
	for _, group := range [][]map[string]any{doc.Listeners, doc.Clusters, doc.Routes} {
		for _, r := range group {
			names = append(names, r["name"].(string))
		}
	}
	for _, r := range doc.Endpoints {
		names = append(names, r["cluster_name"].(string))
	}
	want := "inbound:10.0.0.1:10001 outbound:127.0.0.1:20001 api localhost:8080 outbound:api api"
	if got := strings.Join(names, " "); got != want {
		t.Errorf("resources = %s\nwant        %s", got, want)
	}
	for _, s := range []string{"envoy.filters.network.rbac", "spiffe://prod/api", "mesh_ca"} {
		if !strings.Contains(out, s) {
			t.Errorf("output lacks %q", s)
		}
	}
}

func TestRenderJSONFromWorkingDirectory(t *testing.T) {
	dir := policyDir(t, map[string]string{"mesh.yaml": renderPolicies})
	t.Chdir(dir)
	code, out, errs := runRenderCmd(t, "--dataplane", "prod/api-1", "--format", "json")
	if code != exitOK {
		t.Fatalf("exit %d, stderr:\n%s", code, errs)
	}
	var doc map[string]any
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if doc["node"] != "prod.api-1" || len(doc["listeners"].([]any)) != 1 || len(doc["routes"].([]any)) != 1 {
		t.Errorf("unexpected document:\n%s", out)
	}
}

func TestRenderInvalidPolicies(t *testing.T) {
	dir := policyDir(t, map[string]string{"bad.yaml": "type: Dataplane\nmesh: default\nname: x\nnetworking:\n  inbound:\n    - port: 1\n      tags: {}\n"})
	code, out, errs := runRenderCmd(t, "--dataplane", "default/x", dir)
	if code != exitFailed {
		t.Errorf("exit %d, want %d", code, exitFailed)
	}
	if out != "" {
		t.Errorf("stdout not empty:\n%s", out)
	}
	if !strings.Contains(errs, "bad.yaml:") || !strings.Contains(errs, "service") {
		t.Errorf("stderr does not name the problem:\n%s", errs)
	}
}

func TestRenderUsageErrors(t *testing.T) {
	dir := policyDir(t, map[string]string{"mesh.yaml": renderPolicies})
	for _, args := range [][]string{
		{dir},                             // no --dataplane
		{"--dataplane", "web-1", dir},     // no mesh
		{"--dataplane", "prod/nope", dir}, // no such dataplane
		{"--dataplane", "prod/web-1", "-o", "toml", dir},
		{"--dataplane", "prod/web-1", filepath.Join(dir, "missing")},
		{"--dataplane", "prod/web-1", dir, dir}, // two paths
	} {
		code, _, errs := runRenderCmd(t, args...)
		if code != exitUsage {
			t.Errorf("%v: exit %d, want %d (stderr %q)", args, code, exitUsage, errs)
		}
		if errs == "" {
			t.Errorf("%v: nothing on stderr", args)
		}
	}
}

// --policies lists, per inbound and outbound, what decides and where it is
// written: the permissions of each inbound, the merged routes of each
// outbound with the rule (file:line) that set their backends.
func TestRenderPolicies(t *testing.T) {
	dir := policyDir(t, map[string]string{"mesh.yaml": renderPolicies, "routes.yaml": `type: MeshHTTPRoute
name: api-split
mesh: prod
spec:
  targetRef: {kind: MeshService, name: web}
  to:
    - targetRef: {kind: MeshService, name: api}
      rules:
        - matches: [{path: {type: PathPrefix, value: /v2}}]
          default:
            backendRefs: [{kind: MeshServiceSubset, name: api, tags: {version: v2}, weight: 3}]
`, "conf.yaml": `type: MeshTimeout
name: web-timeouts
mesh: prod
spec:
  targetRef: {kind: Mesh}
  to:
    - targetRef: {kind: MeshService, name: api}
      default: {http: {requestTimeout: 2s}}
---
type: MeshTrace
name: traces
mesh: prod
spec:
  default:
    backends: [{type: Zipkin, zipkin: {url: "http://zipkin:9411/api/v2/spans"}}]
`})
	code, out, errs := runRenderCmd(t, "--dataplane", "prod/web-1", "--policies", dir)
	if code != exitOK {
		t.Fatalf("exit %d, stderr:\n%s", code, errs)
	}
	for _, want := range []string{
		"outbound 127.0.0.1:20001 -> api",
		"MeshHTTPRoute api-split  routes.yaml:1",
		`route "PathPrefix /v2" -> MeshServiceSubset(api){version=v2} weight 3  by api-split /spec/to/0/rules/0  routes.yaml:9`,
		`route "PathPrefix /" -> MeshService(api) weight 1  (catch-all: the service itself)`,
		`MeshTimeout {"http":{"requestTimeout":"2s"}}`,
		"from web-timeouts /spec/to/0  conf.yaml:7",
		"  proxy\n      MeshTrace {",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	code, out, errs = runRenderCmd(t, "--dataplane", "prod/web-1", "--policies", "--format", "json", dir)
	if code != exitOK {
		t.Fatalf("exit %d, stderr:\n%s", code, errs)
	}
	var doc schema.DataplanePolicies
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if len(doc.Outbounds) != 1 || len(doc.Outbounds[0].Routes) != 2 || doc.Outbounds[0].Routes[0].Line != 9 {
		t.Errorf("outbounds = %+v", doc.Outbounds)
	}
}
