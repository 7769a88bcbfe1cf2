package xds_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/gitmesh/gitmesh/schema/schematest"
	"github.com/gitmesh/gitmesh/xds"
)

// slowHealth answers Check after a delay, or not at all if the call ends
// first.
type slowHealth struct {
	*health.Server
	delay time.Duration
	// started, when set, receives a value as each call arrives.
	started chan struct{}
}

func (s slowHealth) Check(ctx context.Context, r *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	if md, _ := metadata.FromIncomingContext(ctx); len(md.Get("x-fast")) > 0 {
		return s.Server.Check(ctx, r) // a call that only checks the path
	}
	if s.started != nil {
		s.started <- struct{}{}
	}
	select {
	case <-time.After(s.delay):
		return s.Server.Check(ctx, r)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// waitReachable calls a slowHealth through client with x-fast until a call
// succeeds: until the client has its resources, calls fail.
func waitReachable(ctx context.Context, t *testing.T, client healthpb.HealthClient) {
	t.Helper()
	for {
		fctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(ctx, "x-fast", "1"), time.Second)
		_, err := client.Check(fctx, &healthpb.HealthCheckRequest{})
		cancel()
		if err == nil {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("the backend is never reached: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func timeoutMesh(backend int, requestTimeout string) string {
	return oneBackend(backend, fmt.Sprintf(`
type: MeshTimeout
name: web-to-backend
mesh: default
spec:
  targetRef: {kind: MeshService, name: web}
  to:
    - targetRef: {kind: MeshService, name: backend}
      default:
        http: {requestTimeout: %s}
`, requestTimeout))
}

// A MeshTimeout's request timeout is the deadline of each call a gRPC-Go
// client makes (gRPC reads it as the route's max_stream_duration): a call
// the server answers after 2 s fails with DEADLINE_EXCEEDED at 1 s, within
// 20 %, and succeeds once the timeout is 5 s.
func TestGRPCDataPlaneMeshTimeout(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	lis := listen(t)
	d := newDataPlane(ctx, t, timeoutMesh(port(lis), "1s"))
	d.serveWith(ctx, "default.backend-1", lis, slowHealth{Server: health.NewServer(), delay: 2 * time.Second})
	web := d.dial("default.web-1", "backend")
	client := healthpb.NewHealthClient(web)
	waitReachable(ctx, t, client)
	call := func() (time.Duration, error) {
		start := time.Now()
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		_, err := client.Check(cctx, &healthpb.HealthCheckRequest{})
		return time.Since(start), err
	}
	took, err := call()
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("call to a server that answers after 2s: %v, want DEADLINE_EXCEEDED", err)
	}
	if took < 800*time.Millisecond || took > 1200*time.Millisecond {
		t.Errorf("the call failed after %v, want 1s ± 20%%", took)
	}
	set := schematest.Load(t, fstest.MapFS{"policies.yaml": {Data: []byte(timeoutMesh(port(lis), "5s"))}})
	proxies, err := xds.Translate(set, xds.Options{Flavor: xds.FlavorGRPC})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.server.Publish(ctx, "1123456789abcdef", proxies, d.secrets); err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := call(); err == nil {
			break
		} else if status.Code(err) != codes.DeadlineExceeded || ctx.Err() != nil {
			t.Fatalf("after the timeout went to 5s: %v", err)
		}
	}
	d.noNACKs(ctx)
}

// flakyHealth fails the first `failures` Check calls with UNAVAILABLE and
// counts every call it sees.
type flakyHealth struct {
	*health.Server
	failures int32
	calls    *atomic.Int32
}

func (f flakyHealth) Check(ctx context.Context, r *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	if n := f.calls.Add(1); n <= f.failures {
		return nil, status.Error(codes.Unavailable, "not yet")
	}
	return f.Server.Check(ctx, r)
}

// A MeshRetry's grpc section is gRPC-Go's retry policy (gRFC A44): a server
// that fails its first two calls with UNAVAILABLE answers the third, and
// the caller sees one successful call.
func TestGRPCDataPlaneMeshRetry(t *testing.T) {
	t.Parallel()
	ctx, d, lis := oneBackendPlane(t, `
type: MeshRetry
name: web-to-backend
mesh: default
spec:
  targetRef: {kind: MeshService, name: web}
  to:
    - targetRef: {kind: MeshService, name: backend}
      default:
        grpc: {numRetries: 3, retryOn: [Unavailable], backOff: {baseInterval: 10ms}}
`)
	calls := new(atomic.Int32)
	server := flakyHealth{Server: health.NewServer(), failures: 2, calls: calls}
	d.serveWith(ctx, "default.backend-1", lis, server)
	web := d.dial("default.web-1", "backend")
	cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
	defer ccancel()
	if _, err := healthpb.NewHealthClient(web).Check(cctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("call: %v, want the retries to absorb two failures", err)
	}
	if got := calls.Load(); got != 3 {
		t.Errorf("the server saw %d attempts, want 3 (2 failures + 1)", got)
	}
	d.noNACKs(ctx)
}

// oneBackendPlane is the data plane of oneBackend, the backend's port on
// a listener of its own, with policies; its context ends with the test,
// within 60 s.
func oneBackendPlane(t *testing.T, policies string) (context.Context, *dataPlane, net.Listener) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	lis := listen(t)
	return ctx, newDataPlane(ctx, t, oneBackend(port(lis), policies)), lis
}

// oneBackend is a mesh where web (a gRPC node) calls backend, whose one
// instance listens on port p, with policies appended.
func oneBackend(p int, policies string) string {
	return fmt.Sprintf(`
type: Dataplane
mesh: default
name: backend-1
networking:
  address: 127.0.0.1
  inbound:
    - port: %d
      tags: {kuma.io/service: backend, kuma.io/protocol: grpc}
---
type: Dataplane
mesh: default
name: web-1
labels: {gitmesh.io/flavor: grpc}
networking:
  address: 127.0.0.1
  inbound:
    - port: 1
      tags: {kuma.io/service: web}
  outbound:
    - port: 10001
      tags: {kuma.io/service: backend}
---
%s`, p, policies)
}

// twoBackends is a mesh where web calls backend, whose two instances
// listen on the given ports, with policies appended.
func twoBackends(p1, p2 int, policies string) string {
	return fmt.Sprintf(`
type: Dataplane
mesh: default
name: backend-1
networking:
  address: 127.0.0.1
  inbound:
    - port: %d
      tags: {kuma.io/service: backend, kuma.io/protocol: grpc}
---
type: Dataplane
mesh: default
name: backend-2
networking:
  address: 127.0.0.1
  inbound:
    - port: %d
      tags: {kuma.io/service: backend, kuma.io/protocol: grpc}
---
type: Dataplane
mesh: default
name: web-1
networking:
  address: 127.0.0.1
  inbound:
    - port: 1
      tags: {kuma.io/service: web}
  outbound:
    - port: 10001
      tags: {kuma.io/service: backend}
---
%s`, p1, p2, policies)
}

// A MeshCircuitBreaker's maxRequests is gRPC-Go's circuit breaker (gRFC
// A32): with one call in flight, a second one fails at once with
// UNAVAILABLE instead of waiting.
func TestGRPCDataPlaneMeshCircuitBreaker(t *testing.T) {
	t.Parallel()
	ctx, d, lis := oneBackendPlane(t, `
type: MeshCircuitBreaker
name: one-at-a-time
mesh: default
spec:
  targetRef: {kind: Mesh}
  to:
    - targetRef: {kind: MeshService, name: backend}
      default:
        connectionLimits: {maxRequests: 1}
`)
	started := make(chan struct{}, 16)
	d.serveWith(ctx, "default.backend-1", lis, slowHealth{Server: health.NewServer(), delay: 2 * time.Second, started: started})
	client := healthpb.NewHealthClient(d.dial("default.web-1", "backend"))
	waitReachable(ctx, t, client)
	first := make(chan error, 1)
	call := func() {
		go func() {
			_, err := client.Check(ctx, &healthpb.HealthCheckRequest{})
			first <- err
		}()
	}
	// The slot of waitReachable's last call is given back just after that
	// call returns (gRPC-Go's picker counts it done on its own goroutine):
	// a first call made in between is refused, and made again.
	call()
	for reached := false; !reached; {
		select {
		case <-started:
			reached = true
		case err := <-first:
			if status.Code(err) != codes.Unavailable {
				t.Fatalf("the first call, before it reached the server: %v", err)
			}
			t.Logf("the first call was refused before the slot of the one before was given back: %v", err)
			time.Sleep(10 * time.Millisecond)
			call()
		case <-ctx.Done():
			t.Fatal("the first call never reached the server")
		}
	}
	// Once the first call holds the only slot (the server has it), a
	// second fails fast.
	start := time.Now()
	_, err := client.Check(ctx, &healthpb.HealthCheckRequest{})
	took := time.Since(start)
	if status.Code(err) != codes.Unavailable || took >= time.Second {
		t.Fatalf("a second call while one is in flight: %v after %v, want UNAVAILABLE at once", err, took)
	}
	if err := <-first; err != nil {
		t.Errorf("the call in flight: %v", err)
	}
	d.noNACKs(ctx)
}

// failing answers every Check with UNAVAILABLE and counts them.
type failing struct {
	*health.Server
	calls *atomic.Int32
}

func (f failing) Check(context.Context, *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	f.calls.Add(1)
	return nil, status.Error(codes.Unavailable, "broken")
}

// A MeshCircuitBreaker's failurePercentage detector is gRPC-Go's outlier
// detection (gRFC A50): of two instances, the one that fails every call is
// ejected, and the calls then all go to the other.
func TestGRPCDataPlaneMeshOutlierDetection(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	good, bad := listen(t), listen(t)
	d := newDataPlane(ctx, t, twoBackends(port(good), port(bad), `
type: MeshCircuitBreaker
name: eject-failing
mesh: default
spec:
  targetRef: {kind: Mesh}
  to:
    - targetRef: {kind: MeshService, name: backend}
      default:
        outlierDetection:
          interval: 200ms
          baseEjectionTime: 30s
          maxEjectionPercent: 50
          detectors:
            failurePercentage: {threshold: 50, requestVolume: 5, minimumHosts: 2}
`))
	d.serve(ctx, "default.backend-1", good)
	badCalls := new(atomic.Int32)
	d.serveWith(ctx, "default.backend-2", bad, failing{Server: health.NewServer(), calls: badCalls})
	client := healthpb.NewHealthClient(d.dial("default.web-1", "backend"))
	// Calls go round both instances until the bad one is ejected; then
	// 50 calls in a row succeed.
	ok := 0
	deadline := time.Now().Add(20 * time.Second)
	for ok < 50 {
		if time.Now().After(deadline) {
			t.Fatalf("the failing instance was never ejected: %d calls reached it", badCalls.Load())
		}
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := client.Check(cctx, &healthpb.HealthCheckRequest{})
		ccancel()
		if err != nil {
			ok = 0
			time.Sleep(5 * time.Millisecond) // the detector runs every 200ms
			continue
		}
		ok++
	}
	if badCalls.Load() == 0 {
		t.Error("the failing instance saw no call: the test proves nothing")
	}
	d.noNACKs(ctx)
}

// A MeshLoadBalancingStrategy ring hash on a header is gRPC-Go's ring hash
// (gRFC A42): every call with the same header value reaches the same
// instance, and the values spread over both.
func TestGRPCDataPlaneMeshRingHash(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	one, two := listen(t), listen(t)
	d := newDataPlane(ctx, t, twoBackends(port(one), port(two), `
type: MeshLoadBalancingStrategy
name: sticky-users
mesh: default
spec:
  targetRef: {kind: Mesh}
  to:
    - targetRef: {kind: MeshService, name: backend}
      default:
        loadBalancer:
          type: RingHash
          ringHash:
            hashPolicies: [{type: Header, header: {name: x-user}}]
`))
	d.serve(ctx, "default.backend-1", one)
	d.serve(ctx, "default.backend-2", two)
	client := healthpb.NewHealthClient(d.dial("default.web-1", "backend"))
	who := func(user string) int {
		t.Helper()
		var p peer.Peer
		cctx, ccancel := context.WithTimeout(metadata.AppendToOutgoingContext(ctx, "x-user", user), 5*time.Second)
		defer ccancel()
		if _, err := client.Check(cctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true), grpc.Peer(&p)); err != nil {
			t.Fatalf("call for %s: %v", user, err)
		}
		return p.Addr.(*net.TCPAddr).Port
	}
	used := map[int]bool{}
	for u := range 20 {
		user := fmt.Sprintf("user-%d", u)
		first := who(user)
		used[first] = true
		for range 9 {
			if got := who(user); got != first {
				t.Fatalf("%s reached port %d, then %d: a ring hash on x-user sends a user to one instance", user, first, got)
			}
		}
	}
	if len(used) != 2 {
		t.Errorf("20 users all reached %v: the hash does not spread them", used)
	}
	d.noNACKs(ctx)
}

