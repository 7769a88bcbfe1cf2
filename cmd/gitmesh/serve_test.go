package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/gitmesh/gitmesh/internal/logtest"
	"github.com/gitmesh/gitmesh/reconcile"
	"github.com/gitmesh/gitmesh/reconcile/gittest"
	"github.com/gitmesh/gitmesh/xds/adstest"
)

const webhookSecret = "s3cret-for-tests"

// policyFiles returns the bundled policies as files under policies/.
func policyFiles(t testing.TB) map[string]string {
	t.Helper()
	files := map[string]string{}
	root := os.DirFS("../../policies")
	err := fs.WalkDir(root, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(root, p)
		files["policies/"+p] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// served is a running serveApp.
type served struct {
	app  *serveApp
	stop func()
	logs *logtest.Buffer
}

// startServe runs the daemon with o (listening on free ports of 127.0.0.1,
// or on o.xdsAddress for xDS when set)
// until the test ends or stop is called.
func startServe(t *testing.T, o serveOptions) *served {
	t.Helper()
	if o.branch == "" {
		o.branch = "main"
	}
	if o.xdsAddress == "" {
		o.xdsAddress = "127.0.0.1:0"
	}
	o.apiAddress = "127.0.0.1:0"
	o.logFormat, o.logLevel = "json", "debug"
	if o.interval == 0 {
		o.interval = time.Hour // only webhooks and watches trigger
	}
	if o.gitTimeout == 0 {
		o.gitTimeout = 5 * time.Second
	}
	if o.certValidity == 0 {
		o.certValidity = time.Hour
	}
	logs := &logtest.Buffer{}
	app, err := newServeApp(o, logs)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- app.Run(ctx) }()
	var once bool
	stop := func() {
		if once {
			return
		}
		once = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("serve did not stop")
		}
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("daemon log:\n%s", logs.String())
		}
	})
	return &served{app, stop, logs}
}

func (s *served) api(path string) string { return "http://" + s.app.apiLis.Addr().String() + path }

// metrics is the daemon's /metrics page.
func (s *served) metrics(t *testing.T) string {
	t.Helper()
	return metricsText(t, s.app.apiLis.Addr().String())
}

func (s *served) dial(t *testing.T, node string) *adstest.Client {
	t.Helper()
	return dialAddr(t, s.app.xdsLis.Addr().String(), node)
}

func (s *served) status(t *testing.T) reconcile.Status {
	t.Helper()
	var st reconcile.Status
	getJSON(t, s.api("/status"), &st)
	return st
}

