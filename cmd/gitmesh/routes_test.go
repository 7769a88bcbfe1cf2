package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	xdscreds "google.golang.org/grpc/credentials/xds"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/xds"

	"github.com/gitmesh/gitmesh/examples/bookinfo/app"
	"github.com/gitmesh/gitmesh/reconcile"
)

// testServices are the services of the tests' own dataplanes, run like the
// bookinfo services (startDataplane) by their name.
var testServices = map[string]func(ctx context.Context, log *slog.Logger, o app.Options) error{
	"echo": echoService,
}

// echoService is an xDS-managed gRPC server that answers every method of
// every service with who it is and the method it was called on: the
// routes' path matches choose between its versions by method.
func echoService(ctx context.Context, log *slog.Logger, o app.Options) error {
	creds, err := xdscreds.NewServerCredentials(xdscreds.ServerOptions{FallbackCreds: insecure.NewCredentials()})
	if err != nil {
		return err
	}
	srv, err := xds.NewGRPCServer(grpc.Creds(creds), grpc.UnknownServiceHandler(func(_ any, stream grpc.ServerStream) error {
		method, _ := grpc.MethodFromServerStream(stream)
		var req app.Request
		if err := stream.RecvMsg(&req); err != nil {
			return err
		}
		switch {
		case strings.HasSuffix(method, "/Slow"):
			select { // a method that answers a second late
			case <-time.After(time.Second):
			case <-stream.Context().Done():
				return stream.Context().Err()
			}
		case strings.HasSuffix(method, "/Flaky"):
			// Fails the first two calls for a product, then answers with
			// the number of calls it saw for it.
			v, _ := flaky.LoadOrStore(req.Product, new(atomic.Int32))
			n := v.(*atomic.Int32).Add(1)
			if n < 3 {
				return status.Error(codes.Unavailable, "not yet")
			}
			return stream.SendMsg(&app.Reply{Service: "echo", Version: o.Version, Body: strconv.Itoa(int(n))})
		case strings.HasSuffix(method, "/Broken") && o.Version == "v2":
			return status.Error(codes.Unavailable, "broken")
		}
		return stream.SendMsg(&app.Reply{Service: "echo", Version: o.Version, Body: method, User: app.EndUser(stream.Context())})
	}))
	if err != nil {
		return err
	}
	lis, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return err
	}
	log.Info("serving", "listen", o.Listen)
	go func() {
		<-ctx.Done()
		srv.Stop()
	}()
	if err := srv.Serve(lis); err != nil && ctx.Err() == nil {
		return err
	}
	return nil
}

// resiliencePolicy is a policy of examples/bookinfo/resilience.
func resiliencePolicy(t *testing.T, file string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("../../examples/bookinfo/resilience", file))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// probeToEcho is a conf policy of kind named probe-to-echo, configuring
// the calls of top (the probe, or every proxy) to echo with conf.
func probeToEcho(kind, top, conf string) string {
	return fmt.Sprintf(`type: %s
name: probe-to-echo
mesh: bookinfo
spec:
  targetRef: %s
  to:
    - targetRef: {kind: MeshService, name: echo}
      default:
        %s
`, kind, top, conf)
}

// echoWholeRoute sends every call of the probe to echo, both versions.
const echoWholeRoute = `type: MeshHTTPRoute
name: echo
mesh: bookinfo
spec:
  targetRef: {kind: MeshService, name: probe}
  to:
    - targetRef: {kind: MeshService, name: echo}
      rules:
        - matches: [{path: {type: PathPrefix, value: /}}]
          default:
            backendRefs: [{kind: MeshService, name: echo}]
`

// flaky counts echo's Flaky calls per product.
var flaky sync.Map

