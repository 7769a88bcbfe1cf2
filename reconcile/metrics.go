package reconcile

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gitmesh/gitmesh/reconcile/source"
)

// Results of a sync attempt, the label of gitmesh_sync_attempts_total.
const (
	ResultPublished  = "published"   // a new commit is served
	ResultInvalid    = "invalid"     // the head has errors
	ResultUnverified = "unverified"  // the head's signature is not accepted (--verify-commits)
	ResultHeld       = "held"        // the head is valid but a pin holds the mesh
	ResultUnchanged  = "unchanged"   // the head did not move
	ResultFetchError = "fetch_error" // the remote could not be reached or read
	ResultFailed     = "failed"      // reading, translating or publishing failed
)

// Operations, and their results, the labels of gitmesh_operations_total.
const (
	OpRollback = "rollback"
	OpResume   = "resume"
	OpDone     = "done"
	OpRefused  = "refused"
	OpFailed   = "failed"
)

// Metrics are the daemon's Prometheus metrics.
type Metrics struct {
	attempts     *prometheus.CounterVec
	stages       *prometheus.HistogramVec
	head         *prometheus.GaugeVec
	published    *prometheus.GaugeVec
	lastGood     prometheus.Gauge
	headInvalid  prometheus.Gauge
	pinned       prometheus.Gauge
	forcedPushes prometheus.Counter
	operations   *prometheus.CounterVec
	rejections   prometheus.Counter
	rejecting    prometheus.Gauge
	unverifieds  *prometheus.CounterVec
	replicas     prometheus.Gauge
	leader       prometheus.Gauge
	disagree     prometheus.Gauge
}

// NewMetrics registers the daemon's metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gitmesh_sync_attempts_total",
			Help: "Syncs with the branch, by result: published, invalid, unverified, held, unchanged, fetch_error, failed.",
		}, []string{"result"}),
		stages: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "gitmesh_stage_duration_seconds",
			Help:    "Duration of each stage of a sync: fetch, load, diff, translate, publish.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"stage"}),
		head: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gitmesh_head_commit_info", Help: "The newest commit seen on the branch (value 1).",
		}, []string{"commit"}),
		published: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gitmesh_published_commit_info", Help: "The commit whose translation is served (value 1).",
		}, []string{"commit"}),
		lastGood: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gitmesh_last_good_sync_timestamp_seconds",
			Help: "Unix time of the last sync that fetched and decided on the head without error.",
		}),
		headInvalid: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gitmesh_head_invalid", Help: "1 while the branch head fails validation, else 0.",
		}),
		pinned: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gitmesh_pinned", Help: "1 while a rollback pin holds the mesh, else 0.",
		}),
		forcedPushes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gitmesh_forced_updates_total", Help: "Branch moves that rewrote history (force pushes).",
		}),
		operations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gitmesh_operations_total",
			Help: "Rollbacks and resumes asked for, by operation and result: done, refused (unknown, invalid or unverified commit, not pinned), failed.",
		}, []string{"operation", "result"}),
		rejections: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gitmesh_proxy_rejections_total",
			Help: "NACKs of the configuration proxies were served, one per proxy and resource type and version.",
		}),
		rejecting: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gitmesh_published_commit_rejecting_proxies",
			Help: "Proxies that NACKed the configuration of the published commit.",
		}),
		unverifieds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gitmesh_unverified_commits_total",
			Help: "Branch heads not published because their signature was not accepted (--verify-commits), by reason: unsigned, unknown_key, bad_signature.",
		}, []string{"reason"}),
		replicas: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gitmesh_replicas", Help: "Replicas of gitmesh serve on the state store heard of within the last lease durations (1 without a shared store).",
		}),
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gitmesh_replica_is_leader", Help: "1 while this replica decides which commit is published (always, without a shared store), else 0.",
		}),
		disagree: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gitmesh_replicas_disagree", Help: "1 while the replicas serve different commits (for longer than a change takes to reach them all), else 0.",
		}),
	}
	reg.MustRegister(m.attempts, m.stages, m.head, m.published, m.lastGood, m.headInvalid, m.pinned, m.forcedPushes,
		m.operations, m.rejections, m.rejecting, m.unverifieds, m.replicas, m.leader, m.disagree)
	m.replicas.Set(1)
	m.leader.Set(1)
	for _, op := range []string{OpRollback, OpResume} {
		for _, r := range []string{OpDone, OpRefused, OpFailed} {
			m.operations.WithLabelValues(op, r)
		}
	}
	for _, r := range []string{source.ReasonUnsigned, source.ReasonUnknownKey, source.ReasonBadSignature} {
		m.unverifieds.WithLabelValues(r)
	}
	for _, r := range []string{ResultPublished, ResultInvalid, ResultUnverified, ResultHeld, ResultUnchanged, ResultFetchError, ResultFailed} {
		m.attempts.WithLabelValues(r)
	}
	return m
}

// The methods below accept a nil *Metrics, so the daemon runs without.

func (m *Metrics) attempt(result string) {
	if m != nil {
		m.attempts.WithLabelValues(result).Inc()
	}
}

func (m *Metrics) stage(stage Stage, d time.Duration) {
	if m != nil {
		m.stages.WithLabelValues(string(stage)).Observe(d.Seconds())
	}
}

func (m *Metrics) setHead(commit string, invalid bool) {
	if m == nil {
		return
	}
	m.head.Reset()
	m.head.WithLabelValues(commit).Set(1)
	if invalid {
		m.headInvalid.Set(1)
	} else {
		m.headInvalid.Set(0)
	}
}

func (m *Metrics) setPublished(commit string) {
	if m != nil {
		m.published.Reset()
		m.published.WithLabelValues(commit).Set(1)
	}
}

func (m *Metrics) goodSync(at time.Time) {
	if m != nil {
		m.lastGood.Set(float64(at.UnixNano()) / 1e9)
	}
}

func (m *Metrics) setPinned(on bool) {
	if m == nil {
		return
	}
	if on {
		m.pinned.Set(1)
	} else {
		m.pinned.Set(0)
	}
}

func (m *Metrics) forced() {
	if m != nil {
		m.forcedPushes.Inc()
	}
}

func (m *Metrics) operation(op string, err error) {
	if m == nil {
		return
	}
	result := OpDone
	switch {
	case err == nil:
	case isRefusal(err):
		result = OpRefused
	default:
		result = OpFailed
	}
	m.operations.WithLabelValues(op, result).Inc()
}

func (m *Metrics) unverified(reason string) {
	if m != nil {
		m.unverifieds.WithLabelValues(reason).Inc()
	}
}

func (m *Metrics) rejected() {
	if m != nil {
		m.rejections.Inc()
	}
}

func (m *Metrics) setRejecting(n int) {
	if m != nil {
		m.rejecting.Set(float64(n))
	}
}

func (m *Metrics) setFleet(replicas int, leader, disagree bool) {
	if m == nil {
		return
	}
	m.replicas.Set(float64(replicas))
	m.leader.Set(b2f(leader))
	m.disagree.Set(b2f(disagree))
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
