package plane

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gitmesh/gitmesh/xds/ads"
)

// Metrics are the xDS side's Prometheus metrics.
type Metrics struct {
	acks, nacks *prometheus.CounterVec
	convergence prometheus.Histogram
}

// NewMetrics registers the xDS metrics of server with reg.
func NewMetrics(reg prometheus.Registerer, server *ads.Server) *Metrics {
	m := &Metrics{
		acks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gitmesh_xds_acks_total", Help: "xDS responses proxies accepted, by resource type.",
		}, []string{"type"}),
		nacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gitmesh_xds_nacks_total", Help: "xDS responses proxies rejected, by resource type.",
		}, []string{"type"}),
		convergence: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "gitmesh_convergence_seconds",
			Help:    "Time from publishing a commit until every connected proxy it changed ACKed it.",
			Buckets: []float64{.005, .01, .025, .05, .1, .2, .3, .5, 1, 2, 5, 10, 30},
		}),
	}
	connected := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "gitmesh_connected_proxies", Help: "Proxies with at least one open xDS stream.",
	}, func() float64 {
		n := 0
		for _, st := range server.Status() {
			if st.Streams > 0 {
				n++
			}
		}
		return float64(n)
	})
	reg.MustRegister(m.acks, m.nacks, m.convergence, connected)
	return m
}

// typeName shortens a type URL to its message name (Cluster, Listener...).
func typeName(url string) string {
	return url[strings.LastIndexByte(url, '.')+1:]
}

// Converged says how long the last publish took to reach its proxies.
type Converged struct {
	Commit   string
	Proxies  int // connected proxies the publish changed
	Duration time.Duration
	Done     bool // false while some are still to ACK
}

// convergence follows the proxies one publish changed until all of them
// have ACKed it.
type convergence struct {
	metrics *Metrics

	mu      sync.Mutex
	server  *ads.Server
	commit  string
	started time.Time
	total   int
	pending map[string]bool
	last    Converged
}

// start begins following a publish: the connected proxies among changed.
func (c *convergence) start(server *ads.Server, commit string, changed []string, now time.Time) {
	pending := make(map[string]bool, len(changed))
	for _, node := range changed {
		if st, ok := server.StatusOf(node); ok && st.Streams > 0 && !st.InSync() {
			pending[node] = true
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.server, c.commit, c.started, c.pending, c.total = server, commit, now, pending, len(pending)
	c.last = Converged{Commit: commit, Proxies: len(pending)}
	if len(pending) == 0 {
		c.last.Done = true
	}
}

// check drops node from the pending set once it is in sync or gone, and
// records the convergence when the set empties.
func (c *convergence) check(node string, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.pending[node] {
		return
	}
	if st, ok := c.server.StatusOf(node); ok && st.Streams > 0 && !st.InSync() {
		return
	}
	delete(c.pending, node)
	if len(c.pending) == 0 && !c.last.Done {
		c.last.Duration, c.last.Done = now.Sub(c.started), true
		if c.metrics != nil {
			c.metrics.convergence.Observe(c.last.Duration.Seconds())
		}
	}
}

func (c *convergence) pendingNodes() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, 0, len(c.pending))
	for node := range c.pending {
		out = append(out, node)
	}
	return out
}

// LastConvergence reports the last publish's convergence.
func (p *Plane) LastConvergence() Converged {
	p.conv.mu.Lock()
	defer p.conv.mu.Unlock()
	return p.conv.last
}

// Run follows the server's ACKs and NACKs (metrics and convergence) until
// ctx ends. Events the subscription drops are made up for by a periodic
// look at the proxies still pending.
func (p *Plane) Run(ctx context.Context) {
	events, cancel := p.cfg.Server.Subscribe()
	defer cancel()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-events:
			if !ok {
				return
			}
			if m := p.cfg.Metrics; m != nil {
				if e.Kind == ads.NACK {
					m.nacks.WithLabelValues(typeName(e.TypeURL)).Inc()
				} else {
					m.acks.WithLabelValues(typeName(e.TypeURL)).Inc()
				}
			}
			if e.Kind == ads.ACK {
				p.conv.check(e.NodeID, e.At)
			}
		case <-tick.C:
			for _, node := range p.conv.pendingNodes() {
				p.conv.check(node, p.cfg.Now())
			}
		}
	}
}
