package xds

import (
	"cmp"
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"

	"golang.org/x/sync/errgroup"

	"github.com/gitmesh/gitmesh/schema"
)

// Flavors are the data planes gitmesh translates for, in the order a
// Translation keeps them.
var Flavors = []Flavor{FlavorEnvoy, FlavorGRPC}

// Node is what one dataplane translates to: a checked Proxy for every
// flavour it may run. It is read-only.
type Node struct {
	Dataplane *schema.Dataplane
	proxies   []*Proxy // in Flavors order; nil for a flavour not translated
}

// ID is the node's id.
func (n *Node) ID() schema.NodeID { return n.Dataplane.NodeID() }

// Proxy is the node's translation for flavour f; nil when the node is not
// translated for f.
func (n *Node) Proxy(f Flavor) *Proxy {
	if i := slices.Index(Flavors, f); i >= 0 && i < len(n.proxies) {
		return n.proxies[i]
	}
	return nil
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
}

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
	nodes := make([]*Node, len(set.Dataplanes))
	var todo []int
	for i, dp := range set.Dataplanes {
		if n := b.reusable(prev, affected, dp); n != nil {
			nodes[i] = n
			continue
		}
		todo = append(todo, i)
	}
	stats.Translated, stats.Reused = len(todo), len(nodes)-len(todo)
	failures, err := b.translateAll(ctx, idx, set, nodes, todo)
	if err != nil {
		return nil, stats, nil, err
	}
	if len(failures) > 0 {
		return nil, stats, failures, nil
	}
	t := &Translation{set: set, index: idx, nodes: nodes, byID: make(map[string]*Node, len(nodes))}
	for _, n := range nodes {
		t.byID[n.Dataplane.NodeID().String()] = n
	}
	return t, stats, nil, nil
}

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
			if k.Type != schema.TypeTrafficPermission {
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
	if old == nil || affected[id] {
		return nil
	}
	for _, f := range b.flavors(dp) {
		if old.Proxy(f) == nil {
			return nil
		}
	}
	if old.Dataplane == dp {
		return old
	}
	return &Node{Dataplane: dp, proxies: old.proxies}
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
				n := &Node{Dataplane: dp, proxies: make([]*Proxy, len(Flavors))}
				for _, f := range b.flavors(dp) {
					i := slices.Index(Flavors, f)
					if i < 0 {
						return fmt.Errorf("translate %s: %w %q", dp.NodeID(), ErrUnsupportedFlavor, f)
					}
					p, err := b.translate(idx, dp, Options{Flavor: f, unhashed: b.opts.CheckOnly})
					if err == nil {
						err = k.checkIn(idx, p)
					}
					if err != nil {
						failed[w] = append(failed[w], Failure{Dataplane: dp, Flavor: f, Err: err})
						continue
					}
					p.checked, p.typed = true, nil
					if !b.opts.CheckOnly {
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
