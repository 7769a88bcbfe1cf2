package xds

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"golang.org/x/sync/errgroup"

	"github.com/gitmesh/gitmesh/schema"
)

// Flavors are the data planes gitmesh translates for, in the order a
// Translation keeps them.
var Flavors = []Flavor{FlavorEnvoy, FlavorGRPC}

// Node is what one dataplane translates to: a checked Proxy for every
// flavour it may run. Every flavour passed the check when the node was
// built; the Proxy of a flavour is kept from then when the Builder was told
// to keep it (BuilderOptions.Keep), and otherwise translated again, and
// checked, the first time it is asked for, then kept. It is safe for
// concurrent use, and what it returns is read-only.
type Node struct {
	Dataplane *schema.Dataplane
	t         *Translation // for proxies not kept; nil when none is made

	// hashes are the Hash of each flavour's Proxy, in Flavors order,
	// kept whether the Proxy is or not ("" for a flavour not translated, or
	// a CheckOnly build).
	hashes []string
	// sections are what each hash was computed from (nil entries where
	// hashes has none), for a later Build to patch (Builder.patched).
	sections []*sections

	mu      sync.Mutex
	proxies []*Proxy // in Flavors order; nil for a flavour not built (yet)
}

// ID is the node's id.
func (n *Node) ID() schema.NodeID { return n.Dataplane.NodeID() }

// Proxy is the node's translation for flavour f; nil when the node is not
// translated for f (a flavour it may not run, or a Translation made with
// CheckOnly).
func (n *Node) Proxy(f Flavor) *Proxy {
	i := slices.Index(Flavors, f)
	if i < 0 {
		return nil
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if i < len(n.proxies) && n.proxies[i] != nil {
		return n.proxies[i]
	}
	if n.t == nil || n.t.build == nil || !slices.Contains(n.t.flavors(n.Dataplane), f) {
		return nil
	}
	p, err := n.t.build(n.Dataplane, f)
	if err != nil {
		// It passed when the node was built: translation is a function of
		// the Set, so this is a bug, and the node has no proxy of f.
		n.t.failed.Add(1)
		return nil
	}
	if len(n.proxies) == 0 {
		n.proxies = make([]*Proxy, len(Flavors))
	}
	n.proxies[i] = p
	return p
}

// built is the proxies the node holds now, without building any.
func (n *Node) built() []*Proxy {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.proxies)
}

// Translation is a Set translated for the data planes: every dataplane's
// proxies, one per flavour it may run, each of which passed Check. Build
// makes it; it is immutable and safe for concurrent readers, and what it
// holds is shared with the Translations built from it.
type Translation struct {
	set   *schema.Set
	index *Index
	nodes []*Node // in the Set's dataplane order
	byID  map[string]*Node
	// build translates and checks a proxy a Node did not keep; flavors
	// are the flavours a dataplane may run.
	build   func(*schema.Dataplane, Flavor) (*Proxy, error)
	flavors func(*schema.Dataplane) []Flavor
	// failed counts the proxies build failed to make (see Node.Proxy).
	failed atomic.Int64
}

// Affected counts the dataplanes whose proxies differ from prev's (another
// hash in any flavour), those added and those removed; every dataplane
// when prev is nil. Whether a proxy is kept or not does not matter.
func (t *Translation) Affected(prev *Translation) int {
	if prev == nil {
		return len(t.nodes)
	}
	// Both node lists are in their Set's order, by (mesh, name): walk them
	// side by side.
	n := 0
	a, b := t.nodes, prev.nodes
	for len(a) > 0 || len(b) > 0 {
		var c int
		switch {
		case len(a) == 0:
			c = 1
		case len(b) == 0:
			c = -1
		default:
			x, y := a[0].Dataplane, b[0].Dataplane
			c = cmp.Or(cmp.Compare(x.Mesh, y.Mesh), cmp.Compare(x.Name, y.Name))
		}
		switch {
		case c < 0: // added
			n, a = n+1, a[1:]
		case c > 0: // removed
			n, b = n+1, b[1:]
		default:
			if !sameHashes(a[0].hashes, b[0].hashes) {
				n++
			}
			a, b = a[1:], b[1:]
		}
	}
	return n
}

