package ads

import (
	"context"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/gitmesh/gitmesh/xds"
)

// nodeAs is a node message with a user agent and, unless flavor is "", the
// flavour metadata.
func nodeAs(t *testing.T, id, userAgent, flavor string) *corev3.Node {
	t.Helper()
	n := &corev3.Node{Id: id, UserAgentName: userAgent}
	if flavor != "" {
		m, err := structpb.NewStruct(map[string]any{xds.FlavorMetadataKey: flavor})
		if err != nil {
			t.Fatal(err)
		}
		n.Metadata = m
	}
	return n
}

// streamAs opens an ADS stream of node n and subscribes it to clusters.
func streamAs(t *testing.T, conn *grpc.ClientConn, n *corev3.Node) *client {
	t.Helper()
	c := adsClient(t, conn, n.GetId())
	c.as = n
	c.subscribe(resource.ClusterType)
	return c
}

// nextFlavor returns the next event, which must be a flavour change.
func nextFlavor(t *testing.T, events <-chan Event) Event {
	t.Helper()
	e := nextEvent(t, events)
	if e.Kind != FlavorChanged || e.TypeURL != "" || e.At.IsZero() {
		t.Fatalf("event %+v, want a flavour change", e)
	}
	return e
}

func TestFlavorOfNodes(t *testing.T) {
	s, conn := startServer(t)
	const envoy, grpcNode = "demo.web-1", "demo.api-1"
	publish(t, s, commit1, nil, basicProxy(t, envoy), forGRPC(basicProxy(t, grpcNode)))
	events, stop := s.Subscribe()
	defer stop()
	if _, ok := s.FlavorOf(envoy); ok || s.FlavorChanges() != 0 {
		t.Fatal("flavour known before any stream")
	}

	// Learned from the user agent on the first request of a stream, before
	// anything is sent.
	e1 := streamAs(t, conn, nodeAs(t, envoy, "envoy", ""))
	if e := nextFlavor(t, events); e.NodeID != envoy || e.Flavor != xds.FlavorEnvoy || e.Delta {
		t.Errorf("event %+v, want %s learned as envoy", e, envoy)
	}
	g1 := streamAs(t, conn, nodeAs(t, grpcNode, "gRPC Go", ""))
	if e := nextFlavor(t, events); e.NodeID != grpcNode || e.Flavor != xds.FlavorGRPC {
		t.Errorf("event %+v, want %s learned as grpc", e, grpcNode)
	}
	e1.ack(e1.recv())
	g1.ack(g1.recv())
	if e := nextEvent(t, events); e.Kind != ACK {
		t.Fatalf("event %+v, want an ACK", e)
	}
	if e := nextEvent(t, events); e.Kind != ACK {
		t.Fatalf("event %+v, want an ACK", e)
	}
	for node, want := range map[string]xds.Flavor{envoy: xds.FlavorEnvoy, grpcNode: xds.FlavorGRPC} {
		if f, ok := s.FlavorOf(node); !ok || f != want {
			t.Errorf("FlavorOf(%s) = %q, %v; want %q", node, f, ok, want)
		}
		if st, _ := s.StatusOf(node); st.Flavor != want {
			t.Errorf("status of %s: flavour %q, want %q", node, st.Flavor, want)
		}
	}
	if n := s.FlavorChanges(); n != 2 {
		t.Errorf("FlavorChanges = %d, want 2", n)
	}

	// A second stream of the same flavour changes nothing; one whose
	// metadata overrides the user agent does (and, the node being published
	// for gRPC, is sent nothing), and so does going back.
	g2 := streamAs(t, conn, nodeAs(t, grpcNode, "gRPC Go", "grpc"))
	g2.recv()
	g3 := streamAs(t, conn, nodeAs(t, grpcNode, "gRPC Go", "envoy"))
	if e := nextFlavor(t, events); e.NodeID != grpcNode || e.Flavor != xds.FlavorEnvoy {
		t.Errorf("event %+v, want %s now envoy", e, grpcNode)
	}
	g4 := streamAs(t, conn, nodeAs(t, grpcNode, "envoy", "grpc"))
	g4.recv()
	if e := nextFlavor(t, events); e.NodeID != grpcNode || e.Flavor != xds.FlavorGRPC {
		t.Errorf("event %+v, want %s grpc again", e, grpcNode)
	}
	if n := s.FlavorChanges(); n != 4 {
		t.Errorf("FlavorChanges = %d, want 4", n)
	}

	// The flavour outlives the node's streams.
	for _, c := range []*client{g1, g2, g3, g4} {
		c.close()
	}
	if n := g3.count.Load(); n != 0 {
		t.Errorf("the Envoy stream of a node published for gRPC got %d responses", n)
	}
	waitStatus(t, s, grpcNode, func(ps ProxyStatus) bool { return ps.Streams == 0 })
	if f, ok := s.FlavorOf(grpcNode); !ok || f != xds.FlavorGRPC {
		t.Errorf("FlavorOf(%s) = %q, %v after its streams closed, want grpc", grpcNode, f, ok)
	}
	select {
	case e := <-events:
		t.Errorf("unexpected event %+v", e)
	default:
	}
}

