// Package plane is the xDS side of the daemon: it serves each published
// Translation through the ADS server, every node the proxy of the flavour it
// runs (Envoy or proxyless gRPC) with its mTLS secrets, and follows the
// proxies' ACKs and NACKs: when a commit has converged, which proxy rejected
// what, putting a proxy that rejects its configuration back on the one it
// accepted last. What it learns reaches the daemon as Feedback.
package plane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"runtime"
	"slices"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

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
	// DefaultFlavor is served to a node whose streams the Server never saw
	// (FlavorEnvoy when empty); a node seen is served the flavour its
	// streams declare (ads.Server.FlavorOf).
	DefaultFlavor xds.Flavor
	// Metrics, when set, counts ACKs and NACKs and observes convergence.
	Metrics *Metrics
	// Logger receives a line per node served another flavour and per
	// proxy put back after a NACK; discarded when nil.
	Logger *slog.Logger
	Now    func() time.Time

	// RollbackOnNACK puts a proxy that rejects what it is served back on
	// the proxy of the last commit it accepted whole (every type ACKed).
	// The next commit applied is still published to it: there is no switch
	// to turn back on.
	RollbackOnNACK bool
	// FeedbackBuffer is the capacity of the Feedback channel (default
	// 1024); Run waits when it is full.
	FeedbackBuffer int
}

// Result says what one Apply did. The lists hold node ids, sorted.
type Result struct {
	Commit string
	// Changed proxies were pushed (new, or their resources or secrets
	// changed), Unchanged kept what they had, Removed are no longer served.
	Changed, Unchanged, Removed []string
	Publish                     time.Duration
}

// Plane serves one Translation at a time. Its methods are safe for
// concurrent use; Apply and Renew are serialised with each other and with
// what Run publishes.
type Plane struct {
	cfg      Config
	log      *slog.Logger
	feedback chan Feedback

	// mu is held across every publish (Apply's, Renew's, a flavour
	// change's, a proxy put back) and briefly by Run and Convergence: what
	// it guards always matches what the server serves. Lock order: mu,
	// then the convergence's lock.
	mu     sync.Mutex
	commit string
	tr     *xds.Translation
	// proxies is what each node is served of tr: the proxy of its flavour.
	proxies map[string]*xds.Proxy
	// accepted is, per node, the last proxy the node accepted whole and the
	// commit it was served for; reverted holds the nodes put back on their
	// accepted proxy since the last Apply.
	accepted map[string]served
	reverted map[string]served

	conv convergence

	// attaching holds the nodes whose streams arrived with nothing
	// published for them, to be provisioned in one batch by whoever takes
	// mu first (see attached).
	attachMu  sync.Mutex
	attaching map[string]attach
}

// attach is a stream that named a node with nothing published.
type attach struct {
	flavor xds.Flavor
	peer   string
}

// served is a proxy and the commit it stands for.
type served struct {
	commit string
	proxy  *xds.Proxy
}

