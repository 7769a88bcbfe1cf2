package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"

	"github.com/gitmesh/gitmesh/reconcile/gittest"
	"github.com/gitmesh/gitmesh/schema/schematest"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// placeholder is what a flag's usage may put in backquotes: pflag prints
// the backquoted word as the flag's value name (--state-dir DIR).
var placeholder = regexp.MustCompile("`[A-Z][A-Z_]*`")

// TestHelpTexts checks every command's help: no flag usage puts anything but
// a placeholder in backquotes (pflag would print it as the value name, as in
// "--xds-auth gitmesh token issue"), and the examples name dataplanes the
// bundled policy repositories have.
func TestHelpTexts(t *testing.T) {
	known := map[string]bool{}
	for _, dir := range []string{"../../policies", "../../examples/bookinfo/policies"} {
		for _, dp := range schematest.Load(t, os.DirFS(dir)).Dataplanes {
			known[dp.NodeID().Ref()] = true
		}
	}
	dataplane := regexp.MustCompile(`--dataplane ([a-z0-9_.-]+/[a-z0-9_.-]+)`)
	var walk func(*cobra.Command)
	walk = func(c *cobra.Command) {
		c.Flags().VisitAll(func(f *pflag.Flag) {
			if rest := placeholder.ReplaceAllString(f.Usage, ""); strings.Contains(rest, "`") {
				t.Errorf("%s --%s: usage %q puts more than a placeholder in backquotes", c.CommandPath(), f.Name, f.Usage)
			}
		})
		for _, m := range dataplane.FindAllStringSubmatch(c.Example, -1) {
			if !known[m[1]] {
				t.Errorf("%s: the example names %s, which no bundled policy declares", c.CommandPath(), m[1])
			}
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(newRootCmd())
}

// TestHistoryHelpListsEveryVerdict: gitmesh history --help explains each
// verdict a record can have.
func TestHistoryHelpListsEveryVerdict(t *testing.T) {
	code, out, _ := gitmesh(t, "history", "--help")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, v := range []string{"published", "rejected", "invalid", "held", "unverified", "failed"} {
		if !regexp.MustCompile(`(?m)^\s+` + v + `\s`).MatchString(out) {
			t.Errorf("history --help does not explain %q:\n%s", v, out)
		}
	}
}

func TestVersion(t *testing.T) {
	code, out, errb := gitmesh(t, "version")
	if code != 0 || !strings.HasPrefix(out, "gitmesh ") || !strings.Contains(out, runtime.Version()) {
		t.Errorf("version: exit %d, %q %q", code, out, errb)
	}
	if code, flag, _ := gitmesh(t, "--version"); code != 0 || flag != out {
		t.Errorf("--version printed %q, want what version prints, %q", flag, out)
	}
	code, out, _ = gitmesh(t, "version", "--format", "json")
	var v buildVersion
	if err := json.Unmarshal([]byte(out), &v); code != 0 || err != nil || v.Go != runtime.Version() || v.Version == "" {
		t.Errorf("version --format json: exit %d, %v, %+v", code, err, v)
	}
	if code, _, _ := gitmesh(t, "version", "--format", "xml"); code != exitUsage {
		t.Errorf("an unknown format: exit %d, want %d", code, exitUsage)
	}
}

// TestServeHelpRepoWebURL: serve --help documents --repo-web-url, and a bad
// template stops serve before it touches anything, saying what is wrong.
func TestServeHelpRepoWebURL(t *testing.T) {
	code, out, _ := gitmesh(t, "serve", "--help")
	for _, want := range []string{"--repo-web-url TEMPLATE", "{commit}, {path} and optionally {line}",
		"https://github.com/org/repo/blob/{commit}/{path}#L{line}", "https://gitlab.com/org/repo/-/blob/{commit}/{path}#L{line}"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("serve --help (exit %d) does not show %q:\n%s", code, want, out)
		}
	}
	repo := gittest.Init(t)
	for bad, want := range map[string]string{
		"https://github.com/org/repo/blob/{commit}/{file}": "unknown placeholder {file}",
		"https://github.com/org/repo/commit/{commit}":      "no {path}",
		"github.com/org/repo/blob/{commit}/{path}":         "absolute http:// or https:// URL",
		"javascript:alert(1)//{commit}/{path}":             "absolute http:// or https:// URL",
	} {
		state := filepath.Join(t.TempDir(), "state")
		code, _, errb := gitmesh(t, "serve", "--repo", repo, "--state-dir", state, "--repo-web-url", bad,
			"--api-address", "127.0.0.1:0", "--xds-address", "127.0.0.1:0")
		if code != exitUsage || !strings.Contains(errb, "--repo-web-url") || !strings.Contains(errb, want) {
			t.Errorf("--repo-web-url %q: exit %d, %q; want %d and %q", bad, code, errb, exitUsage, want)
		}
		if _, err := os.Stat(state); err == nil {
			t.Errorf("--repo-web-url %q: the state directory was made", bad)
		}
	}
}