// A stream declaring an unknown flavour is refused at its first request,
// and the node stays unknown; the node's other streams are unaffected.
func TestInvalidFlavorRefusesTheStream(t *testing.T) {
	s, conn := startServer(t)
	const node = "demo.web-1"
	publish(t, s, commit1, nil, forGRPC(basicProxy(t, node)))
	events, stop := s.Subscribe()
	defer stop()

	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	st, err := discoverygrpc.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&discoverygrpc.DiscoveryRequest{Node: nodeAs(t, node, "gRPC Go", "grcp"), TypeUrl: resource.ClusterType}); err != nil {
		t.Fatal(err)
	}
	_, err = st.Recv()
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), `metadata gitmesh.io/flavor: unknown flavour "grcp"`) {
		t.Fatalf("stream ended with %v, want InvalidArgument naming the flavour", err)
	}
	if _, ok := s.FlavorOf(node); ok {
		t.Error("the refused stream's node has a flavour")
	}
	if ps, _ := s.StatusOf(node); ps.Streams != 0 || ps.Flavor != "" {
		t.Errorf("status %+v after a refused stream", ps)
	}

	// The same on a delta stream.
	dst, err := discoverygrpc.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := dst.Send(&discoverygrpc.DeltaDiscoveryRequest{Node: nodeAs(t, node, "envoy", "Envoy"), TypeUrl: resource.ClusterType}); err != nil {
		t.Fatal(err)
	}
	if _, err := dst.Recv(); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), `unknown flavour "Envoy"`) {
		t.Fatalf("delta stream ended with %v, want InvalidArgument naming the flavour", err)
	}

	// A valid stream of the node is served, and a bad one beside it does
	// not change its flavour.
	c := streamAs(t, conn, nodeAs(t, node, "gRPC Go", ""))
	c.ack(c.recv())
	if e := nextFlavor(t, events); e.Flavor != xds.FlavorGRPC {
		t.Errorf("event %+v, want grpc", e)
	}
	bad := adsClient(t, conn, node)
	bad.as = nodeAs(t, node, "envoy", "istio")
	bad.subscribe(resource.ClusterType)
	waitStatus(t, s, node, func(ps ProxyStatus) bool { return ps.Streams == 1 && typeStatus(ps, resource.ClusterType).Acked != "" })
	if f, _ := s.FlavorOf(node); f != xds.FlavorGRPC {
		t.Errorf("flavour %q, want grpc", f)
	}
}

// On a delta stream the flavour comes from the first request, as on a
// state-of-the-world one; later requests carry no node.
func TestFlavorFromDeltaStream(t *testing.T) {
	s, conn := startServer(t)
	const node = "demo.web-1"
	publish(t, s, commit1, nil, forGRPC(basicProxy(t, node)))
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	st, err := discoverygrpc.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&discoverygrpc.DeltaDiscoveryRequest{Node: nodeAs(t, node, "envoy", "grpc"), TypeUrl: resource.ClusterType}); err != nil {
		t.Fatal(err)
	}
	r, err := st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&discoverygrpc.DeltaDiscoveryRequest{TypeUrl: resource.ClusterType, ResponseNonce: r.GetNonce()}); err != nil {
		t.Fatal(err)
	}
	ps := waitStatus(t, s, node, func(ps ProxyStatus) bool { return typeStatus(ps, resource.ClusterType).Acked != "" })
	if ps.Flavor != xds.FlavorGRPC {
		t.Errorf("flavour %q, want grpc (metadata)", ps.Flavor)
	}
}
