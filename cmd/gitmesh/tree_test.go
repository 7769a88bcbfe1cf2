package main

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gitmesh/gitmesh/reconcile"
	"github.com/gitmesh/gitmesh/reconcile/gittest"
	"github.com/gitmesh/gitmesh/schema"
	"github.com/gitmesh/gitmesh/schema/schematest"
	"github.com/spf13/pflag"
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

// TestGateAndDaemonAgree runs the pull-request gate (gitmesh validate) and
// the daemon (gitmesh serve) on the same commits with the same limits: the
// daemon's verdict and recorded findings are the gate's, finding for
// finding.
func TestGateAndDaemonAgree(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		files map[string]string
		flags []string // limit flags given to both
		valid bool
	}{
		{name: "bundled policies", files: policyFiles(t), valid: true},
		{name: "a field typo", files: withFile(policyFiles(t), "policies/dataplanes/web.yaml", brokenDataplane)},
		{name: "two resources of one name and an unknown service", files: withFile(policyFiles(t), "policies/more.yaml",
			"type: Dataplane\nname: redis-01\nnetworking:\n  address: 10.0.0.99\n  inbound:\n    - port: 1\n      tags: {service: x}\n"+
				"  outbound:\n    - port: 2\n      service: nowhere\n")},
		{name: "a file over the size limit", files: policyFiles(t), flags: []string{"--max-file-size=200"}},
		{name: "no policy file", files: map[string]string{"policies/README.md": "nothing here\n"}},
		{name: "a dataplane that does not translate", files: withFile(policyFiles(t), "policies/odd.yaml", untranslatable)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := gittest.Init(t)
			gittest.Commit(t, dir, tc.name, tc.files)

			code, out, errb := gitmesh(t, append([]string{"validate", "--repo", dir, "--path", "policies", "--format", "json"}, tc.flags...)...)
			var gate struct {
				Valid            bool
				Errors, Warnings []validateFinding
			}
			empty := tc.files["policies/README.md"] != "" && len(tc.files) == 1
			switch {
			case empty:
				if code != exitUsage || !strings.Contains(errb, "no policy file") {
					t.Fatalf("validate of a tree without policy: exit %d, %s", code, errb)
				}
			case json.Unmarshal([]byte(out), &gate) != nil:
				t.Fatalf("validate: exit %d, %s%s", code, out, errb)
			case gate.Valid != tc.valid || (code == exitOK) != tc.valid:
				t.Fatalf("validate: exit %d, valid %v; want valid %v\n%s", code, gate.Valid, tc.valid, out)
			}

			o := serveOptions{repo: dir, path: "policies", stateDir: t.TempDir()}
			fs := pflag.NewFlagSet("limits", pflag.ContinueOnError)
			o.limits.bind(fs)
			if err := fs.Parse(tc.flags); err != nil {
				t.Fatal(err)
			}
			s := startServe(t, o)
			st := s.waitStatus(t, "a verdict", func(st reconcile.Status) bool {
				return st.HeadVerdict != "" && st.HeadVerdict != reconcile.VerdictPending
			})
			want := reconcile.VerdictInvalid
			if tc.valid {
				want = reconcile.VerdictPublished
			}
			if st.HeadVerdict != want {
				t.Fatalf("daemon verdict %s, want %s (the gate's)", st.HeadVerdict, want)
			}
			rec := s.app.daemon.History()[0]
			if empty {
				if !strings.Contains(rec.Error, "no policy file") {
					t.Errorf("daemon record %+v, want it to say there is no policy file", rec)
				}
				return
			}
			if rec.Errors != len(gate.Errors) || rec.Warnings != len(gate.Warnings) {
				t.Fatalf("daemon: %d errors, %d warnings; gate: %d, %d", rec.Errors, rec.Warnings, len(gate.Errors), len(gate.Warnings))
			}
			// The daemon names files from the repository's root, the gate
			// (text and JSON) from --path.
			var gateSays, daemonSays []string
			for _, f := range append(gate.Errors, gate.Warnings...) {
				gateSays = append(gateSays, fmt.Sprintf("%s:%d:%d %s %s", f.File, f.Line, f.Column, f.Code, f.Message))
			}
			for _, f := range rec.Findings {
				daemonSays = append(daemonSays, strings.ReplaceAll(
					fmt.Sprintf("%s:%d:%d %s %s", f.File, f.Line, f.Column, f.Code, f.Message), "policies/", ""))
			}
			slices.Sort(gateSays)
			slices.Sort(daemonSays)
			if !slices.Equal(gateSays, daemonSays) {
				t.Errorf("findings differ\ngate:\n  %s\ndaemon:\n  %s", strings.Join(gateSays, "\n  "), strings.Join(daemonSays, "\n  "))
			}
		})
	}
}

