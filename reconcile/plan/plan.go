// Package plan says what a change of policy does: from the pipeline's
// Results of two commits, the resources added, changed (field by field) and
// removed, and every proxy whose configuration changes, resource by
// resource. It is the engine of `gitmesh diff`, the plan a reviewer reads
// on a pull request, and of the API's GET /diff.
package plan

import (
	"fmt"
	"reflect"
	"slices"
	"sort"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"

	"github.com/gitmesh/gitmesh/reconcile/pipeline"
	"github.com/gitmesh/gitmesh/reconcile/source"
	"github.com/gitmesh/gitmesh/schema"
	"github.com/gitmesh/gitmesh/xds"
)

// Side is one of the two commits compared: how it was named, the commit,
// and the pipeline's valid Result of its tree.
type Side struct {
	Rev     string
	Commit  source.Hash
	Subject string
	Result  *pipeline.Result
}

// Plan is what changes from the base to the head, and its JSON form.
type Plan struct {
	Base      Commit       `json:"base"`
	Head      Commit       `json:"head"`
	Resources ResourceDiff `json:"resources"`
	Proxies   []ProxyDiff  `json:"proxies"`
	Summary   Summary      `json:"summary"`
}

// Commit names one side.
type Commit struct {
	Rev     string      `json:"rev"`
	Commit  source.Hash `json:"commit"`
	Subject string      `json:"subject"`
}

// ResourceDiff lists the resources added, changed and removed, sorted.
type ResourceDiff struct {
	Added   []schema.Key      `json:"added"`
	Changed []ChangedResource `json:"changed"`
	Removed []schema.Key      `json:"removed"`
}

// ChangedResource is a resource both sides have, and its changes.
type ChangedResource struct {
	schema.Key
	Fields []schema.FieldChange `json:"fields"`
}

// What happened to a resource or a proxy.
const (
	StatusAdded   = "added"
	StatusChanged = "changed"
	StatusRemoved = "removed"
)

// ProxyDiff is how one proxy's resources change. Status is added (only the
// head has the proxy: every resource is added), removed (only the base has
// it) or changed. Flavor is the data plane compared: the one a node runs
// by default (Envoy).
type ProxyDiff struct {
	Node      string     `json:"node"`
	Flavor    xds.Flavor `json:"flavor"`
	Status    string     `json:"status"`
	Listeners NameDiff   `json:"listeners"`
	Clusters  NameDiff   `json:"clusters"`
	Routes    NameDiff   `json:"routes"`
	Endpoints NameDiff   `json:"endpoints"`
	Secrets   NameDiff   `json:"secrets"`
	// Identities are the SANs of the identity certificate on each side, set
	// when they differ.
	Identities *IdentityDiff `json:"identities,omitempty"`
	// CAChanged is true when the mesh's CA changes: both secrets are
	// issued again.
	CAChanged bool `json:"caChanged,omitempty"`
}

// NameDiff lists resources of one kind by name, each list sorted.
type NameDiff struct {
	Added   []string `json:"added"`
	Changed []string `json:"changed"`
	Removed []string `json:"removed"`
}

func (d NameDiff) empty() bool { return len(d.Added)+len(d.Changed)+len(d.Removed) == 0 }

// IdentityDiff is the identity certificate's SANs on each side.
type IdentityDiff struct {
	Old []string `json:"old"`
	New []string `json:"new"`
}

// Summary counts the plan.
type Summary struct {
	Resources int `json:"resources"`
	Added     int `json:"added"`
	Changed   int `json:"changed"`
	Removed   int `json:"removed"`
	Proxies   int `json:"proxies"`
	// ProxiesUnchanged are proxies the change might have reached,
	// translated again to the same resources.
	ProxiesUnchanged int `json:"proxiesUnchanged"`
}

func (s Summary) String() string {
	proxies := fmt.Sprintf("%d proxies", s.Proxies)
	if s.Proxies == 1 {
		proxies = "1 proxy"
	}
	resources := fmt.Sprintf("%d resources", s.Resources)
	if s.Resources == 1 {
		resources = "1 resource"
	}
	return fmt.Sprintf("%s changed (%d added, %d changed, %d removed); %s affected",
		resources, s.Added, s.Changed, s.Removed, proxies)
}

// Changed reports whether the plan changes anything.
func (p *Plan) Changed() bool { return p.Summary.Resources > 0 || p.Summary.Proxies > 0 }

