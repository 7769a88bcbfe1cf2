package ads

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"

	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"

	"github.com/gitmesh/gitmesh/xds"
)

// failingCache is the Server's snapshot cache, except that the k-th
// SetSnapshot after failNth(k) fails once it has stored its snapshot and
// answered the watches, as go-control-plane's cache can fail.
type failingCache struct {
	cachev3.SnapshotCache
	mu     sync.Mutex
	calls  int
	failAt int
}

func (c *failingCache) SetSnapshot(ctx context.Context, node string, snap cachev3.ResourceSnapshot) error {
	c.mu.Lock()
	c.calls++
	fail := c.calls == c.failAt
	c.mu.Unlock()
	if err := c.SnapshotCache.SetSnapshot(ctx, node, snap); err != nil {
		return err
	}
	if fail {
		return errors.New("answering a watch failed")
	}
	return nil
}

// failNth makes the k-th SetSnapshot from now on fail (none when k is 0).
func (c *failingCache) failNth(k int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls, c.failAt = 0, k
}

func startFailing(t *testing.T) (*Server, *grpc.ClientConn, *failingCache) {
	t.Helper()
	var fc *failingCache
	s, conn := startWith(t, Config{}, func(s *Server) {
		fc = &failingCache{SnapshotCache: s.cache}
		s.cache = fc
	})
	return s, conn, fc
}

// wantServed checks that node's status and snapshot are those of p at
// commit, and waits until its stream holds them (sent and ACKed).
func wantServed(t *testing.T, s *Server, commit string, p *xds.Proxy) {
	t.Helper()
	want := versionOf(commit, p)
	ps := waitStatus(t, s, p.NodeID, func(ps ProxyStatus) bool {
		ts := typeStatus(ps, resource.ClusterType)
		return ts.Sent == want && ts.Acked == want
	})
	if ps.Commit != commit || ps.Hash != p.Hash || typeStatus(ps, resource.ClusterType).Published != want {
		t.Errorf("%s: status commit %.4s hash %.12s published %q, want commit %.4s hash %.12s version %q",
			p.NodeID, ps.Commit, ps.Hash, typeStatus(ps, resource.ClusterType).Published, commit, p.Hash, want)
	}
	snap, err := s.cache.GetSnapshot(snapshotKey(p.NodeID, xds.FlavorEnvoy))
	if err != nil || snap.GetVersion(resource.ClusterType) != want {
		t.Errorf("%s: snapshot %v, want version %q", p.NodeID, err, want)
	}
}

// A Publish whose k-th SetSnapshot fails leaves every proxy on what it had:
// those set before the failure, and the failing one, are put back.
func TestFailedSetSnapshotPutsEveryProxyBack(t *testing.T) {
	s, conn, fc := startFailing(t)
	nodes := []string{"demo.a-1", "demo.b-1", "demo.c-1"}
	const added = "demo.d-1"
	first := map[string]*xds.Proxy{}
	var proxies []*xds.Proxy
	for _, n := range nodes {
		first[n] = basicProxy(t, n)
		proxies = append(proxies, first[n])
	}
	publish(t, s, commit1, nil, proxies...)
	clients := map[string]*client{}
	for _, n := range nodes {
		c := adsClient(t, conn, n)
		c.subscribe(resource.ClusterType)
		c.ack(c.recv())
		clients[n] = c
		wantServed(t, s, commit1, first[n])
	}
	// d connects before it is published: it waits.
	d := adsClient(t, conn, added)
	d.subscribe(resource.ClusterType)
	attached(t, s, added, xds.FlavorEnvoy, 1)

	// Commit 2 changes a, b and c and adds d. Its snapshots are set in the
	// order of the proxies: a's, b's, then d's, which fails.
	second := map[string]*xds.Proxy{}
	for _, n := range append(slices.Clone(nodes), added) {
		second[n] = basicProxy(t, n, "two")
	}
	fc.failNth(3)
	_, err := s.Publish(context.Background(), commit2,
		[]*xds.Proxy{second[nodes[0]], second[nodes[1]], second[added], second[nodes[2]]}, nil)
	if err == nil || !strings.Contains(err.Error(), "proxy "+added+": set snapshot: answering a watch failed") {
		t.Fatalf("publish: %v, want the failure of %s's snapshot", err, added)
	}
	fc.failNth(0)

	// a and b were sent commit 2, then put back: they get commit 1 again.
	for _, n := range nodes[:2] {
		c := clients[n]
		r := c.recv()
		if r.GetVersionInfo() != versionOf(commit2, second[n]) {
			t.Fatalf("%s got %q, want commit 2's %q", n, r.GetVersionInfo(), versionOf(commit2, second[n]))
		}
		c.ack(r)
		r = c.recv()
		if r.GetVersionInfo() != versionOf(commit1, first[n]) || !slices.Equal(names(t, r), []string{"backend"}) {
			t.Fatalf("%s got %q %v, want commit 1's %q [backend] back", n, r.GetVersionInfo(), names(t, r), versionOf(commit1, first[n]))
		}
		c.ack(r)
	}
	for _, n := range nodes {
		wantServed(t, s, commit1, first[n])
	}
	if n := clients[nodes[2]].count.Load(); n != 1 {
		t.Errorf("%s got %d responses, want commit 1's alone", nodes[2], n)
	}
	// d, which had nothing, is not published and has no snapshot; its
	// stream keeps what it was sent and waits for the next one.
	if r := d.recv(); r.GetVersionInfo() != versionOf(commit2, second[added]) {
		t.Fatalf("%s got %q", added, r.GetVersionInfo())
	} else {
		d.ack(r)
	}
	if ps, _ := s.StatusOf(added); ps.Published {
		t.Errorf("%s published after the failed publish: %+v", added, ps)
	}
	if _, err := s.cache.GetSnapshot(snapshotKey(added, xds.FlavorEnvoy)); err == nil {
		t.Errorf("%s has a snapshot after the failed publish", added)
	}

	// The next commit is published whole, to every node.
	third := map[string]*xds.Proxy{}
	proxies = nil
	for _, n := range append(slices.Clone(nodes), added) {
		third[n] = basicProxy(t, n, "three")
		proxies = append(proxies, third[n])
	}
	if res := publish(t, s, commit3, nil, proxies...); len(res.Changed) != 4 {
		t.Fatalf("commit 3 changed %v, want every node", res.Changed)
	}
	clients[added] = d
	for n, c := range clients {
		if r := c.recv(); r.GetVersionInfo() != versionOf(commit3, third[n]) {
			t.Errorf("%s got %q, want commit 3's %q", n, r.GetVersionInfo(), versionOf(commit3, third[n]))
		}
	}
}

