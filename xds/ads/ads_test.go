package ads

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretservice "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"

	"github.com/gitmesh/gitmesh/xds"
)

func publish(t *testing.T, s *Server, commit string, secrets SecretsFunc, proxies ...*xds.Proxy) PublishResult {
	t.Helper()
	res, err := s.Publish(context.Background(), commit, proxies, secrets)
	if err != nil {
		t.Fatalf("publish %s: %v", commit[:4], err)
	}
	return res
}

func TestACKThenNACKWithoutStorm(t *testing.T) {
	s, conn := startServer(t)
	const node = "demo.web-1"
	p1 := basicProxy(t, node)
	if res := publish(t, s, commit1, nil, p1); !slices.Equal(res.Changed, []string{node}) {
		t.Fatalf("first publish changed %v", res.Changed)
	}

	c := adsClient(t, conn, node)
	c.subscribe(resource.ClusterType)
	r := c.recv()
	v1 := versionOf(commit1, p1)
	if r.GetVersionInfo() != v1 || !slices.Equal(names(t, r), []string{"backend"}) {
		t.Fatalf("got version %q resources %v, want %q [backend]", r.GetVersionInfo(), names(t, r), v1)
	}
	c.ack(r)
	ps := waitStatus(t, s, node, func(ps ProxyStatus) bool { return typeStatus(ps, resource.ClusterType).Acked == v1 })
	if ps.Streams != 1 || ps.ConnectedSince.IsZero() || !ps.Published || ps.Commit != commit1 {
		t.Errorf("status %+v: want one stream, connected, published at commit 1", ps)
	}
	if ts := typeStatus(ps, resource.ClusterType); ts.Sent != v1 || ts.Published != v1 || ts.LastNACK != nil {
		t.Errorf("CDS status %+v", ts)
	}

	// Commit 2 adds a cluster the client rejects.
	events, stop := s.Subscribe()
	defer stop()
	p2 := basicProxy(t, node, "broken")
	publish(t, s, commit2, nil, p2)
	r = c.recv()
	v2 := versionOf(commit2, p2)
	if r.GetVersionInfo() != v2 {
		t.Fatalf("got version %q, want %q", r.GetVersionInfo(), v2)
	}
	c.nack(r, v1, `cluster "broken": pretend it is invalid`)
	e := nextEvent(t, events)
	want := Event{Kind: NACK, NodeID: node, TypeURL: resource.ClusterType, Version: v2, Error: `cluster "broken": pretend it is invalid`}
	e.At = time.Time{}
	if e != want {
		t.Fatalf("event %+v, want %+v", e, want)
	}
	ps = waitStatus(t, s, node, func(ps ProxyStatus) bool { return typeStatus(ps, resource.ClusterType).LastNACK != nil })
	ts := typeStatus(ps, resource.ClusterType)
	if ts.LastNACK.Version != v2 || ts.LastNACK.Error != want.Error || ts.Acked != v1 || ts.LastNACK.At.IsZero() {
		t.Errorf("after NACK: %+v (NACK %+v), want NACK of %s, ACKed still %s", ts, *ts.LastNACK, v2, v1)
	}
	if ps.InSync() {
		t.Error("InSync after a NACK")
	}

	// No re-send storm: the rejected version is not sent again. The client
	// behaves like Envoy and NACKs every copy it gets.
	resent := 0
	for deadline := time.After(500 * time.Millisecond); ; {
		select {
		case r := <-c.resps:
			resent++
			c.nack(r, v1, "still invalid")
			continue
		case <-deadline:
		}
		break
	}
	if resent > 2 {
		t.Fatalf("%d re-sends of the rejected version within 500ms: NACK storm", resent)
	}

	// Commit 3 fixes it.
	p3 := basicProxy(t, node, "fixed")
	publish(t, s, commit3, nil, p3)
	r = c.recv()
	v3 := versionOf(commit3, p3)
	if r.GetVersionInfo() != v3 || !slices.Equal(names(t, r), []string{"backend", "fixed"}) {
		t.Fatalf("got %q %v, want %q [backend fixed]", r.GetVersionInfo(), names(t, r), v3)
	}
	c.ack(r)
	if e := nextEvent(t, events); e.Kind != ACK || e.Version != v3 || e.TypeURL != resource.ClusterType {
		t.Fatalf("event %+v, want ACK of %s", e, v3)
	}

	// Commit 4 does not change the proxy: no push, same version.
	res := publish(t, s, commit4, nil, basicProxy(t, node, "fixed"))
	if len(res.Changed) != 0 || !slices.Equal(res.Unchanged, []string{node}) {
		t.Fatalf("unchanged publish: %+v", res)
	}
	if n := c.responsesWithin(300 * time.Millisecond); n != 0 {
		t.Fatalf("%d responses for an unchanged proxy", n)
	}
	ps = waitStatus(t, s, node, func(ProxyStatus) bool { return true })
	if ts := typeStatus(ps, resource.ClusterType); ts.Published != v3 || ts.Acked != v3 || ps.Commit != commit3 {
		t.Errorf("after unchanged publish: commit %s, CDS %+v; want version %s", ps.Commit[:4], ts, v3)
	}
}

