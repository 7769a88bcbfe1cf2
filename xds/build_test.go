package xds

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/fstest"

	"google.golang.org/protobuf/proto"

	"github.com/gitmesh/gitmesh/schema"
	"github.com/gitmesh/gitmesh/schema/schematest"
)

func TestBuildEveryFlavour(t *testing.T) {
	set := schematest.Load(t, os.DirFS(filepath.Join("testdata", "mtls-permissions", policiesDir)))
	tr, stats, failures, err := NewBuilder(BuilderOptions{}).Build(context.Background(), set, schema.DiffSets(nil, set), nil)
	if err != nil || len(failures) > 0 {
		t.Fatalf("Build: %v %v", failures, err)
	}
	if stats.Translated != len(set.Dataplanes) || stats.Reused != 0 {
		t.Errorf("stats %+v, want every dataplane translated", stats)
	}
	if len(tr.Nodes()) != len(set.Dataplanes) {
		t.Fatalf("%d nodes for %d dataplanes", len(tr.Nodes()), len(set.Dataplanes))
	}
	for i, n := range tr.Nodes() {
		if n.Dataplane != set.Dataplanes[i] {
			t.Errorf("node %d is %s, want the Set's order", i, n.ID())
		}
		for _, f := range Flavors {
			p := n.Proxy(f)
			if p == nil || p.Flavor != f || p.NodeID != n.ID().String() {
				t.Fatalf("%s: no %s proxy: %+v", n.ID(), f, p)
			}
			if err := Check(p); err != nil || !p.Checked() {
				t.Errorf("%s %s: checked %v, %v", n.ID(), f, p.Checked(), err)
			}
			if tr.Proxy(n.ID().String(), f) != p {
				t.Errorf("Proxy(%s, %s) is not the node's", n.ID(), f)
			}
		}
	}
	// Flavors narrows what is translated.
	envoyOnly := NewBuilder(BuilderOptions{Flavors: func(*schema.Dataplane) []Flavor { return []Flavor{FlavorEnvoy} }})
	tr, _, _, err = envoyOnly.Build(context.Background(), set, schema.DiffSets(nil, set), nil)
	if err != nil || tr.Nodes()[0].Proxy(FlavorGRPC) != nil || tr.Nodes()[0].Proxy(FlavorEnvoy) == nil {
		t.Errorf("envoy only: %v, %+v", err, tr.Nodes()[0])
	}
}

// TestBuildReuses: after one permission changes, only the proxies it reaches
// are translated again; the others are prev's very values.
func TestBuildReuses(t *testing.T) {
	set := schematest.Load(t, os.DirFS(filepath.Join("testdata", "mtls-permissions", policiesDir)))
	b := NewBuilder(BuilderOptions{})
	prev, _, _, err := b.Build(context.Background(), set, schema.DiffSets(nil, set), nil)
	if err != nil {
		t.Fatal(err)
	}
	next := editPermission(set, "frontend-to-reviews", nil)
	tr, stats, failures, err := b.Build(context.Background(), next, schema.DiffSets(set, next), prev)
	if err != nil || len(failures) > 0 {
		t.Fatalf("Build: %v %v", failures, err)
	}
	if stats.Translated != 1 || stats.Reused != len(set.Dataplanes)-1 {
		t.Errorf("stats %+v, want reviews-1 alone translated", stats)
	}
	for _, n := range tr.Nodes() {
		old := prev.Node(n.ID().String())
		same := n.Proxy(FlavorEnvoy) == old.Proxy(FlavorEnvoy) && n.Proxy(FlavorGRPC) == old.Proxy(FlavorGRPC)
		if want := n.ID().String() != "prod.reviews-1"; same != want {
			t.Errorf("%s: reused = %v, want %v", n.ID(), same, want)
		}
	}
	if tr.Proxy("prod.reviews-1", FlavorEnvoy).Hash == prev.Proxy("prod.reviews-1", FlavorEnvoy).Hash {
		t.Error("reviews-1 lost a permission and kept its hash")
	}

	// A dataplane moved to another file keeps its proxies, under its new
	// origin.
	moved := *next
	moved.Dataplanes = append([]*schema.Dataplane(nil), next.Dataplanes...)
	dp := *moved.Dataplanes[0]
	dp.Origin = schema.Origin{File: "elsewhere.yaml", Document: 1, Line: 1, Column: 1}
	moved.Dataplanes[0] = &dp
	tr2, stats, _, err := b.Build(context.Background(), &moved, schema.DiffSets(next, &moved), tr)
	if err != nil || stats.Translated != 0 {
		t.Fatalf("moved: %+v %v", stats, err)
	}
	n := tr2.Nodes()[0]
	if n.Dataplane != &dp || n.Proxy(FlavorEnvoy) != tr.Nodes()[0].Proxy(FlavorEnvoy) {
		t.Error("a moved dataplane is not its new origin with its old proxies")
	}
}

