package ads

import (
	"context"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/gitmesh/gitmesh/xds"
)

// attached waits until the node's latest stream is attached with flavour f.
func attached(t *testing.T, s *Server, node string, f xds.Flavor, streams int) {
	t.Helper()
	waitStatus(t, s, node, func(ps ProxyStatus) bool { return ps.Flavor == f && ps.Streams == streams })
}

// waitNoSnapshot waits until node has no snapshot for flavour f.
func waitNoSnapshot(t *testing.T, s *Server, node string, f xds.Flavor) {
	t.Helper()
	for deadline := time.Now().Add(wait); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if _, err := s.cache.GetSnapshot(snapshotKey(node, f)); err != nil {
			return
		}
	}
	t.Fatalf("%s still has a snapshot for %s", node, f)
}

// After a restart the daemon publishes every node for Envoy, the default,
// until it learns what each runs. A proxyless gRPC node that reconnects
// then waits, unanswered, for its gRPC translation, whether its user agent
// or its metadata says it runs gRPC: the first response it ever gets is in
// its own flavour.
func TestFirstResponseIsInTheNodesFlavour(t *testing.T) {
	s, conn := startServer(t)
	const byAgent, byMeta = "demo.api-1", "demo.api-2"
	envoyOf := map[string]*xds.Proxy{byAgent: basicProxy(t, byAgent), byMeta: basicProxy(t, byMeta)}
	publish(t, s, commit1, nil, envoyOf[byAgent], envoyOf[byMeta])

	streams := map[string]*client{}
	for node, as := range map[string]*corev3.Node{
		byAgent: nodeAs(t, byAgent, "gRPC Go", ""),
		byMeta:  nodeAs(t, byMeta, "envoy", "grpc"),
	} {
		c := adsClient(t, conn, node)
		c.as = as
		c.subscribe(resource.ClusterType)
		streams[node] = c
		attached(t, s, node, xds.FlavorGRPC, 1)
		if ps, _ := s.StatusOf(node); ps.PublishedFlavor != xds.FlavorEnvoy || ps.InSync() {
			t.Errorf("%s: published flavour %q, in sync %v; want envoy, not in sync", node, ps.PublishedFlavor, ps.InSync())
		}
	}

	for _, node := range []string{byAgent, byMeta} {
		g := forGRPC(newProxy(t, node, edsCluster("grpc-backend"), cla("grpc-backend", 8080)))
		if changed, err := s.PublishProxy(context.Background(), commit1, g, nil); err != nil || !changed {
			t.Fatalf("PublishProxy %s = %v, %v", node, changed, err)
		}
		r := streams[node].recv()
		if r.GetVersionInfo() != versionOf(commit1, g) || !slices.Equal(names(t, r), []string{"grpc-backend"}) {
			t.Fatalf("%s: first response %q %v, want the gRPC translation %q [grpc-backend]",
				node, r.GetVersionInfo(), names(t, r), versionOf(commit1, g))
		}
		streams[node].ack(r)
		ps := waitStatus(t, s, node, func(ps ProxyStatus) bool { return typeStatus(ps, resource.ClusterType).Acked == versionOf(commit1, g) })
		if ps.PublishedFlavor != xds.FlavorGRPC || ps.Hash != g.Hash {
			t.Errorf("%s: status %+v, want the gRPC translation published", node, ps)
		}
		// The Envoy translation is no longer served to anyone.
		waitNoSnapshot(t, s, node, xds.FlavorEnvoy)
	}

	// The same on a delta stream.
	const delta = "demo.api-3"
	publish(t, s, commit2, nil, basicProxy(t, byAgent), basicProxy(t, byMeta), basicProxy(t, delta))
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	dst, err := discoverygrpc.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	dresps := make(chan *discoverygrpc.DeltaDiscoveryResponse, 16)
	var dcount atomic.Int64
	done := receive(dst, dresps, &dcount)
	defer func() { cancel(); <-done }()
	if err := dst.Send(&discoverygrpc.DeltaDiscoveryRequest{Node: nodeAs(t, delta, "gRPC Go", ""), TypeUrl: resource.ClusterType}); err != nil {
		t.Fatal(err)
	}
	attached(t, s, delta, xds.FlavorGRPC, 1)
	g := forGRPC(newProxy(t, delta, edsCluster("grpc-backend"), cla("grpc-backend", 8080)))
	if _, err := s.PublishProxy(context.Background(), commit2, g, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-dresps:
		if r.GetSystemVersionInfo() != versionOf(commit2, g) || len(r.GetResources()) != 1 || r.GetResources()[0].GetName() != "grpc-backend" {
			t.Fatalf("delta: first response %q %v, want the gRPC translation", r.GetSystemVersionInfo(), r.GetResources())
		}
	case <-time.After(wait):
		t.Fatal("delta: no response")
	}
}

