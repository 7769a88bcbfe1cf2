// Package schematest loads policy trees in tests: a valid tree gives its
// Set, and an invalid one fails the test with its findings. It also builds
// trees from literal files, or from a directory with some files replaced.
package schematest

import (
	"io/fs"
	"os"
	"testing"
	"testing/fstest"

	"github.com/gitmesh/gitmesh/schema"
)

// Load loads fsys with the default limits and returns its Set; a tree with
// an error fails the test, listing the findings.
func Load(t testing.TB, fsys fs.FS) *schema.Set {
	t.Helper()
	l, err := schema.NewLoader(schema.Options{})
	if err != nil {
		t.Fatal(err)
	}
	res, err := l.Load(fsys)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Valid() {
		for _, f := range res.Findings {
			t.Log(f.Error())
		}
		t.Fatal("the policies are invalid")
	}
	return res.Set
}

// Files is a tree of the given files, by slash-separated name.
func Files(files map[string]string) fstest.MapFS {
	fsys := fstest.MapFS{}
	for name, content := range files {
		fsys[name] = &fstest.MapFile{Data: []byte(content), Mode: 0o644}
	}
	return fsys
}

// Dir is a copy of the directory dir with edits applied: each names a file
// to replace, or to remove when its content is "".
func Dir(t testing.TB, dir string, edits map[string]string) fstest.MapFS {
	t.Helper()
	fsys := fstest.MapFS{}
	root := os.DirFS(dir)
	err := fs.WalkDir(root, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(root, p)
		fsys[p] = &fstest.MapFile{Data: b, Mode: 0o644}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for name, content := range edits {
		if content == "" {
			delete(fsys, name)
		} else {
			fsys[name] = &fstest.MapFile{Data: []byte(content), Mode: 0o644}
		}
	}
	return fsys
}

// Untranslatable is a file of two dataplanes of mesh default that pass the
// schema and every rule but do not translate: web-02, whose inbound reaches
// its application on 8080, has an outbound to the service odd-01 provides,
// named like its own local cluster, localhost:8080, so its Envoy
// translation has two clusters of one name.
const Untranslatable = `type: Dataplane
mesh: default
name: odd-01
networking:
  address: 10.0.0.40
  inbound:
    - port: 10080
      servicePort: 9000
      tags:
        service: "localhost:8080"
---
type: Dataplane
mesh: default
name: web-02
networking:
  address: 10.0.0.11
  inbound:
    - port: 10080
      servicePort: 8080
      tags:
        service: web
        protocol: http
  outbound:
    - port: 20002
      service: "localhost:8080"
`