// TestBuildReportsEveryFailure: a failure of one flavour of one dataplane
// fails the build, and every failure is listed.
func TestBuildReportsEveryFailure(t *testing.T) {
	set := schematest.Load(t, os.DirFS(filepath.Join("testdata", "mtls-permissions", policiesDir)))
	b := NewBuilder(BuilderOptions{Workers: 2})
	b.translate = func(idx *Index, dp *schema.Dataplane, o Options) (*Proxy, error) {
		if o.Flavor == FlavorGRPC && strings.HasPrefix(dp.Name, "r") {
			return nil, errors.New("not for gRPC")
		}
		return TranslateProxy(idx, dp, o)
	}
	tr, _, failures, err := b.Build(context.Background(), set, schema.DiffSets(nil, set), nil)
	if err != nil || tr != nil {
		t.Fatalf("Build = %v, %v; want failures", tr, err)
	}
	var got []string
	for _, f := range failures {
		got = append(got, f.Dataplane.Name+"/"+string(f.Flavor))
	}
	if strings.Join(got, " ") != "ratings-1/grpc reviews-1/grpc" {
		t.Errorf("failures %v", got)
	}
	if msg := failures[0].Error(); !strings.Contains(msg, "prod.ratings-1 does not translate for grpc: not for gRPC") {
		t.Errorf("message %q", msg)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, _, err := NewBuilder(BuilderOptions{}).Build(ctx, set, schema.DiffSets(nil, set), nil); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled build: %v", err)
	}
}

