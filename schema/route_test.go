package schema_test

import (
	"testing"
	"testing/fstest"

	"github.com/google/go-cmp/cmp"

	"github.com/gitmesh/gitmesh/schema"
	"github.com/gitmesh/gitmesh/schema/schematest"
)

// MergeRoutes follows Kuma: the more specific policy's rule wins for the
// same matches and fills only what it sets, routes are ordered by Gateway
// API precedence, and a catch-all route to the service itself comes last
// unless a rule has one.
func TestMergeRoutes(t *testing.T) {
	set := schematest.Load(t, fstest.MapFS{"p.yaml": {Data: []byte(`
type: Dataplane
mesh: default
name: web-1
labels: {team: a}
networking:
  address: 10.0.0.1
  inbound: [{port: 80, tags: {kuma.io/service: web, kuma.io/protocol: http}}]
  outbound: [{port: 10001, tags: {kuma.io/service: api}}]
---
type: Dataplane
mesh: default
name: api-1
networking:
  address: 10.0.0.2
  inbound: [{port: 80, tags: {kuma.io/service: api, kuma.io/protocol: http, version: v1}}]
---
type: Dataplane
mesh: default
name: api-2
networking:
  address: 10.0.0.3
  inbound: [{port: 80, tags: {kuma.io/service: api, kuma.io/protocol: http, version: v2}}]
---
type: MeshHTTPRoute
name: mesh-wide
mesh: default
spec:
  targetRef: {kind: Mesh}
  to:
    - targetRef: {kind: MeshService, name: api}
      rules:
        - matches: [{path: {type: PathPrefix, value: /a}}]
          default:
            filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-mesh, value: "1"}]}}]
            backendRefs: [{kind: MeshServiceSubset, name: api, tags: {version: v1}}]
        - matches: [{path: {type: Exact, value: /exact}}]
          default: {}
---
type: MeshHTTPRoute
name: for-web
mesh: default
spec:
  targetRef: {kind: MeshService, name: web}
  to:
    - targetRef: {kind: MeshService, name: api}
      rules:
        - matches: [{path: {type: PathPrefix, value: /a}}]
          default:
            backendRefs: [{kind: MeshServiceSubset, name: api, tags: {version: v2}}]
        - matches: [{path: {type: PathPrefix, value: /a/longer}}, {method: GET, path: {type: PathPrefix, value: /a}}]
          default: {}
`)}})
	dp := set.Dataplane("default", "web-1")
	hs, ts := schema.SelectingClient(set.MeshHTTPRoutesIn("default"), set.MeshTCPRoutesIn("default"), dp, "api")
	if len(hs) != 2 || hs[0].Name != "mesh-wide" || hs[1].Name != "for-web" || len(ts) != 0 {
		t.Fatalf("selecting policies %v %v, want mesh-wide then for-web", hs, ts)
	}
	table := schema.MergeRoutes("api", hs, ts)
	type route struct{ Name, Match, Backends, Filters string }
	var got []route
	for _, r := range table.HTTP {
		rt := route{Name: r.Name(), Match: r.Match.String()}
		for _, b := range r.Backends {
			rt.Backends += b.String() + ";"
		}
		for _, f := range r.Filters {
			rt.Filters += f.Type + ";"
		}
		got = append(got, rt)
	}
	want := []route{
		{"mesh-wide/to/0/rules/1", "Exact /exact", "MeshService(api) weight 1;", ""},
		{"for-web/to/0/rules/1", "PathPrefix /a/longer", "MeshService(api) weight 1;", ""},
		{"for-web/to/0/rules/1", "PathPrefix /a, GET", "MeshService(api) weight 1;", ""},
		// for-web's rule for /a replaces the backends and keeps mesh-wide's filters.
		{"for-web/to/0/rules/0", "PathPrefix /a", "MeshServiceSubset(api){version=v2} weight 1;", "RequestHeaderModifier;"},
		{"default", "PathPrefix /", "MeshService(api) weight 1;", ""},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("routes (-want +got):\n%s", d)
	}
	if other := schema.MergeRoutes("web", nil, nil); other.Routed() {
		t.Errorf("a service no route names is routed: %+v", other)
	}
}
