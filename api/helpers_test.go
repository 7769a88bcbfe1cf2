package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	goldenfile "github.com/gitmesh/gitmesh/internal/golden"
	"github.com/gitmesh/gitmesh/internal/logtest"

	"github.com/gitmesh/gitmesh/api"
	"github.com/gitmesh/gitmesh/reconcile"
	"github.com/gitmesh/gitmesh/reconcile/pipeline"
	"github.com/gitmesh/gitmesh/reconcile/source"
	"github.com/gitmesh/gitmesh/schema"
	"github.com/gitmesh/gitmesh/xds"
	"github.com/gitmesh/gitmesh/xds/ads"
	"github.com/gitmesh/gitmesh/xds/ca"
)

// fakeBackend is the daemon as the API sees it.
type fakeBackend struct {
	mu      sync.Mutex
	status  reconcile.Status
	history []reconcile.Record
	set     *schema.Set
	tr      *xds.Translation // the set's, built when served
	commit  reconcile.CommitInfo
	proxies []ads.ProxyStatus
	// certs are the certificates held per node.
	certs    map[string]ca.CertificateInfo
	triggers []string
	// ops are the rollbacks and resumes asked for, as "op rev by reason";
	// opErr is what they return.
	ops   []string
	opErr error
}

func (f *fakeBackend) Rollback(_ context.Context, rev, by, reason string) (reconcile.Record, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ops = append(f.ops, strings.Join([]string{"rollback", rev, by, reason}, " "))
	if f.opErr != nil {
		return reconcile.Record{}, f.opErr
	}
	return reconcile.Record{Commit: reconcile.CommitInfo{Hash: source.Hash(rev)}, Verdict: reconcile.VerdictPublished, By: by, Reason: reason, Pinned: true}, nil
}

func (f *fakeBackend) Resume(_ context.Context, by, reason string) (reconcile.Record, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ops = append(f.ops, strings.Join([]string{"resume", by, reason}, " "))
	if f.opErr != nil {
		return reconcile.Record{}, f.opErr
	}
	return reconcile.Record{Commit: servedCommit, Verdict: reconcile.VerdictPublished, By: by}, nil
}

func (f *fakeBackend) operations() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.ops...)
}

var _ api.Backend = (*fakeBackend)(nil)

func (f *fakeBackend) Status() reconcile.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.status
}

func (f *fakeBackend) History() []reconcile.Record {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.history
}

func (f *fakeBackend) Served() (*pipeline.Result, reconcile.CommitInfo, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.set == nil {
		return nil, f.commit, false
	}
	return &pipeline.Result{Set: f.set, Translation: f.tr}, f.commit, true
}

func (f *fakeBackend) Proxies() []ads.ProxyStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.proxies
}

func (f *fakeBackend) Certificate(nodeID string) (ca.CertificateInfo, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.certs[nodeID]
	return c, ok
}

func (f *fakeBackend) Trigger(reason string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.triggers = append(f.triggers, reason)
}

func (f *fakeBackend) serve(set *schema.Set, commit reconcile.CommitInfo) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.set, f.commit = set, commit
	f.tr, _, _, _ = xds.NewBuilder(xds.BuilderOptions{}).Build(context.Background(), set, schema.DiffSets(nil, set), nil)
	f.status.Ready = true
	f.status.Published = &commit
}

func (f *fakeBackend) triggered() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.triggers...)
}

// startAPI serves the API over real HTTP on 127.0.0.1; cfg.Backend and
// cfg.Logger are filled in when unset.
func startAPI(t *testing.T, cfg api.Config) (base string, b *fakeBackend, logs *logtest.Buffer) {
	t.Helper()
	if cfg.Backend == nil {
		cfg.Backend = &fakeBackend{status: reconcile.Status{Repo: "https://git.example.com/platform/mesh-policy.git", Branch: "main"}}
	}
	b, _ = cfg.Backend.(*fakeBackend)
	logs = &logtest.Buffer{}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	srv := httptest.NewServer(api.New(cfg))
	t.Cleanup(srv.Close)
	return srv.URL, b, logs
}

// response is what a test request got back.
type response struct {
	code   int
	header http.Header
	body   []byte
}

func do(t *testing.T, method, url string, header http.Header, body []byte) response {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{resp.StatusCode, resp.Header, got}
}

func get(t *testing.T, url string) response {
	t.Helper()
	return do(t, http.MethodGet, url, nil, nil)
}

// wantJSON checks the status code and that the answer is JSON, and decodes
// it into v when v is not nil.
func (r response) wantJSON(t *testing.T, code int, v any) {
	t.Helper()
	if r.code != code {
		t.Fatalf("status %d, want %d; body %s", r.code, code, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q, want application/json", ct)
	}
	var raw any
	if err := json.Unmarshal(r.body, &raw); err != nil {
		t.Fatalf("answer is not JSON: %v\n%s", err, r.body)
	}
	if v != nil {
		if err := json.Unmarshal(r.body, v); err != nil {
			t.Fatal(err)
		}
	}
}

// wantError checks an error answer: its status and that its message
// contains want.
func (r response) wantError(t *testing.T, code int, want string) {
	t.Helper()
	var e struct {
		Error string `json:"error"`
	}
	r.wantJSON(t, code, &e)
	if !strings.Contains(e.Error, want) {
		t.Fatalf("error %q, want it to contain %q", e.Error, want)
	}
}

// golden compares got with testdata/name, or rewrites it under -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	goldenfile.Check(t, filepath.Join("testdata", name), got)
}

// at is a fixed instant for fixtures.
func at(min int) time.Time {
	return time.Date(2026, 3, 14, 9, min, 0, 0, time.UTC)
}
