package xds_test

import (
	"context"
	"fmt"
	"net"
	"testing"
	"testing/fstest"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/gitmesh/gitmesh/schema/schematest"
	"github.com/gitmesh/gitmesh/xds"
)

// routeMesh is a mesh with mTLS where web calls backend, whose v1 and v2
// instances listen on the given ports, through a MeshHTTPRoute: a header
// pins a caller to v2, a path prefix on the health service (with a header
// that says the case) goes to v1, a prefix that ends inside a path segment
// goes to a subset without instances (so a call that matched it would
// fail), and the rest is split by weight.
func routeMesh(v1, v2 int, w1, w2 int) string {
	return fmt.Sprintf(`
type: Mesh
name: secure
mtls:
  enabledBackend: ca-1
  backends: [{name: ca-1, type: builtin}]
---
type: Dataplane
mesh: secure
name: backend-v1
networking:
  address: 127.0.0.1
  inbound:
    - port: %d
      tags: {kuma.io/service: backend, kuma.io/protocol: grpc, version: v1}
---
type: Dataplane
mesh: secure
name: backend-v2
networking:
  address: 127.0.0.1
  inbound:
    - port: %d
      tags: {kuma.io/service: backend, kuma.io/protocol: grpc, version: v2}
---
type: Dataplane
mesh: secure
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
type: MeshTrafficPermission
name: web-to-backend
mesh: secure
spec:
  targetRef: {kind: MeshService, name: backend}
  from: [{targetRef: {kind: MeshService, name: web}, default: {action: Allow}}]
---
type: MeshHTTPRoute
name: backend-routes
mesh: secure
spec:
  targetRef: {kind: MeshService, name: web}
  to:
    - targetRef: {kind: MeshService, name: backend}
      rules:
        - matches:
            - path: {type: PathPrefix, value: /}
              headers: [{type: Exact, name: x-user, value: jason}]
          default:
            backendRefs: [{kind: MeshServiceSubset, name: backend, tags: {version: v2}}]
        - matches:
            - path: {type: PathPrefix, value: /grpc.health.v1.Health}
              headers: [{type: Exact, name: x-case, value: prefix}]
          default:
            backendRefs: [{kind: MeshServiceSubset, name: backend, tags: {version: v1}}]
        - matches:
            - path: {type: PathPrefix, value: /grpc.health.v1.Heal}
              headers: [{type: Exact, name: x-case, value: partial}]
          default:
            backendRefs: [{kind: MeshServiceSubset, name: backend, tags: {version: v9}}]
        - matches:
            - path: {type: PathPrefix, value: /}
          default:
            backendRefs:
              - {kind: MeshServiceSubset, name: backend, tags: {version: v1}, weight: %d}
              - {kind: MeshServiceSubset, name: backend, tags: {version: v2}, weight: %d}
`, v1, v2, w1, w2)
}

// TestGRPCDataPlaneRoutes runs real gRPC-Go servers and a client on routes
// gitmesh translated: a weighted split seen in the share of calls each
// instance answers, a header match, a path prefix that matches whole
// segments only, and a new weight taking effect when published; gRPC
// accepts every resource.
func TestGRPCDataPlaneRoutes(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	lis1, lis2 := listen(t), listen(t)
	d := newDataPlane(ctx, t, routeMesh(port(lis1), port(lis2), 90, 10))
	d.serve(ctx, "secure.backend-v1", lis1)
	d.serve(ctx, "secure.backend-v2", lis2)
	web := d.dial("secure.web-1", "backend")
	d.waitFor(ctx, web, codes.OK)
	client := healthpb.NewHealthClient(web)
	who := func(md ...string) (int, error) {
		var p peer.Peer
		cctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(ctx, md...), 5*time.Second)
		defer cancel()
		if _, err := client.Check(cctx, &healthpb.HealthCheckRequest{}, grpc.Peer(&p)); err != nil {
			return 0, err
		}
		return p.Addr.(*net.TCPAddr).Port, nil
	}
	share := func(n int, md ...string) float64 {
		t.Helper()
		v1 := 0
		for range n {
			got, err := who(md...)
			if err != nil {
				t.Fatalf("call: %v", err)
			}
			if got == port(lis1) {
				v1++
			}
		}
		return float64(v1) / float64(n)
	}
	if s := share(2000); s < 0.85 || s > 0.95 {
		t.Errorf("v1 answered %.1f%% of 2,000 calls, want 90%% ± 5", 100*s)
	}
	if s := share(50, "x-user", "jason"); s != 0 {
		t.Errorf("with x-user: jason, v1 answered %.0f%% of the calls, want none (v2 only)", 100*s)
	}
	if s := share(50, "x-case", "prefix"); s != 1 {
		t.Errorf("on the prefix /grpc.health.v1.Health, v1 answered %.0f%% of the calls, want all", 100*s)
	}
	// /grpc.health.v1.Heal is not a path segment of /grpc.health.v1.Health/Check:
	// the call falls through to the split instead of the subset that has no
	// instances.
	for range 20 {
		if _, err := who("x-case", "partial"); err != nil {
			t.Fatalf("a prefix that ends inside a segment matched: %v", err)
		}
	}
	d.noNACKs(ctx)

	// A new split, published: v2 takes everything.
	set := schematest.Load(t, fstest.MapFS{"policies.yaml": {Data: []byte(routeMesh(port(lis1), port(lis2), 0, 100))}})
	proxies, err := xds.Translate(set, xds.Options{Flavor: xds.FlavorGRPC})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.server.Publish(ctx, "1123456789abcdef", proxies, d.secrets); err != nil {
		t.Fatal(err)
	}
	for {
		if s := share(20); s == 0 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("the new weights never took effect")
		case <-time.After(20 * time.Millisecond):
		}
	}
	if s := share(200); s != 0 {
		t.Errorf("after v1's weight went to 0, v1 answered %.1f%% of 200 calls", 100*s)
	}
	d.noNACKs(ctx)
}
