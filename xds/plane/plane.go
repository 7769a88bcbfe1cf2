// Package plane is the xDS side of the daemon: it turns each published
// policy Set into per-proxy translations, each for the flavour its node runs
// (Envoy or proxyless gRPC), re-translating only the proxies a change reaches,
// publishes them through the ADS server with their mTLS secrets, and follows
// the proxies' ACKs to tell when a commit has converged.
package plane

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"

	"github.com/gitmesh/gitmesh/schema"
	"github.com/gitmesh/gitmesh/xds"
	"github.com/gitmesh/gitmesh/xds/ads"
	"github.com/gitmesh/gitmesh/xds/ca"
)

// Config wires a Plane.
type Config struct {
	Server    *ads.Server
	Authority *ca.Authority // required when a mesh has mTLS
	// Options are the translation's. Each node is translated for the flavour
	// the Server learned from its streams (ads.Server.FlavorOf); Options.Flavor
	// is the default, for nodes never seen (FlavorEnvoy when empty).
	Options xds.Options
	// Workers translate proxies in parallel; GOMAXPROCS when zero.
	Workers int
	// Metrics, when set, counts ACKs and NACKs and observes convergence.
	Metrics *Metrics
	Now     func() time.Time

	// RollbackOnNACK puts a proxy that rejects what it is served back on the
	// translation of the last commit it accepted whole (every type ACKed). The next
	// commit applied is still published to it: there is no switch to turn back on.
	RollbackOnNACK bool
	// OnNACK, when set, is called from Run for each NACK of the version a proxy is
	// currently being served (NACKs of versions no longer published are stale and skipped).
	// Run waits for it: it should return quickly, and may call the Plane's methods.
	OnNACK func(Rejection)
	// OnConverged, when set, is called from Run once when a publish's convergence completes
	// (every connected proxy the publish changed has ACKed it), in the order of the
	// publishes; also for a publish that changed no connected proxy (Proxies 0,
	// Duration 0). Like OnNACK, Run waits for it.
	OnConverged func(Converged)
	// OnFlavor, when set, is called from Run for each node it translated
	// again, at the served commit, because the node runs another flavour
	// than it was translated for; Err says when that failed. Like OnNACK,
	// Run waits for it.
	OnFlavor func(FlavorChange)

	// translate is xds.TranslateProxy unless a test sets it.
	translate func(*xds.Index, *schema.Dataplane, xds.Options) (*xds.Proxy, error)
}

// Result says what one Apply did.
type Result struct {
	Commit string
	// Affected proxies were translated again (every proxy on the first
	// Apply, and those whose node runs another flavour than they were
	// translated for); the others kept their translation.
	Affected int
	// Changed, Unchanged and Removed are node ids as ads.PublishResult has
	// them.
	Changed, Unchanged, Removed []string
	Translate, Publish          time.Duration
}

// Plane holds the served translation. Apply calls are serialised.
type Plane struct {
	cfg Config

	// mu serialises Apply, which holds it while it translates, and Run's
	// translation of a node for a new flavour (which therefore waits for an
	// Apply under way), and guards idx. served is held across every publish
	// (Apply's, Renew's, a rollback's, a flavour change's) and briefly by
	// Run: what it guards always matches what the server serves. Lock order:
	// mu, served, the convergence's lock.
	mu  sync.Mutex
	idx *xds.Index
	// prev is the translation served before the current one, kept so that
	// going back to it (a rollback) needs no translation.
	prev *generation

	served  sync.Mutex
	commit  string
	set     *schema.Set
	proxies map[string]*xds.Proxy // what commit translates to, written under mu too
	// accepted is, per node, the last translation the node accepted whole
	// and the commit it was served for; reverted holds the nodes put back
	// on their accepted translation since the last Apply.
	accepted map[string]translation
	reverted map[string]translation

	conv convergence
}

// generation is the whole translation of one commit.
type generation struct {
	commit  string
	set     *schema.Set
	idx     *xds.Index
	proxies map[string]*xds.Proxy
}

// translation is a proxy's translation and the commit it stands for.
type translation struct {
	commit string
	proxy  *xds.Proxy
}