func TestFailedPublishProxyChangesNothing(t *testing.T) {
	s, conn, fc := startFailing(t)
	const node = "demo.web-1"
	p1 := basicProxy(t, node)
	publish(t, s, commit1, nil, p1)
	c := adsClient(t, conn, node)
	c.subscribe(resource.ClusterType)
	c.ack(c.recv())
	wantServed(t, s, commit1, p1)

	p2 := basicProxy(t, node, "two")
	fc.failNth(1)
	if _, err := s.PublishProxy(context.Background(), commit2, p2, nil); err == nil || !strings.Contains(err.Error(), "proxy "+node+": set snapshot") {
		t.Fatalf("PublishProxy: %v, want the failure of the snapshot", err)
	}
	fc.failNth(0)
	if r := c.recv(); r.GetVersionInfo() != versionOf(commit2, p2) {
		t.Fatalf("got %q, want commit 2's", r.GetVersionInfo())
	} else {
		c.ack(r)
	}
	if r := c.recv(); r.GetVersionInfo() != versionOf(commit1, p1) {
		t.Fatalf("got %q, want commit 1's back", r.GetVersionInfo())
	} else {
		c.ack(r)
	}
	wantServed(t, s, commit1, p1)

	// Moving the node to gRPC fails the same way. Its gRPC stream, which had
	// nothing, keeps what it was sent, and gets the gRPC translation once
	// one is published.
	g := streamAs(t, conn, nodeAs(t, node, "gRPC Go", ""))
	attached(t, s, node, xds.FlavorGRPC, 2)
	g2 := forGRPC(basicProxy(t, node, "grpc"))
	fc.failNth(1)
	if _, err := s.PublishProxy(context.Background(), commit2, g2, nil); err == nil {
		t.Fatal("PublishProxy did not fail")
	}
	fc.failNth(0)
	if ps, _ := s.StatusOf(node); ps.PublishedFlavor != xds.FlavorEnvoy || ps.Hash != p1.Hash {
		t.Errorf("status %+v after a failed move to gRPC", ps)
	}
	if _, err := s.cache.GetSnapshot(snapshotKey(node, xds.FlavorGRPC)); err == nil {
		t.Error("gRPC snapshot kept after a failed move to gRPC")
	}
	if snap, err := s.cache.GetSnapshot(snapshotKey(node, xds.FlavorEnvoy)); err != nil || snap.GetVersion(resource.ClusterType) != versionOf(commit1, p1) {
		t.Errorf("Envoy snapshot changed by a failed move to gRPC: %v", err)
	}
	if r := g.recv(); r.GetVersionInfo() != versionOf(commit2, g2) {
		t.Fatalf("gRPC stream got %q", r.GetVersionInfo())
	} else {
		g.ack(r)
	}
	g3 := forGRPC(basicProxy(t, node, "grpc", "more"))
	if _, err := s.PublishProxy(context.Background(), commit3, g3, nil); err != nil {
		t.Fatal(err)
	}
	if r := g.recv(); r.GetVersionInfo() != versionOf(commit3, g3) {
		t.Fatalf("gRPC stream got %q, want %q", r.GetVersionInfo(), versionOf(commit3, g3))
	}
	// The Envoy stream saw none of it.
	if n := c.count.Load(); n != 3 {
		t.Errorf("Envoy stream got %d responses, want 3 (commit 1, 2 and 1 again)", n)
	}
}
