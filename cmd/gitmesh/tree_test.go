package main

import (
	"strings"
	"testing"

	"github.com/gitmesh/gitmesh/schema"
)

func TestRenderFromGitRevision(t *testing.T) {
	dir := t.TempDir()
	git(t, dir, "init", "-q", "-b", "main")
	writeFiles(t, dir, map[string]string{
		"policies/dp.yaml": "type: Dataplane\nname: web-01\nnetworking:\n  address: 10.0.0.1\n  inbound:\n    - port: 10001\n      servicePort: 8080\n      tags: {service: web}\n",
	})
	git(t, dir, "add", ".")
	git(t, dir, "commit", "-q", "-m", "web on 8080")
	writeFiles(t, dir, map[string]string{
		"policies/dp.yaml": "type: Dataplane\nname: web-01\nnetworking:\n  address: 10.0.0.1\n  inbound:\n    - port: 10001\n      servicePort: 9090\n      tags: {service: web}\n",
	})
	git(t, dir, "commit", "-q", "-am", "web on 9090")

	for rev, want := range map[string]string{"HEAD~1": "localhost:8080", "main": "localhost:9090"} {
		code, out, errb := gitmesh(t, "render", "--dataplane", "default/web-01", "--repo", dir, "--rev", rev, "--path", "policies")
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("render at %s: exit %d, want output naming %s\n%s%s", rev, code, want, out, errb)
		}
	}
}

// TestTranslationFindings checks that what the translator rejects is reported
// as a finding at the dataplane that produced it. The loader never yields such
// a set, so the test builds one by hand.
func TestTranslationFindings(t *testing.T) {
	dp := &schema.Dataplane{Mesh: "default", Name: "web-01",
		Inbound: []schema.Inbound{{Address: "", Port: 10001, ServicePort: 8080, Tags: map[string]string{"service": "web"}}},
		Origin:  schema.Origin{File: "dp.yaml", Document: 2, Line: 7, Column: 1}}
	set := &schema.Set{Meshes: []*schema.Mesh{{Name: "default"}}, Dataplanes: []*schema.Dataplane{dp}}
	fs := translationFindings(set)
	if len(fs) != 1 {
		t.Fatalf("findings = %+v", fs)
	}
	f := fs[0]
	if f.Code != schema.CodeTranslationFailed || f.File != "dp.yaml" || f.Document != 2 || f.Line != 7 || !strings.Contains(f.Message, "default.web-01") {
		t.Errorf("finding = %+v", f)
	}

	if fs := translationFindings(loadPolicies(t, "../../policies")); len(fs) != 0 {
		t.Errorf("the bundled policies do not translate: %+v", fs)
	}
}

func loadPolicies(t *testing.T, dir string) *schema.Set {
	t.Helper()
	trees, release, err := (&treeFlags{}).trees([]string{dir}, false)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	l, err := schema.NewLoader(schema.Options{})
	if err != nil {
		t.Fatal(err)
	}
	res, err := l.LoadTrees(trees)
	if err != nil || res.Set == nil {
		t.Fatalf("load %s: %v %+v", dir, err, res)
	}
	return res.Set
}