// waitStatus polls /status until cond holds.
func (s *served) waitStatus(t *testing.T, what string, cond func(reconcile.Status) bool) reconcile.Status {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		st := s.status(t)
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s; status: %+v", what, st)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// hook posts body to the generic webhook signed with secret and returns the
// status code.
func (s *served) hook(t testing.TB, secret string) int {
	t.Helper()
	return postHook(t, s.app.apiLis.Addr().String(), secret)
}

// postHook posts a push of main to the generic webhook of the API at api,
// signed with secret, and returns the status code.
func postHook(t testing.TB, api, secret string) int {
	t.Helper()
	body := []byte(`{"ref":"refs/heads/main"}`)
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	req, _ := http.NewRequest(http.MethodPost, "http://"+api+"/hooks/generic", bytes.NewReader(body))
	req.Header.Set("X-Gitmesh-Signature", "sha256="+hex.EncodeToString(mac.Sum(nil)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func getJSON(t testing.TB, url string, v any) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if v != nil {
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
	}
	return resp.StatusCode
}

// waitCommit waits until c holds what the daemon published for it at
// commit, and the daemon's status says commit is published (a proxy can
// get it a moment before the publish returns).
func (s *served) waitCommit(t *testing.T, c *adstest.Client, commit string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := c.WaitPublished(ctx, s.app.server, commit); err != nil {
		t.Fatal(err)
	}
	s.waitStatus(t, "commit "+commit[:12]+" published", func(st reconcile.Status) bool {
		return st.Ready && st.Published != nil && string(st.Published.Hash) == commit
	})
}

func writeSecret(t testing.TB, secret string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(p, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestServeFollowsPushesThroughWebhook pushes to a real git daemon and
// checks what a real ADS client gets: every valid commit, never an invalid
// one; a bad webhook signature is refused; a restart with the remote gone
// still serves the last good commit.
func TestServeFollowsPushesThroughWebhook(t *testing.T) {
	bare := gittest.Bare(t)
	url := gittest.Daemon(t, filepath.Dir(bare)) + filepath.Base(bare)
	work := gittest.Init(t)
	c1 := gittest.Commit(t, work, "Initial policies", policyFiles(t))
	gittest.Push(t, work, bare)

	stateDir := t.TempDir()
	opts := serveOptions{repo: url, path: "policies", stateDir: stateDir, webhookSecretFile: writeSecret(t, webhookSecret)}
	s := startServe(t, opts)
	web, backend := s.dial(t, "default.web-01"), s.dial(t, "default.backend-01")
	s.waitCommit(t, web, c1)
	s.waitCommit(t, backend, c1)
	if code := getJSON(t, s.api("/readyz"), nil); code != http.StatusOK {
		t.Errorf("readyz = %d once a commit is served", code)
	}

	// A valid commit, announced by a signed webhook, reaches the proxies it
	// changes and only those.
	gittest.Git(t, work, "rm", "-q", "policies/permissions/web-to-backend.yaml")
	c2 := gittest.Commit(t, work, "Stop web from calling backend", nil)
	gittest.Push(t, work, bare)
	if code := s.hook(t, "wrong-secret"); code != http.StatusUnauthorized {
		t.Fatalf("webhook with a bad signature: %d, want 401", code)
	}
	time.Sleep(50 * time.Millisecond)
	if st := s.status(t); st.Head != nil && string(st.Head.Hash) == c2 {
		t.Fatal("a webhook with a bad signature triggered a sync")
	}
	if code := s.hook(t, webhookSecret); code != http.StatusAccepted {
		t.Fatalf("webhook: %d, want 202", code)
	}
	s.waitCommit(t, backend, c2)
	if v := web.Version(resource.ListenerType); !strings.HasPrefix(v, c1[:12]) {
		t.Errorf("web-01 was pushed %q; the commit does not change it", v)
	}

	// An invalid commit is recorded with its errors and changes nothing.
	c3 := gittest.Commit(t, work, "Typo", map[string]string{
		"policies/dataplanes/web.yaml": strings.Replace(policyFiles(t)["policies/dataplanes/web.yaml"], "servicePort", "servicePrt", 1),
	})
	gittest.Push(t, work, bare)
	if code := s.hook(t, webhookSecret); code != http.StatusAccepted {
		t.Fatalf("webhook: %d", code)
	}
	st := s.waitStatus(t, "the invalid head", func(st reconcile.Status) bool {
		return st.Head != nil && string(st.Head.Hash) == c3 && st.HeadVerdict != reconcile.VerdictPending
	})
	if st.HeadVerdict != reconcile.VerdictInvalid || st.Published == nil || string(st.Published.Hash) != c2 {
		t.Errorf("status after an invalid push: head verdict %q, published %+v; want invalid and %s", st.HeadVerdict, st.Published, c2[:12])
	}
	if !strings.Contains(st.LastError, "policies/dataplanes/web.yaml:8") {
		t.Errorf("last error %q does not name the file and line", st.LastError)
	}
	var hist struct {
		Items []reconcile.Record `json:"items"`
	}
	getJSON(t, s.api("/history"), &hist)
	if len(hist.Items) < 2 || string(hist.Items[0].Commit.Hash) != c3 || hist.Items[0].Verdict != reconcile.VerdictInvalid ||
		hist.Items[0].Errors == 0 || len(hist.Items[0].Findings) == 0 || hist.Items[0].Findings[0].Pointer == "" {
		t.Fatalf("history: %+v", hist.Items)
	}
	if string(hist.Items[1].Commit.Hash) != c2 || hist.Items[1].Verdict != reconcile.VerdictPublished || hist.Items[1].Diff == nil ||
		len(hist.Items[1].Diff.Removed) != 1 || hist.Items[1].Changed != 1 || hist.Items[1].Unchanged != 1 {
		// Pushed to backend; web unchanged; redis-01, never connected, is
		// served nothing.
		t.Errorf("history of the published commit: %+v", hist.Items[1])
	}
	for _, c := range []*adstest.Client{web, backend} {
		for _, typ := range []string{resource.ListenerType, resource.ClusterType} {
			if v := c.Version(typ); strings.HasPrefix(v, c3[:12]) {
				t.Errorf("%s got %s of the invalid commit", c.Node, typ)
			}
		}
	}
	metrics := s.metrics(t)
	for _, want := range []string{`gitmesh_sync_attempts_total{result="invalid"} 1`, `gitmesh_head_invalid 1`,
		`gitmesh_published_commit_info{commit="` + c2 + `"} 1`, `gitmesh_stage_duration_seconds_count{stage="load"}`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if strings.Contains(s.logs.String(), webhookSecret) {
		t.Error("the webhook secret appears in the log")
	}
	if !strings.Contains(s.logs.String(), `"msg":"commit invalid"`) {
		t.Error("no log line for the invalid commit")
	}

	// Restart with the remote gone: the last published commit is served
	// from local objects.
	s.stop()
	if err := os.RemoveAll(bare); err != nil {
		t.Fatal(err)
	}
	s2 := startServe(t, opts)
	backend2 := s2.dial(t, "default.backend-01")
	s2.waitCommit(t, backend2, c2)
	st = s2.waitStatus(t, "a failed sync", func(st reconcile.Status) bool { return st.LastError != "" })
	if !st.Ready || st.Published == nil || string(st.Published.Hash) != c2 {
		t.Errorf("status after restart with the remote gone: %+v", st)
	}
}

// TestServePollsAndWatches: without any webhook, a pushed commit is picked
// up by the interval, and a commit in a local repository by the watch.
func TestServePollsAndWatches(t *testing.T) {
	t.Run("interval", func(t *testing.T) {
		bare := gittest.Bare(t)
		url := gittest.HTTPBackend(t, filepath.Dir(bare), gittest.HTTPOptions{}) + filepath.Base(bare)
		work := gittest.Init(t)
		c1 := gittest.Commit(t, work, "Initial policies", policyFiles(t))
		gittest.Push(t, work, bare)
		s := startServe(t, serveOptions{repo: url, path: "policies", stateDir: t.TempDir(), interval: 100 * time.Millisecond})
		redis := s.dial(t, "default.redis-01")
		s.waitCommit(t, redis, c1)
		gittest.Git(t, work, "rm", "-q", "policies/permissions/backend-to-redis.yaml")
		c2 := gittest.Commit(t, work, "Stop backend from calling redis", nil)
		gittest.Push(t, work, bare)
		s.waitCommit(t, redis, c2)
	})
	t.Run("local watch", func(t *testing.T) {
		work := gittest.Init(t)
		c1 := gittest.Commit(t, work, "Initial policies", policyFiles(t))
		s := startServe(t, serveOptions{repo: work, path: "policies", stateDir: t.TempDir()})
		redis := s.dial(t, "default.redis-01")
		s.waitCommit(t, redis, c1)
		gittest.Git(t, work, "rm", "-q", "policies/permissions/backend-to-redis.yaml")
		c2 := gittest.Commit(t, work, "Stop backend from calling redis", nil)
		s.waitCommit(t, redis, c2)
	})
}

// TestServeMissingLocalRepository: a local --repo that holds no repository
// fails at once, saying so, instead of retrying forever.
func TestServeMissingLocalRepository(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing")
	code, _, errb := gitmesh(t, "serve", "--repo", missing, "--state-dir", t.TempDir(),
		"--xds-address", "127.0.0.1:0", "--api-address", "127.0.0.1:0")
	if code != exitUsage || !strings.Contains(errb, missing) || !strings.Contains(errb, "no such file or directory") {
		t.Errorf("exit %d, stderr %q; want 2 naming the path", code, errb)
	}
	plain := t.TempDir()
	code, _, errb = gitmesh(t, "serve", "--repo", plain, "--state-dir", t.TempDir(),
		"--xds-address", "127.0.0.1:0", "--api-address", "127.0.0.1:0")
	if code != exitUsage || !strings.Contains(errb, "not a git repository") {
		t.Errorf("a directory that is no repository: exit %d, stderr %q", code, errb)
	}
}

// TestServeUnreachableRemote: with no state and a remote that does not
// answer, the daemon keeps trying, is not ready, and logs one line per try.
func TestServeUnreachableRemote(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close() // nothing listens there now
	s := startServe(t, serveOptions{repo: "git://" + addr + "/mesh.git", stateDir: t.TempDir(), interval: 50 * time.Millisecond})
	deadline := time.Now().Add(15 * time.Second)
	for strings.Count(s.logs.String(), `"msg":"sync failed"`) < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("fewer than 3 tries in 15s:\n%s", s.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code := getJSON(t, s.api("/readyz"), nil); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz = %d, want 503 before anything is served", code)
	}
	if st := s.status(t); st.Ready || !strings.Contains(st.LastError, addr) {
		t.Errorf("status %+v, want not ready, the error naming the remote", st)
	}
	s.stop()
	var tries, failures int
	for _, line := range strings.Split(strings.TrimSpace(s.logs.String()), "\n") {
		var l struct{ Level, Msg string }
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if l.Msg == "sync failed" {
			tries++
		}
		if l.Level == "WARN" || l.Level == "ERROR" {
			failures++
		}
	}
	if tries < 3 || failures != tries {
		t.Errorf("%d tries logged, %d warnings and errors: want one line per try\n%s", tries, failures, s.logs.String())
	}
}
