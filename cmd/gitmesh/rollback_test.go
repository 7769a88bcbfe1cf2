package main

import (
	"bufio"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/gitmesh/gitmesh/api"
	"github.com/gitmesh/gitmesh/internal/logtest"
	"github.com/gitmesh/gitmesh/reconcile"
	"github.com/gitmesh/gitmesh/reconcile/gittest"
	"github.com/gitmesh/gitmesh/xds/adstest"
)

// remote is a bare repository served by git daemon, with a worktree to
// push from.
type remote struct {
	bare, url, work string
}

func newRemote(t *testing.T) *remote {
	t.Helper()
	bare := gittest.Bare(t)
	return &remote{bare: bare, url: gittest.Daemon(t, filepath.Dir(bare)) + filepath.Base(bare), work: gittest.Init(t)}
}

// push commits files (nil: what is staged) and pushes; it returns the hash.
func (r *remote) push(t *testing.T, msg string, files map[string]string) string {
	t.Helper()
	h := gittest.Commit(t, r.work, msg, files)
	gittest.Push(t, r.work, r.bare)
	return h
}

// pushTwo pushes the bundled policies (c1), then the same without the
// permission that lets web call backend (c2).
func (r *remote) pushTwo(t *testing.T) (c1, c2 string) {
	t.Helper()
	c1 = r.push(t, "Initial policies", policyFiles(t))
	gittest.Git(t, r.work, "rm", "-q", "policies/permissions/web-to-backend.yaml")
	return c1, r.push(t, "Stop web from calling backend", nil)
}

// cli runs a client command against the daemon at api with the token file
// of stateDir.
func cli(t *testing.T, api, stateDir string, args ...string) (int, string, string) {
	t.Helper()
	args = append(args, "--api-address", api, "--token-file", filepath.Join(stateDir, adminTokenFileName))
	return gitmesh(t, args...)
}

func typoInWeb(t *testing.T) map[string]string {
	return map[string]string{
		"policies/dataplanes/web.yaml": strings.Replace(policyFiles(t)["policies/dataplanes/web.yaml"], "servicePort", "servicePrt", 1),
	}
}

// TestServeRollbackAndResumeFromTheCLI walks through an incident as the
// README does: roll back to an older commit, see pushes held, resume.
func TestServeRollbackAndResumeFromTheCLI(t *testing.T) {
	r := newRemote(t)
	c1 := r.push(t, "Initial policies", policyFiles(t))
	gittest.Git(t, r.work, "rm", "-q", "policies/permissions/web-to-backend.yaml")
	r.push(t, "Stop web from calling backend", nil)
	bad := r.push(t, "Typo", typoInWeb(t))
	gittest.Git(t, r.work, "revert", "--no-edit", "HEAD")
	gittest.Push(t, r.work, r.bare)
	c4 := strings.TrimSpace(gittest.Git(t, r.work, "rev-parse", "HEAD"))

	stateDir := t.TempDir()
	s := startServe(t, serveOptions{repo: r.url, path: "policies", stateDir: stateDir, webhookSecretFile: writeSecret(t, webhookSecret)})
	api := s.app.apiLis.Addr().String()
	backend := s.dial(t, "default.backend-01")
	s.waitCommit(t, backend, c4)

	// Refusals change nothing.
	code, _, stderr := cli(t, api, stateDir, "rollback", "0123456789abcdef0123456789abcdef01234567")
	if code != exitFailed || !strings.Contains(stderr, "refused: unknown commit") || !strings.Contains(stderr, "Nothing changed") {
		t.Errorf("rollback to an unknown commit: exit %d\n%s", code, stderr)
	}
	code, _, stderr = cli(t, api, stateDir, "rollback", bad[:8])
	if code != exitFailed || !strings.Contains(stderr, "is invalid") || !strings.Contains(stderr, "policies/dataplanes/web.yaml:8") {
		t.Errorf("rollback to an invalid commit: exit %d\n%s", code, stderr)
	}
	code, _, stderr = gitmesh(t, "rollback", c1, "--api-address", api, "--token-file", writeSecret(t, "not-the-token"))
	if code != exitUsage || !strings.Contains(stderr, "401") {
		t.Errorf("rollback with a wrong token: exit %d\n%s", code, stderr)
	}
	if st := s.status(t); st.Pinned || string(st.Published.Hash) != c4 {
		t.Fatalf("a refused rollback changed the status: %+v", st)
	}

	// Roll back to the first commit, by its short hash.
	code, stdout, stderr := cli(t, api, stateDir, "rollback", c1[:7], "--by", "alice", "--reason", "backend outage")
	if code != exitOK || !strings.Contains(stdout, "Rolled back to "+c1[:12]) {
		t.Fatalf("rollback: exit %d\n%s%s", code, stdout, stderr)
	}
	s.waitCommit(t, backend, c1)
	_, stdout, _ = cli(t, api, stateDir, "status")
	if !regexp.MustCompile(`Pinned +on ` + c1[:12] + ` by alice .*\(backend outage\)`).MatchString(stdout) {
		t.Errorf("status does not show the pin:\n%s", stdout)
	}

	// A push is fetched and checked, but held.
	gittest.Git(t, r.work, "rm", "-q", "policies/permissions/backend-to-redis.yaml")
	c5 := r.push(t, "Stop backend from calling redis", nil)
	s.hook(t, webhookSecret)
	s.waitStatus(t, "the held head", func(st reconcile.Status) bool {
		return st.Head != nil && string(st.Head.Hash) == c5 && st.HeadVerdict == reconcile.VerdictHeld
	})
	_, stdout, _ = cli(t, api, stateDir, "history")
	for _, want := range []string{
		c5[:12] + "  ", "held", "valid; not published while pinned",
		"rollback by alice (backend outage); pinned", c4[:12],
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("history lacks %q:\n%s", want, stdout)
		}
	}
	if v := backend.Version("type.googleapis.com/envoy.config.listener.v3.Listener"); strings.HasPrefix(v, c5[:12]) {
		t.Error("a held commit reached a proxy")
	}

	// Resume publishes the head.
	code, stdout, stderr = cli(t, api, stateDir, "resume")
	if code != exitOK || !strings.Contains(stdout, "Resumed: published "+c5[:12]) {
		t.Fatalf("resume: exit %d\n%s%s", code, stdout, stderr)
	}
	s.waitCommit(t, backend, c5)
	code, _, stderr = cli(t, api, stateDir, "resume")
	if code != exitFailed || !strings.Contains(stderr, "not pinned") {
		t.Errorf("resume without a pin: exit %d\n%s", code, stderr)
	}
}