// bookinfoRoute is a MeshHTTPRoute of examples/bookinfo/routes.
func bookinfoRoute(t *testing.T, file string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("../../examples/bookinfo/routes", file))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestBookinfoRoutesValidate checks each route of examples/bookinfo/routes
// with the bookinfo policies, as the demo commits it: no finding at all.
func TestBookinfoRoutesValidate(t *testing.T) {
	routes, err := filepath.Glob("../../examples/bookinfo/routes/*.yaml")
	if err != nil || len(routes) == 0 {
		t.Fatalf("no routes: %v", err)
	}
	for _, route := range routes {
		files := bookinfoPolicies(t, nil)
		files["policies/routes/reviews.yaml"] = bookinfoRoute(t, filepath.Base(route))
		dir := t.TempDir()
		writeFiles(t, dir, files)
		code, out, errOut := gitmesh(t, "validate", filepath.Join(dir, "policies"))
		if code != 0 || !strings.Contains(out, " 0 errors, 0 warnings") {
			t.Errorf("%s: exit %d\n%s%s", filepath.Base(route), code, out, errOut)
		}
	}
}

// The methods the probe calls on echo: the route sends the Canary
// service's to echo v2, every other to echo v1.
const (
	stableMethod    = "/gitmesh.test.Stable/Call"
	canaryMethod    = "/gitmesh.test.Canary/Call"
	canaryXMethod   = "/gitmesh.test.CanaryX/Call" // not under the prefix /gitmesh.test.Canary
	echoRouteFormat = `type: MeshHTTPRoute
name: echo
mesh: bookinfo
spec:
  targetRef: {kind: MeshService, name: probe}
  to:
    - targetRef: {kind: MeshService, name: echo}
      rules:
        - matches:
            - path: {type: PathPrefix, value: /gitmesh.test.Canary}
          default:
            backendRefs: [{kind: MeshServiceSubset, name: echo, tags: {version: v2}}]
        - matches:
            - path: {type: PathPrefix, value: /}
          default:
            backendRefs: [{kind: MeshServiceSubset, name: echo, tags: {version: v1}}]
`
)

// routeTestPolicies are bookinfo's policies (with the inbound ports ports
// says) and the test's own: echo in two versions, and the probe (this
// test process), which calls echo and productpage, with the permissions
// and the route of echo.
func routeTestPolicies(t *testing.T, ports map[int]int, echo []app.Dataplane, probe app.Dataplane) map[string]string {
	files := bookinfoPolicies(t, ports)
	dataplane := func(dp app.Dataplane, outbound ...string) string {
		s := fmt.Sprintf(`type: Dataplane
mesh: bookinfo
name: %s
labels:
  gitmesh.io/flavor: grpc
networking:
  address: 127.0.0.1
  inbound:
    - port: %d
      tags: {service: %s, version: %s, protocol: grpc}
`, dp.Name, dp.Port, dp.Service, dp.Version)
		if len(outbound) > 0 {
			s += "  outbound:\n"
		}
		for i, o := range outbound {
			s += fmt.Sprintf("    - {port: %d, service: %s}\n", 29900+i, o)
		}
		return s
	}
	for _, dp := range echo {
		files["policies/dataplanes/"+dp.Name+".yaml"] = dataplane(dp)
	}
	files["policies/dataplanes/probe.yaml"] = dataplane(probe, "echo", "productpage")
	files["policies/permissions/probe.yaml"] = `type: TrafficPermission
mesh: bookinfo
name: probe
sources:
  - match: {service: probe}
destinations:
  - match: {service: echo}
  - match: {service: productpage}
`
	files["policies/routes/echo.yaml"] = echoRouteFormat
	return files
}

