package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net/netip"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing/fstest"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/gitmesh/gitmesh/internal/atomicfile"
	"github.com/gitmesh/gitmesh/reconcile/pipeline"
	"github.com/gitmesh/gitmesh/schema"
	"github.com/gitmesh/gitmesh/xds"
)

type migrateOptions struct {
	out    string
	limits limitFlags
}

func newMigrateCmd() *cobra.Command {
	var o migrateOptions
	cmd := &cobra.Command{
		Use:   "migrate [PATH] [--out DIR]",
		Short: "Rewrite legacy policy forms as Kuma 2.x writes them, proving nothing served changes",
		Long: `Migrate rewrites the policy tree under PATH (default "."): each
TrafficPermission becomes a MeshTrafficPermission, each Dataplane inbound
and outbound ` + "`interface`" + ` string becomes address and port fields, and the
inbound tags service and protocol are spelt kuma.io/service and
kuma.io/protocol, each outbound's service a kuma.io/service tag, and a
Mesh's 0.x mTLS (enabled, ca) one backend named ca-1. Other documents are
written back as they are.

It proves itself before writing anything: the migrated tree must translate
to byte-identical Envoy and proxyless gRPC resources for every proxy. When
it does not, migrate lists each proxy that would change, writes nothing and
exits 1. With --out the migrated tree goes to DIR (which must not exist or
be empty); without, the files are replaced in place, each atomically.

Exit status: 0 migrated (or nothing to migrate), 1 the tree is invalid or
the migration would change what a proxy is served, 2 usage or I/O error.`,
		Example: `  gitmesh migrate policies/ --out policies-2x/
  gitmesh migrate policies/`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir := "."
			if len(args) == 1 {
				dir = args[0]
			}
			return runMigrate(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), o, dir)
		},
	}
	o.limits.bind(cmd.Flags())
	cmd.Flags().StringVar(&o.out, "out", "", "write the migrated tree to this directory instead of in place")
	return cmd
}

func runMigrate(ctx context.Context, stdout, stderr io.Writer, o migrateOptions, dir string) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return usageError("%v", err)
	}
	defer root.Close()
	p, err := pipeline.New(pipeline.Options{Limits: o.limits.options()})
	if err != nil {
		return err
	}
	before, err := p.Run(ctx, []schema.Tree{{FS: root.FS()}}, nil)
	if err != nil {
		return &exitError{code: exitUsage, err: err}
	}
	if !before.Valid() {
		for _, f := range before.Findings {
			fmt.Fprintln(stderr, f.Error())
		}
		return failed()
	}
	files, changed, err := migrateTree(root.FS())
	if err != nil {
		return &exitError{code: exitUsage, err: err}
	}
	migrated := fstest.MapFS{}
	for name, b := range files {
		migrated[name] = &fstest.MapFile{Data: b, Mode: 0o644}
	}
	after, err := p.Run(ctx, []schema.Tree{{FS: migrated}}, nil)
	if err != nil {
		return &exitError{code: exitUsage, err: err}
	}
	if !after.Valid() {
		fmt.Fprintln(stderr, "gitmesh: the migrated tree is invalid; nothing was written:")
		for _, f := range after.Findings {
			if f.IsError() {
				fmt.Fprintln(stderr, "  "+f.Error())
			}
		}
		return failed()
	}
	if differ := differingProxies(before.Translation, after.Translation); len(differ) > 0 {
		fmt.Fprintf(stderr, "gitmesh: the migrated tree would change what %d proxies are served; nothing was written:\n", len(differ))
		for _, d := range differ {
			fmt.Fprintln(stderr, "  "+d)
		}
		return failed()
	}
	target := dir
	if o.out != "" {
		target = o.out
		if entries, err := os.ReadDir(target); err == nil && len(entries) > 0 {
			return usageError("--out %s is not empty", target)
		}
		changed = sortedNames(files)
	}
	for _, name := range changed {
		p := filepath.Join(target, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return &exitError{code: exitUsage, err: err}
		}
		if err := atomicfile.Write(p, files[name], 0o644); err != nil {
			return &exitError{code: exitUsage, err: err}
		}
	}
	fmt.Fprintf(stdout, "migrated: %d files rewritten, %d proxies checked byte-identical for envoy and grpc\n",
		len(changed), len(before.Translation.Nodes()))
	return nil
}

func sortedNames(m map[string][]byte) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// differingProxies lists each proxy, per flavour, whose resources differ
// between two translations (or that only one has).
func differingProxies(a, b *xds.Translation) []string {
	var out []string
	ids := map[string]bool{}
	for _, n := range a.Nodes() {
		ids[n.Dataplane.NodeID().String()] = true
	}
	for _, n := range b.Nodes() {
		ids[n.Dataplane.NodeID().String()] = true
	}
	for _, id := range slices.Sorted(maps.Keys(ids)) {
		for _, f := range xds.Flavors {
			pa, pb := a.Proxy(id, f), b.Proxy(id, f)
			switch {
			case pa == nil && pb == nil:
			case pa == nil || pb == nil:
				out = append(out, fmt.Sprintf("%s (%s): only one side has it", id, f))
			case pa.Hash != pb.Hash:
				out = append(out, fmt.Sprintf("%s (%s): resources differ", id, f))
			}
		}
	}
	return out
}