// untranslatable does not translate (see schematest.Untranslatable).
const untranslatable = schematest.Untranslatable

// TestTranslationFailureIsInvalidOnce: a commit that passes every rule but
// does not translate is invalid, with a translation-error at the dataplane
// that fails; the daemon records it once, keeps serving what it served,
// settles the head and never tries the commit again.
func TestTranslationFailureIsInvalidOnce(t *testing.T) {
	t.Parallel()
	dir := gittest.Init(t)
	good := gittest.Commit(t, dir, "Initial policies", policyFiles(t))
	s := startServe(t, serveOptions{repo: dir, path: "policies", stateDir: t.TempDir(), interval: 20 * time.Millisecond})
	s.waitStatus(t, "the first commit published", func(st reconcile.Status) bool {
		return st.Published != nil && string(st.Published.Hash) == good
	})

	bad := gittest.Commit(t, dir, "Add web-02, calling localhost:8080", map[string]string{"policies/odd.yaml": untranslatable})
	code, out, _ := gitmesh(t, "validate", "--repo", dir, "--path", "policies")
	want := "odd.yaml:12:1: error[translation-error]: dataplane default.web-02 does not translate for envoy"
	if code != exitFailed || !strings.Contains(out, want) {
		t.Fatalf("validate: exit %d, want 1 and %q\n%s", code, want, out)
	}
	st := s.waitStatus(t, "a verdict on the bad commit", func(st reconcile.Status) bool {
		return st.Head != nil && string(st.Head.Hash) == bad && st.HeadVerdict != reconcile.VerdictPending
	})
	if st.HeadVerdict != reconcile.VerdictInvalid || st.Published == nil || string(st.Published.Hash) != good {
		t.Fatalf("status %+v, want the head invalid and %s still published", st, good)
	}

	// Let the daemon poll a few times: the head does not move, and the
	// invalid commit is not judged again.
	attempts := func(result string) int {
		g := regexp.MustCompile(`(?m)^gitmesh_sync_attempts_total\{result="` + result + `"\} (\d+)$`).FindStringSubmatch(s.metrics(t))
		if g == nil {
			return 0
		}
		n, _ := strconv.Atoi(g[1])
		return n
	}
	before := attempts(reconcile.ResultUnchanged)
	for deadline := time.Now().Add(10 * time.Second); attempts(reconcile.ResultUnchanged) < before+3; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the daemon does not poll")
		}
	}
	if n, f := attempts(reconcile.ResultInvalid), attempts(reconcile.ResultFailed); n != 1 || f != 0 {
		t.Errorf("sync attempts: %d invalid, %d failed; want 1 and 0", n, f)
	}
	hist := s.app.daemon.History()
	if len(hist) != 2 || hist[0].Verdict != reconcile.VerdictInvalid || hist[0].Errors != 1 || len(hist[0].Findings) != 1 ||
		hist[0].Findings[0].Code != schema.CodeTranslationFailed || hist[0].Findings[0].File != "policies/odd.yaml" ||
		hist[0].Findings[0].Line != 12 {
		t.Fatalf("history %+v, want one invalid record with the translation-error at policies/odd.yaml:12", hist)
	}

	// A fix is published as any commit is.
	fixed := gittest.Commit(t, dir, "Call backend from web-02", map[string]string{"policies/odd.yaml": strings.Replace(untranslatable,
		"- port: 20002\n      service: \"localhost:8080\"", "- port: 20002\n      service: backend", 1)})
	s.waitStatus(t, "the fix published", func(st reconcile.Status) bool {
		return st.Published != nil && string(st.Published.Hash) == fixed
	})
}

// withFile is files with one more (or another) file.
func withFile(files map[string]string, name, content string) map[string]string {
	files[name] = content
	return files
}