// TestBookinfoRoutes runs MeshHTTPRoutes through a gitmesh serve process
// on gRPC-Go's own xDS clients and servers: bookinfo's productpage calling
// reviews v1, v2 and v3, and this test process (the probe) calling a test
// service in two versions. Each route is pushed to a real git server; what
// is checked is where the calls go: a 90/10 split, an end-user header
// match, a gRPC method path prefix, a weight change, and that no proxy
// NACKs any of it.
func TestBookinfoRoutes(t *testing.T) {
	if testing.Short() {
		t.Skip("starts nine gRPC processes")
	}
	dataplanes := slices.Clone(app.Dataplanes)
	ports := map[int]int{}
	for i := range dataplanes {
		free := freePort(t)
		ports[dataplanes[i].Port] = free
		dataplanes[i].Port = free
	}
	echo := []app.Dataplane{
		{Name: "echo-v1", Service: "echo", Version: "v1", Port: freePort(t)},
		{Name: "echo-v2", Service: "echo", Version: "v2", Port: freePort(t)},
	}
	probe := app.Dataplane{Name: "probe-v1", Service: "probe", Version: "v1", Port: freePort(t)}
	files := routeTestPolicies(t, ports, echo, probe)
	r := newRemote(t)
	first := r.push(t, "Bookinfo, echo and the probe; the route of echo", files)

	stateDir := t.TempDir()
	secret := writeSecret(t, webhookSecret)
	p := startProcess(t, "serve", "--repo", r.url, "--path", "policies", "--state-dir", stateDir,
		"--interval", "1h", "--webhook-secret-file", secret)
	push := func(msg string, files map[string]string) string {
		t.Helper()
		c := r.push(t, msg, files)
		if code := postHook(t, p.api, webhookSecret); code/100 != 2 {
			t.Fatalf("webhook: %d", code)
		}
		return c
	}
	proxies := len(dataplanes) + len(echo) + 1
	waitApplied := func(commit string) {
		t.Helper()
		st := waitHTTPStatus(t, p.api, func(st reconcile.Status) bool {
			if st.Convergence.Nacked > 0 || len(st.Rejections) > 0 {
				t.Fatalf("commit %s NACKed: %+v %+v", commit[:12], st.Convergence, st.Rejections)
			}
			if st.Head != nil && string(st.Head.Hash) == commit && st.HeadVerdict == reconcile.VerdictInvalid {
				t.Fatalf("commit %s is invalid", commit[:12])
			}
			return st.Published != nil && string(st.Published.Hash) == commit &&
				st.Convergence.Connected == proxies && st.Convergence.Acked == proxies
		})
		t.Logf("commit %s published, %d proxies ACKed", commit[:12], st.Convergence.Acked)
	}

	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	httpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	for _, dp := range append(slices.Clone(dataplanes), echo...) {
		startDataplane(t, ctx, dp, p.xds, httpAddr, true)
	}
	pr := dialProbe(t, ctx, probe, p.xds, "echo", "productpage")

	// Before any route of reviews, productpage goes round its versions.
	seen := map[string]bool{}
	pollPage(t, httpAddr, "productpage reaching every reviews version", func(pg *app.Reply) bool {
		if pg.Calls[0].OK && pg.Calls[1].OK {
			seen[pg.Calls[1].Reply.Version] = true
		}
		return len(seen) == 3
	})
	// (c) A path prefix: the calls to the Canary service's methods go to
	// echo v2, every other call to v1. The prefix is Kuma's: whole path
	// segments, so /gitmesh.test.CanaryX is not under it.
	pollCall(t, "echo v2 serving the Canary service", func() bool {
		rep, err := pr.call("echo", canaryMethod, "")
		return err == nil && rep.Version == "v2"
	})
	waitApplied(first)
	for _, c := range []struct{ method, want string }{{canaryMethod, "v2"}, {stableMethod, "v1"}, {canaryXMethod, "v1"}} {
		got := map[string]int{}
		for range 100 {
			rep, err := pr.call("echo", c.method, "")
			if err != nil {
				got[err.Error()]++
				continue
			}
			if rep.Body != c.method {
				t.Fatalf("echo %s answered %s for %s", rep.Version, rep.Body, c.method)
			}
			got[rep.Version]++
		}
		if got[c.want] != 100 {
			t.Errorf("%s: 100 calls went %v, want all to echo %s", c.method, got, c.want)
		}
	}

	// (a) 90% to v1, 10% to v2: within 5 points over 2,000 pages, once no
	// page reaches v3 any more.
	split := push("Route reviews: v1 90%, v2 10%", map[string]string{"policies/routes/reviews.yaml": bookinfoRoute(t, "split-90-10.yaml")})
	waitApplied(split)
	pollPages(t, httpAddr, "reviews v3 left out by the split", "", 50, func(v string) bool { return v != "v3" })
	shares := countPages(t, httpAddr, "", 2000)
	t.Logf("2,000 pages with the 90/10 split: %v", shares)
	if v1, v2 := shares["v1"], shares["v2"]; v1+v2 != 2000 || v1 < 1700 || v1 > 1900 || v2 < 100 || v2 > 300 {
		t.Errorf("the 90/10 split gave %v over 2,000 pages, want v1 90%% and v2 10%% (±5 points), nothing else", shares)
	}

	// (b) A header match: every call for the end user jason goes to v3,
	// whether the user came in the query, the HTTP header or the gRPC
	// metadata productpage got; no other call does.
	jason := push("Route reviews: jason to v3", map[string]string{"policies/routes/reviews.yaml": bookinfoRoute(t, "jason-to-v3.yaml")})
	waitApplied(jason)
	pollPages(t, httpAddr, "jason's pages on reviews v3", "jason", 20, func(v string) bool { return v == "v3" })
	if got := countPages(t, httpAddr, "jason", 200); got["v3"] != 200 {
		t.Errorf("200 pages for ?user=jason: %v, want all v3", got)
	}
	if got := countPages(t, httpAddr, "header:jason", 100); got["v3"] != 100 {
		t.Errorf("100 pages with the header end-user: jason: %v, want all v3", got)
	}
	if got := countPages(t, httpAddr, "jasonx", 100); got["v3"] != 0 || got["v1"]+got["v2"] != 100 {
		t.Errorf("100 pages for ?user=jasonx: %v, want none on v3", got)
	}
	others := countPages(t, httpAddr, "", 400)
	if others["v3"] != 0 || others["v1"]+others["v2"] != 400 || others["v1"] < others["v2"] {
		t.Errorf("400 pages without a user: %v, want v1 and v2 (90/10), none on v3", others)
	}
	for _, user := range []string{"jason", ""} {
		got := map[string]int{}
		for range 50 {
			rep, err := pr.call("productpage", app.Method, user)
			switch {
			case err != nil:
				got[err.Error()]++
			case len(rep.Calls) < 2 || !rep.Calls[1].OK:
				got[fmt.Sprintf("reviews %+v", rep.Calls)]++
			default:
				got[rep.Calls[1].Reply.Version]++
			}
		}
		if user == "jason" && got["v3"] != 50 || user == "" && (got["v3"] != 0 || got["v1"]+got["v2"] != 50) {
			t.Errorf("50 gRPC calls to productpage with end-user %q: reviews %v", user, got)
		}
	}

	// (d) A weight change: v1 0, v2 0, v3 100 takes every page to v3.
	v3 := push("Route reviews: v3 only", map[string]string{"policies/routes/reviews.yaml": bookinfoRoute(t, "v3-only.yaml")})
	waitApplied(v3)
	pollPages(t, httpAddr, "every page on reviews v3", "", 30, func(v string) bool { return v == "v3" })
	if got := countPages(t, httpAddr, "", 200); got["v3"] != 200 {
		t.Errorf("200 pages with weights 0, 0, 100: %v, want all v3", got)
	}

	// (f) A MeshFaultInjection on ratings: about half of the pages' calls
	// to ratings (made by reviews v3) fail with UNAVAILABLE.
	faults := push("ratings aborts half its calls", map[string]string{
		"policies/resilience/ratings-faults.yaml": resiliencePolicy(t, "ratings-aborts.yaml")})
	waitApplied(faults)
	ratings := func(n int) map[string]int {
		got := map[string]int{}
		for range n {
			rep, err := pr.call("productpage", app.Method, "")
			switch {
			case err != nil:
				got[err.Error()]++
			case len(rep.Calls) < 2 || !rep.Calls[1].OK || len(rep.Calls[1].Reply.Calls) == 0:
				got[fmt.Sprintf("reviews %+v", rep.Calls)]++
			default:
				got[rep.Calls[1].Reply.Calls[0].Code]++
			}
		}
		return got
	}
	pollCall(t, "ratings failing some calls", func() bool { return ratings(20)["Unavailable"] > 0 })
	if got := ratings(400); got["Unavailable"] < 140 || got["Unavailable"] > 260 || got["OK"]+got["Unavailable"] != 400 {
		t.Errorf("400 pages with ratings aborting 50%%: calls to ratings ended %v, want about half Unavailable", got)
	}

	// (g) A MeshTimeout of 200ms on the probe's calls to echo: a method
	// that answers a second late fails with DEADLINE_EXCEEDED, well before.
	timeout := push("The probe waits 200ms for echo", map[string]string{"policies/resilience/probe-timeout.yaml": probeToEcho("MeshTimeout", "{kind: MeshService, name: probe}", "http: {requestTimeout: 200ms}")})
	waitApplied(timeout)
	slow := func() (time.Duration, error) {
		start := time.Now()
		_, err := pr.call("echo", "/gitmesh.test.Stable/Slow", "")
		return time.Since(start), err
	}
	pollCall(t, "the probe's timeout on echo", func() bool { _, err := slow(); return status.Code(err) == codes.DeadlineExceeded })
	if took, err := slow(); status.Code(err) != codes.DeadlineExceeded || took > 700*time.Millisecond {
		t.Errorf("a call answered after 1s with a 200ms MeshTimeout: %v after %v", err, took)
	}

	// (h) A MeshRetry on the probe's calls to echo: a method that fails the
	// first two calls succeeds on the third, which the caller sees as one.
	retry := push("The probe retries echo", map[string]string{"policies/resilience/probe-retry.yaml": probeToEcho("MeshRetry", "{kind: MeshService, name: probe}",
		"grpc: {numRetries: 3, retryOn: [Unavailable], backOff: {baseInterval: 10ms}}")})
	waitApplied(retry)
	for i := range 5 {
		product := fmt.Sprintf("retry-%d", i)
		var rep *app.Reply
		pollCall(t, "a retried call to Flaky", func() bool {
			var err error
			rep, err = pr.invoke("echo", "/gitmesh.test.Stable/Flaky", "", product)
			if err != nil {
				product += "+" // the retries had not arrived: a fresh count
			}
			return err == nil
		})
		if rep.Body != "3" {
			t.Errorf("a call whose first two attempts fail: echo saw %s attempts, want 3", rep.Body)
		}
	}

	// (i) A MeshCircuitBreaker with maxRequests 1: while a call is in
	// flight, another fails at once with UNAVAILABLE.
	breaker := push("One call at a time to echo", map[string]string{
		"policies/resilience/probe-timeout.yaml": probeToEcho("MeshTimeout", "{kind: MeshService, name: probe}", "http: {requestTimeout: 5s}"),
		"policies/resilience/probe-breaker.yaml": probeToEcho("MeshCircuitBreaker", "{kind: Mesh}", "connectionLimits: {maxRequests: 1}")})
	waitApplied(breaker)
	pollCall(t, "a call refused while another is in flight", func() bool {
		inFlight := make(chan error, 1)
		go func() { _, err := pr.call("echo", "/gitmesh.test.Stable/Slow", ""); inFlight <- err }()
		time.Sleep(300 * time.Millisecond) // the slow call has reached echo
		start := time.Now()
		_, err := pr.call("echo", stableMethod, "")
		fast := time.Since(start) < 500*time.Millisecond
		<-inFlight
		return status.Code(err) == codes.Unavailable && fast
	})

	// (j) Outlier detection, over both echo instances: echo v2 fails every
	// Broken call; after a few, it is ejected, and the calls all reach v1.
	outlier := push("Eject the failing echo", map[string]string{
		"policies/routes/echo.yaml": echoWholeRoute,
		"policies/resilience/probe-breaker.yaml": `type: MeshCircuitBreaker
name: probe-to-echo
mesh: bookinfo
spec:
  targetRef: {kind: Mesh}
  to:
    - targetRef: {kind: MeshService, name: echo}
      default:
        outlierDetection:
          interval: 200ms
          baseEjectionTime: 1s
          maxEjectionPercent: 50
          detectors:
            failurePercentage: {threshold: 50, requestVolume: 5, minimumHosts: 2}
`})
	waitApplied(outlier)
	ok := 0
	for deadline := time.Now().Add(20 * time.Second); ok < 40; {
		if time.Now().After(deadline) {
			t.Fatal("the failing echo instance was never ejected")
		}
		if _, err := pr.call("echo", "/gitmesh.test.Stable/Broken", ""); err != nil {
			ok = 0
			time.Sleep(5 * time.Millisecond)
			continue
		}
		ok++
	}

	// (k) A ring hash on the header end-user over both echo instances (the
	// ejected one back): every call for a user reaches the same one, and
	// users spread over both.
	ringHash := push("echo by user", map[string]string{
		"policies/resilience/probe-breaker.yaml": probeToEcho("MeshCircuitBreaker", "{kind: Mesh}", "connectionLimits: {maxRequests: 1000}"),
		"policies/resilience/probe-lb.yaml": `type: MeshLoadBalancingStrategy
name: echo-by-user
mesh: bookinfo
spec:
  targetRef: {kind: Mesh}
  to:
    - targetRef: {kind: MeshService, name: echo}
      default:
        loadBalancer:
          type: RingHash
          ringHash: {hashPolicies: [{type: Header, header: {name: end-user}}]}
`})
	waitApplied(ringHash)
	pollCall(t, "both echo instances answering", func() bool {
		seen := map[string]bool{}
		for u := range 20 {
			if rep, err := pr.call("echo", stableMethod, fmt.Sprintf("user-%d", u)); err == nil {
				seen[rep.Version] = true
			}
		}
		return len(seen) == 2
	})
	for u := range 20 {
		user := fmt.Sprintf("user-%d", u)
		got := map[string]int{}
		for range 5 {
			rep, err := pr.call("echo", stableMethod, user)
			if err != nil {
				t.Fatalf("call for %s: %v", user, err)
			}
			got[rep.Version]++
		}
		if len(got) != 1 {
			t.Errorf("%s reached %v: a ring hash on end-user sends a user to one instance", user, got)
		}
	}

	// (e) Nobody NACKed anything along the way.
	var px struct {
		Items []struct {
			NodeID string
			Types  []struct {
				Type     string
				LastNack *struct{ Version, Error string }
			}
		}
	}
	getJSON(t, "http://"+p.api+"/proxies", &px)
	if len(px.Items) != proxies {
		t.Errorf("/proxies lists %d proxies, want %d", len(px.Items), proxies)
	}
	for _, it := range px.Items {
		for _, typ := range it.Types {
			if typ.LastNack != nil {
				t.Errorf("%s NACKed %s %s: %s", it.NodeID, typ.Type, typ.LastNack.Version, typ.LastNack.Error)
			}
		}
	}
}

