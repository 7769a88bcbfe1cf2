package source

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/gitmesh/gitmesh/reconcile/gittest"
)

var gitCLI = gittest.Git

// newRepo commits a small tree with links in and out of it and a submodule
// entry, and returns the repository directory.
func newRepo(t *testing.T) string {
	dir := t.TempDir()
	gitCLI(t, dir, "init", "-q", "-b", "main")
	for name, content := range map[string]string{
		"policies/mesh.yaml":       "type: Mesh\nname: default\n",
		"policies/sub/dp.yaml":     "type: Dataplane\n",
		"policies/sub/deeper/x.md": "x",
	} {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for link, target := range map[string]string{
		"policies/link.yaml":     "sub/dp.yaml",
		"policies/chain.yaml":    "link.yaml",
		"policies/escape.yaml":   "../../etc/passwd",
		"policies/absolute.yaml": "/etc/passwd",
		"policies/subdir":        "sub",
	} {
		if err := os.Symlink(target, filepath.Join(dir, link)); err != nil {
			t.Fatal(err)
		}
	}
	gitCLI(t, dir, "add", ".")
	// A submodule entry (a gitlink) without cloning anything.
	gitCLI(t, dir, "update-index", "--add", "--cacheinfo", "160000,"+strings.Repeat("ab", 20)+",policies/vendored")
	gitCLI(t, dir, "commit", "-q", "-m", "tree\n\nbody")
	return dir
}

func TestTreeFS(t *testing.T) {
	dir := newRepo(t)
	repo, err := OpenRepository(filepath.Join(dir, "policies")) // found from a subdirectory
	if err != nil {
		t.Fatal(err)
	}
	c, err := ReadCommit(repo, "main", "policies")
	if err != nil {
		t.Fatal(err)
	}
	if c.Subject != "tree" || c.Author != "Ada" || len(c.Hash) != 40 {
		t.Errorf("commit = %+v", c)
	}
	fsys := c.Tree

	if b, err := fs.ReadFile(fsys, "chain.yaml"); err != nil || string(b) != "type: Dataplane\n" {
		t.Errorf("chain.yaml = %q, %v", b, err)
	}
	if target, err := fsys.ReadLink("link.yaml"); err != nil || target != "sub/dp.yaml" {
		t.Errorf("ReadLink = %q, %v", target, err)
	}
	for _, name := range []string{"escape.yaml", "absolute.yaml"} {
		if _, err := fs.ReadFile(fsys, name); !errors.Is(err, fs.ErrPermission) {
			t.Errorf("%s: err = %v, want a permission error", name, err)
		}
	}
	if info, err := fsys.Lstat("vendored"); err != nil || info.Mode()&fs.ModeIrregular == 0 {
		t.Errorf("submodule Lstat = %v, %v", info, err)
	}
	if info, err := fsys.Stat("mesh.yaml"); err != nil || info.Size() != int64(len("type: Mesh\nname: default\n")) {
		t.Errorf("Stat(mesh.yaml) = %v, %v", info, err)
	}
	if entries, err := fs.ReadDir(fsys, "subdir"); err != nil || len(entries) != 2 || entries[0].Name() != "deeper" {
		t.Errorf("ReadDir through a link = %v, %v", entries, err)
	}
	if _, err := fsys.Open("../x"); !errors.Is(err, fs.ErrInvalid) {
		t.Errorf("Open(../x) = %v", err)
	}
	if _, err := ReadCommit(repo, "main", "nope"); err == nil || !strings.Contains(err.Error(), "no directory") {
		t.Errorf("missing subdir: %v", err)
	}
	if _, err := ReadCommit(repo, "deadbeef", ""); !errors.Is(err, ErrUnknownRevision) {
		t.Errorf("unknown revision: %v", err)
	}
}

// TestTreeFSConformance runs the standard library's fs.FS checks over a tree
// without links (fstest does not know links that leave a tree).
func TestTreeFSConformance(t *testing.T) {
	dir := t.TempDir()
	gitCLI(t, dir, "init", "-q", "-b", "main")
	os.MkdirAll(filepath.Join(dir, "a", "b"), 0o755)
	os.WriteFile(filepath.Join(dir, "a", "b", "c.yaml"), []byte("x: 1\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "top.yaml"), []byte("y: 2\n"), 0o644)
	gitCLI(t, dir, "add", ".")
	gitCLI(t, dir, "commit", "-q", "-m", "c")
	repo, err := OpenRepository(dir)
	if err != nil {
		t.Fatal(err)
	}
	c, err := ReadCommit(repo, "HEAD", "")
	if err != nil {
		t.Fatal(err)
	}
	if err := fstest.TestFS(c.Tree, "a/b/c.yaml", "top.yaml"); err != nil {
		t.Fatal(err)
	}
}
