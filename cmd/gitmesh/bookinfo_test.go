package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gitmesh/gitmesh/examples/bookinfo/app"
	"github.com/gitmesh/gitmesh/internal/logtest"
	"github.com/gitmesh/gitmesh/reconcile"
	"github.com/gitmesh/gitmesh/reconcile/gittest"
)

// envRunBookinfo makes the test binary run a bookinfo service (its value)
// instead of the tests: the six bookinfo processes are this binary.
const envRunBookinfo = "GITMESH_TEST_RUN_BOOKINFO"

// runBookinfoService runs the service named by envRunBookinfo, when set,
// and reports whether it did: a bookinfo service, or one of testServices.
func runBookinfoService() bool {
	svc := os.Getenv(envRunBookinfo)
	if svc == "" {
		return false
	}
	run := app.Services[svc]
	if run == nil {
		run = testServices[svc]
	}
	app.Main(svc, run)
	return true
}

// bookinfoPolicies returns examples/bookinfo/policies as files under
// policies/, with every inbound port replaced as ports says.
func bookinfoPolicies(t *testing.T, ports map[int]int) map[string]string {
	t.Helper()
	files := map[string]string{}
	root := os.DirFS("../../examples/bookinfo/policies")
	err := fs.WalkDir(root, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(root, p)
		content := string(b)
		for from, to := range ports {
			content = strings.ReplaceAll(content, fmt.Sprintf("port: %d\n", from), fmt.Sprintf("port: %d\n", to))
		}
		files["policies/"+p] = content
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func freePort(t *testing.T) int {
	t.Helper()
	// The kernel may hand a port it just freed out again: never give the
	// same one twice in this process, or two dataplanes would share it.
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if _, taken := givenPorts.LoadOrStore(port, true); !taken {
			return port
		}
	}
	t.Fatal("no free port that was not given out before")
	return 0
}

// givenPorts are the ports freePort gave out.
var givenPorts sync.Map

// TestBookinfoEndToEnd runs bookinfo on gRPC-Go's own xDS client and server,
// configured and secured by gitmesh from a repository on a real git server:
// permissions taken away by a commit, kept by an invalid commit, restored
// by a rollback and taken away again by resume.
func TestBookinfoEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts six gRPC processes")
	}
	// The policies' ports, moved to free ones.
	dataplanes := slices.Clone(app.Dataplanes)
	ports := map[int]int{}
	for i := range dataplanes {
		free := freePort(t)
		ports[dataplanes[i].Port] = free
		dataplanes[i].Port = free
	}
	r := newRemote(t)
	c1 := r.push(t, "Bookinfo", bookinfoPolicies(t, ports))
	stateDir := t.TempDir()
	s := startServe(t, serveOptions{repo: r.url, path: "policies", stateDir: stateDir, webhookSecretFile: writeSecret(t, webhookSecret)})
	api, xdsAddr := s.app.apiLis.Addr().String(), s.app.xdsLis.Addr().String()
	s.waitStatus(t, "the first commit", func(st reconcile.Status) bool { return st.Ready })

	// Each dataplane: its certificates kept by `gitmesh certs`, its gRPC
	// bootstrap from `gitmesh bootstrap --grpc`, its process.
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	httpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	for _, dp := range dataplanes {
		startDataplane(t, ctx, dp, xdsAddr, httpAddr, true)
	}

	// Every version of reviews answers productpage; v2 and v3 reach ratings.
	seen := map[string]bool{}
	pollPage(t, httpAddr, "productpage reaching details and every reviews version", func(p *app.Reply) bool {
		d, rv := p.Calls[0], p.Calls[1]
		if !d.OK || !rv.OK {
			return false
		}
		v := rv.Reply.Version
		if v != "v1" && (len(rv.Reply.Calls) == 0 || !rv.Reply.Calls[0].OK || rv.Reply.Stars != 4) {
			t.Logf("reviews %s without ratings: %+v", v, rv.Reply.Calls)
			return false
		}
		seen[v] = true
		return seen["v1"] && seen["v2"] && seen["v3"]
	})

	// All six are gRPC nodes in sync: each ACKed what it asked for.
	s.waitStatus(t, "all six proxies in sync", func(st reconcile.Status) bool { return st.Convergence.Acked == len(dataplanes) })
	var px struct {
		Items []struct{ NodeID, Flavor string }
	}
	getJSON(t, s.api("/proxies"), &px)
	for _, p := range px.Items {
		if p.Flavor != "grpc" {
			t.Errorf("%s is served as %q, want grpc", p.NodeID, p.Flavor)
		}
	}
	// A commit takes productpage→reviews away: PERMISSION_DENIED, while
	// details still answers.
	gittest.Git(t, r.work, "rm", "-q", "policies/permissions/productpage-to-reviews.yaml")
	c2 := r.push(t, "Stop productpage from calling reviews", nil)
	s.hook(t, webhookSecret)
	waitDenied := func(what string) {
		t.Helper()
		denied := 0
		pollPage(t, httpAddr, what, func(p *app.Reply) bool {
			if p.Calls[0].OK && p.Calls[1].Code == app.Denied {
				denied++
			} else {
				denied = 0
			}
			return denied >= 3
		})
	}
	waitDenied("reviews denied after the commit")

	// An invalid commit changes nothing, though it would give the
	// permission back: it has a typo in another file.
	policies := bookinfoPolicies(t, ports)
	bad := r.push(t, "Give reviews back, with a typo", map[string]string{
		"policies/permissions/productpage-to-reviews.yaml": policies["policies/permissions/productpage-to-reviews.yaml"],
		"policies/permissions/productpage-to-details.yaml": strings.Replace(
			policies["policies/permissions/productpage-to-details.yaml"], "destinations", "destination", 1),
	})
	s.hook(t, webhookSecret)
	s.waitStatus(t, "the invalid head", func(st reconcile.Status) bool {
		return st.Head != nil && string(st.Head.Hash) == bad && st.HeadVerdict == reconcile.VerdictInvalid
	})
	waitDenied("nothing changed by the invalid commit")

	// gitmesh rollback restores access.
	if code, out, errOut := cli(t, api, stateDir, "rollback", c1[:10], "--reason", "productpage lost reviews"); code != 0 {
		t.Fatalf("rollback: %d\n%s%s", code, out, errOut)
	}
	pollPage(t, httpAddr, "reviews back after the rollback", func(p *app.Reply) bool { return p.Calls[0].OK && p.Calls[1].OK })

	// gitmesh resume applies the newest valid commit again.
	code, out, errOut := cli(t, api, stateDir, "resume")
	if code != 0 || !strings.Contains(out, c2[:12]) {
		t.Fatalf("resume: %d\n%s%s", code, out, errOut)
	}
	waitDenied("reviews denied again after resume")

	// A MeshTrafficPermission decides on the inbounds it selects, whatever
	// the legacy permissions say (as in Kuma): one commit lets productpage
	// reach reviews again, the next denies it although the legacy
	// permission, back in the tree, allows it.
	meshPermission := func(action string) map[string]string {
		return map[string]string{
			"policies/permissions/productpage-to-details.yaml": policies["policies/permissions/productpage-to-details.yaml"],
			"policies/permissions/reviews.yaml": `type: MeshTrafficPermission
mesh: bookinfo
name: reviews
spec:
  targetRef: {kind: MeshService, name: reviews}
  from:
    - targetRef: {kind: MeshService, name: productpage}
      default: {action: ` + action + `}
`}
	}
	r.push(t, "reviews: a MeshTrafficPermission allows productpage", meshPermission("Allow"))
	s.hook(t, webhookSecret)
	pollPage(t, httpAddr, "reviews allowed by the MeshTrafficPermission", func(p *app.Reply) bool { return p.Calls[0].OK && p.Calls[1].OK })
	deny := r.push(t, "reviews: the MeshTrafficPermission denies productpage", meshPermission("Deny"))
	s.hook(t, webhookSecret)
	waitDenied("reviews denied by the MeshTrafficPermission")
	s.waitStatus(t, "every proxy ACKing the MeshTrafficPermission, none NACKing", func(st reconcile.Status) bool {
		return st.Published != nil && string(st.Published.Hash) == deny &&
			st.Convergence.Acked == len(dataplanes) && st.Convergence.Nacked == 0
	})

	// AllowWithShadowDeny allows; gRPC has no shadow rules, and the
	// reviews proxies say so in /proxies.
	r.push(t, "reviews: shadow-deny productpage", meshPermission("AllowWithShadowDeny"))
	s.hook(t, webhookSecret)
	pollPage(t, httpAddr, "reviews allowed with a shadow deny", func(p *app.Reply) bool { return p.Calls[0].OK && p.Calls[1].OK })
	var shadowed struct {
		Items []struct {
			NodeID      string
			Unsupported []string
		}
	}
	getJSON(t, s.api("/proxies"), &shadowed)
	for _, p := range shadowed.Items {
		reviews := strings.HasPrefix(p.NodeID, "bookinfo.reviews-")
		if got := len(p.Unsupported) > 0 && strings.Contains(p.Unsupported[0], "AllowWithShadowDeny"); got != reviews {
			t.Errorf("%s: unsupported %q", p.NodeID, p.Unsupported)
		}
	}
}