// sameHashes reports whether two nodes' hashes are known and equal (a
// Lazy Translation's nodes have none).
func sameHashes(x, y []string) bool { return x != nil && y != nil && slices.Equal(x, y) }

// LateFailures is how many proxies could not be made when first asked for,
// though their node passed its check when the Translation was built: zero
// unless translation is not the deterministic function it must be.
func (t *Translation) LateFailures() int64 { return t.failed.Load() }

// Set is the policy set translated.
func (t *Translation) Set() *schema.Set { return t.set }

// Nodes are the translated dataplanes, in the order of the Set's Dataplanes
// (by mesh, then name).
func (t *Translation) Nodes() []*Node { return t.nodes }

// Node is the translation of the node with xDS node id id; nil when the Set
// has no such dataplane.
func (t *Translation) Node(id string) *Node { return t.byID[id] }

// Proxy is node id's translation for flavour f; nil when there is none.
func (t *Translation) Proxy(id string, f Flavor) *Proxy {
	if n := t.byID[id]; n != nil {
		return n.Proxy(f)
	}
	return nil
}

// Failure is a dataplane whose translation for a flavour fails, or whose
// resources a data plane of that flavour would reject (Check).
type Failure struct {
	Dataplane *schema.Dataplane
	Flavor    Flavor
	Err       error
}

func (f Failure) Error() string {
	return fmt.Sprintf("dataplane %s does not translate for %s: %v", f.Dataplane.NodeID(), f.Flavor, f.Err)
}

// BuilderOptions tune a Builder. The zero value translates every dataplane
// for every flavour on GOMAXPROCS workers.
type BuilderOptions struct {
	// Workers translate and check dataplanes in parallel; GOMAXPROCS when
	// zero.
	Workers int
	// Flavors, when set, lists the flavours a dataplane may run (a subset of
	// Flavors, in that order); nil means every flavour.
	Flavors func(*schema.Dataplane) []Flavor
	// CheckOnly translates and checks every proxy, reports the failures,
	// and keeps none of them: the Translation's nodes have no proxy. For a
	// gate that needs the verdict alone, it bounds memory to what the
	// workers hold at once.
	CheckOnly bool
	// Keep, when set, lists the flavours of a dataplane whose proxies the
	// Translation keeps from the build (a daemon: the nodes connected);
	// the others are checked and dropped, and made again when asked for
	// (Node.Proxy). Nil keeps every proxy. Called from the workers.
	Keep func(*schema.Dataplane) []Flavor
}

// Builder turns policy sets into Translations. It keeps what Check learnt
// across builds (results by content, see Checker), so that a commit that
// changes a little checks a little. Build calls are serialised; a Builder is
// safe for concurrent use.
type Builder struct {
	opts BuilderOptions

	mu       sync.Mutex
	checkers []*Checker // one per worker, kept across builds
	// translate is TranslateProxy unless a test sets it.
	translate func(*Index, *schema.Dataplane, Options) (*Proxy, error)
}

// NewBuilder returns a Builder that has built nothing yet.
func NewBuilder(opts BuilderOptions) *Builder {
	if opts.Workers <= 0 {
		opts.Workers = runtime.GOMAXPROCS(0)
	}
	return &Builder{opts: opts, translate: TranslateProxy}
}

// BuildStats says how much of a Build was work.
type BuildStats struct {
	Translated int // dataplanes translated (and checked) again
	Reused     int // dataplanes whose translation was taken from prev
	// Patched are the dataplanes reached only through the endpoints of
	// services they call: prev's proxies with those endpoints replaced.
	Patched int
}

