package xds

import (
	"context"

	"fmt"
	"google.golang.org/protobuf/proto"
	"math/rand/v2"
	"slices"
	"testing"
	"testing/fstest"

	"github.com/gitmesh/gitmesh/schema"
	"github.com/gitmesh/gitmesh/schema/schematest"
)

// TestBuildFollowsRouteEdits edits route policies and the dataplanes their
// subsets select, one step at a time, and checks that each incremental
// Build makes exactly the proxies a fresh one does: a route reaches the
// proxies it selects, a subset's endpoints follow its instances' tags and
// addresses, a backend's change reaches proxies that are not its
// consumers.
func TestBuildFollowsRouteEdits(t *testing.T) {
	rnd := rand.New(rand.NewPCG(3, 4))
	files := fstest.MapFS{"mesh.yaml": {Data: []byte("type: Mesh\nname: prod\nmtls:\n  enabledBackend: ca\n  backends: [{name: ca, type: builtin}]\n")}}
	version := func() string { return []string{"v1", "v2", "v3"}[rnd.IntN(3)] }
	backend := func(i int) string {
		svc, proto := "backend", "http"
		if i%3 == 2 {
			svc, proto = "db", "grpc"
		}
		return fmt.Sprintf("type: Dataplane\nmesh: prod\nname: %s-%d\nnetworking:\n  address: 10.1.%d.%d\n  inbound:\n"+
			"    - port: 8080\n      tags: {kuma.io/service: %s, kuma.io/protocol: %s, version: %s}\n", svc, i, i, 1+rnd.IntN(200), svc, proto, version())
	}
	// web-1 and web-3 reach db only as a backend of backend's routes.
	client := func(i int) string {
		db := "    - port: 10002\n      tags: {kuma.io/service: db}\n"
		if i%2 == 1 {
			db = ""
		}
		return fmt.Sprintf("type: Dataplane\nmesh: prod\nname: web-%d\nlabels: {team: t%d}\nnetworking:\n  address: 10.2.0.%d\n  inbound:\n"+
			"    - port: 8080\n      tags: {kuma.io/service: web, kuma.io/protocol: http}\n  outbound:\n"+
			"    - port: 10001\n      tags: {kuma.io/service: backend}\n%s", i, i%2, i, db)
	}
	route := func(n int) string {
		top := []string{"{kind: Mesh}", "{kind: MeshService, name: web}", "{kind: Dataplane, labels: {team: t1}}"}[rnd.IntN(3)]
		sub := func(svc string) string {
			if rnd.IntN(3) == 0 {
				return fmt.Sprintf("{kind: MeshService, name: %s, weight: %d}", svc, rnd.IntN(3))
			}
			return fmt.Sprintf("{kind: MeshServiceSubset, name: %s, tags: {version: %s}, weight: %d}", svc, version(), rnd.IntN(4))
		}
		tcp := fmt.Sprintf(`---
type: MeshTCPRoute
name: tcp-%d
mesh: prod
spec:
  targetRef: %s
  to:
    - targetRef: {kind: MeshService, name: db}
      rules:
        - default: {backendRefs: [%s, %s]}
`, n, top, sub("db"), sub("db"))
		if rnd.IntN(2) == 0 {
			tcp = ""
		}
		if rnd.IntN(2) == 0 {
			to := []string{"{kind: Mesh}", "{kind: MeshService, name: backend}", "{kind: MeshService, name: db}"}[rnd.IntN(3)]
			tcp += fmt.Sprintf(`---
type: MeshTimeout
name: timeout-%d
mesh: prod
spec:
  targetRef: %s
  to:
    - targetRef: %s
      default: {connectionTimeout: %ds, http: {requestTimeout: %ds}}
  from:
    - targetRef: {kind: Mesh}
      default: {idleTimeout: %dm}
`, n, top, to, 1+rnd.IntN(3), 1+rnd.IntN(3), 1+rnd.IntN(3))
		}
		return fmt.Sprintf(`type: MeshHTTPRoute
name: split-%d
mesh: prod
spec:
  targetRef: %s
  to:
    - targetRef: {kind: MeshService, name: backend}
      rules:
        - matches: [{path: {type: PathPrefix, value: /api}}]
          default: {backendRefs: [%s]}
        - matches: [{path: {type: PathPrefix, value: /}}]
          default: {backendRefs: [%s, %s, {kind: MeshService, name: db}]}
`, n, top, sub("backend"), sub("backend"), sub("backend")) + tcp
	}
	for i := range 6 {
		files[fmt.Sprintf("backend-%d.yaml", i)] = &fstest.MapFile{Data: []byte(backend(i))}
	}
	for i := range 4 {
		files[fmt.Sprintf("web-%d.yaml", i)] = &fstest.MapFile{Data: []byte(client(i))}
	}
	files["route-0.yaml"] = &fstest.MapFile{Data: []byte(route(0))}
	b := NewBuilder(BuilderOptions{})
	set := schematest.Load(t, files)
	tr, _, failures, err := b.Build(context.Background(), set, schema.DiffSets(nil, set), nil)
	if err != nil || len(failures) > 0 {
		t.Fatal(failures, err)
	}
	routed := 0
	for step := range 50 {
		switch k := rnd.IntN(4); k {
		case 0, 1:
			n := rnd.IntN(2)
			name := fmt.Sprintf("route-%d.yaml", n)
			if files[name] != nil && rnd.IntN(2) == 0 {
				delete(files, name)
			} else {
				files[name] = &fstest.MapFile{Data: []byte(route(n))}
			}
		default:
			i := rnd.IntN(6)
			files[fmt.Sprintf("backend-%d.yaml", i)] = &fstest.MapFile{Data: []byte(backend(i))}
		}
		set, tr = buildStep(t, b, step, files, set, tr)
		if web := set.Dataplane("prod", "web-1"); web != nil && tr.index.RoutesOf(web, "backend").Routed() {
			routed++
		}
	}
	if routed < 10 {
		t.Errorf("web-1 was routed in %d steps of 50: the test hardly covers routes", routed)
	}
}

