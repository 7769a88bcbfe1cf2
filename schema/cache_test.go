package schema

import (
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/fstest"

	"github.com/google/go-cmp/cmp"
)

// spec is a tree: regular files and symbolic links (name → target), both
// slash-separated.
type spec struct {
	files, links map[string]string
}

// with returns a copy of s with files set (an empty content removes the
// file) and links set (an empty target removes the link).
func (s spec) with(files, links map[string]string) spec {
	out := spec{files: maps.Clone(s.files), links: maps.Clone(s.links)}
	if out.links == nil {
		out.links = map[string]string{}
	}
	for name, content := range files {
		if content == "" {
			delete(out.files, name)
		} else {
			out.files[name] = content
		}
	}
	for name, target := range links {
		if target == "" {
			delete(out.links, name)
		} else {
			out.links[name] = target
		}
	}
	return out
}

// fs builds the tree; with ids, the tree names contents as a git tree does
// (by the SHA-1 of each regular file), so the loader need not read them.
func (s spec) fs(ids bool) fs.FS {
	m := fstest.MapFS{}
	for name, content := range s.files {
		m[name] = &fstest.MapFile{Data: []byte(content), Mode: 0o644}
	}
	for name, target := range s.links {
		m[name] = &fstest.MapFile{Data: []byte(target), Mode: fs.ModeSymlink | 0o777}
	}
	if !ids {
		return m
	}
	out := idFS{MapFS: m, ids: map[string]string{}}
	for name, content := range s.files {
		sum := sha1.Sum([]byte(content))
		out.ids[name] = hex.EncodeToString(sum[:])
	}
	return out
}

// loadBoth loads fsys cold with a new Loader and through the cache with l,
// and fails unless both Results are the same.
func loadBoth(t *testing.T, l *Loader, c *Cache, fsys fs.FS) *Result {
	t.Helper()
	trees := []Tree{{FS: fsys, Prefix: "policies"}}
	cold, err := newTestLoader(t, Options{}).LoadTrees(trees)
	if err != nil {
		t.Fatal(err)
	}
	cached, err := l.LoadTreesCached(trees, c)
	if err != nil {
		t.Fatal(err)
	}
	sameResult(t, cold, cached)
	return cached
}

// sameResult fails unless a and b are deeply equal and have the same JSON.
func sameResult(t *testing.T, want, got *Result) {
	t.Helper()
	if d := cmp.Diff(want, got); d != "" {
		t.Fatalf("cached load differs from a cold load (-cold +cached):\n%s", d)
	}
	wj, err := json.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	gj, err := json.Marshal(got)
	if err != nil {
		t.Fatal(err)
	}
	if string(wj) != string(gj) {
		t.Fatalf("JSON differs:\ncold:   %s\ncached: %s", wj, gj)
	}
}

const (
	cacheMesh    = "type: Mesh\nname: default\nmtls:\n  enabled: true\n  ca:\n    builtin: {}\n"
	cacheBackend = "type: Dataplane\nname: backend\nnetworking:\n  address: 10.0.0.2\n  inbound:\n    - port: 10001\n      tags:\n        service: backend\n"
	cachePerms   = "type: TrafficPermission\nname: web-to-backend\nsources:\n  - match:\n      service: web\ndestinations:\n  - match:\n      service: backend\n"
)

func cacheWeb(port int) string {
	return fmt.Sprintf("type: Dataplane\nname: web\nnetworking:\n  address: 10.0.0.1\n  inbound:\n    - port: 10001\n      tags:\n        service: web\n  outbound:\n    - port: %d\n      service: backend\n", port)
}

func cacheExtra(name, addr string) string {
	return fmt.Sprintf("type: Dataplane\nname: %s\nnetworking:\n  address: %s\n  inbound:\n    - port: 10001\n      tags:\n        service: %s\n", name, addr, name)
}

