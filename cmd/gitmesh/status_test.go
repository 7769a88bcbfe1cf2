package main

import (
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gitmesh/gitmesh/reconcile"
	"github.com/gitmesh/gitmesh/xds/plane"
)

// statusServer serves st at GET /status as the daemon does, and answers
// anything else with 404.
func statusServer(t *testing.T, st reconcile.Status) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || r.URL.Path != "/status" {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"error":"no such endpoint"}`))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(st)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func cannedStatus(now time.Time) reconcile.Status {
	head := reconcile.CommitInfo{Hash: "9b1d4e7a2c5f8b0d3e6a9c2f5b8e1d4a7c0f3b6e", Subject: "Open redis to everyone"}
	pub := reconcile.CommitInfo{Hash: "3f2a9c1e5b7d4a6f8e0c2b4d6f8a0c2e4b6d8f0a", Subject: "Let web reach backend"}
	return reconcile.Status{
		Repo: "https://git.example.com/platform/mesh-policy.git", Branch: "main", Path: "policies",
		Head: &head, HeadVerdict: reconcile.VerdictInvalid,
		Published: &pub, PublishedAt: now.Add(-(2*time.Hour + 15*time.Minute + 20*time.Second)),
		Pinned:    true,
		LastError: "commit 9b1d4e7a2c5f has 1 error", LastSync: now.Add(-(42*time.Second + 200*time.Millisecond)),
		LastGoodSync: now.Add(-(2*time.Hour + 15*time.Minute + 20*time.Second)),
		Ready:        true,
		Convergence:  plane.Convergence{Proxies: 4, Connected: 3, Acked: 2, Nacked: 1},
	}
}

func TestStatusText(t *testing.T) {
	addr := statusServer(t, cannedStatus(time.Now()))
	code, out, errOut := gitmesh(t, "status", "--api-address", addr)
	if code != exitOK {
		t.Fatalf("exit %d, stderr %s", code, errOut)
	}
	for _, want := range []string{
		"Following       branch main of https://git.example.com/platform/mesh-policy.git, path policies\n",
		"Head            9b1d4e7a2c5f  Open redis to everyone [invalid]\n",
		"Published       3f2a9c1e5b7d  Let web reach backend, published 2h15m ago\n",
		"Pinned          yes: new commits are checked but not published until `gitmesh resume`\n",
		"Last error      commit 9b1d4e7a2c5f has 1 error\n",
		"Proxies         2/4 proxies ACKed (1 NACKed), 3 connected\n",
		"Last sync       42s ago (",
		"Last good sync  2h15m ago (",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestStatusNotReady(t *testing.T) {
	addr := statusServer(t, reconcile.Status{Repo: "https://git.example.com/x.git", Branch: "main"})
	code, out, errOut := gitmesh(t, "status", "--api-address", "http://"+addr+"/")
	if code != exitOK {
		t.Fatalf("exit %d, stderr %s", code, errOut)
	}
	for _, want := range []string{"Head            no commit seen yet", "Published       nothing served yet (not ready)",
		"Pinned          no", "Last error      none", "Proxies         0/0 proxies ACKed (0 NACKed)", "Last good sync  never"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestStatusJSON(t *testing.T) {
	want := cannedStatus(time.Now().Truncate(time.Second))
	addr := statusServer(t, want)
	code, out, errOut := gitmesh(t, "status", "--api-address", addr, "--format", "json")
	if code != exitOK {
		t.Fatalf("exit %d, stderr %s", code, errOut)
	}
	var got reconcile.Status
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, out)
	}
	if got.Head.Hash != want.Head.Hash || got.Convergence != want.Convergence || !got.LastGoodSync.Equal(want.LastGoodSync) || !got.Pinned {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
}

// The address can come from the environment, as every flag's can.
func TestStatusAddressFromEnv(t *testing.T) {
	t.Setenv("GITMESH_API_ADDRESS", statusServer(t, cannedStatus(time.Now())))
	code, out, errOut := gitmesh(t, "status")
	if code != exitOK || !strings.Contains(out, "branch main of") {
		t.Fatalf("exit %d, stdout %s, stderr %s", code, out, errOut)
	}
}

func TestStatusUnreachable(t *testing.T) {
	// A port that was just free: nothing listens there.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()

	code, out, errOut := gitmesh(t, "status", "--api-address", addr)
	if code != exitUsage {
		t.Fatalf("exit %d, want %d", code, exitUsage)
	}
	if out != "" {
		t.Errorf("stdout %q, want nothing", out)
	}
	for _, want := range []string{"cannot reach the gitmesh daemon at http://" + addr + "/status", "connection refused", "--api-address"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut)
		}
	}
}

func TestStatusBadAnswers(t *testing.T) {
	for name, tc := range map[string]struct {
		handler http.HandlerFunc
		want    string
	}{
		"server error": {func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = w.Write([]byte(`{"error":"backend broke"}`))
		}, "500 Internal Server Error: backend broke"},
		"not gitmesh": {func(w http.ResponseWriter, _ *http.Request) {
			_, _ = w.Write([]byte("<html>hello</html>"))
		}, "is not what gitmesh answers"},
	} {
		t.Run(name, func(t *testing.T) {
			srv := httptest.NewServer(tc.handler)
			defer srv.Close()
			code, _, errOut := gitmesh(t, "status", "--api-address", srv.URL)
			if code != exitUsage || !strings.Contains(errOut, tc.want) {
				t.Errorf("exit %d, stderr %q; want %d and %q", code, errOut, exitUsage, tc.want)
			}
		})
	}
}

func TestStatusUsage(t *testing.T) {
	for _, args := range [][]string{
		{"status", "--format", "yaml"},
		{"status", "--api-address", "ftp://x:1"},
		{"status", "extra"},
	} {
		if code, _, _ := gitmesh(t, args...); code != exitUsage {
			t.Errorf("%v: exit %d, want %d", args, code, exitUsage)
		}
	}
}

func TestAge(t *testing.T) {
	now := time.Date(2026, 3, 14, 12, 0, 0, 0, time.UTC)
	for d, want := range map[time.Duration]string{
		200 * time.Millisecond:                "just now",
		-300 * time.Millisecond:               "just now",
		-time.Minute:                          "in the future (clocks differ)",
		59 * time.Second:                      "59s ago",
		59*time.Second + 600*time.Millisecond: "1m00s ago",
		3*time.Minute + 7*time.Second:         "3m07s ago",
		2*time.Hour + 5*time.Minute:           "2h05m ago",
		47 * time.Hour:                        "47h00m ago",
		72 * time.Hour:                        "3d ago",
	} {
		if got := age(now, now.Add(-d)); got != want {
			t.Errorf("age of %v = %q, want %q", d, got, want)
		}
	}
}

func TestStatusReplicas(t *testing.T) {
	now := time.Now()
	st := cannedStatus(now)
	pub, other := *st.Published, reconcile.CommitInfo{Hash: "aaaabbbbccccddddeeeeffff0000111122223333"}
	no := false
	st.Replica, st.Decider, st.ReplicasAgree = "cp-2", "cp-1", &no
	st.Replicas = []reconcile.ReplicaStatus{
		{ID: "cp-1", Address: "10.0.0.1:5681", Decides: true, Published: &pub, Proxies: 4, Connected: 2, HeartbeatAt: now.Add(-time.Second)},
		{ID: "cp-2", Address: "10.0.0.2:5681", Published: &other, Pinned: true, Proxies: 4, Connected: 1, HeartbeatAt: now, Self: true},
	}
	code, out, errOut := gitmesh(t, "status", "--api-address", statusServer(t, st))
	if code != exitOK {
		t.Fatalf("exit %d, stderr %s", code, errOut)
	}
	for _, want := range []string{
		"Replicas        2 on the store, cp-1 decides, they DISAGREE on the published commit; this is cp-2\n",
		"                cp-1  decides  serves 3f2a9c1e5b7d, 4 proxies (2 connected), at 10.0.0.1:5681, heard 1s ago\n",
		"                cp-2  follows  serves aaaabbbbcccc (pinned), 4 proxies (1 connected), at 10.0.0.2:5681, heard just now\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	// One replica on a state directory says nothing of replicas.
	_, out, _ = gitmesh(t, "status", "--api-address", statusServer(t, cannedStatus(now)))
	if strings.Contains(out, "Replicas") {
		t.Errorf("a single replica's status lists replicas:\n%s", out)
	}
}
