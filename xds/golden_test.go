package xds

import (
	"bytes"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/gitmesh/gitmesh/internal/golden"
	"github.com/gitmesh/gitmesh/schema/schematest"
	"github.com/google/go-cmp/cmp"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/testing/protocmp"
)

// Each case is a folder under testdata/: its input is policies/ (a policy
// tree as users write it), its expected output one folder per proxy, named
// by node id, holding <type>.yaml per resource type the proxy has and
// proxy.yaml with what is not a resource.
const policiesDir = "policies"

// goldenFiles maps the types to the file names of a proxy's folder.
var goldenFiles = map[resource.Type]string{
	resource.ListenerType: "listeners.yaml",
	resource.ClusterType:  "clusters.yaml",
	resource.RouteType:    "routes.yaml",
	resource.EndpointType: "endpoints.yaml",
}

// The Envoy cases are testdata/<case>/, the proxyless gRPC ones
// testdata/grpc/<case>/, in the same layout.
func TestGolden(t *testing.T) {
	for _, c := range goldenCases(t) {
		t.Run(c.name, func(t *testing.T) {
			set := schematest.Load(t, os.DirFS(filepath.Join(c.dir, policiesDir)))
			proxies, err := Translate(set, Options{Flavor: c.flavor})
			if err != nil {
				t.Fatalf("Translate: %v", err)
			}
			for _, p := range proxies {
				if err := Check(p); err != nil {
					t.Errorf("Check: %v", err)
				}
			}
			got := goldenOutput(t, proxies)
			if golden.Updating() {
				writeGolden(t, c.dir, got)
				return
			}
			want := readGolden(t, c.dir)
			for _, name := range sortedKeys(want) {
				if _, ok := got[name]; !ok {
					t.Errorf("%s: expected, not produced (go test ./xds -update removes it)", name)
				}
			}
			for _, name := range sortedKeys(got) {
				w, ok := want[name]
				if !ok {
					t.Errorf("%s: produced, no golden file (go test ./xds -update writes it)", name)
					continue
				}
				if typ := typeOfFile(name); typ != "" {
					diffProtos(t, name, decodeGolden(t, name, typ, w), decodeGolden(t, name, typ, got[name]))
				}
				if !bytes.Equal(w, got[name]) {
					t.Errorf("%s: differs from golden file (-want +got):\n%s", name, cmp.Diff(string(w), string(got[name])))
				}
			}
		})
	}
}

// goldenCase is one case folder and the flavour it is translated for.
type goldenCase struct {
	name, dir string
	flavor    Flavor
}

// goldenCases lists the case folders of both flavours.
func goldenCases(t *testing.T) []goldenCase {
	t.Helper()
	var cases []goldenCase
	for _, f := range []struct {
		glob, prefix string
		flavor       Flavor
	}{
		{filepath.Join("testdata", "*", policiesDir), "", FlavorEnvoy},
		{filepath.Join("testdata", "grpc", "*", policiesDir), "grpc/", FlavorGRPC},
	} {
		dirs, err := filepath.Glob(f.glob)
		if err != nil {
			t.Fatal(err)
		}
		if len(dirs) == 0 {
			t.Fatalf("no golden cases match %s", f.glob)
		}
		sort.Strings(dirs)
		for _, d := range dirs {
			dir := filepath.Dir(d)
			cases = append(cases, goldenCase{name: f.prefix + filepath.Base(dir), dir: dir, flavor: f.flavor})
		}
	}
	return cases
}

// proxyMeta is what proxy.yaml records about a Proxy besides resources.
type proxyMeta struct {
	Mesh       string   `yaml:"mesh"`
	Dataplane  string   `yaml:"dataplane"`
	Flavor     Flavor   `yaml:"flavor"`
	MTLS       bool     `yaml:"mtls"`
	Identities []string `yaml:"identities,omitempty"`
	Secrets    []string `yaml:"secrets,omitempty"`
	// Unsupported is what the flavour drops of the policies.
	Unsupported []string `yaml:"unsupported,omitempty"`
}

// goldenOutput renders proxies into golden files by slash path relative to
// the case folder.
func goldenOutput(t *testing.T, proxies []*Proxy) map[string][]byte {
	t.Helper()
	out := make(map[string][]byte)
	for _, p := range proxies {
		var meta bytes.Buffer
		enc := yaml.NewEncoder(&meta)
		enc.SetIndent(2)
		if err := enc.Encode(proxyMeta{Mesh: p.Mesh, Dataplane: p.Dataplane, Flavor: p.Flavor, MTLS: p.MTLS, Identities: p.Identities,
			Secrets: p.SecretNames(), Unsupported: p.Unsupported}); err != nil {
			t.Fatal(err)
		}
		out[p.NodeID+"/proxy.yaml"] = meta.Bytes()
		for typ, file := range goldenFiles {
			if len(p.Resources[typ]) == 0 {
				continue
			}
			b, err := Marshal(p.Resources[typ], FormatYAML)
			if err != nil {
				t.Fatalf("%s: %v", p.NodeID, err)
			}
			out[p.NodeID+"/"+file] = b
		}
	}
	return out
}

// readGolden reads every file of a case except its input.
func readGolden(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	out := make(map[string][]byte)
	err := fs.WalkDir(os.DirFS(dir), ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path == policiesDir {
				return fs.SkipDir
			}
			return nil
		}
		b, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(path)))
		out[path] = b
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// writeGolden replaces a case's expected output with got.
func writeGolden(t *testing.T, dir string, got map[string][]byte) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() != policiesDir {
			if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
				t.Fatal(err)
			}
		}
	}
	for name, b := range got {
		path := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func typeOfFile(name string) resource.Type {
	for typ, file := range goldenFiles {
		if strings.HasSuffix(name, "/"+file) {
			return typ
		}
	}
	return ""
}

// decodeGolden parses a golden YAML list back into protos of type typ.
func decodeGolden(t *testing.T, name string, typ resource.Type, b []byte) []types.Resource {
	t.Helper()
	var docs []any
	if err := yaml.Unmarshal(b, &docs); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	mt, err := protoregistry.GlobalTypes.FindMessageByURL(typ)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	out := make([]types.Resource, len(docs))
	for i, d := range docs {
		j, err := json.Marshal(d)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		m := mt.New().Interface()
		if err := protojson.Unmarshal(j, m); err != nil {
			t.Fatalf("%s: document %d: %v", name, i+1, err)
		}
		out[i] = m
	}
	return out
}

// diffProtos reports, proto-aware, how got differs from want.
func diffProtos(t *testing.T, what string, want, got []types.Resource) {
	t.Helper()
	if d := cmp.Diff(want, got, protocmp.Transform()); d != "" {
		t.Errorf("%s: resources differ (-want +got):\n%s", what, d)
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
