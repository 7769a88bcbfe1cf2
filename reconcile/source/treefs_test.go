package source

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/google/go-cmp/cmp"

	"github.com/gitmesh/gitmesh/reconcile/gittest"
	"github.com/gitmesh/gitmesh/schema"
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

func TestTreeFSContentID(t *testing.T) {
	dir := newRepo(t)
	repo, err := OpenRepository(dir)
	if err != nil {
		t.Fatal(err)
	}
	c, err := ReadCommit(repo, "main", "policies")
	if err != nil {
		t.Fatal(err)
	}
	for name, object := range map[string]string{
		"mesh.yaml":  "policies/mesh.yaml",
		"chain.yaml": "policies/sub/dp.yaml", // a link to a link
	} {
		id, err := c.Tree.ContentID(name)
		if want := gitCLI(t, dir, "rev-parse", "HEAD:"+object); err != nil || id != want {
			t.Errorf("ContentID(%s) = %q, %v; want %s", name, id, err, want)
		}
	}
	for name, want := range map[string]error{
		"escape.yaml": fs.ErrPermission,
		"nope.yaml":   fs.ErrNotExist,
		"nope/x.yaml": fs.ErrNotExist,
		"../x":        fs.ErrInvalid,
	} {
		if _, err := c.Tree.ContentID(name); !errors.Is(err, want) {
			t.Errorf("ContentID(%s): err = %v, want %v", name, err, want)
		}
	}
	// A directory, a submodule, and a link followed before the last element
	// (Open does not follow those either).
	for _, name := range []string{"sub", "vendored", "subdir/dp.yaml"} {
		if id, err := c.Tree.ContentID(name); err == nil {
			t.Errorf("ContentID(%s) = %q, want an error", name, id)
		}
	}
}

// countingFS counts the files a load opens.
type countingFS struct {
	*TreeFS
	opened atomic.Int32
}

func (c *countingFS) Open(name string) (fs.File, error) {
	c.opened.Add(1)
	return c.TreeFS.Open(name)
}

