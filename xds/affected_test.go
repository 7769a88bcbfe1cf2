package xds

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/gitmesh/gitmesh/schema"
	"github.com/gitmesh/gitmesh/schema/schematest"
)

func TestAffected(t *testing.T) {
	set := schematest.Load(t, os.DirFS(filepath.Join("testdata", "mtls-permissions", policiesDir)))
	idx, err := NewIndex(set)
	if err != nil {
		t.Fatal(err)
	}
	all := []string{"prod.admin-1", "prod.db-1", "prod.frontend-1", "prod.ratings-1", "prod.reviews-1"}
	tests := []struct {
		name   string
		change Change
		want   []string
	}{
		{"nothing", Change{}, []string{}},
		{"permission to one service", Change{Permissions: []Ref{{"prod", "frontend-to-reviews"}}}, []string{"prod.reviews-1"}},
		{"permission with two rules", Change{Permissions: []Ref{{"prod", "data-access"}}}, []string{"prod.db-1", "prod.ratings-1"}},
		{"permission to '*' with a tag", Change{Permissions: []Ref{{"prod", "monitoring"}}}, []string{"prod.db-1"}},
		{"permission matching nothing", Change{Permissions: []Ref{{"prod", "ratings-to-reviews-v2"}}}, []string{}},
		{"unknown permission", Change{Permissions: []Ref{{"prod", "gone"}, {"other", "x"}}}, []string{}},
		{"dataplane and its consumers", Change{Dataplanes: []Ref{{"prod", "db-1"}}}, []string{"prod.db-1", "prod.frontend-1", "prod.reviews-1"}},
		{"service consumers", Change{Services: []Ref{{"prod", "ratings"}}}, []string{"prod.reviews-1"}},
		{"mesh", Change{Meshes: []string{"prod"}}, all},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := idx.Affected(tt.change); !slices.Equal(got, tt.want) {
				t.Errorf("Affected = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestAffectedIsSound edits one permission at a time and checks that every
// proxy whose translation changed is among those AffectedBetween names.
func TestAffectedIsSound(t *testing.T) {
	set := schematest.Load(t, os.DirFS(filepath.Join("testdata", "mtls-permissions", policiesDir)))
	prev, err := NewIndex(set)
	if err != nil {
		t.Fatal(err)
	}
	before := hashes(t, set)
	edits := map[string]func(*schema.TrafficPermission){
		"retarget": func(tp *schema.TrafficPermission) {
			tp.Rules = []schema.PermissionRule{{
				Sources:      tp.Rules[0].Sources,
				Destinations: []schema.Selector{{schema.TagService: "ratings"}},
			}}
		},
		"widen sources": func(tp *schema.TrafficPermission) {
			tp.Rules = []schema.PermissionRule{{
				Sources:      []schema.Selector{{schema.TagService: "*"}},
				Destinations: tp.Rules[0].Destinations,
			}}
		},
		"remove": nil,
	}
	for _, tp := range set.PermissionsIn("prod") {
		for how, edit := range edits {
			next := editPermission(set, tp.Name, edit)
			nextIdx, err := NewIndex(next)
			if err != nil {
				t.Fatal(err)
			}
			affected := AffectedBetween(prev, nextIdx, Change{Permissions: []Ref{{"prod", tp.Name}}})
			for node, h := range hashes(t, next) {
				if h != before[node] && !slices.Contains(affected, node) {
					t.Errorf("%s %s: %s changed but is not in %v", how, tp.Name, node, affected)
				}
			}
		}
	}
}

func hashes(t *testing.T, set *schema.Set) map[string]string {
	t.Helper()
	out := make(map[string]string)
	for _, p := range translateAll(t, set, FlavorEnvoy) {
		out[p.NodeID] = p.Hash
	}
	return out
}

// editPermission copies set with one permission edited, or removed when
// edit is nil.
func editPermission(set *schema.Set, name string, edit func(*schema.TrafficPermission)) *schema.Set {
	out := *set
	out.TrafficPermissions = nil
	for _, tp := range set.TrafficPermissions {
		if tp.Name == name {
			if edit == nil {
				continue
			}
			c := *tp
			edit(&c)
			tp = &c
		}
		out.TrafficPermissions = append(out.TrafficPermissions, tp)
	}
	return &out
}
