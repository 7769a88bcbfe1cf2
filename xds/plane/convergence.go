package plane

import (
	"slices"
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

// maxUnreported bounds the completed convergences kept for Run to report;
// past it the oldest are dropped (only when Run is not running).
const maxUnreported = 64

// convergence follows the proxies one publish changed until all of them
// have ACKed it.
type convergence struct {
	metrics *Metrics
	server  *ads.Server
	wake    chan struct{} // signalled when a convergence completes outside Run

	mu         sync.Mutex
	commit     string
	started    time.Time
	pending    map[string]bool
	last       Converged
	unreported []Converged // completed, for Run to report
}

// among returns the connected proxies among nodes, and those of them that
// do not hold what they are served yet.
func (c *convergence) among(nodes []string) (connected int, pending map[string]bool) {
	pending = make(map[string]bool, len(nodes))
	for _, node := range nodes {
		st, ok := c.server.StatusOf(node)
		if !ok || st.Streams == 0 {
			continue
		}
		connected++
		if !st.InSync() {
			pending[node] = true
		}
	}
	return connected, pending
}

// start begins following a publish that began at started: the connected
// proxies among changed. Those that ACKed it already are done.
func (c *convergence) start(commit string, changed []string, started, now time.Time) {
	connected, pending := c.among(changed)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.commit, c.started, c.pending = commit, started, pending
	c.last = Converged{Commit: commit, Proxies: connected}
	if len(pending) == 0 {
		c.completeLocked(now)
	}
}

// renewed follows a publish of the same commit again (renewed secrets):
// the connected proxies among changed that have yet to ACK it join the
// convergence under way, or start a new one. A publish that leaves nothing
// to wait for changes nothing.
func (c *convergence) renewed(commit string, changed []string, started time.Time) {
	_, pending := c.among(changed)
	if len(pending) == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.commit == commit && !c.last.Done {
		for node := range pending {
			if !c.pending[node] {
				c.pending[node] = true
				c.last.Proxies++
			}
		}
		return
	}
	c.commit, c.started, c.pending = commit, started, pending
	c.last = Converged{Commit: commit, Proxies: len(pending)}
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
	if len(c.pending) == 0 && c.last.Reverted == 0 && !c.last.Done {
		c.completeLocked(now)
	}
}

// reverted takes node, put back on an earlier commit after rejecting
// commit, out of the pending set: the publish of commit will not converge.
func (c *convergence) reverted(commit, node string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.commit != commit || !c.pending[node] {
		return
	}
	delete(c.pending, node)
	c.last.Reverted++
}

// completeLocked marks the convergence done, observes it when it waited
// for proxies, and queues it for Run to report.
func (c *convergence) completeLocked(now time.Time) {
	c.last.Done = true
	if c.last.Proxies > 0 {
		c.last.Seconds = max(now.Sub(c.started), 0).Seconds()
		if c.metrics != nil {
			c.metrics.convergence.Observe(c.last.Seconds)
		}
	}
	if len(c.unreported) == maxUnreported {
		c.unreported = slices.Delete(c.unreported, 0, 1)
	}
	c.unreported = append(c.unreported, c.last)
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// takeCompleted returns the completed convergences not yet reported.
func (c *convergence) takeCompleted() []Converged {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.unreported
	c.unreported = nil
	return out
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