// TestCacheMatchesColdLoad loads a sequence of commits through one cache and
// checks each Result against a cold load: edits, a tree made invalid and
// fixed again, a rename, a removal, an addition and changes behind a
// symbolic link. Unchanged files keep their resources' pointers.
func TestCacheMatchesColdLoad(t *testing.T) {
	for _, ids := range []bool{false, true} {
		t.Run(map[bool]string{false: "hashed", true: "contentid"}[ids], func(t *testing.T) {
			l := newTestLoader(t, Options{})
			c := NewCache()
			var prev []*Result
			step := func(name string, s spec, valid bool) *Result {
				t.Helper()
				res := loadBoth(t, l, c, s.fs(ids))
				if res.Valid() != valid {
					t.Fatalf("%s: valid = %v, want %v\n%s", name, res.Valid(), valid, formatFindings(res.Findings))
				}
				prev = append(prev, res)
				return res
			}
			dp := func(r *Result, name string) *Dataplane {
				t.Helper()
				if r.Set == nil {
					t.Fatal("no set")
				}
				d := r.Set.Dataplane(DefaultMesh, name)
				if d == nil {
					t.Fatalf("no dataplane %s", name)
				}
				return d
			}

			v1 := spec{
				files: map[string]string{
					"mesh.yaml": cacheMesh, "web.yaml": cacheWeb(20001), "backend.yaml": cacheBackend,
					"perms.yaml": cachePerms, "data/extra.txt": cacheExtra("extra", "10.0.0.3"),
					"data/other.txt": cacheExtra("other", "10.0.0.4"), "data/copy.txt": cacheExtra("other", "10.0.0.4"),
				},
				links: map[string]string{"extra.yaml": "data/extra.txt"},
			}
			r1 := step("valid", v1, true)

			v2 := v1.with(map[string]string{"web.yaml": cacheWeb(20002)}, nil)
			r2 := step("one file edited", v2, true)
			if dp(r2, "backend") != dp(r1, "backend") || dp(r2, "extra") != dp(r1, "extra") {
				t.Error("unchanged files were loaded again")
			}
			if dp(r2, "web") == dp(r1, "web") || dp(r2, "web").Outbound[0].Port != 20002 {
				t.Error("the edited file came from the cache")
			}

			v3 := v2.with(map[string]string{
				"backend.yaml": cacheBackend + "bogus: 1\n",
				"web2.yaml":    cacheWeb(20003),
				"perms.yaml":   strings.Replace(cachePerms, "service: web", "service: wbe", 1),
			}, nil)
			r3 := step("invalid", v3, false)
			if r3.Set != nil {
				t.Error("an invalid tree has a set")
			}

			r4 := step("fixed again", v2, true)
			if dp(r4, "backend") != dp(r2, "backend") || dp(r4, "web") != dp(r2, "web") {
				t.Error("the files of the load before the last were not kept")
			}

			v5 := v2.with(map[string]string{"web.yaml": "", "svc/web.yaml": v2.files["web.yaml"]}, nil)
			r5 := step("renamed", v5, true)
			if got := dp(r5, "web").Origin.File; got != "policies/svc/web.yaml" {
				t.Errorf("renamed web declared in %s", got)
			}

			v6 := v5.with(map[string]string{"perms.yaml": ""}, nil)
			r6 := step("removed", v6, true)
			if len(r6.Set.TrafficPermissions) != 0 {
				t.Error("removed permission still loaded")
			}

			v7 := v6.with(map[string]string{"frontend.yaml": cacheExtra("frontend", "10.0.0.5")}, nil)
			step("added", v7, true)

			v8 := v7.with(map[string]string{"data/extra.txt": cacheExtra("extra", "10.0.0.6")}, nil)
			r8 := step("link target edited", v8, true)
			if got := dp(r8, "extra").Address; got != "10.0.0.6" {
				t.Errorf("extra address = %s after its link target changed", got)
			}

			v9 := v8.with(nil, map[string]string{"extra.yaml": "data/other.txt"})
			r9 := step("link retargeted", v9, true)
			if r9.Set.Dataplane(DefaultMesh, "extra") != nil || dp(r9, "other").Origin.File != "policies/extra.yaml" {
				t.Error("the link still reads its former target")
			}

			v10 := v9.with(nil, map[string]string{"extra.yaml": "data/copy.txt"})
			r10 := step("link to a copy", v10, true)
			if dp(r10, "other") != dp(r9, "other") {
				t.Error("a link to the same content was loaded again")
			}

			v11 := v10.with(map[string]string{"web.yaml": cacheWeb(20002)}, map[string]string{"dangling.yaml": "nope.yaml"})
			step("dangling link and a duplicate", v11, false)
		})
	}
}

// TestCacheBounded checks that the cache holds only the files of the last two
// loads, however many loads it serves.
func TestCacheBounded(t *testing.T) {
	l := newTestLoader(t, Options{})
	c := NewCache()
	base := spec{files: map[string]string{"mesh.yaml": cacheMesh, "backend.yaml": cacheBackend}}
	for i := range 40 {
		s := base.with(map[string]string{
			fmt.Sprintf("moved-%d.yaml", i): cacheExtra("moved", "10.0.1.1"),
			"edited.yaml":                   cacheExtra("edited", fmt.Sprintf("10.0.2.%d", i)),
		}, nil)
		if _, err := l.LoadTreesCached([]Tree{{FS: s.fs(true)}}, c); err != nil {
			t.Fatal(err)
		}
		// Each load uses 4 files, 2 of them the same as the load before.
		if got, want := c.Len(), min(4+2*i, 6); got != want {
			t.Fatalf("after load %d the cache holds %d files, want %d", i, got, want)
		}
	}
}

