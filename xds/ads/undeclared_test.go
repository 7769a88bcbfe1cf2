package ads

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/gitmesh/gitmesh/xds"
)

const undeclaredMsg = "xDS stream for a node no published dataplane declares"

// waitLines waits until logs hold n warn lines of msg, and returns them.
func waitLines(t *testing.T, logs *logRecords, msg string, n int) []logLine {
	t.Helper()
	var lines []logLine
	for deadline := time.Now().Add(wait); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if lines = logs.lines(slog.LevelWarn, msg); len(lines) >= n {
			return lines
		}
	}
	t.Fatalf("%d lines %q, want %d", len(lines), msg, n)
	return nil
}

// A node connecting with no published proxy (a typo in its bootstrap, a
// Dataplane removed from git) is logged once, until it is published again.
func TestStreamOfUndeclaredNodeIsLoggedOnce(t *testing.T) {
	logs := newLogRecords()
	s, conn := startWith(t, Config{Logger: slog.New(logs)}, nil)
	const typo, web = "demo.wbe-1", "demo.web-1"
	publish(t, s, commit1, nil, basicProxy(t, web))

	c1 := streamAs(t, conn, nodeAs(t, typo, "envoy", ""))
	lines := waitLines(t, logs, undeclaredMsg, 1)
	if l := lines[0]; l.attrs["node"] != typo || l.attrs["flavor"] != "envoy" || !strings.HasPrefix(l.attrs["peer"], "127.0.0.1:") {
		t.Errorf("logged %v, want node %s, flavour envoy and a peer address", l.attrs, typo)
	}
	if ps, ok := s.StatusOf(typo); !ok || ps.Published || ps.Streams != 1 {
		t.Errorf("status %+v, want connected and not published", ps)
	}

	// A second stream of the node, of another flavour, is not logged
	// again. Its second request is handled after its first, whose hook has
	// then run.
	c2 := streamAs(t, conn, nodeAs(t, typo, "gRPC Go", ""))
	c2.subscribe(resource.ListenerType)
	waitStatus(t, s, typo, func(ps ProxyStatus) bool { return typeStatus(ps, resource.ListenerType).Subscribed })
	// The streams of a published node are not logged at all.
	w := streamAs(t, conn, nodeAs(t, web, "envoy", ""))
	w.ack(w.recv())
	if n := len(logs.lines(slog.LevelWarn, undeclaredMsg)); n != 1 {
		t.Fatalf("%d lines, want 1", n)
	}

	// Published, then removed while connected: logged again at once.
	publish(t, s, commit2, nil, basicProxy(t, web), basicProxy(t, typo))
	c1.ack(c1.recv())
	publish(t, s, commit3, nil, basicProxy(t, web))
	if l := waitLines(t, logs, undeclaredMsg, 2)[1]; l.attrs["node"] != typo || l.attrs["flavor"] != string(xds.FlavorGRPC) {
		t.Errorf("logged %v, want %s's latest stream, gRPC", l.attrs, typo)
	}

	// Published and removed while gone: logged when it connects again.
	c1.close()
	c2.close()
	waitStatus(t, s, typo, func(ps ProxyStatus) bool { return ps.Streams == 0 })
	publish(t, s, commit4, nil, basicProxy(t, web), basicProxy(t, typo))
	publish(t, s, commit1, nil, basicProxy(t, web))
	if n := len(logs.lines(slog.LevelWarn, undeclaredMsg)); n != 2 {
		t.Fatalf("%d lines after removing a node with no stream, want 2", n)
	}
	streamAs(t, conn, nodeAs(t, typo, "envoy", ""))
	if l := waitLines(t, logs, undeclaredMsg, 3)[2]; l.attrs["node"] != typo || l.attrs["flavor"] != "envoy" {
		t.Errorf("logged %v", l.attrs)
	}
	for _, l := range logs.lines(slog.LevelWarn, undeclaredMsg) {
		if l.attrs["node"] == web {
			t.Errorf("published node logged: %v", l.attrs)
		}
	}
}