// probe is this test process as a proxyless gRPC dataplane: a client of
// the services it was dialled for, through gitmesh.
type probe struct {
	conns map[string]*grpc.ClientConn
}

// dialProbe makes this process the gRPC client of dataplane dp: its
// certificates and bootstrap as for any dataplane, and an xDS resolver of
// its own reading that bootstrap.
func dialProbe(t *testing.T, ctx context.Context, dp app.Dataplane, xdsAddr string, services ...string) *probe {
	t.Helper()
	b, err := os.ReadFile(dataplaneBootstrap(t, ctx, dp, xdsAddr, true))
	if err != nil {
		t.Fatal(err)
	}
	resolver, err := xds.NewXDSResolverWithConfigForTesting(b)
	if err != nil {
		t.Fatal(err)
	}
	creds, err := xdscreds.NewClientCredentials(xdscreds.ClientOptions{FallbackCreds: insecure.NewCredentials()})
	if err != nil {
		t.Fatal(err)
	}
	p := &probe{conns: map[string]*grpc.ClientConn{}}
	for _, s := range services {
		conn, err := grpc.NewClient("xds:///"+s, grpc.WithTransportCredentials(creds), grpc.WithResolvers(resolver))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		p.conns[s] = conn
	}
	return p
}

// call calls method on service, with user as its end-user metadata unless
// empty, within 2 seconds.
func (p *probe) call(service, method, user string) (*app.Reply, error) {
	return p.invoke(service, method, user, "probe")
}

