package main

import (
	"fmt"
	"io"
	"path"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	"github.com/gitmesh/gitmesh/reconcile/source"
	"github.com/gitmesh/gitmesh/schema"
	"github.com/gitmesh/gitmesh/xds"
)

type diffOptions struct {
	repo   string
	path   string
	format string
}

func newDiffCmd() *cobra.Command {
	var o diffOptions
	cmd := &cobra.Command{
		Use:   "diff BASE [HEAD]",
		Short: "Show what a change does to the resources and to each proxy's Envoy config",
		Long: `Diff reads two commits of a git repository straight from its objects, checks
each as gitmesh validate does, and prints what changes from BASE to HEAD
(default HEAD): the resources added, removed and changed, field by field, and
each proxy whose Envoy configuration changes, with its listeners, clusters,
routes, endpoints and secrets added, removed or changed. It needs no network.

BASE and HEAD are any revision git names: a sha, a branch, a tag, HEAD~3,
origin/main. --format markdown prints a plan to post on a pull request.

Exit status: 0 no change, 1 changes, 2 an invalid side (its findings go to
stderr), an unknown revision, or a usage or I/O error.`,
		Example: `  gitmesh diff main
  gitmesh diff --path policies origin/main HEAD
  gitmesh diff --path policies --format markdown "$BASE_SHA" "$HEAD_SHA" > plan.md`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			head := "HEAD"
			if len(args) == 2 {
				head = args[1]
			}
			return runDiff(cmd.OutOrStdout(), cmd.ErrOrStderr(), o, args[0], head)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.repo, "repo", ".", "the git repository to read the commits from")
	f.StringVar(&o.path, "path", "", "the policy directory within the repository (default: its root)")
	f.StringVarP(&o.format, "format", "o", "text", "output format: text, json or markdown")
	_ = cmd.RegisterFlagCompletionFunc("format", cobra.FixedCompletions(diffFormats, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

func runDiff(stdout, stderr io.Writer, o diffOptions, baseRev, headRev string) error {
	render, ok := diffRenderers[o.format]
	if !ok {
		return usageError("unknown --format %q: use one of %v", o.format, diffFormats)
	}
	repo, err := source.OpenRepository(o.repo)
	if err != nil {
		return &exitError{code: exitUsage, err: err}
	}
	loader, err := schema.NewLoader(schema.Options{})
	if err != nil {
		return err
	}
	// The cache lets HEAD reuse what BASE parsed of every unchanged file.
	l := sideLoader{loader: loader, cache: schema.NewCache(), path: o.path, stderr: stderr,
		read: func(rev string) (*source.Commit, error) { return source.ReadCommit(repo, rev, o.path) }}
	base, err := l.load("BASE", baseRev)
	if err != nil {
		return err
	}
	head, err := l.load("HEAD", headRev)
	if err != nil {
		return err
	}
	plan, err := planDiff(base, head)
	if err != nil {
		return &exitError{code: exitUsage, err: err}
	}
	if err := render(stdout, plan); err != nil {
		return &exitError{code: exitUsage, err: err}
	}
	if plan.changed() {
		return failed()
	}
	return nil
}

// diffSide is one of the two commits diff compares, loaded and checked.
type diffSide struct {
	rev    string
	commit *source.Commit
	set    *schema.Set
}

// sideLoader reads a commit's policy tree and checks it as validate does.
type sideLoader struct {
	loader *schema.Loader
	cache  *schema.Cache
	path   string
	read   func(rev string) (*source.Commit, error)
	stderr io.Writer
}

// load reads rev as side label (BASE or HEAD). An invalid side prints its
// findings, named relative to the repository, and is an error.
func (l sideLoader) load(label, rev string) (*diffSide, error) {
	c, err := l.read(rev)
	if err != nil {
		return nil, &exitError{code: exitUsage, err: fmt.Errorf("%s: %w", label, err)}
	}
	tree := schema.Tree{FS: c.Tree, Prefix: path.Clean(filepath.ToSlash(l.path))}
	res, err := l.loader.LoadTreesCached([]schema.Tree{tree}, l.cache)
	if err != nil {
		return nil, &exitError{code: exitUsage, err: fmt.Errorf("%s %s: %w", label, shortHash(c.Hash), err)}
	}
	if res.Set != nil {
		if fs := translationFindings(res.Set); len(fs) > 0 {
			res.Findings = append(res.Findings, fs...)
			res.Set = nil
		}
	}
	if !res.Valid() {
		fmt.Fprintf(l.stderr, "gitmesh: %s %s (%s) is invalid:\n", label, shortHash(c.Hash), c.Subject)
		_ = reportText(l.stderr, res)
		return nil, &exitError{code: exitUsage}
	}
	return &diffSide{rev: rev, commit: c, set: res.Set}, nil
}

func shortHash(h string) string { return h[:min(len(h), 12)] }

// diffPlan is what diff prints, and its JSON form.
type diffPlan struct {
	Base      diffCommit   `json:"base"`
	Head      diffCommit   `json:"head"`
	Resources resourceDiff `json:"resources"`
	Proxies   []proxyDiff  `json:"proxies"`
	Summary   diffSummary  `json:"summary"`
}

type diffCommit struct {
	Rev     string `json:"rev"`
	Commit  string `json:"commit"`
	Subject string `json:"subject"`
}

type resourceDiff struct {
	Added   []schema.Key      `json:"added"`
	Changed []changedResource `json:"changed"`
	Removed []schema.Key      `json:"removed"`
}

// changedResource is a resource both sides have, and its changes.
type changedResource struct {
	schema.Key
	Fields []schema.FieldChange `json:"fields"`
}

// proxyDiff is how one proxy's resources change. Status is added (only
// HEAD has the proxy: every resource is added), removed (only BASE has it)
// or changed.
type proxyDiff struct {
	Node      string   `json:"node"`
	Status    string   `json:"status"`
	Listeners nameDiff `json:"listeners"`
	Clusters  nameDiff `json:"clusters"`
	Routes    nameDiff `json:"routes"`
	Endpoints nameDiff `json:"endpoints"`
	Secrets   nameDiff `json:"secrets"`
	// Identities are the SANs of the identity certificate on each side, set
	// when they differ.
	Identities *identityDiff `json:"identities,omitempty"`
	// CAChanged is true when the mesh's CA changes: both secrets are
	// issued again.
	CAChanged bool `json:"ca_changed,omitempty"`
}

// What happened to a resource or a proxy, as JSON and Markdown say it.
const (
	statusAdded   = "added"
	statusChanged = "changed"
	statusRemoved = "removed"
)

// nameDiff lists resources of one kind by name, each list sorted.
type nameDiff struct {
	Added   []string `json:"added"`
	Changed []string `json:"changed"`
	Removed []string `json:"removed"`
}

func (d nameDiff) empty() bool { return len(d.Added)+len(d.Changed)+len(d.Removed) == 0 }

type identityDiff struct {
	Old []string `json:"old"`
	New []string `json:"new"`
}

type diffSummary struct {
	Resources int `json:"resources"`
	Added     int `json:"added"`
	Changed   int `json:"changed"`
	Removed   int `json:"removed"`
	Proxies   int `json:"proxies"`
	// ProxiesUnchanged are proxies the change might have reached, translated
	// again to the same resources.
	ProxiesUnchanged int `json:"proxies_unchanged"`
}

func (s diffSummary) String() string {
	proxies := fmt.Sprintf("%d proxies", s.Proxies)
	if s.Proxies == 1 {
		proxies = "1 proxy"
	}
	return fmt.Sprintf("%s changed (%d added, %d changed, %d removed); %s affected",
		plural(s.Resources, "resource"), s.Added, s.Changed, s.Removed, proxies)
}

func (p *diffPlan) changed() bool { return p.Summary.Resources > 0 || p.Summary.Proxies > 0 }

// proxyKinds are the kinds of a proxy's resources, in the order diff prints
// them; secrets have no type URL in Proxy.Resources.
var proxyKinds = []struct {
	name, plural string
	typeURL      resource.Type
	of           func(*proxyDiff) *nameDiff
}{
	{"listener", "listeners", resource.ListenerType, func(p *proxyDiff) *nameDiff { return &p.Listeners }},
	{"cluster", "clusters", resource.ClusterType, func(p *proxyDiff) *nameDiff { return &p.Clusters }},
	{"route", "routes", resource.RouteType, func(p *proxyDiff) *nameDiff { return &p.Routes }},
	{"endpoints", "endpoints", resource.EndpointType, func(p *proxyDiff) *nameDiff { return &p.Endpoints }},
	{"secret", "secrets", "", func(p *proxyDiff) *nameDiff { return &p.Secrets }},
}

func planDiff(base, head *diffSide) (*diffPlan, error) {
	d := schema.DiffSets(base.set, head.set)
	plan := &diffPlan{
		Base:      diffCommit{Rev: base.rev, Commit: base.commit.Hash, Subject: base.commit.Subject},
		Head:      diffCommit{Rev: head.rev, Commit: head.commit.Hash, Subject: head.commit.Subject},
		Resources: resourceDiff{Added: nonNil(d.Added), Changed: []changedResource{}, Removed: nonNil(d.Removed)},
	}
	for _, k := range d.Changed {
		plan.Resources.Changed = append(plan.Resources.Changed,
			changedResource{Key: k, Fields: schema.ResourceChanges(base.set, head.set, k)})
	}
	proxies, unchanged, err := proxyDiffs(base.set, head.set, d)
	if err != nil {
		return nil, err
	}
	plan.Proxies = proxies
	plan.Summary = diffSummary{Resources: d.Len(), Added: len(d.Added), Changed: len(d.Changed), Removed: len(d.Removed),
		Proxies: len(proxies), ProxiesUnchanged: unchanged}
	return plan, nil
}

// proxyDiffs translates, on both sides, every proxy the change may reach,
// and returns those whose resources differ, sorted by node id, and how many
// others it translated.
func proxyDiffs(prev, next *schema.Set, d schema.SetDiff) ([]proxyDiff, int, error) {
	prevIdx, err := xds.NewIndex(prev)
	if err != nil {
		return nil, 0, fmt.Errorf("BASE: %w", err)
	}
	nextIdx, err := xds.NewIndexFrom(next, prevIdx)
	if err != nil {
		return nil, 0, fmt.Errorf("HEAD: %w", err)
	}
	out, unchanged := []proxyDiff{}, 0
	for _, node := range xds.AffectedBetween(prevIdx, nextIdx, xds.ChangeOf(d)) {
		before, err := translateNode(prevIdx, prev, node)
		if err != nil {
			return nil, 0, fmt.Errorf("BASE: %w", err)
		}
		after, err := translateNode(nextIdx, next, node)
		if err != nil {
			return nil, 0, fmt.Errorf("HEAD: %w", err)
		}
		pd := compareProxies(node, before, after, caChanged(prev, next, before, after))
		if pd.Status == statusChanged && pd.empty() {
			unchanged++
			continue
		}
		out = append(out, pd)
	}
	return out, unchanged, nil
}

// translateNode translates the dataplane with the node id of set, or
// returns nil when set has none.
func translateNode(idx *xds.Index, set *schema.Set, node string) (*xds.Proxy, error) {
	mesh, name, _ := strings.Cut(node, ".") // mesh names have no '.'
	dp := set.Dataplane(mesh, name)
	if dp == nil {
		return nil, nil
	}
	return xds.TranslateProxy(idx, dp, xds.Options{})
}

func compareProxies(node string, before, after *xds.Proxy, caChanged bool) proxyDiff {
	pd := proxyDiff{Node: node, Status: statusChanged}
	switch {
	case before == nil:
		pd.Status = statusAdded
	case after == nil:
		pd.Status = statusRemoved
	}
	for _, k := range proxyKinds {
		if k.typeURL != "" {
			*k.of(&pd) = compareResources(resourcesOf(before, k.typeURL), resourcesOf(after, k.typeURL))
		}
	}
	pd.Secrets = compareNames(secretNames(before), secretNames(after), func(name string) bool {
		return caChanged || (name == xds.SecretIdentity && !slices.Equal(before.Identities, after.Identities))
	})
	if ids, nextIDs := identitiesOf(before), identitiesOf(after); !slices.Equal(ids, nextIDs) {
		pd.Identities = &identityDiff{Old: ids, New: nextIDs}
	}
	pd.CAChanged = caChanged
	return pd
}

func (p *proxyDiff) empty() bool {
	for _, k := range proxyKinds {
		if !k.of(p).empty() {
			return false
		}
	}
	return true
}

// caChanged reports whether the CA of the proxy's mesh differs while mTLS
// stays on: every certificate is issued again.
func caChanged(prev, next *schema.Set, before, after *xds.Proxy) bool {
	if before == nil || after == nil || !before.MTLS || !after.MTLS {
		return false
	}
	return !reflect.DeepEqual(prev.Mesh(before.Mesh).MTLS.CA, next.Mesh(after.Mesh).MTLS.CA)
}

func resourcesOf(p *xds.Proxy, typ resource.Type) []types.Resource {
	if p == nil {
		return nil
	}
	return p.Resources[typ]
}

func secretNames(p *xds.Proxy) []string {
	if p == nil {
		return nil
	}
	return slices.Sorted(slices.Values(p.SecretNames()))
}

func identitiesOf(p *xds.Proxy) []string {
	if p == nil {
		return []string{}
	}
	return nonNil(p.Identities)
}

// compareResources compares two lists of resources of one type by name, and
// the resources of a name by content. Resources the two Indexes share are
// the same values.
func compareResources(before, after []types.Resource) nameDiff {
	prev := make(map[string]types.Resource, len(before))
	for _, r := range before {
		prev[cache.GetResourceName(r)] = r
	}
	next := make(map[string]types.Resource, len(after))
	for _, r := range after {
		next[cache.GetResourceName(r)] = r
	}
	return compareNames(sortedKeys(prev), sortedKeys(next), func(name string) bool {
		a, b := prev[name], next[name]
		return a != b && !proto.Equal(a, b)
	})
}

// compareNames merges two sorted lists of names: those only after has are
// added, those only before has removed, and those both have changed where
// changed says so.
func compareNames(before, after []string, changed func(name string) bool) nameDiff {
	d := nameDiff{Added: []string{}, Changed: []string{}, Removed: []string{}}
	i, j := 0, 0
	for i < len(before) || j < len(after) {
		switch {
		case j == len(after) || (i < len(before) && before[i] < after[j]):
			d.Removed = append(d.Removed, before[i])
			i++
		case i == len(before) || after[j] < before[i]:
			d.Added = append(d.Added, after[j])
			j++
		default:
			if changed(after[j]) {
				d.Changed = append(d.Changed, after[j])
			}
			i++
			j++
		}
	}
	return d
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