// TestBuildKeepsWhatItIsTold: with Keep, a Build checks every flavour of
// every dataplane and keeps built only the proxies Keep names; the others
// are made, checked, when first asked for, equal to what a Build keeping
// everything makes, and kept from then, into the next Build that reuses
// the node.
func TestBuildKeepsWhatItIsTold(t *testing.T) {
	set := schematest.Load(t, os.DirFS(filepath.Join("testdata", "mtls-permissions", policiesDir)))
	eager, _, _, err := NewBuilder(BuilderOptions{}).Build(context.Background(), set, schema.DiffSets(nil, set), nil)
	if err != nil {
		t.Fatal(err)
	}
	keep := func(dp *schema.Dataplane) []Flavor {
		if dp.Name == "reviews-1" {
			return []Flavor{FlavorGRPC}
		}
		return nil
	}
	b := NewBuilder(BuilderOptions{Keep: keep})
	tr, _, failures, err := b.Build(context.Background(), set, schema.DiffSets(nil, set), nil)
	if err != nil || len(failures) > 0 {
		t.Fatalf("Build: %v %v", failures, err)
	}
	for _, n := range tr.Nodes() {
		built := n.built()
		for i, f := range Flavors {
			kept := built[i] != nil
			if want := n.Dataplane.Name == "reviews-1" && f == FlavorGRPC; kept != want {
				t.Errorf("%s %s: kept %v, want %v", n.ID(), f, kept, want)
			}
			p := n.Proxy(f)
			if p == nil || !p.Checked() || p.Hash != eager.Proxy(n.ID().String(), f).Hash {
				t.Fatalf("%s %s: made on demand %+v, want the eager build's", n.ID(), f, p)
			}
			if n.Proxy(f) != p {
				t.Errorf("%s %s: made twice", n.ID(), f)
			}
		}
	}
	if tr.LateFailures() != 0 {
		t.Errorf("%d late failures", tr.LateFailures())
	}
	// The next Build reuses every node the change does not reach with the
	// proxies made so far.
	next := editPermission(set, "frontend-to-reviews", nil)
	tr2, _, _, err := b.Build(context.Background(), next, schema.DiffSets(set, next), tr)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := tr2.Node("prod.frontend-1").built()[0], tr.Proxy("prod.frontend-1", FlavorEnvoy); got != want {
		t.Error("a reused node lost the proxy made on demand")
	}
	if tr2.Node("prod.reviews-1").built()[0] != nil {
		t.Error("the node the change reaches kept a proxy Keep does not name")
	}
	// Affected counts the dataplanes whose proxies change, kept or not:
	// as many as an eager build finds by comparing every proxy.
	eager2, _, _, err := NewBuilder(BuilderOptions{}).Build(context.Background(), next, schema.DiffSets(nil, next), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := 0
	for _, n := range eager2.Nodes() {
		for _, f := range Flavors {
			if a, b := n.Proxy(f), eager.Proxy(n.ID().String(), f); (a == nil) != (b == nil) || a != nil && a.Hash != b.Hash {
				want++
				break
			}
		}
	}
	if got := tr2.Affected(tr); want == 0 || got != want {
		t.Errorf("Affected = %d, want %d (the dataplanes whose proxies changed)", got, want)
	}
	if got := tr.Affected(nil); got != len(tr.Nodes()) {
		t.Errorf("Affected(nil) = %d, want every dataplane (%d)", got, len(tr.Nodes()))
	}
	removed := *next
	removed.Dataplanes = next.Dataplanes[1:]
	tr3, _, _, err := b.Build(context.Background(), &removed, schema.DiffSets(next, &removed), tr2)
	if err != nil {
		t.Fatal(err)
	}
	if got := tr3.Affected(tr2); got < 1 {
		t.Errorf("removing a dataplane affects %d", got)
	}

	// CheckOnly keeps and makes nothing.
	gate, _, _, err := NewBuilder(BuilderOptions{CheckOnly: true}).Build(context.Background(), set, schema.DiffSets(nil, set), nil)
	if err != nil || gate.Proxy("prod.reviews-1", FlavorEnvoy) != nil {
		t.Errorf("CheckOnly made a proxy on demand: %v", err)
	}
}

// TestBuildPatchesMovedEndpoints: when an instance moves, the proxies of
// its service's consumers are prev's with the new endpoints, not translated
// again, and they are what a translation from scratch makes: the same
// hashes, per type too, and the same resources, for kept proxies and
// dropped ones alike. A change of protocol is no move: its consumers are
// translated.
func TestBuildPatchesMovedEndpoints(t *testing.T) {
	dir := filepath.Join("testdata", "mtls-permissions", policiesDir)
	files := fstest.MapFS{}
	for _, name := range []string{"mesh.yaml", "dataplanes.yaml", "permissions.yaml"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		files[name] = &fstest.MapFile{Data: b}
	}
	set := schematest.Load(t, files)
	// edit is set with one text replaced, keeping set's values for what
	// does not change (as the daemon's file cache does).
	edit := func(from, to string) *schema.Set {
		out := fstest.MapFS{}
		for k, v := range files {
			out[k] = &fstest.MapFile{Data: []byte(strings.Replace(string(v.Data), from, to, 1))}
		}
		loaded := schematest.Load(t, out)
		next := *set
		next.Dataplanes = slices.Clone(set.Dataplanes)
		diff := schema.DiffSets(set, loaded)
		for i, dp := range next.Dataplanes {
			for _, k := range diff.Changed {
				if k.Type == schema.TypeDataplane && k.Name == dp.Name {
					next.Dataplanes[i] = loaded.Dataplane(dp.Mesh, dp.Name)
				}
			}
		}
		return &next
	}
	moved := edit("address: 10.1.0.4\n", "address: 10.1.0.44\n")
	consumers := 0
	for _, dp := range set.Dataplanes {
		for _, out := range dp.Outbound {
			if out.Service == "db" {
				consumers++
				break
			}
		}
	}
	if consumers < 2 {
		t.Fatalf("%d consumers of db in the test set", consumers)
	}
	for _, c := range []struct {
		name string
		keep func(*schema.Dataplane) []Flavor
	}{{"every proxy kept", nil}, {"none kept", func(*schema.Dataplane) []Flavor { return nil }}} {
		t.Run(c.name, func(t *testing.T) {
			b := NewBuilder(BuilderOptions{Keep: c.keep})
			prev, _, _, err := b.Build(context.Background(), set, schema.DiffSets(nil, set), nil)
			if err != nil {
				t.Fatal(err)
			}
			tr, stats, failures, err := b.Build(context.Background(), moved, schema.DiffSets(set, moved), prev)
			if err != nil || len(failures) > 0 {
				t.Fatalf("Build: %v %v", failures, err)
			}
			if stats.Patched != consumers || stats.Translated != 1 {
				t.Errorf("stats %+v, want the %d consumers of db patched and db-1 alone translated", stats, consumers)
			}
			fresh, _, _, err := NewBuilder(BuilderOptions{}).Build(context.Background(), moved, schema.DiffSets(nil, moved), nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range tr.Nodes() {
				want := fresh.Node(n.ID().String())
				if !slices.Equal(n.hashes, want.hashes) {
					t.Errorf("%s: hashes %v, want %v", n.ID(), n.hashes, want.hashes)
				}
				for i, f := range Flavors {
					if n.hashes[i] == "" {
						continue
					}
					got, exp := n.Proxy(f), want.Proxy(f)
					if got.Hash != exp.Hash || !maps.Equal(got.TypeHashes, exp.TypeHashes) || !got.Checked() {
						t.Errorf("%s %s: hash %.12s, want %.12s", n.ID(), f, got.Hash, exp.Hash)
						continue
					}
					for typ, rs := range exp.Resources {
						if len(got.Resources[typ]) != len(rs) {
							t.Errorf("%s %s: %d %s, want %d", n.ID(), f, len(got.Resources[typ]), typ, len(rs))
							continue
						}
						for j, r := range rs {
							if !proto.Equal(got.Resources[typ][j], r) {
								t.Errorf("%s %s: %s %d differs from a fresh translation", n.ID(), f, typeName(typ), j)
							}
						}
					}
				}
			}
			if got, want := tr.Affected(prev), consumers+1; got != want {
				t.Errorf("Affected = %d, want db-1 and its %d consumers", got, consumers)
			}
		})
	}
	// db speaks HTTP now: its consumers' listeners change, so they are
	// translated.
	http := edit("        service: db\n        protocol: tcp\n", "        service: db\n        protocol: http\n")
	b := NewBuilder(BuilderOptions{})
	prev, _, _, err := b.Build(context.Background(), set, schema.DiffSets(nil, set), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, stats, _, err := b.Build(context.Background(), http, schema.DiffSets(set, http), prev); err != nil || stats.Patched != 0 || stats.Translated != consumers+1 {
		t.Errorf("a protocol change: stats %+v (%v), want db-1 and its %d consumers translated", stats, err, consumers)
	}
}

// TestBuildFollowsDataplaneEdits: a chain of Builds, each from the one
// before, over random edits of dataplanes alone (instances moving, changing
// service or protocol, gaining and losing outbounds, appearing and going;
// the Index is then updated, not made anew, and proxies are patched where
// only endpoints changed) gives what a Build from scratch gives at every
// step: the same hash of every proxy, and Affected counts the dataplanes
// whose hashes changed.
func TestBuildFollowsDataplaneEdits(t *testing.T) {
	dir := filepath.Join("testdata", "mtls-permissions", policiesDir)
	files := fstest.MapFS{}
	for _, name := range []string{"mesh.yaml", "permissions.yaml"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		files[name] = &fstest.MapFile{Data: b}
	}
	services := []string{"frontend", "reviews", "db", "ratings"}
	rnd := rand.New(rand.NewPCG(1, 2))
	dataplane := func(i int) string {
		svc := services[rnd.IntN(len(services))]
		proto := []string{"http", "tcp"}[rnd.IntN(2)]
		out := ""
		for j, s := range services {
			if s != svc && rnd.IntN(2) == 0 {
				out += fmt.Sprintf("    - port: %d\n      service: %s\n", 20001+j, s)
			}
		}
		if out != "" {
			out = "  outbound:\n" + out
		}
		return fmt.Sprintf("type: Dataplane\nmesh: prod\nname: dp-%d\nnetworking:\n  address: 10.2.%d.%d\n  inbound:\n"+
			"    - port: 10001\n      servicePort: 8080\n      tags:\n        service: %s\n        protocol: %s\n%s",
			i, rnd.IntN(3), rnd.IntN(200), svc, proto, out)
	}
	for i := range 12 {
		files[fmt.Sprintf("dp-%d.yaml", i)] = &fstest.MapFile{Data: []byte(dataplane(i))}
	}
	// next loads files, keeping prev's values for what is the same (as the
	// daemon's file cache does).
	next := func(prev *schema.Set) *schema.Set {
		loaded := schematest.Load(t, files)
		if prev == nil {
			return loaded
		}
		out := *loaded
		out.Meshes, out.TrafficPermissions = prev.Meshes, prev.TrafficPermissions
		changed := map[string]bool{}
		d := schema.DiffSets(prev, loaded)
		for _, k := range append(d.Added, d.Changed...) {
			changed[k.Name] = true
		}
		out.Dataplanes = slices.Clone(loaded.Dataplanes)
		for i, dp := range out.Dataplanes {
			if old := prev.Dataplane(dp.Mesh, dp.Name); old != nil && !changed[dp.Name] {
				out.Dataplanes[i] = old
			}
		}
		return &out
	}
	b := NewBuilder(BuilderOptions{Keep: func(dp *schema.Dataplane) []Flavor {
		if strings.HasSuffix(dp.Name, "1") {
			return []Flavor{FlavorEnvoy}
		}
		return nil
	}})
	set := next(nil)
	tr, _, _, err := b.Build(context.Background(), set, schema.DiffSets(nil, set), nil)
	if err != nil {
		t.Fatal(err)
	}
	patched, updated := 0, 0
	for step := range 60 {
		i := rnd.IntN(14)
		name := fmt.Sprintf("dp-%d.yaml", i)
		switch f := files[name]; {
		case f == nil:
			files[name] = &fstest.MapFile{Data: []byte(dataplane(i))}
		case rnd.IntN(5) == 0:
			delete(files, name)
		case rnd.IntN(2) == 0: // move it
			text := string(f.Data)
			at := strings.Index(text, "address: ")
			end := at + strings.IndexByte(text[at:], '\n')
			files[name] = &fstest.MapFile{Data: []byte(text[:at] + fmt.Sprintf("address: 10.3.0.%d", step) + text[end:])}
		default:
			files[name] = &fstest.MapFile{Data: []byte(dataplane(i))}
		}
		prevSet, prevTr := set, tr
		set = next(prevSet)
		var stats BuildStats
		var failures []Failure
		tr, stats, failures, err = b.Build(context.Background(), set, schema.DiffSets(prevSet, set), prevTr)
		if err != nil || len(failures) > 0 {
			t.Fatalf("step %d: %v %v", step, failures, err)
		}
		patched += stats.Patched
		// An Index WithDataplanes made keeps the RBAC memo of the one
		// before; NewIndexFrom starts a new one.
		if tr.index.meshes["prod"].rbac == prevTr.index.meshes["prod"].rbac {
			updated++
		}
		fresh, _, _, err := NewBuilder(BuilderOptions{}).Build(context.Background(), set, schema.DiffSets(nil, set), nil)
		if err != nil {
			t.Fatal(err)
		}
		want := 0
		for _, n := range fresh.Nodes() {
			got := tr.Node(n.ID().String())
			if got == nil || !slices.Equal(got.hashes, n.hashes) {
				t.Fatalf("step %d: %s hashes %v, want %v", step, n.ID(), got.hashes, n.hashes)
			}
			for _, f := range Flavors {
				if p := got.Proxy(f); p != nil && p.Hash != n.Proxy(f).Hash {
					t.Fatalf("step %d: %s %s: hash %.12s, want %.12s", step, n.ID(), f, p.Hash, n.Proxy(f).Hash)
				}
			}
			if old := prevTr.Node(n.ID().String()); old == nil || !slices.Equal(old.hashes, n.hashes) {
				want++
			}
		}
		for _, old := range prevTr.Nodes() {
			if fresh.Node(old.ID().String()) == nil {
				want++
			}
		}
		if got := tr.Affected(prevTr); got != want {
			t.Fatalf("step %d: Affected %d, want %d", step, got, want)
		}
	}
	if patched == 0 || updated == 0 {
		t.Errorf("%d proxies patched, %d Index updates: the test does not cover both", patched, updated)
	}
}