// Build translates set for every flavour each dataplane may run and checks
// every proxy it makes. prev, when not nil, is an earlier Translation and
// diff what changed from prev's Set to set (schema.DiffSets): a dataplane
// the change cannot reach keeps prev's proxies, the very same values, with
// no work; the others are translated again. All dataplanes are translated,
// so that every failure is reported at once: with any, the Translation is
// nil and failures lists them sorted by mesh, name and flavour. The error is
// for what stops the build itself (ctx ended, an Index that cannot be built).
func (b *Builder) Build(ctx context.Context, set *schema.Set, diff schema.SetDiff, prev *Translation) (*Translation, BuildStats, []Failure, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var stats BuildStats
	idx, err := b.index(set, diff, prev)
	if err != nil {
		return nil, stats, nil, err
	}
	var affected map[string]bool
	if prev != nil {
		ids := AffectedBetween(prev.index, idx, ChangeOf(diff))
		affected = make(map[string]bool, len(ids))
		for _, id := range ids {
			affected[id] = true
		}
	}
	patch := b.patchable(prev, idx, diff, affected)
	nodes := make([]*Node, len(set.Dataplanes))
	var todo, patching []int
	for i, dp := range set.Dataplanes {
		if n := b.reusable(prev, affected, dp); n != nil {
			nodes[i] = n
			continue
		}
		if patch[dp.NodeID().String()] {
			patching = append(patching, i)
			continue
		}
		todo = append(todo, i)
	}
	// Patch on every core; a node that cannot be patched is translated.
	var g errgroup.Group
	g.SetLimit(b.opts.Workers)
	for _, i := range patching {
		g.Go(func() error {
			nodes[i] = b.patched(prev, idx, set.Dataplanes[i])
			return nil
		})
	}
	_ = g.Wait()
	for _, i := range patching {
		if nodes[i] == nil {
			todo = append(todo, i)
		} else {
			stats.Patched++
		}
	}
	slices.Sort(todo)
	stats.Translated, stats.Reused = len(todo), len(nodes)-len(todo)-stats.Patched
	failures, err := b.translateAll(ctx, idx, set, nodes, todo)
	if err != nil {
		return nil, stats, nil, err
	}
	if len(failures) > 0 {
		return nil, stats, failures, nil
	}
	return b.translation(set, idx, nodes), stats, nil, nil
}

