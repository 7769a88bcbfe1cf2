package ads

import (
	"testing"
	"time"

	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/gitmesh/gitmesh/xds"
)

const serverListener = "grpc/server?xds.resource.listening_address=127.0.0.1:10001"

// A proxyless gRPC server asks for its server listener alone: once it ACKs
// it, it runs what it is published, clusters and endpoints included, which
// its application never asks for.
func TestGRPCNodeInSyncWithWhatItSubscribed(t *testing.T) {
	s, conn := startServer(t)
	const node = "demo.api-1"
	p := forGRPC(newProxy(t, node, tcpListener(t, serverListener, 10001, "backend"),
		edsCluster("backend"), cla("backend", 8080)))
	publish(t, s, commit1, nil, p)
	c := adsClient(t, conn, node)
	c.as = nodeAs(t, node, "gRPC Go", "")
	c.subscribe(resource.ListenerType, serverListener)
	r := c.recv()
	if got := names(t, r); len(got) != 1 || got[0] != serverListener {
		t.Fatalf("got %v, want the server listener", got)
	}
	c.ack(r, serverListener)
	ps := waitStatus(t, s, node, func(ps ProxyStatus) bool {
		return typeStatus(ps, resource.ListenerType).Acked == versionOf(commit1, p)
	})
	if !ps.InSync() {
		t.Errorf("not in sync after ACKing the only type it asked for: %+v", ps)
	}
	for _, typ := range []string{resource.ClusterType, resource.EndpointType} {
		if ts := typeStatus(ps, typ); ts.Subscribed || ts.Published == "" || ts.Empty {
			t.Errorf("%s: %+v, want published, not empty, never subscribed", typ, ts)
		}
	}
	if ts := typeStatus(ps, resource.ListenerType); !ts.Subscribed {
		t.Errorf("listener not marked subscribed: %+v", ts)
	}

	// Once it asks for clusters (its application makes a call), they count.
	c.subscribe(resource.ClusterType, "backend")
	r = c.recv()
	ps = waitStatus(t, s, node, func(ps ProxyStatus) bool { return typeStatus(ps, resource.ClusterType).Subscribed })
	if ps.InSync() {
		t.Errorf("in sync with clusters subscribed and not ACKed: %+v", typeStatus(ps, resource.ClusterType))
	}
	c.ack(r, "backend")
	waitStatus(t, s, node, ProxyStatus.InSync)
}

// An Envoy node subscribes to everything it is given: until it has ACKed
// its endpoints, which it asks for after the clusters, it is not in sync.
func TestEnvoyNodeNeedsEveryNonEmptyType(t *testing.T) {
	s, conn := startServer(t)
	const node = "demo.web-1"
	p := basicProxy(t, node)
	publish(t, s, commit1, nil, p)
	c := adsClient(t, conn, node)
	for _, typ := range []string{resource.ClusterType, resource.ListenerType} {
		c.subscribe(typ)
		c.ack(c.recv())
	}
	ps := waitStatus(t, s, node, func(ps ProxyStatus) bool {
		return typeStatus(ps, resource.ClusterType).Acked != "" && typeStatus(ps, resource.ListenerType).Acked != ""
	})
	if ps.InSync() {
		t.Errorf("Envoy node in sync without its endpoints: %+v", typeStatus(ps, resource.EndpointType))
	}
	c.subscribe(resource.EndpointType, "backend")
	c.ack(c.recv(), "backend")
	waitStatus(t, s, node, ProxyStatus.InSync)
}

