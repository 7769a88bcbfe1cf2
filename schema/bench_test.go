package schema

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
	"testing/fstest"
)

// writeBenchTree writes a policy tree of `files` files with `perFile`
// resources each: one mTLS mesh, dataplanes in both Kuma forms (each with an
// inbound and two outbounds) and, every fifth resource, a permission. The tree
// is valid.
func writeBenchTree(tb testing.TB, dir string, files, perFile int) int {
	tb.Helper()
	writeFile(tb, filepath.Join(dir, "mesh.yaml"), "type: Mesh\nname: default\nmtls:\n  enabled: true\n  ca:\n    builtin: {}\n")
	n, dp := 1, 0
	for f := 0; f < files; f++ {
		var b strings.Builder
		for r := 0; r < perFile; r++ {
			i := f*perFile + r
			svc := fmt.Sprintf("svc-%d", dp%1000)
			if r > 0 {
				b.WriteString("---\n")
			}
			switch {
			case i%5 == 4:
				fmt.Fprintf(&b, "type: TrafficPermission\nname: tp-%d\nsources:\n  - match:\n      service: svc-%d\ndestinations:\n  - match:\n      service: svc-%d\n", i, i%1000, (i+7)%1000)
			case i%2 == 0:
				fmt.Fprintf(&b, "type: Dataplane\nname: dp-%d\nnetworking:\n  address: 10.%d.%d.%d\n  inbound:\n    - port: 10001\n      servicePort: 8080\n      tags:\n        service: %s\n        protocol: http\n        version: v1\n  outbound:\n    - port: 20001\n      service: svc-%d\n    - port: 20002\n      service: svc-%d\n",
					i, i>>16&255, i>>8&255, i&255, svc, (dp+1)%1000, (dp+2)%1000)
				dp++
			default:
				fmt.Fprintf(&b, "type: Dataplane\nname: dp-%d\nnetworking:\n  inbound:\n    - interface: 10.%d.%d.%d:10001:8080\n      tags:\n        service: %s\n  outbound:\n    - interface: :20001\n      service: svc-%d\n    - interface: :20002\n      service: svc-%d\n",
					i, i>>16&255, i>>8&255, i&255, svc, (dp+1)%1000, (dp+2)%1000)
				dp++
			}
			n++
		}
		name := filepath.Join(dir, fmt.Sprintf("d%02d", f%50), fmt.Sprintf("f%04d.yaml", f))
		if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
			tb.Fatal(err)
		}
		if err := os.WriteFile(name, []byte(b.String()), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	return n
}

// BenchmarkValidateCold measures what `gitmesh validate` does on a cold start
// over 10,000 resources in 1,000 files: compile the schemas, walk, read, parse
// and validate in parallel, check across resources.
func BenchmarkValidateCold(b *testing.B) {
	dir := b.TempDir()
	want := writeBenchTree(b, dir, 1000, 10)
	root, err := os.OpenRoot(dir)
	if err != nil {
		b.Fatal(err)
	}
	defer root.Close()
	// gitmesh validate runs with GOGC=400 (cmd/gitmesh/validate.go).
	defer debug.SetGCPercent(debug.SetGCPercent(400))
	b.ResetTimer()
	for b.Loop() {
		l, err := NewLoader(Options{})
		if err != nil {
			b.Fatal(err)
		}
		res, err := l.Load(root.FS())
		if err != nil {
			b.Fatal(err)
		}
		if len(res.Findings) > 0 || res.Resources != want {
			b.Fatalf("valid=%v resources=%d want %d\n%s", res.Valid(), res.Resources, want, formatFindings(res.Findings[:min(5, len(res.Findings))]))
		}
	}
	b.ReportMetric(float64(want)*float64(b.N)/b.Elapsed().Seconds(), "resources/s")
}

// idFS is an in-memory tree that names contents as a git tree does, by an
// id the benchmark or test assigns.
type idFS struct {
	fstest.MapFS
	ids map[string]string
}

func (f idFS) ContentID(name string) (string, error) {
	if id, ok := f.ids[name]; ok {
		return id, nil
	}
	return "", fs.ErrNotExist
}

// readTree reads a directory into memory.
func readTree(tb testing.TB, dir string) fstest.MapFS {
	tb.Helper()
	out := fstest.MapFS{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		rel, _ := filepath.Rel(dir, p)
		out[filepath.ToSlash(rel)] = &fstest.MapFile{Data: b, Mode: 0o644}
		return err
	})
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// BenchmarkLoadIncremental measures what the daemon does for a commit that
// changes one file of the benchmark's tree (10,001 resources in 1,001 files):
// every other file's result comes from the cache. "contentid" is a tree that
// names contents without reading them (as a git tree does), "dir" a directory
// whose every file is read and hashed.
func BenchmarkLoadIncremental(b *testing.B) {
	const changed = "d00/f0000.yaml"
	dir := b.TempDir()
	want := writeBenchTree(b, dir, 1000, 10)
	mem := readTree(b, dir)
	orig := string(mem[changed].Data)
	if !strings.Contains(orig, "version: v1\n") {
		b.Fatalf("%s has no version tag to change", changed)
	}
	edit := func(n int) []byte {
		return []byte(strings.Replace(orig, "version: v1\n", fmt.Sprintf("version: v%d\n", n), 1))
	}
	defer debug.SetGCPercent(debug.SetGCPercent(400))
	l, err := NewLoader(Options{})
	if err != nil {
		b.Fatal(err)
	}
	check := func(res *Result, err error) {
		if err != nil {
			b.Fatal(err)
		}
		if len(res.Findings) > 0 || res.Resources != want {
			b.Fatalf("valid=%v resources=%d want %d\n%s", res.Valid(), res.Resources, want, formatFindings(res.Findings[:min(5, len(res.Findings))]))
		}
	}

	b.Run("contentid", func(b *testing.B) {
		fsys := idFS{MapFS: fstest.MapFS{}, ids: map[string]string{}}
		for name, f := range mem {
			fsys.MapFS[name] = &fstest.MapFile{Data: f.Data, Mode: f.Mode}
			fsys.ids[name] = "0"
		}
		trees := []Tree{{FS: fsys}}
		cache := NewCache()
		check(l.LoadTreesCached(trees, cache))
		n := 0
		for b.Loop() {
			n++
			fsys.MapFS[changed].Data = edit(n)
			fsys.ids[changed] = fmt.Sprint(n)
			check(l.LoadTreesCached(trees, cache))
		}
	})
	// Where the time of a load goes, phase by phase, with every file cached.
	b.Run("phase=walk", func(b *testing.B) {
		trees := []Tree{{FS: idFS{MapFS: mem}}}
		for b.Loop() {
			if _, _, err := l.walkTrees(trees); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("phase=files", func(b *testing.B) {
		ids := map[string]string{}
		for name := range mem {
			ids[name] = "0"
		}
		files, _, err := l.walkTrees([]Tree{{FS: idFS{MapFS: mem, ids: ids}}})
		if err != nil {
			b.Fatal(err)
		}
		cache := NewCache()
		l.loadFiles(files, cache)
		for b.Loop() {
			l.loadFiles(files, cache)
		}
	})
	b.Run("phase=assemble", func(b *testing.B) {
		files, findings, err := l.walkTrees([]Tree{{FS: mem}})
		if err != nil {
			b.Fatal(err)
		}
		results := l.loadFiles(files, nil)
		for b.Loop() {
			assemble(len(files), results, findings)
		}
	})
	b.Run("dir", func(b *testing.B) {
		root, err := os.OpenRoot(dir)
		if err != nil {
			b.Fatal(err)
		}
		defer root.Close()
		trees := []Tree{{FS: root.FS()}}
		cache := NewCache()
		check(l.LoadTreesCached(trees, cache))
		n := 0
		for b.Loop() {
			n++
			if err := root.WriteFile(changed, edit(n), 0o644); err != nil {
				b.Fatal(err)
			}
			check(l.LoadTreesCached(trees, cache))
		}
	})
}
