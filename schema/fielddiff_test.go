package schema

import (
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestFieldChanges(t *testing.T) {
	list := func(vs ...any) []any { return vs }
	for _, tc := range []struct {
		name string
		a, b any
		want []FieldChange
	}{
		{"equal", obj("a", 1, "b", list("x")), obj("b", list("x"), "a", 1), nil},
		{"scalar", obj("port", 8080), obj("port", 8081), []FieldChange{{Path: "port", Old: 8080, New: 8081}}},
		{"keys sorted, added and removed", obj("z", 1, "b", "x", "m", true), obj("a", 2, "b", "y", "m", true),
			[]FieldChange{{Path: "a", New: 2}, {Path: "b", Old: "x", New: "y"}, {Path: "z", Old: 1}}},
		{"nested", obj("networking", obj("inbound", list(obj("port", 1, "tags", obj("service", "web"))))),
			obj("networking", obj("inbound", list(obj("port", 1, "tags", obj("service", "api"))))),
			[]FieldChange{{Path: "networking.inbound[0].tags.service", Old: "web", New: "api"}}},
		{"key that is not a word", obj("tags", obj("kuma.io/zone", "a")), obj("tags", obj("kuma.io/zone", "b")),
			[]FieldChange{{Path: `tags["kuma.io/zone"]`, Old: "a", New: "b"}}},
		{"same length lists pair by index", list("a", "b"), list("b", "a"),
			[]FieldChange{{Path: "[0]", Old: "a", New: "b"}, {Path: "[1]", Old: "b", New: "a"}}},
		{"element removed from the middle", obj("s", list("a", "b", "c")), obj("s", list("a", "c")),
			[]FieldChange{{Path: "s[1]", Old: "b"}}},
		{"element added at the front", list("b", "c"), list("a", "b", "c"), []FieldChange{{Path: "[0]", New: "a"}}},
		{"element edited next to one added", list(obj("p", 1), obj("p", 2)), list(obj("p", 1), obj("p", 3), obj("p", 4)),
			[]FieldChange{{Path: "[1].p", Old: 2, New: 3}, {Path: "[2]", New: obj("p", 4)}}},
		{"type change", obj("a", obj("b", 1)), obj("a", list(1)),
			[]FieldChange{{Path: "a", Old: obj("b", 1), New: list(1)}}},
		{"whole value", nil, "x", []FieldChange{{Path: "", New: "x"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := FieldChanges(tc.a, tc.b)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestResourceChanges(t *testing.T) {
	prev := loadMap(t, map[string]string{
		"mesh.yaml": "type: Mesh\nname: prod\n",
		"dp.yaml": `type: Dataplane
mesh: prod
name: web-1
networking:
  inbound:
    - interface: 10.0.0.1:10001:8080
      tags: {service: web, kuma.io/protocol: http}
  outbound:
    - interface: :20001
      service: api
`,
		"tp.yaml": `type: TrafficPermission
mesh: prod
name: web-to-api
rules:
  - sources: [{match: {service: web}}, {match: {service: admin}}]
    destinations: [{match: {service: api}}]
`,
	})
	// The same resources in the later Kuma form, in other files and at other
	// lines, with one change each.
	next := loadMap(t, map[string]string{
		"all.yaml": "# moved\n" + `type: Mesh
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
      servicePort: 8081
      tags: {service: web, protocol: http}
  outbound:
    - port: 20001
      service: api
---
type: TrafficPermission
mesh: prod
name: web-to-api
sources: [{match: {service: web}}, {match: {service: api}}]
destinations: [{match: {service: api}}]
`,
	})
	d := DiffSets(prev, next)
	if len(d.Changed) != 3 || len(d.Added)+len(d.Removed) != 0 {
		t.Fatalf("DiffSets = %+v", d)
	}
	want := map[string][]FieldChange{
		TypeMesh:              {{Path: "mtls.enabled", Old: false, New: true}},
		TypeDataplane:         {{Path: "networking.inbound[0].servicePort", Old: uint32(8080), New: uint32(8081)}},
		TypeTrafficPermission: {{Path: "sources[1].match.service", Old: "admin", New: "api"}},
	}
	for _, k := range d.Changed {
		if diff := cmp.Diff(want[k.Type], ResourceChanges(prev, next, k)); diff != "" {
			t.Errorf("%v (-want +got):\n%s", k, diff)
		}
	}

	// Where a resource is declared is not a field.
	moved := loadMap(t, map[string]string{"a/b.yaml": "\n\n" + "type: Mesh\nname: prod\n"})
	if got := ResourceChanges(prev, moved, Key{Type: TypeMesh, Name: "prod"}); got != nil {
		t.Errorf("moving a resource changes %v", got)
	}
	// A resource one side lacks is one change of the whole.
	got := ResourceChanges(prev, next, Key{Type: TypeDataplane, Mesh: "prod", Name: "nope"})
	if got != nil {
		t.Errorf("missing on both sides: %v", got)
	}
	got = ResourceChanges(&Set{}, next, Key{Type: TypeMesh, Name: "prod"})
	if len(got) != 1 || got[0].Path != "" || got[0].Old != nil || got[0].New == nil {
		t.Errorf("added resource: %v", got)
	}
}

func TestResourceChangesMeshSpec(t *testing.T) {
	prev := loadMap(t, map[string]string{"m.yaml": `type: Mesh
name: prod
logging:
  backends:
    - name: file
      file: {path: /var/log/a.log}
metrics:
  prometheus: {port: 5670}
`})
	next := loadMap(t, map[string]string{"m.yaml": `type: Mesh
name: prod
mtls:
  enabled: false
  ca:
    provided:
      cert: {file: /etc/ca.pem}
      key: {file: /etc/ca.key}
logging:
  defaultBackend: tcp
  backends:
    - name: file
      file: {path: /var/log/a.log}
    - name: tcp
      tcp: {address: 10.0.0.9:5000}
tracing:
  backends:
    - name: zipkin
      sampling: 12.5
      zipkin: {url: http://zipkin:9411/api/v2/spans}
`})
	got := ResourceChanges(prev, next, Key{Type: TypeMesh, Name: "prod"})
	want := []FieldChange{
		{Path: "logging.backends[1]", New: map[string]any{"name": "tcp", "tcp": map[string]any{"address": "10.0.0.9:5000"}}},
		{Path: "logging.defaultBackend", New: "tcp"},
		{Path: "metrics", Old: map[string]any{"prometheus": map[string]any{"port": uint32(5670), "path": "/metrics"}}},
		{Path: "mtls.ca.builtin", Old: map[string]any{}},
		{Path: "mtls.ca.provided", New: map[string]any{"cert": map[string]any{"file": "/etc/ca.pem"}, "key": map[string]any{"file": "/etc/ca.key"}}},
		{Path: "tracing", New: map[string]any{"backends": []any{map[string]any{"name": "zipkin", "sampling": 12.5,
			"zipkin": map[string]any{"url": "http://zipkin:9411/api/v2/spans", "apiVersion": "httpJson"}}}}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestResourceChangesMeshTrafficPermission(t *testing.T) {
	mk := func(action Action, labels map[string]string) *Set {
		return &Set{MeshTrafficPermissions: []*MeshTrafficPermission{{
			PolicyMeta: PolicyMeta{Mesh: "default", Name: "p", Labels: labels, TargetRef: TargetRef{Kind: KindMeshService, Name: "backend"}},
			From:       []PermissionFrom{{TargetRef: TargetRef{Kind: KindMesh}, Action: action}},
		}}}
	}
	got := ResourceChanges(mk(ActionAllow, nil), mk(ActionDeny, map[string]string{"team": "a"}),
		Key{Type: TypeMeshTrafficPermission, Mesh: "default", Name: "p"})
	want := []FieldChange{{Path: "labels", New: map[string]any{"team": "a"}}, {Path: "spec.from[0].default.action", Old: "Allow", New: "Deny"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestResourceChangesRoutes(t *testing.T) {
	route := func(w1, w2 int, header string) map[string]string {
		return map[string]string{"r.yaml": fmt.Sprintf(`type: MeshHTTPRoute
name: split
mesh: default
spec:
  to:
    - targetRef: {kind: MeshService, name: api}
      rules:
        - matches: [{path: {type: PathPrefix, value: /}, headers: [{name: x-user, value: %s}]}]
          default: {filters: [{type: RequestHeaderModifier, requestHeaderModifier: {remove: [x-debug]}}]}
        - matches: [{path: {type: PathPrefix, value: /}}]
          default:
            backendRefs:
              - {kind: MeshServiceSubset, name: api, tags: {version: v1}, weight: %d}
              - {kind: MeshServiceSubset, name: api, tags: {version: v2}, weight: %d}
---
type: MeshTCPRoute
name: tcp
mesh: default
spec:
  to:
    - targetRef: {kind: MeshService, name: db}
      rules: [{default: {backendRefs: [{kind: MeshService, name: db, weight: %d}]}}]
`, header, w1, w2, w1)}
	}
	prev, next := loadMap(t, route(90, 10, "ann")), loadMap(t, route(50, 50, "bob"))
	got := ResourceChanges(prev, next, Key{Type: TypeMeshHTTPRoute, Mesh: "default", Name: "split"})
	want := []FieldChange{
		{Path: "spec.to[0].rules[0].matches[0].headers[0].value", Old: "ann", New: "bob"},
		{Path: "spec.to[0].rules[1].default.backendRefs[0].weight", Old: "90", New: "50"},
		{Path: "spec.to[0].rules[1].default.backendRefs[1].weight", Old: "10", New: "50"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("MeshHTTPRoute (-want +got):\n%s", diff)
	}
	got = ResourceChanges(prev, next, Key{Type: TypeMeshTCPRoute, Mesh: "default", Name: "tcp"})
	want = []FieldChange{{Path: "spec.to[0].rules[0].default.backendRefs[0].weight", Old: "90", New: "50"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("MeshTCPRoute (-want +got):\n%s", diff)
	}
}
