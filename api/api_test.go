package api_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/gitmesh/gitmesh/api"
	"github.com/gitmesh/gitmesh/reconcile"
	"github.com/gitmesh/gitmesh/schema"
	"github.com/gitmesh/gitmesh/schema/schematest"
	"github.com/gitmesh/gitmesh/xds/ads"
	"github.com/gitmesh/gitmesh/xds/plane"
)

const (
	listenerType = "type.googleapis.com/envoy.config.listener.v3.Listener"
	clusterType  = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
)

// daemon is a backend with a status, a history and proxies, one of which
// NACKed the last commit.
func daemon() *fakeBackend {
	head := reconcile.CommitInfo{Hash: "9b1d4e7a2c5f8b0d3e6a9c2f5b8e1d4a7c0f3b6e", Subject: "Open redis to everyone", Author: "Bo <bo@example.com>", Time: at(20)}
	good := servedCommit
	return &fakeBackend{
		status: reconcile.Status{
			Repo: "https://git.example.com/platform/mesh-policy.git", Branch: "main", Path: "policies",
			Head: &head, HeadVerdict: reconcile.VerdictInvalid,
			Published: &good, PublishedAt: at(1),
			LastError: "commit 9b1d4e7a2c5f has 1 error", LastSync: at(21), LastGoodSync: at(1),
			Ready:       true,
			Convergence: plane.Convergence{Proxies: 3, Connected: 2, Acked: 1, Nacked: 1},
		},
		history: []reconcile.Record{
			{ID: 2, Commit: head, At: at(21), Trigger: "webhook:github", Verdict: reconcile.VerdictInvalid, Errors: 1,
				Findings: []schema.Finding{{Severity: schema.SeverityError, File: "permissions/redis.yaml", Document: 1, Line: 4, Column: 3,
					Pointer: "/sources/0/match", Code: schema.CodeUnknownField, Message: "unknown field `mach`", Hint: `did you mean "match"?`}},
				Durations: map[reconcile.Stage]float64{"fetch": 12.5, "load": 3.25}},
			{ID: 1, Commit: good, At: at(1), Trigger: "start", Verdict: reconcile.VerdictRejected, Changed: 3,
				Diff: &reconcile.DiffSummary{SetDiff: schema.SetDiff{Added: []schema.Key{{Type: schema.TypeTrafficPermission, Mesh: "default", Name: "web-to-backend"}}}, Affected: 2},
				Rejections: []plane.Rejection{{Commit: string(good.Hash), Node: "default.web-01", Type: listenerType, Version: "l-2",
					Error: "duplicate listener name inbound:10.0.0.10:10080", At: at(3)}},
				RejectedProxies: 1, Convergence: &plane.Converged{Proxies: 1, Seconds: 0.042}},
		},
		proxies: []ads.ProxyStatus{
			{NodeID: "default.backend-01", Flavor: "envoy", Published: true, Commit: string(good.Hash), Streams: 1, ConnectedSince: at(2), Types: []ads.TypeStatus{
				{TypeURL: clusterType, Published: "c-1", Sent: "c-1", SentAt: at(2), Acked: "c-1", AckedAt: at(2)},
				{TypeURL: listenerType, Published: "l-1", Sent: "l-1", SentAt: at(2), Acked: "l-1", AckedAt: at(2)},
			}},
			{NodeID: "default.web-01", Published: true, Commit: string(good.Hash), Streams: 2, ConnectedSince: at(3), Types: []ads.TypeStatus{
				{TypeURL: clusterType, Published: "c-2", Sent: "c-2", SentAt: at(3), Acked: "c-2", AckedAt: at(3)},
				{TypeURL: listenerType, Published: "l-2", Sent: "l-2", SentAt: at(3), Acked: "l-0", AckedAt: at(2),
					LastNACK: &ads.NACKStatus{Version: "l-2", Error: "duplicate listener name inbound:10.0.0.10:10080", At: at(3)}},
			}},
			{NodeID: "default.redis-01", Published: true, Commit: string(good.Hash), Types: []ads.TypeStatus{
				{TypeURL: listenerType, Published: "l-3"},
			}},
			// A stream of a node the served commit does not declare.
			{NodeID: "default.web-99", Flavor: "envoy", Streams: 1, ConnectedSince: at(4), Types: []ads.TypeStatus{
				{TypeURL: listenerType, Subscribed: true},
			}},
		},
	}
}

func TestStatusHistoryProxiesGolden(t *testing.T) {
	base, _, _ := startAPI(t, api.Config{Backend: daemon()})
	for _, tc := range []struct{ path, golden string }{
		{"/status", "status.json"},
		{"/history", "history.json"},
		{"/proxies", "proxies.json"},
	} {
		t.Run(tc.golden, func(t *testing.T) {
			r := get(t, base+tc.path)
			r.wantJSON(t, http.StatusOK, nil)
			golden(t, tc.golden, r.body)
		})
	}
}

func TestStatusRoundTrips(t *testing.T) {
	b := daemon()
	base, _, _ := startAPI(t, api.Config{Backend: b})
	var got reconcile.Status
	get(t, base+"/status").wantJSON(t, http.StatusOK, &got)
	if got.Head.Hash != b.status.Head.Hash || got.Convergence != b.status.Convergence || !got.LastGoodSync.Equal(b.status.LastGoodSync) {
		t.Errorf("GET /status = %+v, want %+v", got, b.status)
	}
}

