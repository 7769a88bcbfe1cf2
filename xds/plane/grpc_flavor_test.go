package plane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	grpcxds "google.golang.org/grpc/xds"

	"github.com/gitmesh/gitmesh/xds"
	"github.com/gitmesh/gitmesh/xds/ads"
)

// grpcBootstrap is the xDS bootstrap of a gRPC-Go node that says nothing of
// its flavour: gRPC-Go's user agent, "gRPC Go", tells it.
func grpcBootstrap(t *testing.T, xdsAddr, node string) []byte {
	t.Helper()
	b, err := json.Marshal(map[string]any{
		"xds_servers": []any{map[string]any{
			"server_uri":      xdsAddr,
			"channel_creds":   []any{map[string]any{"type": "insecure"}},
			"server_features": []string{"xds_v3"},
		}},
		"node": map[string]any{"id": node},
		// The listener name DESIGN.md fixes for gRPC servers.
		"server_listener_resource_name_template": "grpc/server?xds.resource.listening_address=%s",
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Real gRPC-Go nodes, an xDS client and an xDS server, connect to a plane
// that translated them for Envoy, the default, since it had never seen
// them. Until the plane translates them again they hold what they asked
// for by name and the Envoy snapshot lacks: nothing. They wait, without
// NACKing; once the gRPC snapshots are set, their watches fire, the server
// serves and the client's RPC reaches it through xds:///backend.
func TestGRPCNodesGetTheGRPCFlavour(t *testing.T) {
	t.Parallel()
	f, run := newIdleFixture(t, nil)
	const backend = "default.backend-01"

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	port := lis.Addr().(*net.TCPAddr).Port
	// Plaintext (gRPC's TLS needs certificate providers in the bootstrap):
	// web-01 calls backend-01, a gRPC server on lis.
	setA := policies(t, map[string]string{
		"meshes/default.yaml": "type: Mesh\nname: default\n",
		"dataplanes/backend.yaml": fmt.Sprintf(`type: Dataplane
mesh: default
name: backend-01
networking:
  address: 127.0.0.1
  inbound:
    - port: %d
      tags:
        service: backend
        protocol: grpc
`, port),
	})
	f.apply(t, commitA, setA)
	for _, node := range []string{webNode, backend} {
		if px := f.translation(node); px != nil {
			t.Fatalf("%s served %q before it connected", node, px.Flavor)
		}
	}

	modes := make(chan connectivity.ServingMode, 16)
	gs, err := grpcxds.NewGRPCServer(grpc.Creds(insecure.NewCredentials()),
		grpcxds.BootstrapContentsForTesting(grpcBootstrap(t, f.addr, backend)),
		grpcxds.ServingModeCallback(func(_ net.Addr, args grpcxds.ServingModeChangeArgs) {
			select {
			case modes <- args.Mode:
			default:
			}
		}))
	if err != nil {
		t.Fatal(err)
	}
	healthpb.RegisterHealthServer(gs, health.NewServer())
	served := make(chan error, 1)
	go func() { served <- gs.Serve(lis) }()
	defer func() {
		gs.Stop()
		if err := <-served; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			t.Errorf("gRPC server: %v", err)
		}
	}()

	resolver, err := grpcxds.NewXDSResolverWithConfigForTesting(grpcBootstrap(t, f.addr, webNode))
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient("xds:///backend", grpc.WithResolvers(resolver), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	cc.Connect()

	// Both ask for their listener as gRPC and are served their gRPC proxy
	// as they connect, Envoy's never: no flavour change is needed, so not
	// even Run.
	for _, node := range []string{webNode, backend} {
		f.waitServed(t, node, f.last.Proxy(node, xds.FlavorGRPC))
		if st, _ := f.server.StatusOf(node); st.PublishedFlavor != xds.FlavorGRPC {
			t.Fatalf("%s is published for %q, want gRPC", node, st.PublishedFlavor)
		}
	}
	run()

	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	for mode := connectivity.ServingModeNotServing; mode != connectivity.ServingModeServing; {
		select {
		case mode = <-modes:
		case <-ctx.Done():
			st, _ := f.server.StatusOf(backend)
			t.Fatalf("%s never serves: %+v", backend, st)
		}
	}
	if _, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true)); err != nil {
		t.Fatalf("health check through xds:///backend: %v", err)
	}

	// web-01 runs its gRPC translation: every type ACKed at the version
	// published, none ever NACKed.
	st := f.waitStatus(t, webNode, ads.ProxyStatus.InSync)
	if st.Flavor != xds.FlavorGRPC || st.Hash != f.translation(webNode).Hash || st.Commit != commitA {
		t.Errorf("status of %s: %+v, want its gRPC translation at commit A", webNode, st)
	}
	for _, typ := range []string{resource.ListenerType, resource.RouteType, resource.ClusterType, resource.EndpointType} {
		if ts := typeStatusOf(st, typ); ts.Published == "" || ts.Acked != ts.Published {
			t.Errorf("%s %s: published %q, ACKed %q", webNode, typ, ts.Published, ts.Acked)
		}
	}
	for _, st := range f.server.Status() {
		for _, ts := range st.Types {
			if ts.LastNACK != nil {
				t.Errorf("%s NACKed %s: %s", st.NodeID, ts.TypeURL, ts.LastNACK.Error)
			}
		}
	}
}
