package schema

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
)

// wantFinding asserts that findings contain one with the file and code, and
// returns it.
func wantFinding(t *testing.T, res *Result, file string, code Code) Finding {
	t.Helper()
	for _, f := range res.Findings {
		if f.File == file && f.Code == code {
			return f
		}
	}
	t.Fatalf("no %s finding for %s in:\n%s", code, file, formatFindings(res.Findings))
	return Finding{}
}

const validMesh = "type: Mesh\nname: default\n"

func writeFile(t testing.TB, name, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(name, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestHugeFileIsRefusedUnread(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "mesh.yaml"), validMesh)
	// A sparse 200 MB file: the loader must refuse it from its size, without
	// reading it into memory.
	f, err := os.Create(filepath.Join(dir, "huge.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(200 << 20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	res := loadDir(t, newTestLoader(t, Options{}), dir)
	got := wantFinding(t, res, "huge.yaml", CodeFileTooLarge)
	if !strings.Contains(got.Message, "8388608") {
		t.Errorf("message does not state the limit: %q", got.Message)
	}
	if res.Valid() {
		t.Error("a tree with a refused file is valid")
	}
}

func TestDeepNesting(t *testing.T) {
	for name, doc := range map[string]string{
		"flow.yaml":  "type: Mesh\nname: x\nmtls: " + strings.Repeat("[", 10_000) + strings.Repeat("]", 10_000) + "\n",
		"block.yaml": "type: Mesh\nname: x\nmtls:\n" + strings.Repeat("- ", 5_000) + "x\n",
		"maps.yaml":  "type: Mesh\nname: x\nmtls: " + strings.Repeat("{a: ", 200) + "1" + strings.Repeat("}", 200) + "\n",
	} {
		t.Run(name, func(t *testing.T) {
			res, err := newTestLoader(t, Options{}).Load(fstest.MapFS{name: {Data: []byte(doc)}})
			if err != nil {
				t.Fatal(err)
			}
			got := wantFinding(t, res, name, CodeTooDeep)
			if got.Line < 1 {
				t.Errorf("no line: %+v", got)
			}
		})
	}
}

func TestSymlinks(t *testing.T) {
	outside := t.TempDir()
	writeFile(t, filepath.Join(outside, "secret.yaml"), "type: Mesh\nname: leaked\n")
	writeFile(t, filepath.Join(outside, "x"), "type: Mesh\nname: leaked\n")
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "real", "mesh.yaml"), validMesh)
	links := map[string]string{
		"inside.yaml":   "real/mesh.yaml",                         // followed
		"absolute.yaml": filepath.Join(outside, "secret.yaml"),    // refused
		"relative.yaml": "../" + filepath.Base(outside) + "/x",    // refused
		"sub/up.yaml":   "../../" + filepath.Base(outside) + "/x", // refused
		"dangling.yaml": "real/missing.yaml",
		"loop-a.yaml":   "loop-b.yaml",
		"loop-b.yaml":   "loop-a.yaml",
		"dir.yaml":      "real",
	}
	for name, target := range links {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
	}
	res := loadDir(t, newTestLoader(t, Options{}), dir)
	wantFinding(t, res, "absolute.yaml", CodeSymlinkEscape)
	wantFinding(t, res, "relative.yaml", CodeSymlinkEscape)
	wantFinding(t, res, "sub/up.yaml", CodeSymlinkEscape)
	wantFinding(t, res, "dangling.yaml", CodeUnreadable)
	wantFinding(t, res, "loop-a.yaml", CodeUnreadable)
	wantFinding(t, res, "dir.yaml", CodeNotRegular)
	// inside.yaml names the same Mesh as real/mesh.yaml: read through the link.
	dup := wantFinding(t, res, "real/mesh.yaml", CodeDuplicate)
	if !strings.Contains(dup.Message, "inside.yaml") {
		t.Errorf("duplicate not traced to the link: %s", dup.Message)
	}
	// Nothing outside the tree was read: only real/mesh.yaml and inside.yaml.
	if res.Resources != 2 {
		t.Errorf("read %d resources, want 2:\n%s", res.Resources, formatFindings(res.Findings))
	}
}

func TestTooManyFiles(t *testing.T) {
	fsys := fstest.MapFS{}
	for _, n := range []string{"a", "b", "c", "d"} {
		fsys[n+".yaml"] = &fstest.MapFile{Data: []byte("type: Mesh\nname: " + n + "\n")}
	}
	res, err := newTestLoader(t, Options{MaxFiles: 3}).Load(fsys)
	if err != nil {
		t.Fatal(err)
	}
	got := wantFinding(t, res, ".", CodeTooManyFiles)
	if got.Message != "more than 3 files under the policy root; none of them was loaded" {
		t.Errorf("message = %q", got.Message)
	}
	if res.Files != 0 || res.Valid() {
		t.Errorf("read %d files (valid %v), want none and invalid", res.Files, res.Valid())
	}
	// Every kind of file counts, not only YAML: the walk itself is bounded.
	fsys = fstest.MapFS{"mesh.yaml": {Data: []byte(validMesh)}}
	for i := range 5 {
		fsys[fmt.Sprintf("docs/%d.md", i)] = &fstest.MapFile{Data: []byte("x")}
	}
	res, err = newTestLoader(t, Options{MaxFiles: 3}).LoadTrees([]Tree{{FS: fsys, Prefix: "policies"}})
	if err != nil {
		t.Fatal(err)
	}
	got = wantFinding(t, res, "policies", CodeTooManyFiles)
	if got.Message != "more than 3 files under policies/; none of them was loaded" {
		t.Errorf("message = %q", got.Message)
	}
}