func TestEmptyListsAreArrays(t *testing.T) {
	base, _, _ := startAPI(t, api.Config{})
	for _, path := range []string{"/history", "/proxies"} {
		r := get(t, base+path)
		r.wantJSON(t, http.StatusOK, nil)
		if !strings.Contains(string(r.body), `"items": []`) || !strings.Contains(string(r.body), `"total": 0`) {
			t.Errorf("GET %s = %s, want an empty items array and total 0", path, r.body)
		}
	}
}

func TestProxiesShape(t *testing.T) {
	base, _, _ := startAPI(t, api.Config{Backend: daemon()})
	var got struct {
		Total int `json:"total"`
		Items []struct {
			NodeID, Mesh, Name, Commit string
			Published, InSync, Unknown bool
			Streams                    int
			Types                      []struct {
				Type, Published, Sent, Acked string
				InSync                       bool
				LastNACK                     *struct{ Version, Error string } `json:"lastNack"`
			}
		} `json:"items"`
	}
	get(t, base+"/proxies").wantJSON(t, http.StatusOK, &got)
	if got.Total != 4 || len(got.Items) != 4 {
		t.Fatalf("total %d, %d items; want 4", got.Total, len(got.Items))
	}
	web := got.Items[1]
	if web.NodeID != "default.web-01" || web.Mesh != "default" || web.Name != "web-01" || web.Streams != 2 || web.InSync {
		t.Errorf("web-01 = %+v, want connected twice and out of sync", web)
	}
	l := web.Types[1]
	if l.Type != "Listener" || l.InSync || l.LastNACK == nil || l.LastNACK.Version != "l-2" || !strings.Contains(l.LastNACK.Error, "duplicate listener") {
		t.Errorf("web-01 listeners = %+v, want the NACK of l-2 with its error", l)
	}
	for i, p := range got.Items {
		if p.Unknown != (p.NodeID == "default.web-99") {
			t.Errorf("item %d %s: unknown %v; only a connected node the commit does not declare is", i, p.NodeID, p.Unknown)
		}
	}
	if !got.Items[0].InSync || got.Items[2].InSync || got.Items[2].Streams != 0 {
		t.Errorf("backend-01 in sync = %v, redis-01 in sync = %v streams %d; want true, false, 0",
			got.Items[0].InSync, got.Items[2].InSync, got.Items[2].Streams)
	}
}

func TestHealthAndReadiness(t *testing.T) {
	base, b, _ := startAPI(t, api.Config{})
	var body struct{ Status string }
	get(t, base+"/healthz").wantJSON(t, http.StatusOK, &body)
	if body.Status != "ok" {
		t.Errorf("healthz status %q, want ok", body.Status)
	}
	get(t, base+"/readyz").wantError(t, http.StatusServiceUnavailable, "not ready")

	b.serve(schematest.Load(t, policyTree), servedCommit)
	get(t, base+"/readyz").wantJSON(t, http.StatusOK, &body)
	if body.Status != "ready" {
		t.Errorf("readyz status %q, want ready", body.Status)
	}
	get(t, base+"/healthz").wantJSON(t, http.StatusOK, nil)
}

func TestMetrics(t *testing.T) {
	base, _, _ := startAPI(t, api.Config{})
	get(t, base+"/metrics").wantError(t, http.StatusNotFound, "metrics are not enabled")

	metrics := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		_, _ = w.Write([]byte("gitmesh_up 1\n"))
	})
	base, _, _ = startAPI(t, api.Config{Metrics: metrics})
	r := get(t, base+"/metrics")
	if r.code != http.StatusOK || string(r.body) != "gitmesh_up 1\n" {
		t.Errorf("GET /metrics = %d %q, want the metrics handler's answer", r.code, r.body)
	}
}

func TestMethodNotAllowed(t *testing.T) {
	base, _ := servedAPI(t)
	for _, tc := range []struct{ method, path, allow string }{
		{http.MethodPost, "/status", "GET, HEAD"},
		{http.MethodDelete, "/history", "GET, HEAD"},
		{http.MethodPut, "/meshes/default", "GET, HEAD"},
		{http.MethodDelete, "/meshes/default/dataplanes/web-01", "GET, HEAD"},
		{http.MethodPost, "/meshes/default/traffic-permissions", "GET, HEAD"},
		{http.MethodPost, "/proxies", "GET, HEAD"},
		{http.MethodPost, "/healthz", "GET, HEAD"},
		{http.MethodPost, "/readyz", "GET, HEAD"},
		{http.MethodPost, "/metrics", "GET, HEAD"},
		{http.MethodGet, "/hooks/github", "POST"},
		{http.MethodGet, "/hooks/gitlab", "POST"},
		{http.MethodPut, "/hooks/generic", "POST"},
	} {
		t.Run(tc.method+tc.path, func(t *testing.T) {
			r := do(t, tc.method, base+tc.path, nil, nil)
			r.wantError(t, http.StatusMethodNotAllowed, "not allowed")
			if got := r.header.Get("Allow"); got != tc.allow {
				t.Errorf("Allow = %q, want %q", got, tc.allow)
			}
		})
	}
}

func TestHead(t *testing.T) {
	base, _ := servedAPI(t)
	r := do(t, http.MethodHead, base+"/meshes", nil, nil)
	if r.code != http.StatusOK || len(r.body) != 0 || r.header.Get("Content-Type") != "application/json" {
		t.Errorf("HEAD /meshes = %d, %d bytes, %q", r.code, len(r.body), r.header.Get("Content-Type"))
	}
}