func TestInSyncRule(t *testing.T) {
	const v = "v1"
	acked := TypeStatus{TypeURL: resource.ListenerType, Published: v, Subscribed: true, Sent: v, Acked: v}
	for _, tc := range []struct {
		name   string
		flavor xds.Flavor
		ts     TypeStatus
		want   bool
	}{
		{"gRPC, not subscribed", xds.FlavorGRPC, TypeStatus{Published: v}, true},
		{"gRPC, subscribed, not acked", xds.FlavorGRPC, TypeStatus{Published: v, Subscribed: true}, false},
		{"gRPC, sent, not acked", xds.FlavorGRPC, TypeStatus{Published: v, Sent: v}, false},
		{"gRPC, subscribed, acked", xds.FlavorGRPC, TypeStatus{Published: v, Subscribed: true, Sent: v, Acked: v}, true},
		{"Envoy, not subscribed", xds.FlavorEnvoy, TypeStatus{Published: v}, false},
		{"Envoy, empty, not subscribed", xds.FlavorEnvoy, TypeStatus{Published: v, Empty: true}, true},
		{"Envoy, empty, subscribed, not acked", xds.FlavorEnvoy, TypeStatus{Published: v, Empty: true, Subscribed: true}, false},
		{"never seen, not subscribed", "", TypeStatus{Published: v}, false},
		{"never seen, empty", "", TypeStatus{Published: v, Empty: true}, true},
		{"gRPC, not published", xds.FlavorGRPC, TypeStatus{}, false},
	} {
		tc.ts.TypeURL = resource.ClusterType
		if got := tc.ts.InSyncFor(tc.flavor); got != tc.want {
			t.Errorf("%s: InSyncFor = %v, want %v", tc.name, got, tc.want)
		}
		ps := ProxyStatus{Published: true, Flavor: tc.flavor, PublishedFlavor: tc.flavor, Types: []TypeStatus{acked, tc.ts}}
		if got, want := ps.InSync(), tc.want || tc.ts.Published == ""; got != want {
			t.Errorf("%s: ProxyStatus.InSync = %v, want %v", tc.name, got, want)
		}
	}

	// A node whose streams run another flavour than the one published is
	// not in sync, whatever it ACKed before.
	ps := ProxyStatus{Published: true, Flavor: xds.FlavorGRPC, PublishedFlavor: xds.FlavorEnvoy, Types: []TypeStatus{acked}}
	if ps.InSync() {
		t.Error("in sync while its streams wait for their flavour")
	}
	ps.Flavor = xds.FlavorEnvoy
	if !ps.InSync() {
		t.Error("not in sync with every type ACKed")
	}
	if (ProxyStatus{Types: []TypeStatus{acked}}).InSync() {
		t.Error("in sync without being published")
	}
}

// A node that reconnects (to a restarted daemon, or another replica) asks
// again for what it holds, naming its version. When that is the version
// published, the cache has nothing to send; the node still holds it, and is
// in sync.
func TestResumedStreamHoldsWhatItNames(t *testing.T) {
	s, conn := startServer(t)
	const node = "demo.api-1"
	p := forGRPC(newProxy(t, node, tcpListener(t, serverListener, 10001, "backend"),
		edsCluster("backend"), cla("backend", 8080)))
	publish(t, s, commit1, nil, p)
	c := adsClient(t, conn, node)
	c.as = nodeAs(t, node, "gRPC Go", "")
	c.send(&discoverygrpc.DiscoveryRequest{TypeUrl: resource.ListenerType, ResourceNames: []string{serverListener},
		VersionInfo: versionOf(commit1, p)})
	ps := waitStatus(t, s, node, func(ps ProxyStatus) bool {
		return typeStatus(ps, resource.ListenerType).Acked == versionOf(commit1, p)
	})
	if !ps.InSync() {
		t.Errorf("a node resuming the published version is not in sync: %+v", ps)
	}
	if n := c.responsesWithin(100 * time.Millisecond); n != 0 {
		t.Errorf("%d responses to a node that holds the published version", n)
	}
}

// TestResumedStreamKeepsAnEarlierCommitsVersion: a node that reconnects
// naming a version of the same resources first published at another
// commit (by another replica, or before a restart) is served under that
// version and pushed nothing, wildcard subscriptions included.
func TestResumedStreamKeepsAnEarlierCommitsVersion(t *testing.T) {
	s, conn := startServer(t)
	const node = "demo.api-1"
	p := basicProxy(t, node)
	publish(t, s, commit2, nil, p) // here, first published at commit2
	held := versionOf(commit1, p)  // the node got it at commit1 elsewhere
	c := adsClient(t, conn, node)
	c.send(&discoverygrpc.DiscoveryRequest{TypeUrl: resource.ClusterType, VersionInfo: held})
	ps := waitStatus(t, s, node, func(ps ProxyStatus) bool {
		ts := typeStatus(ps, resource.ClusterType)
		return ts.Acked == held && ts.Published == held
	})
	if n := c.responsesWithin(200 * time.Millisecond); n != 0 {
		t.Errorf("%d responses to a node that holds the published resources under an earlier commit's version", n)
	}
	if ts := typeStatus(ps, resource.ClusterType); !ts.InSyncFor(xds.FlavorEnvoy) {
		t.Errorf("the node is not in sync: %+v", ts)
	}
	// A node naming other resources is sent the published ones.
	c2 := adsClient(t, conn, "demo.api-2")
	publish(t, s, commit2, nil, p, basicProxy(t, "demo.api-2", "other"))
	c2.send(&discoverygrpc.DiscoveryRequest{TypeUrl: resource.ClusterType, VersionInfo: commit1[:12] + "-000000000000"})
	if r := c2.recv(); r.VersionInfo == commit1[:12]+"-000000000000" {
		t.Errorf("a node naming other resources was not sent the published ones")
	}
}