// A MeshFaultInjection on a service's inbounds is, for proxyless gRPC, a
// fault filter on its callers' client listeners (gRFC A33; a gRPC server
// cannot run one): with an abort of 50 %, about half of 1,000 calls fail
// with the status the HTTP 503 maps to, UNAVAILABLE, and none otherwise.
func TestGRPCDataPlaneMeshFaultInjection(t *testing.T) {
	t.Parallel()
	ctx, d, lis := oneBackendPlane(t, `
type: MeshFaultInjection
name: half-fails
mesh: default
spec:
  targetRef: {kind: MeshService, name: backend}
  from:
    - targetRef: {kind: Mesh}
      default:
        http:
          - abort: {httpStatus: 503, percentage: 50}
`)
	d.serve(ctx, "default.backend-1", lis)
	cc := d.dial("default.web-1", "backend")
	// Until the client has its resources, calls fail for another reason.
	d.waitFor(ctx, cc, codes.OK)
	client := healthpb.NewHealthClient(cc)
	failed := 0
	for range 1000 {
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := client.Check(cctx, &healthpb.HealthCheckRequest{})
		ccancel()
		switch status.Code(err) {
		case codes.OK:
		case codes.Unavailable:
			failed++
		default:
			t.Fatalf("a call failed with %v, want OK or UNAVAILABLE", err)
		}
	}
	if failed < 450 || failed > 550 {
		t.Errorf("%d of 1,000 calls failed, want about half (450 to 550)", failed)
	}
	d.noNACKs(ctx)
}

