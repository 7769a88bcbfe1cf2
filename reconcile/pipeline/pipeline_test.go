package pipeline

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/gitmesh/gitmesh/schema"
	"github.com/gitmesh/gitmesh/schema/schematest"
	"github.com/gitmesh/gitmesh/xds"
)

func tree(files map[string]string) []schema.Tree {
	return []schema.Tree{{FS: schematest.Files(files)}}
}

const (
	mesh = "type: Mesh\nname: default\nmtls:\n  enabled: true\n  ca: {builtin: {}}\n"
	web  = "type: Dataplane\nname: web-01\nnetworking:\n  address: 10.0.0.1\n  inbound:\n    - port: 10080\n      servicePort: 8080\n      tags: {service: web}\n  outbound:\n    - port: 20001\n      service: backend\n"
	be   = "type: Dataplane\nname: backend-01\nnetworking:\n  address: 10.0.0.2\n  inbound:\n    - port: 10081\n      servicePort: 8081\n      tags: {service: backend}\n"
	perm = "type: TrafficPermission\nname: web-to-backend\nsources: [{match: {service: web}}]\ndestinations: [{match: {service: backend}}]\n"
)

func TestRunTranslatesEveryFlavour(t *testing.T) {
	p, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	res, err := p.Run(context.Background(), []schema.Tree{{FS: os.DirFS("../../policies")}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Valid() || res.Set == nil || res.Translation == nil {
		t.Fatalf("the bundled policies: %+v", res.Findings)
	}
	if len(res.Diff.Added) != res.Set.Len() || res.Files != 6 {
		t.Errorf("diff %+v, files %d: want everything added from nothing, 6 files", res.Diff, res.Files)
	}
	for _, dp := range res.Set.Dataplanes {
		for _, f := range xds.Flavors {
			if res.Translation.Proxy(dp.NodeID().String(), f) == nil {
				t.Errorf("%s has no %s translation", dp.NodeID(), f)
			}
		}
	}
}

func TestRunFindings(t *testing.T) {
	p, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	bad := strings.Replace(web, "servicePort", "servicePrt", 1)
	res, err := p.Run(context.Background(), tree(map[string]string{"mesh.yaml": mesh, "web.yaml": bad, "backend.yaml": be}), nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Valid() || res.Set != nil || res.Translation != nil {
		t.Fatalf("a typo is valid: %+v", res)
	}
	if f := res.Findings[0]; f.File != "web.yaml" || f.Code != schema.CodeUnknownField || f.Line != 7 {
		t.Errorf("finding %+v", f)
	}
	if _, err := p.Run(context.Background(), []schema.Tree{{FS: os.DirFS("/nonexistent")}}, nil); err == nil {
		t.Error("a missing root: no error")
	}
}

// TestRunIncremental: with the cache and a prev Result, a change translates
// what it reaches, and Diff is against prev.
func TestRunIncremental(t *testing.T) {
	p, err := New(Options{Cache: true})
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{"mesh.yaml": mesh, "web.yaml": web, "backend.yaml": be, "perm.yaml": perm}
	first, err := p.Run(context.Background(), tree(files), nil)
	if err != nil || !first.Valid() {
		t.Fatalf("%v %+v", err, first)
	}
	delete(files, "perm.yaml")
	next, err := p.Run(context.Background(), tree(files), first)
	if err != nil || !next.Valid() {
		t.Fatalf("%v %+v", err, next)
	}
	if len(next.Diff.Removed) != 1 || next.Diff.Removed[0].Name != "web-to-backend" || len(next.Diff.Added)+len(next.Diff.Changed) != 0 {
		t.Errorf("diff %+v", next.Diff)
	}
	if next.Stats.Translated != 1 || next.Stats.Reused != 1 {
		t.Errorf("stats %+v: want backend-01 alone translated again", next.Stats)
	}
	if next.Translation.Proxy("default.web-01", xds.FlavorGRPC) != first.Translation.Proxy("default.web-01", xds.FlavorGRPC) {
		t.Error("web-01 was translated again")
	}
}

func TestTranslationFinding(t *testing.T) {
	dp := &schema.Dataplane{Mesh: "default", Name: "web-01", Origin: schema.Origin{File: "dp.yaml", Document: 2, Line: 7, Column: 1}}
	f := translationFinding(xds.Failure{Dataplane: dp, Flavor: xds.FlavorGRPC, Err: errors.New("listener x: bad")})
	if f.Code != schema.CodeTranslationFailed || f.File != "dp.yaml" || f.Document != 2 || f.Line != 7 || !f.IsError() ||
		f.Message != "dataplane default.web-01 does not translate for grpc: listener x: bad" || !strings.Contains(f.Hint, "gRPC") {
		t.Errorf("finding %+v", f)
	}
}

// TestRunVerdictOnly: the gate's pipeline checks every proxy and keeps none.
func TestRunVerdictOnly(t *testing.T) {
	p, err := New(Options{VerdictOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	res, err := p.Run(context.Background(), []schema.Tree{{FS: os.DirFS("../../policies")}}, nil)
	if err != nil || !res.Valid() || res.Translation == nil || res.Stats.Translated != len(res.Set.Dataplanes) {
		t.Fatalf("%v %+v", err, res)
	}
	for _, n := range res.Translation.Nodes() {
		for _, f := range xds.Flavors {
			if n.Proxy(f) != nil {
				t.Errorf("%s kept its %s proxy", n.ID(), f)
			}
		}
	}
}