func TestDeepDirectories(t *testing.T) {
	deep := strings.Repeat("d/", 40) + "mesh.yaml"
	fsys := fstest.MapFS{
		"mesh.yaml": {Data: []byte(validMesh)},
		deep:        {Data: []byte("type: Mesh\nname: deep\n")},
	}
	res, err := newTestLoader(t, Options{MaxDirDepth: 8}).Load(fsys)
	if err != nil {
		t.Fatal(err)
	}
	got := wantFinding(t, res, strings.Repeat("d/", 8)+"d", CodeTooDeepTree)
	if !strings.Contains(got.Message, "more than 8 levels") {
		t.Errorf("message = %q", got.Message)
	}
	if res.Files != 1 || res.Valid() {
		t.Errorf("read %d files (valid %v), want 1 and invalid", res.Files, res.Valid())
	}
}

func TestLFSPointer(t *testing.T) {
	pointer := "version https://git-lfs.github.com/spec/v1\noid sha256:" + strings.Repeat("ab", 32) + "\nsize 1234\n"
	fsys := fstest.MapFS{
		"mesh.yaml": {Data: []byte(validMesh)},
		"x.yaml":    {Data: []byte(pointer)},
	}
	for _, cache := range []*Cache{nil, NewCache()} {
		res, err := newTestLoader(t, Options{}).LoadTreesCached([]Tree{{FS: fsys, Prefix: "policies"}}, cache)
		if err != nil {
			t.Fatal(err)
		}
		got := wantFinding(t, res, "policies/x.yaml", CodeLFSPointer)
		if want := "is a Git LFS pointer; gitmesh reads files from git objects: store policy files in git itself"; got.Message != want {
			t.Errorf("message = %q", got.Message)
		}
		if res.Valid() {
			t.Error("a tree with an LFS pointer is valid")
		}
	}
}

func TestSubmoduleIsAnError(t *testing.T) {
	fsys := fstest.MapFS{
		"mesh.yaml": {Data: []byte(validMesh)},
		"vendored":  {Mode: fs.ModeIrregular, Sys: GitSubmodule{Commit: strings.Repeat("ab", 20)}},
		"dev.yaml":  {Mode: fs.ModeIrregular}, // not a submodule: a warning, as before
		"other":     {Mode: fs.ModeIrregular}, // not YAML, not a submodule: ignored
	}
	res, err := newTestLoader(t, Options{}).Load(fsys)
	if err != nil {
		t.Fatal(err)
	}
	got := wantFinding(t, res, "vendored", CodeSubmodule)
	if got.Message != "is a git submodule (commit abababababab); it is not followed" || !got.IsError() {
		t.Errorf("finding = %+v", got)
	}
	if w := wantFinding(t, res, "dev.yaml", CodeNotRegular); w.IsError() {
		t.Errorf("an irregular file is an error: %+v", w)
	}
	if errs, warns := res.Count(); errs != 1 || warns != 1 {
		t.Errorf("%d errors, %d warnings, want 1 and 1:\n%s", errs, warns, formatFindings(res.Findings))
	}
}

// A file the caller names that does not exist is an I/O error (the CLI's exit
// 2), not a finding.
func TestMissingNamedFileIsAnIOError(t *testing.T) {
	root, err := os.OpenRoot(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	if _, err := newTestLoader(t, Options{}).LoadTrees([]Tree{{FS: root.FS(), Files: []string{"missing.yaml"}}}); err == nil {
		t.Error("loading a missing file returned no error")
	}
}

func TestAllErrorsInOnePass(t *testing.T) {
	fsys := fstest.MapFS{}
	for i, name := range []string{"a.yaml", "b/c.yaml", "d/e/f.yml"} {
		fsys[name] = &fstest.MapFile{Data: []byte("type: Dataplane\nname: dp\nnetworking:\n  inbound: []\n  bogus" + strings.Repeat("x", i) + ": 1\n")}
	}
	res, err := newTestLoader(t, Options{}).Load(fsys)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"a.yaml", "b/c.yaml", "d/e/f.yml"} {
		wantFinding(t, res, name, CodeTooFewItems)
		wantFinding(t, res, name, CodeUnknownField)
	}
}