// buildStep loads files and builds them from set and tr, as the daemon
// builds a commit from the one it serves, and checks the result against a
// fresh build.
func buildStep(t *testing.T, b *Builder, step int, files fstest.MapFS, set *schema.Set, tr *Translation) (*schema.Set, *Translation) {
	t.Helper()
	next := keepUnchanged(set, schematest.Load(t, files))
	built, _, failures, err := b.Build(context.Background(), next, schema.DiffSets(set, next), tr)
	if err != nil || len(failures) > 0 {
		t.Fatalf("step %d: %v %v", step, failures, err)
	}
	sameAsFresh(t, step, built, next)
	return next, built
}

// keepUnchanged is next with prev's values for the resources that did not
// change, as the daemon's file cache leaves them.
func keepUnchanged(prev, next *schema.Set) *schema.Set {
	changed := map[schema.Key]bool{}
	d := schema.DiffSets(prev, next)
	for _, k := range slices.Concat(d.Added, d.Changed) {
		changed[k] = true
	}
	out := *next
	out.Meshes = keep(prev.Meshes, next.Meshes, func(m *schema.Mesh) schema.Key { return schema.Key{Type: schema.TypeMesh, Name: m.Name} }, changed)
	out.Dataplanes = keep(prev.Dataplanes, next.Dataplanes, func(dp *schema.Dataplane) schema.Key {
		return schema.Key{Type: schema.TypeDataplane, Mesh: dp.Mesh, Name: dp.Name}
	}, changed)
	out.MeshHTTPRoutes = keep(prev.MeshHTTPRoutes, next.MeshHTTPRoutes, func(p *schema.MeshHTTPRoute) schema.Key {
		return schema.Key{Type: schema.TypeMeshHTTPRoute, Mesh: p.Mesh, Name: p.Name}
	}, changed)
	out.MeshTCPRoutes = keep(prev.MeshTCPRoutes, next.MeshTCPRoutes, func(p *schema.MeshTCPRoute) schema.Key {
		return schema.Key{Type: schema.TypeMeshTCPRoute, Mesh: p.Mesh, Name: p.Name}
	}, changed)
	out.Policies = keep(prev.Policies, next.Policies, func(p *schema.ConfPolicy) schema.Key {
		return schema.Key{Type: p.Type, Mesh: p.Mesh, Name: p.Name}
	}, changed)
	return &out
}

func keep[T any](prev, next []T, key func(T) schema.Key, changed map[schema.Key]bool) []T {
	old := map[schema.Key]T{}
	for _, v := range prev {
		old[key(v)] = v
	}
	out := slices.Clone(next)
	for i, v := range out {
		if o, ok := old[key(v)]; ok && !changed[key(v)] {
			out[i] = o
		}
	}
	return out
}

// logDifferences logs the resources of got's proxies that differ from
// want's.
func logDifferences(t *testing.T, got, want *Node) {
	t.Helper()
	for _, f := range Flavors {
		a, b := got.Proxy(f), want.Proxy(f)
		if a == nil || b == nil {
			continue
		}
		for typ, rs := range b.Resources {
			for i, r := range rs {
				if i >= len(a.Resources[typ]) || !proto.Equal(r.(proto.Message), a.Resources[typ][i].(proto.Message)) {
					t.Logf("%s %s: %s %d is\n%v\nwant\n%v", got.ID(), f, typeName(typ), i, a.Resources[typ], r)
				}
			}
		}
	}
}

// sameAsFresh fails the test unless tr, built incrementally, holds for
// every dataplane of set the proxies a fresh build makes.
func sameAsFresh(t *testing.T, step int, tr *Translation, set *schema.Set) {
	t.Helper()
	fresh, _, _, err := NewBuilder(BuilderOptions{}).Build(context.Background(), set, schema.DiffSets(nil, set), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range fresh.Nodes() {
		got := tr.Node(n.ID().String())
		if got == nil || !slices.Equal(got.hashes, n.hashes) {
			if got != nil {
				logDifferences(t, got, n)
			}
			t.Fatalf("step %d: %s hashes differ from a fresh build", step, n.ID())
		}
		for _, f := range Flavors {
			if p := got.Proxy(f); p != nil && p.Hash != n.Proxy(f).Hash {
				t.Fatalf("step %d: %s %s: hash %.12s, want %.12s", step, n.ID(), f, p.Hash, n.Proxy(f).Hash)
			}
		}
	}
}