func TestInvalidPublishChangesNothing(t *testing.T) {
	s, conn := startServer(t)
	good := basicProxy(t, "demo.web-1")
	other := basicProxy(t, "demo.api-1")
	publish(t, s, commit1, nil, good, other)
	c := adsClient(t, conn, good.NodeID)
	c.subscribe(resource.ClusterType)
	c.ack(c.recv())
	v1 := versionOf(commit1, good)
	waitStatus(t, s, good.NodeID, func(ps ProxyStatus) bool { return typeStatus(ps, resource.ClusterType).Acked == v1 })

	badPort := cla("backend", 8080)
	badPort.Endpoints[0].LbEndpoints[0].GetEndpoint().GetAddress().GetSocketAddress().PortSpecifier = nil
	for _, tc := range []struct {
		name string
		bad  *xds.Proxy
		want string
	}{
		{"listener to a missing cluster", newProxy(t, "demo.api-1",
			tcpListener(t, "outbound:127.0.0.1:10001", 10001, "nowhere")),
			`listener "outbound:127.0.0.1:10001": references cluster "nowhere", which does not exist`},
		{"ValidateAll fails", newProxy(t, "demo.api-1", edsCluster("backend"), badPort),
			`endpoints "backend": invalid ClusterLoadAssignment`},
		{"unreferenced endpoints", newProxy(t, "demo.api-1", edsCluster("a"), cla("a", 1), cla("b", 2)),
			`endpoints "b": is referenced by nothing`},
		{"EDS cluster without endpoints", newProxy(t, "demo.api-1", edsCluster("a")),
			`cluster "a": references endpoints "a", which does not exist`},
		{"duplicate names", newProxy(t, "demo.api-1", edsCluster("a"), edsCluster("a"), cla("a", 1)),
			`cluster "a": appears twice`},
		{"no hash", &xds.Proxy{NodeID: "demo.api-1"}, "no hash"},
		{"identities without secrets", &xds.Proxy{NodeID: "demo.api-1", Hash: "ab", Identities: []string{"spiffe://demo/api"}},
			"no secrets source"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The good proxy changes in the same commit: it must not be
			// published either.
			changed := basicProxy(t, good.NodeID, "new")
			_, err := s.Publish(context.Background(), commit2, []*xds.Proxy{changed, tc.bad}, nil)
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), "proxy demo.api-1") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q, want it to name proxy demo.api-1 and contain %q", err, tc.want)
			}
			for _, p := range []*xds.Proxy{good, other} {
				snap, err := s.cache.GetSnapshot(snapshotKey(p.NodeID, xds.FlavorEnvoy))
				if err != nil {
					t.Fatal(err)
				}
				if got := snap.GetVersion(resource.ClusterType); got != versionOf(commit1, p) {
					t.Errorf("%s serves %q after a failed publish", p.NodeID, got)
				}
			}
		})
	}
	if n := c.responsesWithin(200 * time.Millisecond); n != 0 {
		t.Fatalf("client got %d responses from failed publishes", n)
	}

	// A cancelled context stops a publish before it changes anything.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Publish(ctx, commit2, []*xds.Proxy{basicProxy(t, good.NodeID, "new")}, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled publish: %v", err)
	}

	// Dropping a proxy removes its snapshot.
	res := publish(t, s, commit3, nil, good)
	if !slices.Equal(res.Removed, []string{"demo.api-1"}) || !slices.Equal(res.Unchanged, []string{good.NodeID}) {
		t.Fatalf("result %+v", res)
	}
	if _, err := s.cache.GetSnapshot(snapshotKey("demo.api-1", xds.FlavorEnvoy)); err == nil {
		t.Error("removed proxy still has a snapshot")
	}
	for _, ps := range s.Status() {
		if ps.NodeID == "demo.api-1" {
			t.Errorf("removed proxy in status: %+v", ps)
		}
	}
}