// invoke is call with the request's product.
func (p *probe) invoke(service, method, user, product string) (*app.Reply, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if user != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, app.EndUserHeader, user)
	}
	var rep app.Reply
	err := p.conns[service].Invoke(ctx, method, &app.Request{Product: product}, &rep, grpc.CallContentSubtype("json"))
	return &rep, err
}

// pollCall calls ok until it holds, for at most 20 seconds.
func pollCall(t *testing.T, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if ok() {
			return
		}
	}
	t.Fatalf("waiting for %s", what)
}

// loadPage gets productpage's page for user: "" for none, "header:NAME"
// for the end user NAME in the HTTP header, else in the query. It returns
// the version of reviews that answered, or what went wrong.
func loadPage(client *http.Client, addr, user string) string {
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/api/page", nil)
	if name, ok := strings.CutPrefix(user, "header:"); ok {
		req.Header.Set(app.EndUserHeader, name)
	} else if user != "" {
		req.URL.RawQuery = "user=" + user
	}
	resp, err := client.Do(req)
	if err != nil {
		return "error: " + err.Error()
	}
	defer resp.Body.Close()
	var pg app.Reply
	if err := json.NewDecoder(resp.Body).Decode(&pg); err != nil {
		return "error: " + err.Error()
	}
	want := strings.TrimPrefix(user, "header:")
	switch {
	case len(pg.Calls) != 2 || !pg.Calls[0].OK:
		return "error: " + app.Summary(&pg)
	case pg.User != want:
		return fmt.Sprintf("error: the page is for %q", pg.User)
	case !pg.Calls[1].OK:
		return "reviews " + pg.Calls[1].Code
	}
	return pg.Calls[1].Reply.Version
}

// pollPages loads pages for user until n in a row satisfy ok, for at most
// 10 seconds.
func pollPages(t *testing.T, addr, what, user string, n int, ok func(version string) bool) {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second}
	var recent []string
	for run, deadline := 0, time.Now().Add(10*time.Second); time.Now().Before(deadline); {
		v := loadPage(client, addr, user)
		if recent = append(recent, v); len(recent) > 10 {
			recent = recent[1:]
		}
		if !ok(v) {
			run = 0
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if run++; run >= n {
			return
		}
	}
	t.Fatalf("waiting for %s: the last pages went to %v", what, recent)
}

// countPages loads n pages for user (see loadPage), four at a time, and
// counts where each went.
func countPages(t *testing.T, addr, user string, n int) map[string]int {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second}
	var mu sync.Mutex
	counts := map[string]int{}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := w; i < n; i += 4 {
				v := loadPage(client, addr, user)
				mu.Lock()
				counts[v]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return counts
}
