package xds

import (
	"bytes"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/gitmesh/gitmesh/schema"
	"github.com/gitmesh/gitmesh/schema/schematest"
)

// TestDeterministic translates each golden case several ways that must not
// matter: twice, from a Set whose unordered parts are shuffled, and from
// the same documents in other files and another order.
func TestDeterministic(t *testing.T) {
	for _, c := range goldenCases(t) {
		t.Run(c.name, func(t *testing.T) {
			fsys := os.DirFS(filepath.Join(c.dir, policiesDir))
			set := schematest.Load(t, fsys)
			first := translateAll(t, set, c.flavor)
			assertSameProxies(t, "second run", first, translateAll(t, set, c.flavor))
			rng := rand.New(rand.NewPCG(1, 2))
			for i := range 5 {
				assertSameProxies(t, "shuffled set", first, translateAll(t, shuffleSet(set, rng), c.flavor))
				if i == 0 {
					assertSameProxies(t, "documents reordered", first, translateAll(t, schematest.Load(t, reorderDocuments(t, fsys)), c.flavor))
				}
			}
		})
	}
}

func translateAll(t *testing.T, set *schema.Set, flavor Flavor) []*Proxy {
	t.Helper()
	ps, err := Translate(set, Options{Flavor: flavor})
	if err != nil {
		t.Fatal(err)
	}
	return ps
}

// assertSameProxies requires byte-identical resources and equal hashes.
func assertSameProxies(t *testing.T, how string, want, got []*Proxy) {
	t.Helper()
	if len(want) != len(got) {
		t.Fatalf("%s: %d proxies, want %d", how, len(got), len(want))
	}
	for i, w := range want {
		g := got[i]
		if w.NodeID != g.NodeID || w.Hash != g.Hash || !slices.Equal(w.Identities, g.Identities) {
			t.Errorf("%s: proxy %d is %s hash %s ids %v, want %s hash %s ids %v",
				how, i, g.NodeID, g.Hash, g.Identities, w.NodeID, w.Hash, w.Identities)
		}
		for _, typ := range resourceTypes() {
			if len(w.Resources[typ]) != len(g.Resources[typ]) {
				t.Errorf("%s: %s: %d %s, want %d", how, w.NodeID, len(g.Resources[typ]), typeName(typ), len(w.Resources[typ]))
				continue
			}
			for j, r := range w.Resources[typ] {
				wb, err := deterministic().Marshal(r)
				if err != nil {
					t.Fatal(err)
				}
				gb, err := deterministic().Marshal(g.Resources[typ][j])
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(wb, gb) {
					t.Errorf("%s: %s: %s %d differs", how, w.NodeID, typeName(typ), j)
				}
			}
		}
	}
}

// shuffleSet copies set, shuffling what carries no meaning: the order of
// dataplanes and permissions within a mesh (the Set's lookups by name are
// not used by translation), of inbounds and outbounds, and of sources.
func shuffleSet(set *schema.Set, rng *rand.Rand) *schema.Set {
	out := &schema.Set{Meshes: set.Meshes}
	for _, m := range set.Meshes {
		dps := slices.Clone(set.DataplanesIn(m.Name))
		rng.Shuffle(len(dps), func(i, j int) { dps[i], dps[j] = dps[j], dps[i] })
		for _, dp := range dps {
			c := *dp
			c.Inbound = slices.Clone(dp.Inbound)
			c.Outbound = slices.Clone(dp.Outbound)
			rng.Shuffle(len(c.Inbound), func(i, j int) { c.Inbound[i], c.Inbound[j] = c.Inbound[j], c.Inbound[i] })
			rng.Shuffle(len(c.Outbound), func(i, j int) { c.Outbound[i], c.Outbound[j] = c.Outbound[j], c.Outbound[i] })
			out.Dataplanes = append(out.Dataplanes, &c)
		}
		tps := slices.Clone(set.PermissionsIn(m.Name))
		rng.Shuffle(len(tps), func(i, j int) { tps[i], tps[j] = tps[j], tps[i] })
		for _, tp := range tps {
			c := *tp
			c.Rules = slices.Clone(tp.Rules)
			for i := range c.Rules {
				src := slices.Clone(c.Rules[i].Sources)
				rng.Shuffle(len(src), func(i, j int) { src[i], src[j] = src[j], src[i] })
				c.Rules[i].Sources = src
			}
			out.TrafficPermissions = append(out.TrafficPermissions, &c)
		}
		mtps := slices.Clone(set.MeshTrafficPermissionsIn(m.Name))
		rng.Shuffle(len(mtps), func(i, j int) { mtps[i], mtps[j] = mtps[j], mtps[i] })
		out.MeshTrafficPermissions = append(out.MeshTrafficPermissions, mtps...)
		hrs := slices.Clone(set.MeshHTTPRoutesIn(m.Name))
		rng.Shuffle(len(hrs), func(i, j int) { hrs[i], hrs[j] = hrs[j], hrs[i] })
		out.MeshHTTPRoutes = append(out.MeshHTTPRoutes, hrs...)
		trs := slices.Clone(set.MeshTCPRoutesIn(m.Name))
		rng.Shuffle(len(trs), func(i, j int) { trs[i], trs[j] = trs[j], trs[i] })
		out.MeshTCPRoutes = append(out.MeshTCPRoutes, trs...)
	}
	for _, typ := range schema.ConfKinds() {
		for _, m := range set.Meshes {
			ps := slices.Clone(set.PoliciesOfType(typ, m.Name))
			rng.Shuffle(len(ps), func(i, j int) { ps[i], ps[j] = ps[j], ps[i] })
			out.Policies = append(out.Policies, ps...)
		}
	}
	return out
}

// reorderDocuments puts every document of a policy tree into other files,
// in reverse order.
func reorderDocuments(t *testing.T, fsys fs.FS) fs.FS {
	t.Helper()
	var docs []string
	err := fs.WalkDir(fsys, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(fsys, path)
		docs = append(docs, strings.Split(string(b), "\n---\n")...)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Reverse(docs)
	out := fstest.MapFS{}
	for i, doc := range docs {
		name := string(rune('z'-i)) + "/policy.yml"
		out[name] = &fstest.MapFile{Data: []byte(doc + "\n")}
	}
	return out
}
