package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const brokenDataplane = `type: Dataplane
name: web-01
networking:
  address: 10.0.0.1
  inbound:
    - port: 10001
      servicePrt: 8080
      tags:
        service: web
`

func TestValidateBundledPolicies(t *testing.T) {
	code, out, errb := gitmesh(t, "validate", "../../policies")
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errb)
	}
	if !strings.HasPrefix(out, "valid: 6 files, 7 resources, 0 errors, 0 warnings") {
		t.Errorf("output: %q", out)
	}
}

func TestValidateFormats(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"ok/mesh.yaml": "type: Mesh\nname: default\n", "ok/dp.yaml": brokenDataplane})
	arg := filepath.Join(dir, "ok")

	t.Run("text", func(t *testing.T) {
		code, out, _ := gitmesh(t, "validate", arg)
		if code != 1 {
			t.Errorf("exit %d, want 1", code)
		}
		for _, want := range []string{
			"dp.yaml:7:7: error[unknown-field]: unknown field \"servicePrt\" in networking.inbound[0]",
			"document 1, at /networking/inbound/0/servicePrt",
			"hint: did you mean \"servicePort\"?",
			"invalid: 2 files, 2 resources, 1 error, 0 warnings",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
	})
	t.Run("json", func(t *testing.T) {
		code, out, _ := gitmesh(t, "validate", "--format", "json", arg)
		if code != 1 {
			t.Errorf("exit %d, want 1", code)
		}
		var got struct {
			Valid     bool
			Files     int
			Resources int
			Errors    []map[string]any
			Warnings  []map[string]any
		}
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if got.Valid || got.Files != 2 || got.Resources != 2 || len(got.Errors) != 1 || got.Warnings == nil {
			t.Fatalf("got %+v", got)
		}
		want := map[string]any{"file": "dp.yaml", "document": 1.0, "line": 7.0, "column": 7.0,
			"pointer": "/networking/inbound/0/servicePrt", "code": "unknown-field"}
		for k, v := range want {
			if got.Errors[0][k] != v {
				t.Errorf("%s = %v, want %v", k, got.Errors[0][k], v)
			}
		}
	})
	t.Run("github", func(t *testing.T) {
		code, out, _ := gitmesh(t, "validate", "--format=github", arg)
		if code != 1 {
			t.Errorf("exit %d, want 1", code)
		}
		want := "::error file=" + filepath.ToSlash(arg) + "/dp.yaml,line=7,col=7,title=unknown-field::unknown field \"servicePrt\" in networking.inbound[0] (did you mean \"servicePort\"?)\n"
		if out != want {
			t.Errorf("got  %q\nwant %q", out, want)
		}
	})
	t.Run("sarif", func(t *testing.T) {
		code, out, _ := gitmesh(t, "validate", "-o", "sarif", arg)
		if code != 1 {
			t.Errorf("exit %d, want 1", code)
		}
		var doc struct {
			Version string
			Runs    []struct {
				Results []struct {
					RuleID    string
					Level     string
					Locations []struct {
						PhysicalLocation struct {
							ArtifactLocation struct{ URI string }
							Region           struct{ StartLine, StartColumn int }
						}
					}
				}
			}
		}
		if err := json.Unmarshal([]byte(out), &doc); err != nil {
			t.Fatal(err)
		}
		r := doc.Runs[0].Results[0]
		loc := r.Locations[0].PhysicalLocation
		if doc.Version != "2.1.0" || r.RuleID != "unknown-field" || r.Level != "error" ||
			loc.ArtifactLocation.URI != filepath.ToSlash(arg)+"/dp.yaml" || loc.Region.StartLine != 7 || loc.Region.StartColumn != 7 {
			t.Errorf("got %+v", doc)
		}
	})
}

func TestValidateWarningsExitZero(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"tp.yaml": "type: TrafficPermission\nname: all\nsources: [{match: {service: '*'}}]\ndestinations: [{match: {service: '*'}}]\n"})
	code, out, _ := gitmesh(t, "validate", dir)
	if code != 0 || !strings.Contains(out, "warning[no-effect]") {
		t.Errorf("exit %d\n%s", code, out)
	}
}