// TestServeSurvivesKill9 kills a real gitmesh process while it holds a pin:
// after a restart the pin, the history and what is served are all there.
func TestServeSurvivesKill9(t *testing.T) {
	r := newRemote(t)
	c1, c2 := r.pushTwo(t)
	stateDir := t.TempDir()

	p := startProcess(t, "serve", "--repo", r.url, "--path", "policies", "--state-dir", stateDir, "--interval", "200ms")
	waitHTTPStatus(t, p.api, func(st reconcile.Status) bool { return st.Ready })
	code, stdout, stderr := cli(t, p.api, stateDir, "rollback", c1, "--reason", "kill test")
	if code != exitOK {
		t.Fatalf("rollback: exit %d\n%s%s", code, stdout, stderr)
	}
	gittest.Git(t, r.work, "rm", "-q", "policies/permissions/backend-to-redis.yaml")
	c3 := r.push(t, "Stop backend from calling redis", nil)
	waitHTTPStatus(t, p.api, func(st reconcile.Status) bool { return st.Head != nil && string(st.Head.Hash) == c3 })
	p.kill(t)

	p2 := startProcess(t, "serve", "--repo", r.url, "--path", "policies", "--state-dir", stateDir, "--interval", "200ms")
	st := waitHTTPStatus(t, p2.api, func(st reconcile.Status) bool {
		return st.Ready && st.Head != nil && string(st.Head.Hash) == c3 && st.HeadVerdict == reconcile.VerdictHeld
	})
	if !st.Pinned || st.Pin == nil || string(st.Pin.Commit.Hash) != c1 || st.Pin.Reason != "kill test" || string(st.Published.Hash) != c1 {
		t.Errorf("after kill -9 and restart: %+v", st)
	}
	_, stdout, _ = cli(t, p2.api, stateDir, "history", "--limit", "0")
	for _, want := range []string{c1[:12], c2[:12], c3[:12], "held", "rollback by", "(kill test); pinned"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("history after restart lacks %q:\n%s", want, stdout)
		}
	}
	backend := dialAddr(t, p2.xds, "default.backend-01")
	waitVersionPrefix(t, backend, c1)
}

// process is gitmesh running in a child process.
type process struct {
	cmd      *exec.Cmd
	api, xds string
	done     chan struct{}
}

var addrLine = regexp.MustCompile(`(xDS \(ADS, gRPC\)|HTTP API): +(?:http://)?(127\.0\.0\.1:\d+)`)

// startProcess runs gitmesh args in a child process on free ports and waits
// until it listens.
func startProcess(t testing.TB, args ...string) *process {
	t.Helper()
	return startProcessAt(t, "127.0.0.1:0", "127.0.0.1:0", args...)
}

// startProcessAt is startProcess with the xDS server and the API on the
// given addresses.
func startProcessAt(t testing.TB, xdsAddr, apiAddr string, args ...string) *process {
	t.Helper()
	args = append(args, "--xds-address", xdsAddr, "--api-address", apiAddr)
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "GITMESH_TEST_RUN_MAIN=1")
	cmd.Args[0] = "gitmesh"
	logs := &logtest.Buffer{}
	cmd.Stderr = logs
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	found := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if m := addrLine.FindStringSubmatch(sc.Text()); m != nil {
				if m[1] == "HTTP API" {
					p.api = m[2]
					close(found)
				} else {
					p.xds = m[2]
				}
			}
		}
		_, _ = io.Copy(io.Discard, out)
	}()
	go func() { _ = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.kill(t)
		if t.Failed() {
			t.Logf("gitmesh %s log:\n%s", strings.Join(args[:1], " "), logs.String())
		}
	})
	select {
	case <-found:
	case <-p.done:
		t.Fatalf("gitmesh exited early:\n%s", logs.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("gitmesh did not start listening:\n%s", logs.String())
	}
	return p
}

