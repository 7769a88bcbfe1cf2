package main

import (
	"fmt"
	"strings"
	"testing"
)

// TestValidateRepoLimits checks that validate --repo honours the loader's
// limits on files per tree and directory depth.
func TestValidateRepoLimits(t *testing.T) {
	dir := t.TempDir()
	git(t, dir, "init", "-q", "-b", "main")
	files := map[string]string{"mesh/a/b/mesh.yaml": "type: Mesh\nname: default\n"}
	for i := range 4 {
		files[fmt.Sprintf("mesh/m%d.yaml", i)] = fmt.Sprintf("type: Mesh\nname: m%d\n", i)
	}
	writeFiles(t, dir, files)
	git(t, dir, "add", ".")
	git(t, dir, "commit", "-q", "-m", "five files")

	if code, out, errb := gitmesh(t, "validate", "--repo", dir, "--path", "mesh"); code != 0 {
		t.Fatalf("within the default limits: exit %d\n%s%s", code, out, errb)
	}
	for _, c := range []struct {
		flag, want string
	}{
		{"--max-files=3", "more than 3 files under"},
		{"--max-dir-depth=1", "directories nest more than 1 levels deep"},
	} {
		code, out, errb := gitmesh(t, "validate", "--repo", dir, "--path", "mesh", c.flag)
		if code != 1 || !strings.Contains(out, c.want) {
			t.Errorf("%s: exit %d, want 1 and %q in:\n%s%s", c.flag, code, c.want, out, errb)
		}
	}
}

// TestServeLimitFlags checks that serve documents its limits with their
// defaults.
func TestServeLimitFlags(t *testing.T) {
	code, out, errb := gitmesh(t, "serve", "--help")
	if code != 0 {
		t.Fatalf("serve --help: exit %d\n%s", code, errb)
	}
	for _, want := range []string{"--max-file-size int", "(default 8388608)", "--max-files int", "(default 50000)",
		"--max-dir-depth int", "(default 32)", "--max-fetch-bytes int", "(default 1073741824)", "--git-timeout duration"} {
		if !strings.Contains(out, want) {
			t.Errorf("serve --help does not show %q:\n%s", want, out)
		}
	}
}