// Proxyless gRPC has no active health checks and no rate limit filter: a
// gRPC-Go client and server given a MeshHealthCheck and a MeshRateLimit of
// one request per 10 s accept their resources (nothing gRPC would reject
// is sent), every call goes through, and each proxy says what it drops.
func TestGRPCDataPlaneIgnoresHealthChecksAndRateLimits(t *testing.T) {
	t.Parallel()
	ctx, d, lis := oneBackendPlane(t, `
type: MeshHealthCheck
name: web-checks-backend
mesh: default
spec:
  targetRef: {kind: MeshService, name: web}
  to:
    - targetRef: {kind: MeshService, name: backend}
      default:
        interval: 1s
        unhealthyThreshold: 1
        healthyPanicThreshold: 0
        grpc: {serviceName: does-not-exist}
---
type: MeshRateLimit
name: backend-limits
mesh: default
spec:
  targetRef: {kind: MeshService, name: backend}
  rules:
    - default:
        local:
          http: {requestRate: {num: 1, interval: 10s}}
          tcp: {connectionRate: {num: 1, interval: 10s}}
`)
	d.serve(ctx, "default.backend-1", lis)
	web := d.dial("default.web-1", "backend")
	d.waitFor(ctx, web, codes.OK)
	client := healthpb.NewHealthClient(web)
	for i := range 20 {
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := client.Check(cctx, &healthpb.HealthCheckRequest{})
		ccancel()
		if err != nil {
			t.Fatalf("call %d: %v, want every call through (gRPC applies no rate limit)", i+2, err)
		}
	}
	d.noNACKs(ctx)
	for node, want := range map[string]string{"default.web-1": "no active health checks", "default.backend-1": "no rate limit filter"} {
		if got := d.proxies[node].Unsupported; len(got) != 1 || !strings.Contains(got[0], want) {
			t.Errorf("%s unsupported = %q, want one note saying %q", node, got, want)
		}
	}
}