// stop sends SIGTERM and waits for the process to end, as a service
// manager stops it.
func (p *process) stop(t testing.TB) {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		t.Fatal("gitmesh did not stop on SIGTERM")
	}
}

// kill sends SIGKILL: no shutdown code runs.
func (p *process) kill(t testing.TB) {
	t.Helper()
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

func waitHTTPStatus(t *testing.T, api string, cond func(reconcile.Status) bool) reconcile.Status {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var st reconcile.Status
		getJSON(t, "http://"+api+"/status", &st)
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("status never reached the wanted state: %+v", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitVersionPrefix waits until every type c holds comes from commit.
func waitVersionPrefix(t *testing.T, c *adstest.Client, commit string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		if v := c.Version("type.googleapis.com/envoy.config.listener.v3.Listener"); strings.HasPrefix(v, commit[:12]) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("the proxy never got the listeners of %s", commit[:12])
}

// dialAddr opens an ADS stream to the xDS server at addr as node.
func dialAddr(t *testing.T, addr, node string) *adstest.Client {
	t.Helper()
	return dialAddrWith(t, addr, node, adstest.Options{})
}

// dialAddrWith is dialAddr with the client's options.
func dialAddrWith(t *testing.T, addr, node string, opts adstest.Options) *adstest.Client {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	c, err := adstest.Dial(conn, node, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); conn.Close() })
	return c
}

// TestServeRollbackOnNACK: a proxy that rejects a commit is recorded with
// its error, put back on the commit it accepted, and still gets the next
// commit.
func TestServeRollbackOnNACK(t *testing.T) {
	r := newRemote(t)
	c1 := r.push(t, "Initial policies", policyFiles(t))
	stateDir := t.TempDir()
	s := startServe(t, serveOptions{repo: r.url, path: "policies", stateDir: stateDir, rollbackOnNACK: true,
		webhookSecretFile: writeSecret(t, webhookSecret)})

	var reject atomic.Value // the commit whose listeners the proxy rejects
	reject.Store("none")
	backend := dialAddrWith(t, s.app.xdsLis.Addr().String(), "default.backend-01", adstest.Options{Reject: func(resp *discoverygrpc.DiscoveryResponse) error {
		if resp.TypeUrl == resource.ListenerType && strings.HasPrefix(resp.VersionInfo, reject.Load().(string)) {
			return errors.New("listener inbound:10.0.0.20:10080: filter chain refused by this proxy")
		}
		return nil
	}})
	s.waitCommit(t, backend, c1)

	gittest.Git(t, r.work, "rm", "-q", "policies/permissions/web-to-backend.yaml")
	c2 := gittest.Commit(t, r.work, "Stop web from calling backend", nil)
	reject.Store(c2[:12])
	gittest.Push(t, r.work, r.bare)
	s.hook(t, webhookSecret)

	// The NACK is recorded on c2, and the proxy is put back on c1.
	var hist api.HistoryList
	deadline := time.Now().Add(15 * time.Second)
	for {
		getJSON(t, s.api("/history"), &hist)
		if len(hist.Items) > 0 && string(hist.Items[0].Commit.Hash) == c2 && hist.Items[0].Verdict == reconcile.VerdictRejected {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("c2 never marked rejected: %+v", hist.Items)
		}
		time.Sleep(20 * time.Millisecond)
	}
	rec := hist.Items[0]
	if rec.RejectedProxies != 1 || len(rec.Rejections) != 1 {
		t.Fatalf("rejections %+v", rec.Rejections)
	}
	x := rec.Rejections[0]
	if x.Node != "default.backend-01" || x.Type != resource.ListenerType || !strings.HasPrefix(x.Version, c2[:12]) ||
		!strings.Contains(x.Error, "filter chain refused") || x.RevertedTo != c1 {
		t.Errorf("rejection %+v", x)
	}
	waitVersionPrefix(t, backend, c1)
	st := s.waitStatus(t, "the proxy put back", func(st reconcile.Status) bool { return st.Convergence.Reverted == 1 })
	if string(st.Published.Hash) != c2 || len(st.Rejections) != 1 {
		t.Errorf("status %+v", st)
	}
	_, stdout, _ := cli(t, s.app.apiLis.Addr().String(), stateDir, "history")
	for _, want := range []string{"rejected", "rejected by 1 proxy:", "default.backend-01 NACKed Listener", "(put back on " + c1[:12] + ")"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("history lacks %q:\n%s", want, stdout)
		}
	}

	// The next commit is published to it: nothing to switch back on.
	gittest.Git(t, r.work, "rm", "-q", "policies/permissions/backend-to-redis.yaml")
	c3 := r.push(t, "Stop backend from calling redis", nil)
	s.hook(t, webhookSecret)
	s.waitCommit(t, backend, c3)
	if n := backend.NACKs(); n != 1 {
		t.Errorf("the proxy sent %d NACKs, want 1", n)
	}
}