// migrateTree returns every YAML file of fsys with its legacy forms
// rewritten, and the names of the files that changed.
func migrateTree(fsys fs.FS) (map[string][]byte, []string, error) {
	files := map[string][]byte{}
	var changed []string
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != "." && strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		ext := strings.ToLower(path.Ext(p))
		if d.IsDir() || !d.Type().IsRegular() || (ext != ".yaml" && ext != ".yml") {
			return nil
		}
		b, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		out, did, err := migrateFile(b)
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		files[p] = out
		if did {
			changed = append(changed, p)
		}
		return nil
	})
	return files, changed, err
}

// migrateFile rewrites the documents of one file; a file with nothing to
// migrate comes back byte for byte.
func migrateFile(b []byte) ([]byte, bool, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var docs []*yaml.Node
	did := false
	for {
		var doc yaml.Node
		if err := dec.Decode(&doc); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return nil, false, err
		}
		out, changed, err := migrateDocument(&doc)
		if err != nil {
			return nil, false, err
		}
		did = did || changed
		docs = append(docs, out...)
	}
	if !did {
		return b, false, nil
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	for _, d := range docs {
		if err := enc.Encode(d); err != nil {
			return nil, false, err
		}
	}
	if err := enc.Close(); err != nil {
		return nil, false, err
	}
	return buf.Bytes(), true, nil
}

func mapping(doc *yaml.Node) *yaml.Node {
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		doc = doc.Content[0]
	}
	if doc.Kind != yaml.MappingNode {
		return nil
	}
	return doc
}

func field(m *yaml.Node, key string) *yaml.Node {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

func scalar(v string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Value: v} }

// replaceKey replaces the key/value pair key of m with the pairs kv.
func replaceKey(m *yaml.Node, key string, kv ...string) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value != key {
			continue
		}
		var pairs []*yaml.Node
		for j := 0; j+1 < len(kv); j += 2 {
			v := scalar(kv[j+1])
			if _, err := netip.ParseAddr(kv[j+1]); err != nil && kv[j] != "address" {
				v.Tag = "!!int"
			}
			pairs = append(pairs, scalar(kv[j]), v)
		}
		pairs[0].HeadComment = m.Content[i].HeadComment
		m.Content = append(m.Content[:i], append(pairs, m.Content[i+2:]...)...)
		return
	}
}

func migrateDocument(doc *yaml.Node) ([]*yaml.Node, bool, error) {
	m := mapping(doc)
	switch t := field(m, "type"); {
	case t == nil:
		return []*yaml.Node{doc}, false, nil
	case t.Value == schema.TypeDataplane:
		return []*yaml.Node{doc}, migrateDataplane(m), nil
	case t.Value == schema.TypeMesh:
		return []*yaml.Node{doc}, migrateMesh(m), nil
	case t.Value == schema.TypeTrafficPermission:
		out, err := migratePermission(m, doc)
		return out, err == nil, err
	}
	return []*yaml.Node{doc}, false, nil
}

// migrateDataplane turns `interface` strings into address and port fields,
// and the inbound tags service and protocol into their kuma.io/ spelling.
func migrateDataplane(m *yaml.Node) bool {
	did := false
	nw := field(m, "networking")
	if in := field(nw, "inbound"); in != nil {
		for _, item := range in.Content {
			if tags := field(item, "tags"); tags != nil && tags.Kind == yaml.MappingNode {
				for i := 0; i+1 < len(tags.Content); i += 2 {
					if k := tags.Content[i]; k.Value == schema.TagService || k.Value == schema.TagProtocol {
						k.Value = "kuma.io/" + k.Value
						did = true
					}
				}
			}
			iface := field(item, "interface")
			if iface == nil {
				continue
			}
			host, ports, ok := splitLegacyInterface(iface.Value, 2)
			if !ok {
				continue
			}
			replaceKey(item, "interface", "address", host, "port", ports[0], "servicePort", ports[1])
			did = true
		}
	}
	if out := field(nw, "outbound"); out != nil {
		for _, item := range out.Content {
			if svc := field(item, "service"); svc != nil && field(item, "tags") == nil {
				for i := 0; i+1 < len(item.Content); i += 2 {
					if item.Content[i].Value == "service" {
						item.Content[i].Value = "tags"
						item.Content[i+1] = &yaml.Node{Kind: yaml.MappingNode, Style: yaml.FlowStyle,
							Content: []*yaml.Node{scalar("kuma.io/service"), svc}}
					}
				}
				did = true
			}
			iface := field(item, "interface")
			if iface == nil {
				continue
			}
			host, ports, ok := splitLegacyInterface(iface.Value, 1)
			if !ok {
				continue
			}
			if host == "" {
				replaceKey(item, "interface", "port", ports[0])
			} else {
				replaceKey(item, "interface", "address", host, "port", ports[0])
			}
			did = true
		}
	}
	return did
}