// TestCacheFailedReadNotKept checks that a file that could not be read is
// read again by the next load, and that results of loaders with other limits
// are kept apart.
func TestCacheFailedReadNotKept(t *testing.T) {
	for _, ids := range []bool{false, true} {
		s := spec{files: map[string]string{"mesh.yaml": cacheMesh, "backend.yaml": cacheBackend}}
		fsys := &failingFS{FS: s.fs(ids), fail: "backend.yaml"}
		l := newTestLoader(t, Options{})
		c := NewCache()
		res, err := l.LoadTreesCached([]Tree{{FS: fsys}}, c)
		if err != nil {
			t.Fatal(err)
		}
		if res.Valid() || res.Findings[0].Code != CodeUnreadable {
			t.Fatalf("findings:\n%s", formatFindings(res.Findings))
		}
		fsys.fail = ""
		res, err = l.LoadTreesCached([]Tree{{FS: fsys}}, c)
		if err != nil {
			t.Fatal(err)
		}
		if !res.Valid() || res.Set.Dataplane(DefaultMesh, "backend") == nil {
			t.Fatalf("ids=%v: the failed read was kept:\n%s", ids, formatFindings(res.Findings))
		}

		small := newTestLoader(t, Options{MaxFileBytes: 64})
		for range 2 {
			for _, ld := range []*Loader{small, l} {
				want, err := ld.Load(fsys)
				if err != nil {
					t.Fatal(err)
				}
				got, err := ld.LoadTreesCached([]Tree{{FS: fsys}}, c)
				if err != nil {
					t.Fatal(err)
				}
				sameResult(t, want, got)
			}
		}
	}
}

// failingFS fails to open one file.
type failingFS struct {
	fs.FS
	fail string
}

func (f *failingFS) Open(name string) (fs.File, error) {
	if name == f.fail {
		return nil, &fs.PathError{Op: "open", Path: name, Err: errors.New("I/O error")}
	}
	return f.FS.Open(name)
}

func (f *failingFS) ContentID(name string) (string, error) {
	if ids, ok := f.FS.(ContentIDFS); ok {
		return ids.ContentID(name)
	}
	return "", errors.ErrUnsupported
}

// TestCacheConcurrent loads several trees at once through one cache.
func TestCacheConcurrent(t *testing.T) {
	l := newTestLoader(t, Options{Workers: 2})
	c := NewCache()
	var trees []fs.FS
	var want []*Result
	for i := range 4 {
		s := spec{files: map[string]string{
			"mesh.yaml":    cacheMesh,
			"backend.yaml": cacheBackend,
			"web.yaml":     cacheWeb(20000 + i),
			"perms.yaml":   cachePerms,
		}}
		if i == 3 {
			s.files["web2.yaml"] = cacheWeb(20009) // a duplicate: invalid
		}
		fsys := s.fs(i%2 == 0)
		res, err := l.Load(fsys)
		if err != nil {
			t.Fatal(err)
		}
		trees, want = append(trees, fsys), append(want, res)
	}
	var wg sync.WaitGroup
	var failed atomic.Bool
	for g := range 4 {
		wg.Go(func() {
			for i := range 20 {
				k := (g + i) % len(trees)
				got, err := l.LoadTreesCached([]Tree{{FS: trees[k]}}, c)
				if err != nil || !cmp.Equal(want[k], got) {
					failed.Store(true)
				}
			}
		})
	}
	wg.Wait()
	if failed.Load() {
		t.Fatal("a concurrent cached load differs from a cold load")
	}
}

// TestCacheSameFileTwice loads two trees that give the same names to the same
// contents: the second file's result may be the first one's, and the
// duplicates are still reported as a cold load reports them.
func TestCacheSameFileTwice(t *testing.T) {
	s := spec{files: map[string]string{"mesh.yaml": cacheMesh, "web.yaml": cacheWeb(20001), "backend.yaml": cacheBackend}}
	for _, ids := range []bool{false, true} {
		trees := []Tree{{FS: s.fs(ids), Prefix: "p"}, {FS: s.fs(ids), Prefix: "p"}}
		l := newTestLoader(t, Options{})
		want, err := l.LoadTrees(trees)
		if err != nil {
			t.Fatal(err)
		}
		if want.Valid() {
			t.Fatal("duplicates not reported")
		}
		c := NewCache()
		for range 2 {
			got, err := l.LoadTreesCached(trees, c)
			if err != nil {
				t.Fatal(err)
			}
			sameResult(t, want, got)
		}
	}
}