// kinds are the kinds of a proxy's resources, in the order plans list
// them; secrets have no type URL in Proxy.Resources.
var kinds = []struct {
	name, plural string
	typeURL      resource.Type
	of           func(*ProxyDiff) *NameDiff
}{
	{"listener", "listeners", resource.ListenerType, func(p *ProxyDiff) *NameDiff { return &p.Listeners }},
	{"cluster", "clusters", resource.ClusterType, func(p *ProxyDiff) *NameDiff { return &p.Clusters }},
	{"route", "routes", resource.RouteType, func(p *ProxyDiff) *NameDiff { return &p.Routes }},
	{"endpoints", "endpoints", resource.EndpointType, func(p *ProxyDiff) *NameDiff { return &p.Endpoints }},
	{"secret", "secrets", "", func(p *ProxyDiff) *NameDiff { return &p.Secrets }},
}

// Compare is the plan from base to head. Both Results must be valid; head
// is best run with base as its prev (pipeline.Result.Diff is then what is
// compared, and the proxies the change cannot reach are the base's very
// values, compared at no cost).
func Compare(base, head Side) *Plan {
	bs, hs := base.Result.Set, head.Result.Set
	d := schema.DiffSets(bs, hs)
	p := &Plan{
		Base:      Commit{Rev: base.Rev, Commit: base.Commit, Subject: base.Subject},
		Head:      Commit{Rev: head.Rev, Commit: head.Commit, Subject: head.Subject},
		Resources: ResourceDiff{Added: nonNil(d.Added), Changed: []ChangedResource{}, Removed: nonNil(d.Removed)},
	}
	for _, k := range d.Changed {
		p.Resources.Changed = append(p.Resources.Changed, ChangedResource{Key: k, Fields: schema.ResourceChanges(bs, hs, k)})
	}
	p.Proxies, p.Summary.ProxiesUnchanged = proxyDiffs(base.Result, head.Result)
	p.Summary.Resources, p.Summary.Added, p.Summary.Changed, p.Summary.Removed = d.Len(), len(d.Added), len(d.Changed), len(d.Removed)
	p.Summary.Proxies = len(p.Proxies)
	return p
}

// proxyDiffs compares, node by node, the proxies of the default flavour of
// the two sides and returns those whose resources differ, sorted by node
// id, and how many others were translated again to the same resources.
func proxyDiffs(base, head *pipeline.Result) ([]ProxyDiff, int) {
	const flavor = xds.FlavorEnvoy
	nodes := map[string]bool{}
	for _, r := range []*pipeline.Result{base, head} {
		for _, n := range r.Translation.Nodes() {
			nodes[n.ID().String()] = true
		}
	}
	out, unchanged := []ProxyDiff{}, 0
	for _, node := range sortedKeys(nodes) {
		before, after := base.Translation.Proxy(node, flavor), head.Translation.Proxy(node, flavor)
		if before == after {
			continue // the change does not reach it: the very same proxy
		}
		pd := compareProxies(node, flavor, before, after, caChanged(base.Set, head.Set, before, after))
		if pd.Status == StatusChanged && pd.empty() {
			unchanged++
			continue
		}
		out = append(out, pd)
	}
	return out, unchanged
}

func compareProxies(node string, flavor xds.Flavor, before, after *xds.Proxy, caChanged bool) ProxyDiff {
	pd := ProxyDiff{Node: node, Flavor: flavor, Status: StatusChanged}
	switch {
	case before == nil:
		pd.Status = StatusAdded
	case after == nil:
		pd.Status = StatusRemoved
	}
	for _, k := range kinds {
		if k.typeURL != "" {
			*k.of(&pd) = compareResources(resourcesOf(before, k.typeURL), resourcesOf(after, k.typeURL))
		}
	}
	pd.Secrets = compareNames(secretNames(before), secretNames(after), func(name string) bool {
		return caChanged || (name == xds.SecretIdentity && !slices.Equal(before.Identities, after.Identities))
	})
	if ids, nextIDs := identitiesOf(before), identitiesOf(after); !slices.Equal(ids, nextIDs) {
		pd.Identities = &IdentityDiff{Old: ids, New: nextIDs}
	}
	pd.CAChanged = caChanged
	return pd
}

func (p *ProxyDiff) empty() bool {
	for _, k := range kinds {
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

// compareResources compares two lists of resources of one type by name,
// and the resources of a name by content. Resources the two sides share are
// the same values.
func compareResources(before, after []types.Resource) NameDiff {
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
func compareNames(before, after []string, changed func(name string) bool) NameDiff {
	d := NameDiff{Added: []string{}, Changed: []string{}, Removed: []string{}}
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
