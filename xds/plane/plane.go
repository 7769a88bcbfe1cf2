// Package plane is the xDS side of the daemon: it turns each published
// policy Set into per-proxy translations, re-translating only the proxies a
// change reaches, publishes them through the ADS server with their mTLS
// secrets, and follows the proxies' ACKs to tell when a commit has converged.
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
	Options   xds.Options
	// Workers translate proxies in parallel; GOMAXPROCS when zero.
	Workers int
	// Metrics, when set, counts ACKs and NACKs and observes convergence.
	Metrics *Metrics
	Now     func() time.Time
}

// Result says what one Apply did.
type Result struct {
	Commit string
	// Affected proxies were translated again (every proxy on the first
	// Apply); the others kept their translation.
	Affected int
	// Changed, Unchanged and Removed are node ids as ads.PublishResult has
	// them.
	Changed, Unchanged, Removed []string
	Translate, Publish          time.Duration
}

// Plane holds the served translation. Apply calls are serialised.
type Plane struct {
	cfg Config

	mu      sync.Mutex
	commit  string
	set     *schema.Set
	idx     *xds.Index
	proxies map[string]*xds.Proxy

	conv convergence
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
	p := &Plane{cfg: cfg, proxies: map[string]*xds.Proxy{}}
	p.conv.metrics = cfg.Metrics
	return p, nil
}

// Apply makes set, the policy of commit, what is served. diff is what
// changed since the Set of the last successful Apply (ignored on the first).
// It is all or nothing: on error nothing served changes and the Plane keeps
// its previous Set.
func (p *Plane) Apply(ctx context.Context, commit string, set *schema.Set, diff schema.SetDiff) (Result, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	res := Result{Commit: commit}
	start := p.cfg.Now()

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
		old := p.proxies[dp.NodeID()]
		if old == nil || affected == nil || affected[dp.NodeID()] {
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

	start = p.cfg.Now()
	pub, err := p.cfg.Server.Publish(ctx, commit, proxies, p.secrets(set))
	if err != nil {
		return res, err
	}
	res.Publish = p.cfg.Now().Sub(start)
	res.Changed, res.Unchanged, res.Removed = pub.Changed, pub.Unchanged, pub.Removed

	p.commit, p.set, p.idx = commit, set, idx
	next := make(map[string]*xds.Proxy, len(proxies))
	for _, px := range proxies {
		next[px.NodeID] = px
	}
	p.proxies = next
	if p.cfg.Authority != nil {
		for _, node := range pub.Removed {
			p.cfg.Authority.Forget(node)
		}
	}
	p.conv.start(p.cfg.Server, commit, pub.Changed, p.cfg.Now())
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

// translate fills proxies[i] for every i in todo, in parallel.
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
				i := todo[j]
				px, err := xds.TranslateProxy(idx, set.Dataplanes[i], p.cfg.Options)
				if err != nil {
					errs[w] = err
					return
				}
				proxies[i] = px
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
// no push. It does nothing before the first Apply.
func (p *Plane) Renew(ctx context.Context) (Result, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.set == nil {
		return Result{}, nil
	}
	proxies := make([]*xds.Proxy, 0, len(p.proxies))
	for _, dp := range p.set.Dataplanes {
		proxies = append(proxies, p.proxies[dp.NodeID()])
	}
	start := p.cfg.Now()
	pub, err := p.cfg.Server.Publish(ctx, p.commit, proxies, p.secrets(p.set))
	if err != nil {
		return Result{}, err
	}
	p.conv.start(p.cfg.Server, p.commit, pub.Changed, p.cfg.Now())
	return Result{Commit: p.commit, Changed: pub.Changed, Unchanged: pub.Unchanged, Removed: pub.Removed,
		Publish: p.cfg.Now().Sub(start)}, nil
}

// Served returns the commit and Set last applied (nil before the first).
func (p *Plane) Served() (string, *schema.Set) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.commit, p.set
}

// Convergence counts the served proxies that are connected, in sync, or
// whose last answer was a NACK of the served version.
func (p *Plane) Convergence() Convergence {
	p.mu.Lock()
	nodes := make([]string, 0, len(p.proxies))
	for node := range p.proxies {
		nodes = append(nodes, node)
	}
	p.mu.Unlock()
	slices.Sort(nodes)
	c := Convergence{Proxies: len(nodes)}
	for _, node := range nodes {
		st, ok := p.cfg.Server.StatusOf(node)
		if !ok || st.Streams == 0 {
			continue
		}
		c.Connected++
		switch {
		case st.InSync():
			c.Acked++
		case nacked(st):
			c.Nacked++
		}
	}
	return c
}

// Convergence is what Plane.Convergence counts.
type Convergence struct {
	Proxies, Connected, Acked, Nacked int
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
