package source

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gitmesh/gitmesh/reconcile/gittest"
	"github.com/gitmesh/gitmesh/schema"
)

// randomText returns n bytes of incompressible text.
func randomText(n int) string {
	b := make([]byte, n/2)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// bytesReadFS counts the bytes a load reads from each file of a TreeFS.
type bytesReadFS struct {
	*TreeFS
	mu   sync.Mutex
	read map[string]int
}

func (c *bytesReadFS) Open(name string) (fs.File, error) {
	f, err := c.TreeFS.Open(name)
	if err != nil {
		return nil, err
	}
	return &countedFile{File: f, fs: c, name: name}, nil
}

type countedFile struct {
	fs.File
	fs   *bytesReadFS
	name string
}

func (f *countedFile) Read(p []byte) (int, error) {
	n, err := f.File.Read(p)
	f.fs.mu.Lock()
	f.fs.read[f.name] += n
	f.fs.mu.Unlock()
	return n, err
}

// mirrorOf serves the worktree's repository over HTTP and mirrors it.
func mirrorOf(t *testing.T, work string, cfg MirrorConfig) *Mirror {
	t.Helper()
	bare := gittest.Bare(t)
	gittest.Push(t, work, bare)
	cfg.URL = gittest.HTTPBackend(t, filepath.Dir(bare), gittest.HTTPOptions{}) + filepath.Base(bare)
	cfg.Dir = t.TempDir()
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Second
	}
	m, err := OpenMirror(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mustSync(t, m)
	return m
}

func loadCommit(t *testing.T, fsys fs.FS, opts schema.Options) *schema.Result {
	t.Helper()
	l, err := schema.NewLoader(opts)
	if err != nil {
		t.Fatal(err)
	}
	res, err := l.LoadTrees([]schema.Tree{{FS: fsys, Prefix: "policies"}})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func finding(t *testing.T, res *schema.Result, file string, code schema.Code) schema.Finding {
	t.Helper()
	for _, f := range res.Findings {
		if f.File == file && f.Code == code {
			return f
		}
	}
	t.Errorf("no %s finding for %s in %+v", code, file, res.Findings)
	return schema.Finding{}
}

// TestHostileCommit loads a commit, fetched from a real server into a
// mirror, that holds everything a hostile or careless author can commit
// into the policy path. Each gets an error naming the file; nothing outside
// the tree and no oversized blob is read.
func TestHostileCommit(t *testing.T) {
	const big = 5 << 20
	work := gittest.Init(t)
	gittest.WriteFiles(t, work, map[string]string{
		"policies/mesh.yaml": "type: Mesh\nname: default\n",
		"policies/big.yaml":  randomText(big),
		"policies/lfs.yaml":  "version https://git-lfs.github.com/spec/v1\noid sha256:" + strings.Repeat("ab", 32) + "\nsize 1073741824\n",
		"policies/" + strings.Repeat("d/", 40) + "deep.yaml": "type: Mesh\nname: deep\n",
	})
	for link, target := range map[string]string{
		"policies/escape.yaml":   "../../etc/passwd",
		"policies/absolute.yaml": "/etc/passwd",
		"policies/inside.yaml":   "mesh.yaml",
	} {
		if err := os.Symlink(target, filepath.Join(work, link)); err != nil {
			t.Fatal(err)
		}
	}
	gittest.Git(t, work, "add", ".")
	gittest.Git(t, work, "update-index", "--add", "--cacheinfo", "160000,"+strings.Repeat("ab", 20)+",policies/vendored")
	// A link whose target is longer than any path: git stores it, no file
	// system could.
	gittest.WriteFiles(t, work, map[string]string{"target": strings.Repeat("x/", 4096)})
	longTarget := gittest.Git(t, work, "hash-object", "-w", "target")
	gittest.Git(t, work, "update-index", "--add", "--cacheinfo", "120000,"+longTarget+",policies/long.yaml")
	gittest.Git(t, work, "commit", "-q", "-m", "hostile")
	m := mirrorOf(t, work, MirrorConfig{})
	c, err := m.ReadCommit("HEAD", "policies")
	if err != nil {
		t.Fatal(err)
	}

	fsys := &bytesReadFS{TreeFS: c.Tree, read: map[string]int{}}
	l, err := schema.NewLoader(schema.Options{MaxFileBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	res, err := l.LoadTrees([]schema.Tree{{FS: fsys, Prefix: "policies"}})
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}

	for _, w := range []struct {
		file string
		code schema.Code
		msg  string
	}{
		{"policies/escape.yaml", schema.CodeSymlinkEscape, `symbolic link to "../../etc/passwd" points outside the policy tree`},
		{"policies/absolute.yaml", schema.CodeSymlinkEscape, `symbolic link to "/etc/passwd" points outside the policy tree`},
		{"policies/big.yaml", schema.CodeFileTooLarge, "file is larger than 1048576 bytes; it was not read"},
		{"policies/lfs.yaml", schema.CodeLFSPointer, "is a Git LFS pointer; gitmesh reads files from git objects: store policy files in git itself"},
		{"policies/long.yaml", schema.CodeUnreadable, "cannot read symbolic link: symbolic link target of 8192 bytes (more than 4096); not read"},
		{"policies/vendored", schema.CodeSubmodule, "is a git submodule (commit abababababab); it is not followed"},
		{"policies/" + strings.Repeat("d/", 32) + "d", schema.CodeTooDeepTree,
			"directories nest more than 32 levels deep; nothing in policies/" + strings.Repeat("d/", 32) + "d was read"},
	} {
		if got := finding(t, res, w.file, w.code); got.Message != w.msg || !got.IsError() {
			t.Errorf("%s: got %s %q, want error %q", w.file, got.Severity, got.Message, w.msg)
		}
	}
	if res.Valid() || res.Set != nil {
		t.Error("the hostile commit is valid")
	}
	// The link inside the tree is followed: mesh.yaml is read twice (a
	// duplicate Mesh, traced to the link).
	if dup := finding(t, res, "policies/mesh.yaml", schema.CodeDuplicate); !strings.Contains(dup.Message, "policies/inside.yaml") {
		t.Errorf("duplicate not traced to the link: %q", dup.Message)
	}
	if n := fsys.read["big.yaml"]; n != 0 {
		t.Errorf("read %d bytes of the oversized blob, want none", n)
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > big/2 {
		t.Errorf("loading allocated %d bytes with a %d-byte blob in the tree", grew, big)
	}
}

// TestTooManyFilesInCommit refuses a commit with more files under the policy
// path than the limit, before loading any of them.
func TestTooManyFilesInCommit(t *testing.T) {
	files := map[string]string{}
	for i := range 150 {
		files[fmt.Sprintf("policies/m%03d.yaml", i)] = fmt.Sprintf("type: Mesh\nname: m%03d\n", i)
	}
	work := gittest.Init(t)
	gittest.Commit(t, work, "many", files)
	m := mirrorOf(t, work, MirrorConfig{})
	c, err := m.ReadCommit("HEAD", "policies")
	if err != nil {
		t.Fatal(err)
	}
	fsys := &bytesReadFS{TreeFS: c.Tree, read: map[string]int{}}
	res := loadCommit(t, fsys, schema.Options{MaxFiles: 100})
	got := finding(t, res, "policies", schema.CodeTooManyFiles)
	if want := "more than 100 files under policies/; none of them was loaded"; got.Message != want {
		t.Errorf("message = %q, want %q", got.Message, want)
	}
	if res.Valid() || res.Files != 0 || len(fsys.read) != 0 {
		t.Errorf("valid %v, %d files loaded, %d opened; want invalid and none", res.Valid(), res.Files, len(fsys.read))
	}
	if res := loadCommit(t, c.Tree, schema.Options{MaxFiles: 150}); !res.Valid() || res.Files != 150 {
		t.Errorf("at the limit: valid %v, %d files", res.Valid(), res.Files)
	}
}

// tempPacks lists the partial packs left in a mirror.
func tempPacks(t *testing.T, m *Mirror) []string {
	t.Helper()
	tmps, err := filepath.Glob(filepath.Join(m.dir, "objects", "pack", "tmp_*"))
	if err != nil {
		t.Fatal(err)
	}
	return tmps
}

// TestFetchLimit fetches a commit whose pack is larger than the limit from a
// real server: the fetch fails naming the limit, the mirror keeps its head
// and every commit it had, and a larger limit then fetches the commit.
func TestFetchLimit(t *testing.T) {
	work := gittest.Init(t)
	first := gittest.Commit(t, work, "small", map[string]string{"policies/mesh.yaml": "type: Mesh\nname: one\n"})
	bare := gittest.Bare(t)
	gittest.Push(t, work, bare)
	url := gittest.HTTPBackend(t, filepath.Dir(bare), gittest.HTTPOptions{}) + filepath.Base(bare)
	dir := t.TempDir()
	open := func(limit int64) *Mirror {
		m, err := OpenMirror(MirrorConfig{URL: url, Dir: dir, Timeout: 10 * time.Second, MaxFetchBytes: limit})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	m := open(64 << 10)
	mustSync(t, m)
	gittest.Commit(t, work, "big", map[string]string{"policies/big.txt": randomText(256 << 10)})
	gittest.Push(t, work, bare)

	_, err := m.Sync(context.Background())
	var tooLarge *PackTooLargeError
	if !errors.As(err, &tooLarge) || tooLarge.Limit != 64<<10 {
		t.Fatalf("sync of a pack over the limit: %v, want a PackTooLargeError", err)
	}
	if want := "the remote sent a packfile of more than 65536 bytes (the fetch limit)"; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not say %q", err, want)
	}
	if head, _ := m.Head(); head != Hash(first) {
		t.Errorf("head after the failed fetch = %s, want %s", head, first)
	}
	if got := readFile(t, m, "HEAD", "mesh.yaml"); got != "type: Mesh\nname: one\n" {
		t.Errorf("previous commit reads %q", got)
	}
	if tmps := tempPacks(t, m); len(tmps) != 0 {
		t.Errorf("partial packs left: %v", tmps)
	}
	if res := mustSync(t, open(1<<20)); !res.Fetched || res.Previous != Hash(first) {
		t.Errorf("sync with a larger limit: %+v", res)
	}
}

// TestFetchEndlessPack fetches from a server whose pack never ends: the
// fetch stops at the limit, the memory it took stays far below what was
// received, and no partial pack is left on disk.
func TestFetchEndlessPack(t *testing.T) {
	_, bare, _ := newRemote(t)
	const limit = 8 << 20
	url := gittest.HTTPBackend(t, filepath.Dir(bare), gittest.HTTPOptions{EndlessPack: true}) + filepath.Base(bare)
	m, err := OpenMirror(MirrorConfig{URL: url, Dir: t.TempDir(), Timeout: 30 * time.Second, MaxFetchBytes: limit})
	if err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err = m.Sync(context.Background())
	runtime.GC()
	runtime.ReadMemStats(&after)
	var tooLarge *PackTooLargeError
	if !errors.As(err, &tooLarge) {
		t.Fatalf("sync from an endless pack: %v, want a PackTooLargeError", err)
	}
	if _, ok := m.Head(); ok {
		t.Error("the mirror has a head after a failed first fetch")
	}
	if tmps := tempPacks(t, m); len(tmps) != 0 {
		t.Errorf("partial packs left: %v", tmps)
	}
	if grew := int64(after.HeapInuse) - int64(before.HeapInuse); grew > limit/2 {
		t.Errorf("the heap grew by %d bytes fetching a %d-byte pack", grew, limit)
	}
	t.Logf("allocated %d bytes in all, heap grew %d bytes", after.TotalAlloc-before.TotalAlloc, int64(after.HeapInuse)-int64(before.HeapInuse))
}

// TestFetchTrickle fetches from a slow loris, a server that sends its
// answer a byte every 100ms: the fetch timeout ends the sync.
func TestFetchTrickle(t *testing.T) {
	_, bare, _ := newRemote(t)
	url := gittest.HTTPBackend(t, filepath.Dir(bare), gittest.HTTPOptions{Trickle: 100 * time.Millisecond}) + filepath.Base(bare)
	m, err := OpenMirror(MirrorConfig{URL: url, Dir: t.TempDir(), Timeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = m.Sync(context.Background())
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "no answer within 500ms") {
		t.Errorf("sync from a slow loris: %v, want a deadline error", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("sync took %v with a 500ms timeout", d)
	}
	if _, ok := m.Head(); ok {
		t.Error("the mirror has a head after a failed first fetch")
	}
}