// Lazy is a Translation of set that translates nothing now: each proxy is
// translated and checked when first asked for (Node.Proxy), and a proxy
// that fails its check is not made (LateFailures counts it). It is for a
// set that passed Build before, such as the commit a restarted daemon
// serves again, and must not stand for a verdict. Its nodes have no hashes,
// so a Build from it reuses none of them, and Affected counts them all.
func (b *Builder) Lazy(set *schema.Set) (*Translation, error) {
	if b.opts.CheckOnly {
		return nil, errors.New("translate: a CheckOnly builder makes no proxies")
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	idx, err := b.index(set, schema.DiffSets(nil, set), nil)
	if err != nil {
		return nil, err
	}
	nodes := make([]*Node, len(set.Dataplanes))
	for i, dp := range set.Dataplanes {
		nodes[i] = &Node{Dataplane: dp}
	}
	return b.translation(set, idx, nodes), nil
}

// translation is the Translation of set from its index and nodes.
func (b *Builder) translation(set *schema.Set, idx *Index, nodes []*Node) *Translation {
	t := &Translation{set: set, index: idx, nodes: nodes, byID: make(map[string]*Node, len(nodes)), flavors: b.flavors}
	if !b.opts.CheckOnly {
		t.build = func(dp *schema.Dataplane, f Flavor) (*Proxy, error) {
			k := checkers.Get().(*Checker)
			defer checkers.Put(k)
			defer k.Release()
			return b.make(k, idx, dp, Options{Flavor: f})
		}
	}
	for _, n := range nodes {
		n.t = t
		t.byID[n.Dataplane.NodeID().String()] = n
	}
	return t
}

// make translates dp for opts and checks the proxy with k: a proxy of a
// Translation.
func (b *Builder) make(k *Checker, idx *Index, dp *schema.Dataplane, opts Options) (*Proxy, error) {
	p, err := b.translate(idx, dp, opts)
	if err != nil {
		return nil, err
	}
	if err := k.checkIn(idx, p); err != nil {
		return nil, err
	}
	p.checked, p.typed = true, nil
	return p, nil
}

// checkers are the Checkers of proxies made when first asked for.
var checkers = sync.Pool{New: func() any { return NewChecker() }}

// index builds the translation index of set, reusing prev's: only the
// permissions again when only permissions changed, otherwise every
// service whose endpoints did not change keeps its shared resources.
func (b *Builder) index(set *schema.Set, diff schema.SetDiff, prev *Translation) (*Index, error) {
	var before *Index
	if prev != nil {
		before = prev.index
		if onlyPermissions(diff) {
			if idx, err := before.WithPermissions(set); err == nil {
				return idx, nil
			}
		}
		if idx, err := before.WithDataplanes(set, diff); err == nil {
			return idx, nil
		}
	}
	idx, err := NewIndexFrom(set, before)
	if err != nil {
		return nil, fmt.Errorf("translate: %w", err)
	}
	return idx, nil
}

func onlyPermissions(d schema.SetDiff) bool {
	for _, list := range [][]schema.Key{d.Added, d.Changed, d.Removed} {
		for _, k := range list {
			if k.Type != schema.TypeTrafficPermission && k.Type != schema.TypeMeshTrafficPermission {
				return false
			}
		}
	}
	return true
}

// reusable is prev's translation of dp when the change cannot reach it and
// it holds the flavours dp may run; nil otherwise. A dataplane that only
// moved to another file or line keeps its proxies under its new origin.
func (b *Builder) reusable(prev *Translation, affected map[string]bool, dp *schema.Dataplane) *Node {
	if prev == nil {
		return nil
	}
	id := dp.NodeID().String()
	old := prev.byID[id]
	if old == nil || affected[id] || old.hashes == nil {
		// Changed, or of a Lazy Translation (nothing known of it).
		return nil
	}
	if prev.build == nil && !b.opts.CheckOnly {
		// prev kept no proxy (CheckOnly): this build must make them.
		return nil
	}
	// The proxies prev made are the very ones this Translation would;
	// those it did not make are made when asked for.
	return &Node{Dataplane: dp, hashes: old.hashes, sections: old.sections, proxies: old.built()}
}

// patchable is the dataplanes of affected that the change reaches only
// through the endpoints of services they call, services that keep every
// other shared value (Index.moved): their proxies are prev's with those
// endpoints replaced (see patched). None when the new endpoints do not pass
// their checks: the proxies are then translated, and the check says why.
func (b *Builder) patchable(prev *Translation, idx *Index, diff schema.SetDiff, affected map[string]bool) map[string]bool {
	if prev == nil || len(idx.moved) == 0 || b.opts.CheckOnly {
		return nil
	}
	k := NewChecker()
	for mesh, services := range idx.moved {
		for name := range services {
			if k.validateDeep(&Proxy{Mesh: mesh}, idx.meshes[mesh].services[name].endpoint.res) != nil {
				return nil
			}
		}
	}
	strict := make(map[string]bool)
	for _, id := range affectedBetween(prev.index, idx, ChangeOf(diff), idx.moved) {
		strict[id] = true
	}
	patch := make(map[string]bool)
	for id := range affected {
		if !strict[id] {
			patch[id] = true
		}
	}
	return patch
}

// patched is the Node of dp, a dataplane patchable found, made from prev's:
// each flavour's hash recomputed with the new endpoints of the moved
// services it calls, and each proxy prev kept (and Keep still names)
// copied with those endpoints in place. Its other resources are prev's,
// checked then, and what it calls did not change but for endpoints,
// checked once; so the node passes as it did. Nil when prev's node is not
// what that takes, and dp is translated.
func (b *Builder) patched(prev *Translation, idx *Index, dp *schema.Dataplane) *Node {
	old := prev.byID[dp.NodeID().String()]
	// dp is unchanged (patchable leaves out every dataplane the diff has).
	if old == nil || old.hashes == nil || old.sections == nil {
		return nil
	}
	moved := idx.moved[dp.Mesh]
	mi, pmi := idx.meshes[dp.Mesh], prev.index.meshes[dp.Mesh]
	if mi == nil || pmi == nil {
		return nil
	}
	n := &Node{Dataplane: dp, hashes: make([]string, len(Flavors)), sections: make([]*sections, len(Flavors)),
		proxies: make([]*Proxy, len(Flavors))}
	built, keep := old.built(), b.keep(dp)
	for i, f := range Flavors {
		if old.hashes[i] == "" {
			continue // not translated for f
		}
		sec := old.sections[i]
		if sec == nil {
			return nil
		}
		next := &sections{before: sec.before, endpoints: slices.Clone(sec.endpoints)}
		for j, e := range next.endpoints {
			if !moved[e.name] {
				continue
			}
			was, now := pmi.services[e.name], mi.services[e.name]
			if was == nil || now == nil || was.endpoint.digest != e.digest {
				return nil
			}
			next.endpoints[j].digest = now.endpoint.digest
		}
		h, endpointsHash, err := next.hash()
		if err != nil {
			return nil
		}
		n.hashes[i], n.sections[i] = h, next
		p := built[i]
		if p == nil || !slices.Contains(keep, f) {
			continue // made when asked for
		}
		if p.TypeHashes == nil || p.digests == nil {
			return nil
		}
		cp := *p
		cp.Resources = maps.Clone(p.Resources)
		cp.digests = maps.Clone(p.digests)
		endpoints := slices.Clone(p.Resources[resource.EndpointType])
		for j, r := range endpoints {
			name := next.endpoints[j].name
			if !moved[name] {
				continue
			}
			if r != pmi.services[name].endpoint.res {
				return nil
			}
			now := mi.services[name].endpoint
			endpoints[j] = now.res
			delete(cp.digests, r)
			cp.digests[now.res] = now.digest
		}
		cp.Resources[resource.EndpointType] = endpoints
		cp.TypeHashes = maps.Clone(p.TypeHashes)
		cp.Hash, cp.TypeHashes[resource.EndpointType], cp.sections = h, endpointsHash, next
		n.proxies[i] = &cp
	}
	return n
}

// keep is the flavours of dp whose proxies the Translation keeps.
func (b *Builder) keep(dp *schema.Dataplane) []Flavor {
	switch {
	case b.opts.CheckOnly:
		return nil
	case b.opts.Keep != nil:
		return b.opts.Keep(dp)
	}
	return b.flavors(dp)
}

func (b *Builder) flavors(dp *schema.Dataplane) []Flavor {
	if b.opts.Flavors != nil {
		return b.opts.Flavors(dp)
	}
	return Flavors
}

// translateAll fills nodes[i] for every i in todo, on the workers, each
// worker checking with its own Checker.
func (b *Builder) translateAll(ctx context.Context, idx *Index, set *schema.Set, nodes []*Node, todo []int) ([]Failure, error) {
	if len(todo) == 0 {
		return nil, nil
	}
	workers := min(b.opts.Workers, len(todo))
	for len(b.checkers) < workers {
		b.checkers = append(b.checkers, NewChecker())
	}
	failed := make([][]Failure, workers)
	var next atomic.Int64
	g, ctx := errgroup.WithContext(ctx)
	for w := range workers {
		k := b.checkers[w]
		g.Go(func() error {
			defer k.Release()
			for {
				j := int(next.Add(1)) - 1
				if j >= len(todo) {
					return nil
				}
				if err := ctx.Err(); err != nil {
					return err
				}
				dp := set.Dataplanes[todo[j]]
				n := &Node{Dataplane: dp, proxies: make([]*Proxy, len(Flavors)), hashes: make([]string, len(Flavors)),
					sections: make([]*sections, len(Flavors))}
				keep := b.keep(dp)
				for _, f := range b.flavors(dp) {
					i := slices.Index(Flavors, f)
					if i < 0 {
						return fmt.Errorf("translate %s: %w %q", dp.NodeID(), ErrUnsupportedFlavor, f)
					}
					kept := slices.Contains(keep, f)
					// Hashed unless for a verdict alone: a proxy not
					// kept still tells whether the dataplane changed.
					p, err := b.make(k, idx, dp, Options{Flavor: f, unhashed: b.opts.CheckOnly})
					if err != nil {
						failed[w] = append(failed[w], Failure{Dataplane: dp, Flavor: f, Err: err})
						continue
					}
					n.hashes[i], n.sections[i] = p.Hash, p.sections
					if kept {
						n.proxies[i] = p
					}
				}
				nodes[todo[j]] = n
			}
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	out := slices.Concat(failed...)
	slices.SortFunc(out, func(a, b Failure) int {
		return cmp.Or(cmp.Compare(a.Dataplane.Mesh, b.Dataplane.Mesh), cmp.Compare(a.Dataplane.Name, b.Dataplane.Name),
			cmp.Compare(slices.Index(Flavors, a.Flavor), slices.Index(Flavors, b.Flavor)))
	})
	return out, nil
}