func TestSecretRenewalPushesOnlySecrets(t *testing.T) {
	s, conn := startServer(t)
	const node = "demo.web-1"
	mk := func() *xds.Proxy {
		p := newProxy(t, node, tcpListener(t, "outbound:127.0.0.1:10001", 10001, "backend"),
			mtlsCluster(t, "backend"), cla("backend", 8080))
		p.MTLS = true
		p.Identities = []string{"spiffe://demo/web"}
		return p
	}
	secretVersion := "s1"
	secrets := func(p *xds.Proxy) ([]types.Resource, string, error) {
		return []types.Resource{
			&tlsv3.Secret{Name: xds.SecretIdentity, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{}}},
			&tlsv3.Secret{Name: xds.SecretMeshCA, Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{}}},
		}, secretVersion, nil
	}
	p := mk()
	publish(t, s, commit1, secrets, p)

	cds := adsClient(t, conn, node)
	cds.subscribe(resource.ClusterType)
	cds.ack(cds.recv())
	// SDS over the separate secret discovery service.
	sds := newClient(t, node, func(ctx context.Context) (sotwStream, error) {
		return secretservice.NewSecretDiscoveryServiceClient(conn).StreamSecrets(ctx)
	})
	secretNames := []string{xds.SecretIdentity, xds.SecretMeshCA}
	sds.subscribe(resource.SecretType, secretNames...)
	r := sds.recv()
	if r.GetVersionInfo() != "s1" || !slices.Equal(names(t, r), []string{xds.SecretIdentity, xds.SecretMeshCA}) {
		t.Fatalf("SDS got %q %v", r.GetVersionInfo(), names(t, r))
	}
	sds.ack(r, secretNames...)
	waitStatus(t, s, node, func(ps ProxyStatus) bool { return ps.Streams == 2 && typeStatus(ps, resource.SecretType).Acked == "s1" })

	secretVersion = "s2" // a renewal: same Hash, new secret version
	res := publish(t, s, commit2, secrets, mk())
	if !slices.Equal(res.Changed, []string{node}) {
		t.Fatalf("renewal publish: %+v", res)
	}
	if r := sds.recv(); r.GetVersionInfo() != "s2" {
		t.Fatalf("SDS got %q after renewal", r.GetVersionInfo())
	}
	if n := cds.responsesWithin(300 * time.Millisecond); n != 0 {
		t.Fatalf("CDS got %d responses for a secret renewal", n)
	}
	ps := waitStatus(t, s, node, func(ProxyStatus) bool { return true })
	if got := typeStatus(ps, resource.ClusterType).Published; got != versionOf(commit1, p) {
		t.Errorf("CDS version %q after renewal, want %q", got, versionOf(commit1, p))
	}
	if got := typeStatus(ps, resource.SecretType).Published; got != "s2" {
		t.Errorf("SDS published %q, want s2", got)
	}

	// A missing secret or a failing source is refused.
	only := func(p *xds.Proxy) ([]types.Resource, string, error) {
		all, _, _ := secrets(p)
		return all[:1], "s3", nil
	}
	if _, err := s.Publish(context.Background(), commit3, []*xds.Proxy{mk()}, only); err == nil ||
		!strings.Contains(err.Error(), `proxy demo.web-1: missing secret "mesh_ca"`) {
		t.Errorf("missing secret: %v", err)
	}
	twice := func(p *xds.Proxy) ([]types.Resource, string, error) {
		all, _, _ := secrets(p)
		return append(all, all[0]), "s3", nil
	}
	if _, err := s.Publish(context.Background(), commit3, []*xds.Proxy{mk()}, twice); err == nil ||
		!strings.Contains(err.Error(), `proxy demo.web-1: secret "identity_cert" appears twice`) {
		t.Errorf("duplicate secret: %v", err)
	}
	failing := func(*xds.Proxy) ([]types.Resource, string, error) { return nil, "", errors.New("CA unreadable") }
	if _, err := s.Publish(context.Background(), commit3, []*xds.Proxy{mk()}, failing); err == nil ||
		!strings.Contains(err.Error(), "proxy demo.web-1: secrets: CA unreadable") {
		t.Errorf("failing secrets: %v", err)
	}
}