// New returns a Plane that serves nothing yet.
func New(cfg Config) (*Plane, error) {
	if cfg.Server == nil {
		return nil, errors.New("plane: no xDS server")
	}
	switch cfg.DefaultFlavor {
	case "":
		cfg.DefaultFlavor = xds.FlavorEnvoy
	case xds.FlavorEnvoy, xds.FlavorGRPC:
	default:
		return nil, fmt.Errorf("plane: unknown default flavour %q", cfg.DefaultFlavor)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.FeedbackBuffer <= 0 {
		cfg.FeedbackBuffer = 1024
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &Plane{cfg: cfg, log: log, feedback: make(chan Feedback, cfg.FeedbackBuffer),
		proxies: map[string]*xds.Proxy{}, accepted: map[string]served{}, reverted: map[string]served{},
		attaching: map[string]attach{}}
	p.conv = convergence{metrics: cfg.Metrics, server: cfg.Server, wake: make(chan struct{}, 1)}
	cfg.Server.SetProvisioner(p.attached)
	return p, nil
}

// Keep is the flavour a dataplane's proxy is kept built in for: the one
// its node's streams declare, once the server has seen one; none for a
// node never seen, whose proxy is made when it connects. It fits
// pipeline.Options.Keep and is safe for concurrent use.
func (p *Plane) Keep(dp *schema.Dataplane) []xds.Flavor {
	if f, ok := p.cfg.Server.FlavorOf(dp.NodeID().String()); ok {
		return []xds.Flavor{f}
	}
	return nil
}

// attached is the server's provisioner: a stream named a node the server
// publishes nothing for. The node is served the proxy of the flavour it
// declares, of the applied translation, built now; a node the translation
// does not have is undeclared. Streams arriving together are provisioned
// in one publish, by the first of them to get the lock.
func (p *Plane) attached(node string, f xds.Flavor, peer string) {
	p.attachMu.Lock()
	p.attaching[node] = attach{f, peer}
	p.attachMu.Unlock()

	p.mu.Lock()
	defer p.mu.Unlock()
	p.attachMu.Lock()
	batch := p.attaching
	p.attaching = map[string]attach{}
	p.attachMu.Unlock()
	if len(batch) == 0 || p.tr == nil {
		// Provisioned by another stream's call; or nothing applied yet,
		// and the first Apply publishes every connected node.
		return
	}
	p.provisionLocked(context.Background(), batch)
}

// provisionLocked publishes, to each node of batch not served yet, the
// proxy of its flavour. Called with mu held.
func (p *Plane) provisionLocked(ctx context.Context, batch map[string]attach) {
	var nodes []*xds.Node
	for _, node := range slices.Sorted(maps.Keys(batch)) {
		if p.proxies[node] != nil {
			continue // published meanwhile
		}
		n := p.tr.Node(node)
		if n == nil {
			a := batch[node]
			p.cfg.Server.NoteUndeclared(node, a.flavor, a.peer)
			continue
		}
		nodes = append(nodes, n)
	}
	picked, errs := p.pickAll(nodes)
	var proxies []*xds.Proxy
	for i, px := range picked {
		if errs[i] != nil {
			p.log.Error("cannot serve a node that connected", "node", nodes[i].ID().String(), "error", errs[i])
			continue
		}
		proxies = append(proxies, px)
	}
	if len(proxies) == 0 {
		return
	}
	if _, err := p.cfg.Server.PublishProxies(ctx, p.commit, proxies, p.secrets(p.tr.Set())); err != nil {
		p.log.Error("cannot serve the nodes that connected", "nodes", len(proxies), "error", err)
		return
	}
	for _, px := range proxies {
		p.proxies[px.NodeID] = px
		if px.Flavor != batch[px.NodeID].flavor {
			p.log.Warn("node runs a flavour its dataplane is not translated for; serving it the one it is",
				"node", px.NodeID, "runs", batch[px.NodeID].flavor, "served", px.Flavor)
		}
	}
	p.keepCertificates()
	// A node served as it connects is no publish of a commit: the
	// convergence under way is not changed.
}

// Apply makes t, the translation of commit, what is served: every node gets
// the proxy of the flavour it runs. It is all or nothing: on error nothing
// served changes. Proxies whose resources and secrets are those they have
// are not pushed.
func (p *Plane) Apply(ctx context.Context, commit string, t *xds.Translation) (Result, error) {
	if t == nil {
		return Result{Commit: commit}, errors.New("plane: no translation")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	// Served are the nodes served before and those connected now: a node
	// that never connected is served nothing, and gets its proxy when it
	// connects (see attached). Every node of t passed its check.
	want := make(map[string]bool, len(p.proxies))
	for node := range p.proxies {
		want[node] = true
	}
	for _, node := range p.cfg.Server.ConnectedNodes() {
		want[node] = true
	}
	nodes := make([]*xds.Node, 0, len(want))
	for _, node := range slices.Sorted(maps.Keys(want)) {
		if n := t.Node(node); n != nil { // else removed, or never declared
			nodes = append(nodes, n)
		}
	}
	proxies, errs := p.pickAll(nodes)
	if err := errors.Join(errs...); err != nil {
		return Result{Commit: commit}, err
	}
	// A node about to get another proxy may have ACKed the one it leaves
	// without Run having seen it yet.
	for _, px := range proxies {
		if old := p.proxies[px.NodeID]; old != nil && old.Hash != px.Hash {
			p.noteAcceptedLocked(px.NodeID)
		}
	}
	start := p.cfg.Now()
	pub, err := p.cfg.Server.Publish(ctx, commit, proxies, p.secrets(t.Set()))
	if err != nil {
		return Result{Commit: commit}, err
	}
	published := p.cfg.Now()
	p.commit, p.tr = commit, t
	next := make(map[string]*xds.Proxy, len(proxies))
	for _, px := range proxies {
		next[px.NodeID] = px
		// A node that accepted this same proxy before accepts it as
		// commit's.
		if a, ok := p.accepted[px.NodeID]; ok && a.proxy.Hash == px.Hash {
			p.accepted[px.NodeID] = served{commit, px}
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
	p.keepCertificates()
	p.conv.start(commit, pub.Changed, start, published)
	return Result{Commit: commit, Changed: pub.Changed, Unchanged: pub.Unchanged, Removed: pub.Removed,
		Publish: published.Sub(start)}, nil
}

// pick is the proxy node n is served: the one of the flavour its node runs.
func (p *Plane) pick(n *xds.Node) (*xds.Proxy, error) {
	f := p.flavorOf(n.ID().String())
	if px := n.Proxy(f); px != nil {
		return px, nil
	}
	// The translation leaves out the flavour the node runs: serve it the
	// flavour it is translated for, and say so when it connects.
	for _, other := range xds.Flavors {
		if px := n.Proxy(other); px != nil {
			return px, nil
		}
	}
	return nil, fmt.Errorf("plane: node %s has no translation", n.ID())
}

// pickAll picks the proxy of each node, on every core: a proxy not kept
// built is translated and checked now. proxies[i] is nil where errs[i] is
// not.
func (p *Plane) pickAll(nodes []*xds.Node) (proxies []*xds.Proxy, errs []error) {
	proxies, errs = make([]*xds.Proxy, len(nodes)), make([]error, len(nodes))
	var g errgroup.Group
	g.SetLimit(runtime.GOMAXPROCS(0))
	for i, n := range nodes {
		g.Go(func() error {
			proxies[i], errs[i] = p.pick(n)
			return nil
		})
	}
	_ = g.Wait()
	return proxies, errs
}

// flavorOf is the flavour node is served.
func (p *Plane) flavorOf(node string) xds.Flavor {
	if f, ok := p.cfg.Server.FlavorOf(node); ok {
		return f
	}
	return p.cfg.DefaultFlavor
}

// keepCertificates writes the certificates issued since the last call to
// the state directory, so that a restart reuses them.
func (p *Plane) keepCertificates() {
	if p.cfg.Authority == nil {
		return
	}
	if err := p.cfg.Authority.Flush(); err != nil {
		p.log.Warn("cannot keep the issued certificates in the state directory; a restart issues them again", "error", err)
	}
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
// end of their life are issued again; proxies whose secrets did not change
// get no push. A proxy put back on an earlier commit after a NACK stays on
// it. It does nothing before the first Apply. Proxies it pushes renewed
// secrets to join the convergence of the served commit when that is still
// under way, or start a new one.
func (p *Plane) Renew(ctx context.Context) (Result, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tr == nil {
		return Result{}, nil
	}
	proxies := make([]*xds.Proxy, 0, len(p.proxies))
	for _, node := range slices.Sorted(maps.Keys(p.proxies)) {
		px := p.proxies[node]
		if back, ok := p.reverted[node]; ok {
			px = back.proxy
		}
		proxies = append(proxies, px)
	}
	start := p.cfg.Now()
	pub, err := p.cfg.Server.Publish(ctx, p.commit, proxies, p.secrets(p.tr.Set()))
	if err != nil {
		return Result{Commit: p.commit}, err
	}
	// A reverted proxy is not converging to the served commit.
	changed := slices.DeleteFunc(slices.Clone(pub.Changed), func(node string) bool {
		_, ok := p.reverted[node]
		return ok
	})
	p.keepCertificates()
	p.conv.renewed(p.commit, changed, start)
	return Result{Commit: p.commit, Changed: pub.Changed, Unchanged: pub.Unchanged, Removed: pub.Removed,
		Publish: p.cfg.Now().Sub(start)}, nil
}

// Served returns the commit and Translation last applied (nil before the
// first).
func (p *Plane) Served() (string, *xds.Translation) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.commit, p.tr
}

// Convergence counts the served proxies that are connected and, among
// those, the ones in sync, the ones whose last answer was a NACK of what
// they are served, and the ones put back on an earlier commit.
func (p *Plane) Convergence() Convergence {
	// Most served proxies may be disconnected: only the connected ones'
	// status is read.
	connected := p.cfg.Server.ConnectedNodes()
	p.mu.Lock()
	// Proxies counts every node of the served commit, whether it has
	// connected (and been served) or not.
	c := Convergence{}
	if p.tr != nil {
		c.Proxies = len(p.tr.Nodes())
	}
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
	p.mu.Unlock()
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

// nacked reports whether a type's published version was rejected.
func nacked(st ads.ProxyStatus) bool {
	for _, t := range st.Types {
		if t.LastNACK != nil && t.Published != "" && t.LastNACK.Version == t.Published && t.Acked != t.Published {
			return true
		}
	}
	return false
}