// splitLegacyInterface splits an interface string as the loader does,
// the ports as written.
func splitLegacyInterface(s string, nports int) (string, []string, bool) {
	host, ports, ok := schema.SplitInterface(s, nports)
	out := make([]string, len(ports))
	for i, p := range ports {
		out[i] = strconv.FormatUint(uint64(p), 10)
	}
	return host, out, ok
}

// migratePermission turns a TrafficPermission into MeshTrafficPermissions:
// one per destination selector (a top-level targetRef selects one kind of
// inbound), each allowing the rule's sources. A permission with one rule
// and one destination keeps its name; others are numbered.
func migratePermission(m, doc *yaml.Node) ([]*yaml.Node, error) {
	name, mesh := field(m, "name").Value, ""
	if f := field(m, "mesh"); f != nil {
		mesh = f.Value
	}
	type rule struct{ sources, destinations []map[string]string }
	selectors := func(list *yaml.Node) ([]map[string]string, error) {
		var out []map[string]string
		if list == nil {
			return nil, nil
		}
		for _, s := range list.Content {
			var sel map[string]string
			if err := field(s, "match").Decode(&sel); err != nil {
				return nil, err
			}
			out = append(out, sel)
		}
		return out, nil
	}
	var rules []rule
	add := func(r *yaml.Node) error {
		src, err := selectors(field(r, "sources"))
		if err != nil {
			return err
		}
		dst, err := selectors(field(r, "destinations"))
		if err != nil {
			return err
		}
		rules = append(rules, rule{src, dst})
		return nil
	}
	if rs := field(m, "rules"); rs != nil {
		for _, r := range rs.Content {
			if err := add(r); err != nil {
				return nil, err
			}
		}
	} else if err := add(m); err != nil {
		return nil, err
	}
	n := 0
	for _, r := range rules {
		n += len(r.destinations)
	}
	var out []*yaml.Node
	for _, r := range rules {
		for _, d := range r.destinations {
			mtpName := name
			if n > 1 {
				mtpName = fmt.Sprintf("%s-%d", name, len(out)+1)
			}
			var b strings.Builder
			fmt.Fprintf(&b, "type: MeshTrafficPermission\n")
			if mesh != "" {
				fmt.Fprintf(&b, "mesh: %s\n", mesh)
			}
			fmt.Fprintf(&b, "name: %s\nspec:\n  targetRef: %s\n  from:\n", mtpName, targetRefYAML(d))
			for _, s := range r.sources {
				fmt.Fprintf(&b, "    - targetRef: %s\n      default: {action: Allow}\n", targetRefYAML(s))
			}
			var node yaml.Node
			if err := yaml.Unmarshal([]byte(b.String()), &node); err != nil {
				return nil, err
			}
			if len(out) == 0 {
				node.HeadComment = doc.HeadComment
			}
			out = append(out, &node)
		}
	}
	return out, nil
}

// targetRefYAML is the targetRef selecting what a legacy selector matches.
func targetRefYAML(sel map[string]string) string {
	tags := map[string]string{}
	svc := ""
	for k, v := range sel {
		switch {
		case (k == schema.TagService || k == "kuma.io/service") && v != "*":
			svc = v
		case v != "*":
			tags[k] = v
		}
	}
	tagYAML := func() string {
		keys := make([]string, 0, len(tags))
		for k := range tags {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = fmt.Sprintf("%q: %q", k, tags[k])
		}
		return "{" + strings.Join(parts, ", ") + "}"
	}
	switch {
	case svc == "" && len(tags) == 0:
		return "{kind: Mesh}"
	case svc == "":
		return "{kind: MeshSubset, tags: " + tagYAML() + "}"
	case len(tags) == 0:
		return fmt.Sprintf("{kind: MeshService, name: %q}", svc)
	default:
		return fmt.Sprintf("{kind: MeshServiceSubset, name: %q, tags: %s}", svc, tagYAML())
	}
}

// migrateMesh turns the 0.x mTLS form into one backend named ca-1.
func migrateMesh(m *yaml.Node) bool {
	mt := field(m, "mtls")
	if mt == nil || mt.Kind != yaml.MappingNode || field(mt, "enabledBackend") != nil || field(mt, "backends") != nil {
		return false
	}
	enabled := field(mt, "enabled")
	backend := &yaml.Node{Kind: yaml.MappingNode, Content: []*yaml.Node{scalar("name"), scalar("ca-1"), scalar("type"), scalar("builtin")}}
	if prov := field(field(mt, "ca"), "provided"); prov != nil {
		backend.Content[3] = scalar("provided")
		backend.Content = append(backend.Content, scalar("conf"), prov)
	}
	on := enabled != nil && enabled.Value == "true"
	var content []*yaml.Node
	if on {
		content = append(content, scalar("enabledBackend"), scalar("ca-1"))
	}
	content = append(content, scalar("backends"), &yaml.Node{Kind: yaml.SequenceNode, Content: []*yaml.Node{backend}})
	mt.Content = content
	return true
}