// TestTreeFSCachedLoad loads commits of a real repository through a cache:
// each Result equals a cold load, and only the files a commit changed (or
// moved) are read.
func TestTreeFSCachedLoad(t *testing.T) {
	dir := gittest.Init(t)
	dp := func(name, addr string) string {
		return fmt.Sprintf("type: Dataplane\nname: %s\nnetworking:\n  address: %s\n  inbound:\n    - port: 10001\n      tags:\n        service: %s\n", name, addr, name)
	}
	commits := []struct {
		files  map[string]string
		rename [2]string
		opens  int32
	}{
		{files: map[string]string{"mesh.yaml": "type: Mesh\nname: default\n", "web.yaml": dp("web", "10.0.0.1"),
			"api/backend.yaml": dp("backend", "10.0.0.2"), "data/extra.txt": dp("extra", "10.0.0.3")}, opens: 4},
		{files: map[string]string{"web.yaml": dp("web", "10.0.0.9")}, opens: 1},
		{files: map[string]string{"data/extra.txt": dp("extra", "10.0.0.8")}, rename: [2]string{"api/backend.yaml", "api/be.yaml"}, opens: 2},
		{files: map[string]string{"web.yaml": dp("web", "10.0.0.2")}, opens: 1}, // invalid: an endpoint conflict
		{files: map[string]string{"web.yaml": dp("web", "10.0.0.9")}, opens: 0}, // fixed, as two commits ago
	}
	l, err := schema.NewLoader(schema.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cache := schema.NewCache()
	for i, commit := range commits {
		gittest.WriteFiles(t, dir, commit.files)
		if i == 0 {
			if err := os.Symlink("data/extra.txt", filepath.Join(dir, "extra.yaml")); err != nil {
				t.Fatal(err)
			}
		}
		if commit.rename[0] != "" {
			gitCLI(t, dir, "mv", commit.rename[0], commit.rename[1])
		}
		gittest.Commit(t, dir, fmt.Sprint("commit ", i), nil)
		repo, err := OpenRepository(dir)
		if err != nil {
			t.Fatal(err)
		}
		c, err := ReadCommit(repo, "main", "")
		if err != nil {
			t.Fatal(err)
		}
		fsys := &countingFS{TreeFS: c.Tree}
		got, err := l.LoadTreesCached([]schema.Tree{{FS: fsys}}, cache)
		if err != nil {
			t.Fatal(err)
		}
		want, err := l.Load(c.Tree)
		if err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff(want, got); d != "" {
			t.Fatalf("commit %d: cached load differs from a cold load (-cold +cached):\n%s", i, d)
		}
		if wantValid := i != 3; got.Valid() != wantValid {
			t.Errorf("commit %d: valid = %v, want %v", i, got.Valid(), wantValid)
		}
		if n := fsys.opened.Load(); n != commit.opens {
			t.Errorf("commit %d: %d files read, want %d", i, n, commit.opens)
		}
	}
}

// benchFiles returns a valid policy tree of 1,000 files of ten resources
// each and a mesh (the shape of the schema package's benchmark tree), and the
// number of resources.
func benchFiles() (map[string]string, int) {
	files := map[string]string{"mesh.yaml": "type: Mesh\nname: default\nmtls:\n  enabled: true\n  ca:\n    builtin: {}\n"}
	n, dp := 1, 0
	for f := range 1000 {
		var b strings.Builder
		for r := range 10 {
			i := f*10 + r
			if r > 0 {
				b.WriteString("---\n")
			}
			switch {
			case i%5 == 4:
				fmt.Fprintf(&b, "type: TrafficPermission\nname: tp-%d\nsources:\n  - match:\n      service: svc-%d\ndestinations:\n  - match:\n      service: svc-%d\n", i, i%1000, (i+7)%1000)
			default:
				fmt.Fprintf(&b, "type: Dataplane\nname: dp-%d\nnetworking:\n  address: 10.%d.%d.%d\n  inbound:\n    - port: 10001\n      servicePort: 8080\n      tags:\n        service: svc-%d\n        protocol: http\n        version: v1\n  outbound:\n    - port: 20001\n      service: svc-%d\n    - port: 20002\n      service: svc-%d\n",
					i, i>>16&255, i>>8&255, i&255, dp%1000, (dp+1)%1000, (dp+2)%1000)
				dp++
			}
			n++
		}
		files[fmt.Sprintf("d%02d/f%04d.yaml", f%50, f)] = b.String()
	}
	return files, n
}

// replaceFile writes a tree that is root with the file dir/name holding
// content, straight into the object store, as a fetch of a one-file commit
// would leave it.
func replaceFile(tb testing.TB, repo *git.Repository, root *object.Tree, dir, name string, content []byte) *object.Tree {
	tb.Helper()
	put := func(typ plumbing.ObjectType, encode func(plumbing.EncodedObject) error) plumbing.Hash {
		obj := repo.Storer.NewEncodedObject()
		obj.SetType(typ)
		if err := encode(obj); err != nil {
			tb.Fatal(err)
		}
		h, err := repo.Storer.SetEncodedObject(obj)
		if err != nil {
			tb.Fatal(err)
		}
		return h
	}
	with := func(t *object.Tree, name string, h plumbing.Hash) *object.Tree {
		out := &object.Tree{Entries: append([]object.TreeEntry(nil), t.Entries...)}
		for i := range out.Entries {
			if out.Entries[i].Name == name {
				out.Entries[i].Hash = h
			}
		}
		return out
	}
	blob := put(plumbing.BlobObject, func(o plumbing.EncodedObject) error {
		w, err := o.Writer()
		if err != nil {
			return err
		}
		if _, err := w.Write(content); err != nil {
			return err
		}
		return w.Close()
	})
	sub, err := root.Tree(dir)
	if err != nil {
		tb.Fatal(err)
	}
	subHash := put(plumbing.TreeObject, with(sub, name, blob).Encode)
	rootHash := put(plumbing.TreeObject, with(root, dir, subHash).Encode)
	out, err := object.GetTree(repo.Storer, rootHash)
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// BenchmarkLoadIncremental measures loading a commit that changes one file
// of a 10,001-resource tree read from git objects: "cached" reuses the
// previous load's results of unchanged files, "cold" loads the whole tree.
// "walk+ids" is the part of a cached load spent in the git tree.
func BenchmarkLoadIncremental(b *testing.B) {
	dir := gittest.Init(b)
	files, want := benchFiles()
	gittest.Commit(b, dir, "tree", files)
	gittest.Git(b, dir, "gc", "-q") // packed, as a clone or fetch leaves objects
	repo, err := OpenRepository(dir)
	if err != nil {
		b.Fatal(err)
	}
	c, err := ReadCommit(repo, "main", "")
	if err != nil {
		b.Fatal(err)
	}
	base := c.Tree.root
	orig := files["d00/f0000.yaml"]
	edit := func(n int) *object.Tree {
		content := strings.Replace(orig, "version: v1\n", fmt.Sprintf("version: v%d\n", n), 1)
		return replaceFile(b, repo, base, "d00", "f0000.yaml", []byte(content))
	}
	l, err := schema.NewLoader(schema.Options{})
	if err != nil {
		b.Fatal(err)
	}
	check := func(res *schema.Result, err error) {
		if err != nil {
			b.Fatal(err)
		}
		if len(res.Findings) > 0 || res.Resources != want {
			b.Fatalf("findings=%d resources=%d want %d", len(res.Findings), res.Resources, want)
		}
	}
	defer debug.SetGCPercent(debug.SetGCPercent(400))
	when := time.Unix(0, 0)

	b.Run("cached", func(b *testing.B) {
		cache := schema.NewCache()
		check(l.LoadTreesCached([]schema.Tree{{FS: NewTreeFS(base, when)}}, cache))
		n := 0
		for b.Loop() {
			b.StopTimer()
			n++
			tree := edit(n)
			b.StartTimer()
			check(l.LoadTreesCached([]schema.Tree{{FS: NewTreeFS(tree, when)}}, cache))
		}
	})
	// What the loader asks of a new commit's TreeFS when every file is
	// cached: walk it and name each file's content.
	b.Run("walk+ids", func(b *testing.B) {
		n := 0
		for b.Loop() {
			b.StopTimer()
			n++
			fsys := NewTreeFS(edit(n), when)
			b.StartTimer()
			walked := 0
			err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
				if err != nil || d.IsDir() {
					return err
				}
				walked++
				_, err = fsys.ContentID(p)
				return err
			})
			if err != nil || walked != len(files) {
				b.Fatalf("walked %d files: %v", walked, err)
			}
		}
	})
	b.Run("cold", func(b *testing.B) {
		n := 0
		for b.Loop() {
			b.StopTimer()
			n++
			tree := edit(n)
			b.StartTimer()
			check(l.LoadTrees([]schema.Tree{{FS: NewTreeFS(tree, when)}}))
		}
	})
}