func TestValidateUsageAndIOErrors(t *testing.T) {
	for name, args := range map[string][]string{
		"unknown format":  {"validate", "--format", "xml", "."},
		"unknown flag":    {"validate", "--nope"},
		"missing path":    {"validate", filepath.Join(t.TempDir(), "missing")},
		"repo with paths": {"validate", "--repo", ".", "x"},
		"not a repo":      {"validate", "--repo", t.TempDir()},
		"path, no repo":   {"validate", "--path", "policies", "."},
		"rev, no repo":    {"validate", "--rev", "main", "."},
	} {
		t.Run(name, func(t *testing.T) {
			code, _, errb := gitmesh(t, args...)
			if code != 2 || !strings.HasPrefix(errb, "gitmesh: ") {
				t.Errorf("exit %d, stderr %q; want 2 and a message", code, errb)
			}
		})
	}
}

// TestValidateEmptyTree: a tree without a policy file is a usage error that
// says so, unless --allow-empty.
func TestValidateEmptyTree(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"README.md": "no policy here\n"})
	if code, out, errb := gitmesh(t, "validate", dir); code != exitUsage || !strings.Contains(errb, "no policy file") {
		t.Errorf("exit %d, want 2 and a message saying there is no policy file\n%s%s", code, out, errb)
	}
	if code, out, errb := gitmesh(t, "validate", "--allow-empty", dir); code != exitOK || !strings.Contains(out, "0 resources") {
		t.Errorf("--allow-empty: exit %d, want 0\n%s%s", code, out, errb)
	}
}

func TestValidateFileArguments(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"a/dp.yaml": brokenDataplane, "b/mesh.yaml": "type: Mesh\nname: default\n"})
	code, out, _ := gitmesh(t, "validate", "--format", "json", filepath.Join(dir, "a", "dp.yaml"), filepath.Join(dir, "b"))
	if code != 1 {
		t.Fatalf("exit %d\n%s", code, out)
	}
	if !strings.Contains(out, `"file": "`+filepath.ToSlash(filepath.Join(dir, "a", "dp.yaml"))+`"`) || !strings.Contains(out, `"files": 2`) {
		t.Errorf("output:\n%s", out)
	}
}

func TestValidateGitRevision(t *testing.T) {
	dir := t.TempDir()
	git(t, dir, "init", "-q", "-b", "main")
	writeFiles(t, dir, map[string]string{"README.md": "not policy\n", "mesh/mesh.yaml": "type: Mesh\nname: default\n"})
	git(t, dir, "add", ".")
	git(t, dir, "commit", "-q", "-m", "good")
	good := git(t, dir, "rev-parse", "HEAD")
	writeFiles(t, dir, map[string]string{"mesh/dp.yaml": brokenDataplane})
	if err := os.Symlink("../../outside.yaml", filepath.Join(dir, "mesh", "escape.yaml")); err != nil {
		t.Fatal(err)
	}
	git(t, dir, "add", ".")
	git(t, dir, "commit", "-q", "-m", "bad")
	// The worktree now differs from both commits: validate must read objects.
	writeFiles(t, dir, map[string]string{"mesh/mesh.yaml": "garbage: [\n"})

	if code, out, errb := gitmesh(t, "validate", "--repo", dir, "--rev", good, "--path", "mesh"); code != 0 {
		t.Errorf("good commit: exit %d\n%s%s", code, out, errb)
	}
	code, out, _ := gitmesh(t, "validate", "--repo", dir, "--rev", "main", "--path", "mesh", "--format", "json")
	if code != 1 {
		t.Fatalf("bad commit: exit %d\n%s", code, out)
	}
	for _, want := range []string{`"file": "dp.yaml"`, `"line": 7`, `"code": "unknown-field"`, `"file": "escape.yaml"`, `"code": "symlink-escape"`} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %s:\n%s", want, out)
		}
	}
	code, out, _ = gitmesh(t, "validate", "--repo", dir, "--rev", "HEAD~1", "--path", "mesh", "--format", "github")
	if code != 0 || out != "" {
		t.Errorf("HEAD~1: exit %d\n%s", code, out)
	}
	code, out, _ = gitmesh(t, "validate", "--repo", dir, "--rev", "main", "--path", "mesh", "--format", "github")
	if code != 1 || !strings.Contains(out, "::error file=mesh/dp.yaml,line=7,col=7,title=unknown-field::") {
		t.Errorf("github paths are not repository-relative: exit %d\n%s", code, out)
	}
	if code, _, errb := gitmesh(t, "validate", "--repo", dir, "--rev", "no-such-branch"); code != 2 || !strings.Contains(errb, "unknown revision") {
		t.Errorf("unknown revision: exit %d %q", code, errb)
	}
	if code, _, errb := gitmesh(t, "validate", "--repo", dir, "--path", "nope"); code != 2 || !strings.Contains(errb, "no directory") {
		t.Errorf("missing path: exit %d %q", code, errb)
	}
}