// A node moving from gRPC to Envoy: its Envoy stream waits for the Envoy
// translation, its gRPC stream keeps what it had and gets nothing more,
// and the gRPC snapshot goes when that stream closes. Removing the node
// clears every flavour's snapshot.
func TestStreamsOfAnotherFlavourWait(t *testing.T) {
	s, conn := startServer(t)
	const node = "demo.web-1"
	g1 := forGRPC(basicProxy(t, node, "grpc-only"))
	publish(t, s, commit1, nil, g1)
	grpcStream := streamAs(t, conn, nodeAs(t, node, "gRPC Go", ""))
	r := grpcStream.recv()
	if r.GetVersionInfo() != versionOf(commit1, g1) {
		t.Fatalf("gRPC stream got %q, want %q", r.GetVersionInfo(), versionOf(commit1, g1))
	}
	grpcStream.ack(r)

	envoyStream := streamAs(t, conn, nodeAs(t, node, "envoy", ""))
	attached(t, s, node, xds.FlavorEnvoy, 2)
	// A new commit still publishes the node for gRPC: the Envoy stream is
	// sent nothing, the gRPC stream the new version.
	g2 := forGRPC(basicProxy(t, node, "grpc-only", "more"))
	publish(t, s, commit2, nil, g2)
	if r := grpcStream.recv(); r.GetVersionInfo() != versionOf(commit2, g2) {
		t.Fatalf("gRPC stream got %q, want %q", r.GetVersionInfo(), versionOf(commit2, g2))
	}

	e3 := basicProxy(t, node, "envoy-only")
	publish(t, s, commit3, nil, e3)
	r = envoyStream.recv()
	if r.GetVersionInfo() != versionOf(commit3, e3) || !slices.Equal(names(t, r), []string{"backend", "envoy-only"}) {
		t.Fatalf("Envoy stream's first response %q %v, want the Envoy translation %q", r.GetVersionInfo(), names(t, r), versionOf(commit3, e3))
	}
	envoyStream.ack(r)
	waitStatus(t, s, node, func(ps ProxyStatus) bool { return typeStatus(ps, resource.ClusterType).Acked == versionOf(commit3, e3) })
	// The gRPC stream, still open, keeps its watch on the gRPC snapshot.
	if _, err := s.cache.GetSnapshot(snapshotKey(node, xds.FlavorGRPC)); err != nil {
		t.Errorf("gRPC snapshot dropped while a gRPC stream is open: %v", err)
	}
	grpcStream.close()
	waitNoSnapshot(t, s, node, xds.FlavorGRPC)
	if n := grpcStream.count.Load(); n != 2 {
		t.Errorf("gRPC stream got %d responses, want 2 (commits 1 and 2)", n)
	}

	// Removed while its Envoy stream is open: its snapshot stays until the
	// stream closes, then no flavour's remains.
	publish(t, s, commit4, nil)
	if _, err := s.cache.GetSnapshot(snapshotKey(node, xds.FlavorEnvoy)); err != nil {
		t.Errorf("Envoy snapshot dropped while its stream is open: %v", err)
	}
	envoyStream.close()
	for _, f := range []xds.Flavor{xds.FlavorEnvoy, xds.FlavorGRPC} {
		waitNoSnapshot(t, s, node, f)
	}
}

func TestPublishRefusesUnknownFlavour(t *testing.T) {
	s, _ := startServer(t)
	p := basicProxy(t, "demo.web-1")
	p.Flavor = "istio"
	if _, err := s.Publish(context.Background(), commit1, []*xds.Proxy{p}, nil); err == nil {
		t.Fatal("a proxy of an unknown flavour was published")
	}
	// An empty flavour is Envoy.
	p.Flavor = ""
	publish(t, s, commit1, nil, p)
	if ps, _ := s.StatusOf(p.NodeID); ps.PublishedFlavor != xds.FlavorEnvoy {
		t.Errorf("published flavour %q, want envoy", ps.PublishedFlavor)
	}
}