// startDataplane runs one bookinfo dataplane as gitmesh runs one: with mTLS,
// its certificates kept by `gitmesh certs` (in this process, until ctx ends);
// its gRPC bootstrap from `gitmesh bootstrap --grpc`; and the service in a
// child process, listening on dp.Port (productpage serves its page on
// httpAddr too). It returns what the service logs.
func startDataplane(t *testing.T, ctx context.Context, dp app.Dataplane, xdsAddr, httpAddr string, mtls bool) *logtest.Buffer {
	t.Helper()
	boot := dataplaneBootstrap(t, ctx, dp, xdsAddr, mtls)
	args := []string{"--listen", fmt.Sprintf("127.0.0.1:%d", dp.Port), "--version", dp.Version}
	if dp.Service == "productpage" {
		args = append(args, "--http", httpAddr)
	}
	return startBookinfo(t, dp, boot, args)
}

// dataplaneBootstrap writes what a proxyless gRPC dataplane needs and
// returns the path of its gRPC bootstrap (from `gitmesh bootstrap --grpc`);
// with mTLS, its certificates are kept by `gitmesh certs`, in this
// process, until ctx ends.
func dataplaneBootstrap(t *testing.T, ctx context.Context, dp app.Dataplane, xdsAddr string, mtls bool) string {
	t.Helper()
	dir := t.TempDir()
	if mtls {
		agentLog := &logtest.Buffer{}
		done := make(chan int, 1)
		ctx, cancel := context.WithCancel(ctx)
		go func() {
			done <- run(ctx, []string{"certs", "--dataplane", "bookinfo/" + dp.Name, "--xds-address", xdsAddr, "--dir", dir}, agentLog, agentLog)
		}()
		t.Cleanup(func() {
			cancel()
			<-done
			if t.Failed() {
				t.Logf("certs %s:\n%s", dp.Name, agentLog)
			}
		})
		waitFile(t, filepath.Join(dir, "cert.pem"))
	}
	code, out, errOut := gitmesh(t, "bootstrap", "--grpc", "--dataplane", "bookinfo/"+dp.Name, "--xds-address", xdsAddr, "--cert-dir", dir)
	if code != 0 {
		t.Fatalf("bootstrap %s: %s", dp.Name, errOut)
	}
	boot := filepath.Join(dir, "bootstrap.json")
	if err := os.WriteFile(boot, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	return boot
}

// startBookinfo starts one bookinfo service as a child process reading the
// gRPC bootstrap boot, and returns what it logs.
func startBookinfo(t *testing.T, dp app.Dataplane, boot string, args []string) *logtest.Buffer {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Args[0] = dp.Service
	cmd.Env = append(os.Environ(), envRunBookinfo+"="+dp.Service, "GRPC_XDS_BOOTSTRAP="+boot)
	logs := &logtest.Buffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("%s:\n%s", dp.Name, logs)
		}
	})
	return logs
}

// pollPage GETs productpage's page until cond holds for it.
func pollPage(t *testing.T, addr, what string, cond func(*app.Reply) bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + addr + "/api/page")
		if err == nil {
			var p app.Reply
			err = json.NewDecoder(resp.Body).Decode(&p)
			resp.Body.Close()
			if err == nil && len(p.Calls) == 2 {
				last = app.Summary(&p)
				if cond(&p) {
					t.Logf("%s: %s", what, last)
					return
				}
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("waiting for %s; last page: %s", what, last)
}

func waitFile(t *testing.T, path string) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(path); err == nil {
			return
		}
	}
	t.Fatalf("%s was never written", path)
}