// New returns a Plane that serves nothing yet.
func New(cfg Config) (*Plane, error) {
	if cfg.Server == nil {
		return nil, errors.New("plane: no xDS server")
	}
	if cfg.Workers <= 0 {
		cfg.Workers = runtime.GOMAXPROCS(0)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	switch cfg.Options.Flavor {
	case "":
		cfg.Options.Flavor = xds.FlavorEnvoy
	case xds.FlavorEnvoy, xds.FlavorGRPC:
	default:
		return nil, fmt.Errorf("plane: unknown default flavour %q", cfg.Options.Flavor)
	}
	if cfg.translate == nil {
		cfg.translate = xds.TranslateProxy
	}
	p := &Plane{cfg: cfg, proxies: map[string]*xds.Proxy{},
		accepted: map[string]translation{}, reverted: map[string]translation{}}
	p.conv = convergence{metrics: cfg.Metrics, server: cfg.Server, wake: make(chan struct{}, 1)}
	return p, nil
}

// Apply makes set, the policy of commit, what is served. diff is what
// changed since the Set of the last successful Apply (ignored on the first).
// Each proxy is translated for its node's flavour (see Config.Options). It
// is all or nothing: on error nothing served changes and the Plane keeps
// its previous Set.
func (p *Plane) Apply(ctx context.Context, commit string, set *schema.Set, diff schema.SetDiff) (Result, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	res := Result{Commit: commit}
	start := p.cfg.Now()
	if g := p.prev; g != nil && g.commit == commit {
		// Translation is a pure function of the commit's policy and the
		// node's flavour: the commit served before translates as it did
		// then, but for the nodes whose flavour has changed since.
		proxies := make([]*xds.Proxy, len(g.set.Dataplanes))
		var todo []int
		for i, dp := range g.set.Dataplanes {
			px := g.proxies[dp.NodeID().String()]
			if px.Flavor != p.flavorOf(dp.NodeID().String()) {
				todo = append(todo, i)
				continue
			}
			proxies[i] = px
		}
		res.Affected = len(todo)
		if err := p.translate(ctx, g.idx, g.set, proxies, todo); err != nil {
			return res, err
		}
		res.Translate = p.cfg.Now().Sub(start)
		return p.publish(ctx, res, commit, g.set, g.idx, proxies)
	}

	idx, err := p.index(set, diff)
	if err != nil {
		return res, err
	}
	var affected map[string]bool
	if p.idx != nil {
		ids := xds.AffectedBetween(p.idx, idx, xds.ChangeOf(diff))
		affected = make(map[string]bool, len(ids))
		for _, id := range ids {
			affected[id] = true
		}
	}
	proxies := make([]*xds.Proxy, len(set.Dataplanes))
	var todo []int
	for i, dp := range set.Dataplanes {
		old := p.proxies[dp.NodeID().String()]
		if old == nil || affected == nil || affected[dp.NodeID().String()] || old.Flavor != p.flavorOf(dp.NodeID().String()) {
			todo = append(todo, i)
			continue
		}
		proxies[i] = old
	}
	res.Affected = len(todo)
	if err := p.translate(ctx, idx, set, proxies, todo); err != nil {
		return res, err
	}
	res.Translate = p.cfg.Now().Sub(start)
	return p.publish(ctx, res, commit, set, idx, proxies)
}

// publish makes proxies, the translation of set at commit, what is served.
// Called with mu held.
func (p *Plane) publish(ctx context.Context, res Result, commit string, set *schema.Set, idx *xds.Index, proxies []*xds.Proxy) (Result, error) {
	p.served.Lock()
	defer p.served.Unlock()
	// A node about to get a new translation may have ACKed the one it
	// leaves without Run having seen it yet.
	for _, px := range proxies {
		if old := p.proxies[px.NodeID]; old != nil && old.Hash != px.Hash {
			p.noteAcceptedLocked(px.NodeID)
		}
	}
	start := p.cfg.Now()
	pub, err := p.cfg.Server.Publish(ctx, commit, proxies, p.secrets(set))
	if err != nil {
		return res, err
	}
	published := p.cfg.Now()
	res.Publish = published.Sub(start)
	res.Changed, res.Unchanged, res.Removed = pub.Changed, pub.Unchanged, pub.Removed

	if p.set != nil && p.commit != commit {
		p.prev = &generation{commit: p.commit, set: p.set, idx: p.idx, proxies: p.proxies}
	}
	p.commit, p.set, p.idx = commit, set, idx
	next := make(map[string]*xds.Proxy, len(proxies))
	for _, px := range proxies {
		next[px.NodeID] = px
		// A node that accepted this same translation before accepts it as
		// commit's.
		if a, ok := p.accepted[px.NodeID]; ok && a.proxy.Hash == px.Hash {
			p.accepted[px.NodeID] = translation{commit, px}
		}
	}
	p.proxies = next
	clear(p.reverted)
	for _, node := range pub.Removed {
		delete(p.accepted, node)
		if p.cfg.Authority != nil {
			p.cfg.Authority.Forget(node)
		}
	}
	p.conv.start(commit, pub.Changed, start, published)
	return res, nil
}

// index builds the translation index of set, reusing the previous one when
// only traffic permissions changed.
func (p *Plane) index(set *schema.Set, diff schema.SetDiff) (*xds.Index, error) {
	if p.idx != nil && onlyPermissions(diff) {
		if idx, err := p.idx.WithPermissions(set); err == nil {
			return idx, nil
		}
	}
	idx, err := xds.NewIndexFrom(set, p.idx)
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

// flavorOf is the flavour node is translated for.
func (p *Plane) flavorOf(node string) xds.Flavor {
	if f, ok := p.cfg.Server.FlavorOf(node); ok {
		return f
	}
	return p.cfg.Options.Flavor
}

// translateFor translates dp for flavour f.
func (p *Plane) translateFor(idx *xds.Index, dp *schema.Dataplane, f xds.Flavor) (*xds.Proxy, error) {
	opts := p.cfg.Options
	opts.Flavor = f
	return p.cfg.translate(idx, dp, opts)
}

// translate fills proxies[i] for every i in todo, in parallel, each for its
// node's flavour.
func (p *Plane) translate(ctx context.Context, idx *xds.Index, set *schema.Set, proxies []*xds.Proxy, todo []int) error {
	if len(todo) == 0 {
		return nil
	}
	workers := min(p.cfg.Workers, len(todo))
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for j := w; j < len(todo); j += workers {
				if err := ctx.Err(); err != nil {
					errs[w] = err
					return
				}
				dp := set.Dataplanes[todo[j]]
				px, err := p.translateFor(idx, dp, p.flavorOf(dp.NodeID().String()))
				if err != nil {
					errs[w] = err
					return
				}
				proxies[todo[j]] = px
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// secrets binds each proxy to the CA of its mesh in set.
func (p *Plane) secrets(set *schema.Set) ads.SecretsFunc {
	return func(px *xds.Proxy) ([]types.Resource, string, error) {
		if len(px.Identities) == 0 {
			return nil, "", nil
		}
		if p.cfg.Authority == nil {
			return nil, "", fmt.Errorf("proxy %s: mesh %s has mTLS and no certificate authority is configured", px.NodeID, px.Mesh)
		}
		m := set.Mesh(px.Mesh)
		if m == nil {
			return nil, "", fmt.Errorf("proxy %s: mesh %s does not exist", px.NodeID, px.Mesh)
		}
		return p.cfg.Authority.Secrets(px, m.MTLS.CA)
	}
}

// Renew publishes the served commit again so that certificates nearing the
// end of their life are re-issued; proxies whose secrets did not change get
// no push. A proxy put back on an earlier commit after a NACK stays on it.
// It does nothing before the first Apply. Proxies it pushes renewed secrets
// to join the convergence of the served commit when that is still under
// way, or start a new one.
func (p *Plane) Renew(ctx context.Context) (Result, error) {
	p.served.Lock()
	defer p.served.Unlock()
	if p.set == nil {
		return Result{}, nil
	}
	proxies := make([]*xds.Proxy, 0, len(p.proxies))
	for _, dp := range p.set.Dataplanes {
		px := p.proxies[dp.NodeID().String()]
		if back, ok := p.reverted[px.NodeID]; ok {
			px = back.proxy
		}
		proxies = append(proxies, px)
	}
	start := p.cfg.Now()
	pub, err := p.cfg.Server.Publish(ctx, p.commit, proxies, p.secrets(p.set))
	if err != nil {
		return Result{}, err
	}
	// A reverted proxy is not converging to the served commit.
	changed := slices.DeleteFunc(slices.Clone(pub.Changed), func(node string) bool {
		_, ok := p.reverted[node]
		return ok
	})
	p.conv.renewed(p.commit, changed, start)
	return Result{Commit: p.commit, Changed: pub.Changed, Unchanged: pub.Unchanged, Removed: pub.Removed,
		Publish: p.cfg.Now().Sub(start)}, nil
}

// Served returns the commit and Set last applied (nil before the first).
func (p *Plane) Served() (string, *schema.Set) {
	p.served.Lock()
	defer p.served.Unlock()
	return p.commit, p.set
}

// Convergence counts the served proxies that are connected and, among
// those, the ones in sync, the ones whose last answer was a NACK of what
// they are served, and the ones put back on an earlier commit.
func (p *Plane) Convergence() Convergence {
	// Most served proxies may be disconnected: only the connected ones'
	// status is read.
	connected := p.cfg.Server.ConnectedNodes()
	p.served.Lock()
	c := Convergence{Proxies: len(p.proxies)}
	nodes := make([]string, 0, len(connected))
	for _, node := range connected {
		if p.proxies[node] != nil {
			nodes = append(nodes, node)
		}
	}
	reverted := make(map[string]bool, len(p.reverted))
	for node := range p.reverted {
		reverted[node] = true
	}
	p.served.Unlock()
	slices.Sort(nodes)
	for _, node := range nodes {
		st, ok := p.cfg.Server.StatusOf(node)
		if !ok || st.Streams == 0 {
			continue
		}
		c.Connected++
		switch {
		case reverted[node]:
			c.Reverted++
		case st.InSync():
			c.Acked++
		case nacked(st):
			c.Nacked++
		}
	}
	return c
}

// Convergence is what Plane.Convergence counts. Acked, Nacked and Reverted
// are connected proxies, each counted once: Acked hold what is served
// (every type ACKed), Nacked rejected it, and Reverted rejected the served
// commit and were put back on an earlier one (RollbackOnNACK), whatever
// they answered since. The others have yet to answer.
type Convergence struct {
	Proxies, Connected, Acked, Nacked int
	Reverted                          int
}

// nacked reports whether a type's published version was rejected.
func nacked(st ads.ProxyStatus) bool {
	for _, t := range st.Types {
		if t.LastNACK != nil && t.Published != "" && t.LastNACK.Version == t.Published && t.Acked != t.Published {
			return true
		}
	}
	return false
}
