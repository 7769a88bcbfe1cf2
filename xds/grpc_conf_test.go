package xds_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/gitmesh/gitmesh/schema/schematest"
	"github.com/gitmesh/gitmesh/xds"
)

// slowHealth answers Check after a delay, or not at all if the call ends
// first.
type slowHealth struct {
	*health.Server
	delay time.Duration
}

func (s slowHealth) Check(ctx context.Context, r *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	select {
	case <-time.After(s.delay):
		return s.Server.Check(ctx, r)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func timeoutMesh(backend int, requestTimeout string) string {
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
type: MeshTimeout
name: web-to-backend
mesh: default
spec:
  targetRef: {kind: MeshService, name: web}
  to:
    - targetRef: {kind: MeshService, name: backend}
      default:
        http: {requestTimeout: %s}
`, backend, requestTimeout)
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
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	lis := listen(t)
	d := newDataPlane(ctx, t, fmt.Sprintf(`
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
networking:
  address: 127.0.0.1
  inbound:
    - port: 1
      tags: {kuma.io/service: web}
  outbound:
    - port: 10001
      tags: {kuma.io/service: backend}
---
type: MeshRetry
name: web-to-backend
mesh: default
spec:
  targetRef: {kind: MeshService, name: web}
  to:
    - targetRef: {kind: MeshService, name: backend}
      default:
        grpc: {numRetries: 3, retryOn: [Unavailable], backOff: {baseInterval: 10ms}}
`, port(lis)))
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

// Proxyless gRPC has no active health checks and no rate limit filter: a
// gRPC-Go client and server given a MeshHealthCheck and a MeshRateLimit of
// one request per 10 s accept their resources (nothing gRPC would reject
// is sent), every call goes through, and each proxy says what it drops.
func TestGRPCDataPlaneIgnoresHealthChecksAndRateLimits(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	lis := listen(t)
	d := newDataPlane(ctx, t, fmt.Sprintf(`
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
networking:
  address: 127.0.0.1
  inbound:
    - port: 1
      tags: {kuma.io/service: web}
  outbound:
    - port: 10001
      tags: {kuma.io/service: backend}
---
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
`, port(lis)))
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