func TestDeltaADS(t *testing.T) {
	s, conn := startServer(t)
	const node = "demo.web-1"
	p1 := basicProxy(t, node, "extra")
	publish(t, s, commit1, nil, p1)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := discoverygrpc.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	resps := make(chan *discoverygrpc.DeltaDiscoveryResponse, 16)
	var received atomic.Int64
	done := receive(st, resps, &received)
	defer func() { cancel(); <-done }()
	recv := func() *discoverygrpc.DeltaDiscoveryResponse {
		t.Helper()
		select {
		case r := <-resps:
			return r
		case <-time.After(wait):
			t.Fatal("no delta response")
			return nil
		}
	}
	events, stop := s.Subscribe()
	defer stop()

	if err := st.Send(&discoverygrpc.DeltaDiscoveryRequest{Node: &corev3.Node{Id: node}, TypeUrl: resource.ClusterType}); err != nil {
		t.Fatal(err)
	}
	r := recv()
	if e := nextEvent(t, events); e.Kind != FlavorChanged || !e.Delta || e.Flavor != xds.FlavorEnvoy || e.NodeID != node {
		t.Fatalf("event %+v, want the flavour of %s learned from its delta stream", e, node)
	}
	var got []string
	for _, res := range r.GetResources() {
		got = append(got, res.GetName())
	}
	slices.Sort(got)
	v1 := versionOf(commit1, p1)
	if !slices.Equal(got, []string{"backend", "extra"}) || r.GetSystemVersionInfo() != v1 {
		t.Fatalf("delta got %v at %q, want [backend extra] at %q", got, r.GetSystemVersionInfo(), v1)
	}
	if err := st.Send(&discoverygrpc.DeltaDiscoveryRequest{TypeUrl: resource.ClusterType, ResponseNonce: r.GetNonce()}); err != nil {
		t.Fatal(err)
	}
	if e := nextEvent(t, events); e.Kind != ACK || !e.Delta || e.Version != v1 || e.NodeID != node {
		t.Fatalf("event %+v, want delta ACK of %s", e, v1)
	}

	// Removing a cluster arrives as a removal; the client NACKs it.
	p2 := basicProxy(t, node)
	publish(t, s, commit2, nil, p2)
	r = recv()
	if !slices.Equal(r.GetRemovedResources(), []string{"extra"}) {
		t.Fatalf("removed %v, want [extra]", r.GetRemovedResources())
	}
	if err := st.Send(&discoverygrpc.DeltaDiscoveryRequest{TypeUrl: resource.ClusterType, ResponseNonce: r.GetNonce(),
		ErrorDetail: &statuspb.Status{Code: 3, Message: "no"}}); err != nil {
		t.Fatal(err)
	}
	if e := nextEvent(t, events); e.Kind != NACK || e.Version != versionOf(commit2, p2) || e.Error != "no" {
		t.Fatalf("event %+v, want delta NACK of %s", e, versionOf(commit2, p2))
	}
	ps := waitStatus(t, s, node, func(ProxyStatus) bool { return true })
	if ts := typeStatus(ps, resource.ClusterType); ts.Acked != v1 || ts.LastNACK == nil || ts.LastNACK.Version != versionOf(commit2, p2) {
		t.Errorf("delta status %+v", ts)
	}
}

func TestInSyncIgnoresEmptyTypesNeverSubscribed(t *testing.T) {
	for _, tc := range []struct {
		name string
		ts   TypeStatus
		want bool
	}{
		{"acked", TypeStatus{Published: "v1", Sent: "v1", Acked: "v1"}, true},
		{"not acked", TypeStatus{Published: "v2", Sent: "v2", Acked: "v1"}, false},
		{"never sent", TypeStatus{Published: "v1"}, false},
		{"empty, never subscribed", TypeStatus{Published: "v1", Empty: true}, true},
		{"empty, sent and not acked", TypeStatus{Published: "v2", Empty: true, Sent: "v2", Acked: "v1"}, false},
		{"not published", TypeStatus{}, false},
	} {
		if got := tc.ts.InSync(); got != tc.want {
			t.Errorf("%s: InSync = %v, want %v", tc.name, got, tc.want)
		}
		ps := ProxyStatus{Published: true, Types: []TypeStatus{{Published: "a", Acked: "a"}, tc.ts}}
		if got, want := ps.InSync(), tc.want || tc.ts.Published == ""; got != want {
			t.Errorf("%s: ProxyStatus.InSync = %v, want %v", tc.name, got, want)
		}
	}
}
