package ads

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/gitmesh/gitmesh/xds"
)

func TestPublishProxyPutsOneProxyBack(t *testing.T) {
	s, conn := startServer(t)
	const node = "demo.web-1"
	p1, other := basicProxy(t, node), basicProxy(t, "demo.api-1")
	publish(t, s, commit1, nil, p1, other)
	c := adsClient(t, conn, node)
	c.subscribe(resource.ClusterType)
	c.ack(c.recv())

	// Commit 2 changes web-1, which rejects it.
	p2 := basicProxy(t, node, "broken")
	publish(t, s, commit2, nil, p2, other)
	r := c.recv()
	v1, v2 := versionOf(commit1, p1), versionOf(commit2, p2)
	if r.GetVersionInfo() != v2 {
		t.Fatalf("got %q, want %q", r.GetVersionInfo(), v2)
	}
	c.nack(r, v1, "rejected")
	waitStatus(t, s, node, func(ps ProxyStatus) bool { return typeStatus(ps, resource.ClusterType).LastNACK != nil })

	events, stop := s.Subscribe()
	defer stop()
	// Putting it back on commit 1 sends commit 1's resources at commit 1's
	// version, which differs from the rejected one.
	changed, err := s.PublishProxy(context.Background(), commit1, p1, nil)
	if err != nil || !changed {
		t.Fatalf("PublishProxy = %v, %v; want changed", changed, err)
	}
	r = c.recv()
	if r.GetVersionInfo() != v1 || strings.Join(names(t, r), " ") != "backend" {
		t.Fatalf("got %q %v after putting back, want %q [backend]", r.GetVersionInfo(), names(t, r), v1)
	}
	c.ack(r)
	if e := nextEvent(t, events); e.Kind != ACK || e.Version != v1 {
		t.Fatalf("event %+v, want the ACK of %s", e, v1)
	}
	ps, _ := s.StatusOf(node)
	if ps.Commit != commit1 || ps.Hash != p1.Hash {
		t.Errorf("status commit %.4s hash %.12s, want commit 1's translation", ps.Commit, ps.Hash)
	}
	if snap, err := s.cache.GetSnapshot(snapshotKey(other.NodeID, xds.FlavorEnvoy)); err != nil || snap.GetVersion(resource.ClusterType) != versionOf(commit1, other) {
		t.Errorf("the other node's snapshot changed: %v", err)
	}
	if changed, err := s.PublishProxy(context.Background(), commit1, p1, nil); err != nil || changed {
		t.Errorf("same proxy again: %v, %v; want unchanged", changed, err)
	}

	// Refused: a node not published, a proxy failing its checks, an ended
	// context. None of them changes what web-1 is served.
	if _, err := s.PublishProxy(context.Background(), commit1, basicProxy(t, "demo.new-1"), nil); err == nil || !strings.Contains(err.Error(), "proxy demo.new-1: not published") {
		t.Errorf("unpublished node: %v", err)
	}
	bad := newProxy(t, node, edsCluster("a"))
	if _, err := s.PublishProxy(context.Background(), commit3, bad, nil); err == nil || !strings.Contains(err.Error(), `references endpoints "a"`) {
		t.Errorf("bad proxy: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.PublishProxy(ctx, commit3, basicProxy(t, node, "x"), nil); !errors.Is(err, context.Canceled) {
		t.Errorf("ended context: %v", err)
	}
	if _, err := s.PublishProxy(context.Background(), commit3, &xds.Proxy{}, nil); err == nil {
		t.Error("proxy without node id accepted")
	}
	if st, _ := s.StatusOf(node); st.Hash != p1.Hash || typeStatus(st, resource.ClusterType).Published != v1 {
		t.Errorf("refused calls changed web-1: %+v", st)
	}

	// The next Publish pushes the commit's translation again, even one
	// equal to the rejected one, under a new version.
	publish(t, s, commit3, nil, p2, other)
	if r := c.recv(); r.GetVersionInfo() != versionOf(commit3, p2) {
		t.Fatalf("got %q after the next publish, want %q", r.GetVersionInfo(), versionOf(commit3, p2))
	}
}
