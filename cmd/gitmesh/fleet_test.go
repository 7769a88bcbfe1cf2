package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"

	"github.com/chromedp/chromedp"

	"github.com/gitmesh/gitmesh/api"
	"github.com/gitmesh/gitmesh/examples/bookinfo/app"
	"github.com/gitmesh/gitmesh/reconcile"
	"github.com/gitmesh/gitmesh/reconcile/gittest"
	"github.com/gitmesh/gitmesh/reconcile/source"
	"github.com/gitmesh/gitmesh/xds/adstest"
)

// fleet is replicas of gitmesh serve, each a process, on one PostgreSQL
// store, following one remote.
type fleet struct {
	pg        *pgStore
	r         *remote
	tokenFile string
	dirs      map[string]string
	procs     map[string]*process
	args      []string
}

func newFleet(t *testing.T, r *remote, ids ...string) *fleet {
	t.Helper()
	return newFleetWith(t, r, nil, ids...)
}

// newFleetWith is newFleet with more flags for every replica.
func newFleetWith(t *testing.T, r *remote, extra []string, ids ...string) *fleet {
	t.Helper()
	f := &fleet{pg: newPGStore(t), r: r, dirs: map[string]string{}, procs: map[string]*process{}}
	// The admin token, as a Secret mounted in every replica would give it.
	f.tokenFile = filepath.Join(t.TempDir(), "admin-token")
	if err := os.WriteFile(f.tokenFile, []byte("fleet-admin-token-for-tests\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f.args = append([]string{"serve", "--repo", r.url, "--path", "policies", "--interval", "300ms",
		"--admin-token-file", f.tokenFile}, append(f.pg.flags(), extra...)...)
	for _, id := range ids {
		f.start(t, id)
	}
	return f
}

func (f *fleet) start(t *testing.T, id string) *process {
	t.Helper()
	if f.dirs[id] == "" {
		f.dirs[id] = t.TempDir()
	}
	p := startProcess(t, append(f.args, "--state-dir", f.dirs[id], "--replica-id", id)...)
	f.procs[id] = p
	return p
}

// cli runs a client command against replica id.
func (f *fleet) cli(t *testing.T, id string, args ...string) (int, string, string) {
	t.Helper()
	return gitmesh(t, append(args, "--api-address", f.procs[id].api, "--token-file", f.tokenFile)...)
}

// waitAll waits until every replica in ids satisfies cond.
func (f *fleet) waitAll(t *testing.T, ids []string, cond func(reconcile.Status) bool) map[string]reconcile.Status {
	t.Helper()
	out := map[string]reconcile.Status{}
	for _, id := range ids {
		out[id] = waitHTTPStatus(t, f.procs[id].api, cond)
	}
	return out
}

func publishedIs(commit string) func(reconcile.Status) bool {
	return func(st reconcile.Status) bool {
		return st.Ready && st.Published != nil && string(st.Published.Hash) == commit
	}
}

// versions are what a proxy holds of each type.
func versions(c *adstest.Client) map[string]string {
	out := map[string]string{}
	for _, typ := range []string{
		"type.googleapis.com/envoy.config.listener.v3.Listener",
		"type.googleapis.com/envoy.config.cluster.v3.Cluster",
		"type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
		"type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
		"type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
	} {
		out[typ[strings.LastIndexByte(typ, '.')+1:]] = c.Version(typ)
	}
	return out
}

// sameVersions fails unless the clients, one per replica, hold the same
// version of every type, secrets included.
func sameVersions(t *testing.T, what string, clients map[string]*adstest.Client) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		var first map[string]string
		same := true
		for _, id := range slices.Sorted(maps.Keys(clients)) {
			v := versions(clients[id])
			if first == nil {
				first = v
			} else if fmt.Sprint(v) != fmt.Sprint(first) {
				same = false
			}
		}
		if same && first["Secret"] != "" {
			return
		}
		if time.Now().After(deadline) {
			for id, c := range clients {
				t.Logf("%s: %v", id, versions(c))
			}
			t.Fatalf("%s: the replicas serve one node different versions", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestFleetOfThreeReplicas runs three replicas of gitmesh serve on one
// real PostgreSQL, with a proxy of the same node on each: they serve the
// same versions of every commit, one decides, a push reaches all, a
// rollback or a resume through a replica that does not decide reaches
// all, the decider killed with SIGKILL right after a push is replaced and
// the push published once, and PostgreSQL stopped and started again
// leaves what is served in place and is caught up with.
func TestFleetOfThreeReplicas(t *testing.T) {
	r := newRemote(t)
	c1 := r.push(t, "Initial policies", policyFiles(t))
	ids := []string{"r1", "r2", "r3"}
	f := newFleet(t, r, ids...)

	sts := f.waitAll(t, ids, func(st reconcile.Status) bool {
		return publishedIs(c1)(st) && st.Decider != "" && len(st.Replicas) == 3 && st.ReplicasAgree != nil && *st.ReplicasAgree
	})
	decider := sts["r1"].Decider
	for id, st := range sts {
		if st.Decider != decider || st.Replica != id {
			t.Fatalf("replica %s: decider %q, replica %q; r1 says %q", id, st.Decider, st.Replica, decider)
		}
		deciders := 0
		for _, rs := range st.Replicas {
			if rs.Decides {
				deciders++
			}
		}
		if deciders > 1 {
			t.Fatalf("replica %s lists %d deciders: %+v", id, deciders, st.Replicas)
		}
	}
	var followers []string
	for _, id := range ids {
		if id != decider {
			followers = append(followers, id)
		}
	}
	t.Logf("%s decides", decider)
	// Every metric carries the replica's id; each replica counts three,
	// and one decides.
	for _, id := range ids {
		leader := "0"
		if id == decider {
			leader = "1"
		}
		deadline := time.Now().Add(15 * time.Second)
		for {
			m := metricsText(t, f.procs[id].api)
			want := []string{
				fmt.Sprintf("gitmesh_replicas{replica=%q} 3\n", id),
				fmt.Sprintf("gitmesh_replica_is_leader{replica=%q} %s\n", id, leader),
				fmt.Sprintf("gitmesh_replicas_disagree{replica=%q} 0\n", id),
				fmt.Sprintf("gitmesh_published_commit_info{commit=%q,replica=%q} 1\n", c1, id),
			}
			missing := slices.DeleteFunc(want, func(w string) bool { return strings.Contains(m, w) })
			if len(missing) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("replica %s's /metrics lacks %q", id, missing)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	// The same node on each replica.
	clients := map[string]*adstest.Client{}
	for _, id := range ids {
		clients[id] = dialAddr(t, f.procs[id].xds, "default.backend-01")
		waitVersionPrefix(t, clients[id], c1)
	}
	sameVersions(t, "the first commit", clients)

	// A push reaches every replica.
	gittest.Git(t, r.work, "rm", "-q", "policies/permissions/web-to-backend.yaml")
	c2 := r.push(t, "Stop web from calling backend", nil)
	for _, id := range ids {
		waitVersionPrefix(t, clients[id], c2)
	}
	sameVersions(t, "a push", clients)

	// A rollback through a replica that does not decide reaches all.
	start := time.Now()
	if code, stdout, stderr := f.cli(t, followers[0], "rollback", c1, "--by", "ada", "--reason", "fleet test"); code != exitOK {
		t.Fatalf("rollback through %s: exit %d\n%s%s", followers[0], code, stdout, stderr)
	}
	for _, id := range ids {
		waitVersionPrefix(t, clients[id], c1)
	}
	t.Logf("a rollback through %s reached the proxies of all three replicas in %s", followers[0], time.Since(start).Round(time.Millisecond))
	sameVersions(t, "the rollback", clients)
	f.waitAll(t, ids, func(st reconcile.Status) bool {
		return st.Pinned && st.Pin != nil && st.Pin.By == "ada" && string(st.Pin.Commit.Hash) == c1
	})
	// Refusals come back from the decider as they are.
	if code, _, stderr := f.cli(t, followers[1], "rollback", strings.Repeat("e", 40)); code == exitOK || !strings.Contains(stderr, "unknown commit") {
		t.Errorf("rollback to an unknown commit through %s: exit %d\n%s", followers[1], code, stderr)
	}
	if code, stdout, stderr := f.cli(t, followers[1], "resume", "--by", "ada"); code != exitOK {
		t.Fatalf("resume through %s: exit %d\n%s%s", followers[1], code, stdout, stderr)
	}
	for _, id := range ids {
		waitVersionPrefix(t, clients[id], c2)
	}
	f.waitAll(t, ids, func(st reconcile.Status) bool { return !st.Pinned && publishedIs(c2)(st) })

	// The decider killed right after a push: another decides, the push
	// is published once.
	gittest.Git(t, r.work, "rm", "-q", "policies/permissions/backend-to-redis.yaml")
	c3 := r.push(t, "Stop backend from calling redis", nil)
	time.Sleep(150 * time.Millisecond) // about when the decider's poll finds it
	f.procs[decider].kill(t)
	killed := time.Now()
	var next string
	for _, id := range followers {
		st := waitHTTPStatus(t, f.procs[id].api, func(st reconcile.Status) bool { return st.Decider != "" && st.Decider != decider })
		if next == "" {
			next = st.Decider
			t.Logf("%s decides %s after %s was killed", next, time.Since(killed).Round(time.Millisecond), decider)
		}
	}
	// (The push changes redis, not the proxies here: their versions stay.)
	f.waitAll(t, followers, publishedIs(c3))
	sameVersions(t, "after the decider was killed", map[string]*adstest.Client{followers[0]: clients[followers[0]], followers[1]: clients[followers[1]]})
	// The killed replica's proxy reconnects to one that lives, naming the
	// versions it holds: they are what that replica serves, and it is
	// pushed nothing.
	moved := resumeOn(t, f.procs[followers[0]], clients[decider])
	noPush(t, "a proxy moved off the killed replica", f.procs[followers[0]], moved)
	sameVersions(t, "a proxy moved off the killed replica", map[string]*adstest.Client{"moved": moved, followers[1]: clients[followers[1]]})

	var list api.HistoryList
	getJSON(t, "http://"+f.procs[next].api+"/history?limit=0", &list)
	hist := list.Items
	seen := map[int64]bool{}
	published := 0
	for _, rec := range hist {
		if seen[rec.ID] {
			t.Errorf("history record %d appears twice", rec.ID)
		}
		seen[rec.ID] = true
		if string(rec.Commit.Hash) == c3 && rec.Verdict == reconcile.VerdictPublished {
			published++
		}
	}
	if published != 1 {
		t.Errorf("the push the killed decider was deciding on is recorded published %d times, want once:\n%+v", published, hist)
	}
	for _, c := range []string{c1, c2} {
		if !slices.ContainsFunc(hist, func(r reconcile.Record) bool { return string(r.Commit.Hash) == c }) {
			t.Errorf("history lost the record of %s", c[:12])
		}
	}

	// PostgreSQL away: what is served stays; rollback is refused; a push
	// waits. PostgreSQL back: the push is published everywhere.
	f.pg.srv.Stop(t)
	if code, _, stderr := f.cli(t, followers[0], "rollback", c1); code == exitOK || !strings.Contains(stderr, "state store is unreachable") {
		t.Errorf("rollback with PostgreSQL stopped: exit %d\n%s", code, stderr)
	}
	const perm = "policies/permissions/web-to-backend.yaml"
	c4 := r.push(t, "Let web call backend again", map[string]string{perm: policyFiles(t)[perm]})
	time.Sleep(time.Second)
	for _, id := range followers {
		if st := waitHTTPStatus(t, f.procs[id].api, func(reconcile.Status) bool { return true }); !publishedIs(c3)(st) {
			t.Errorf("replica %s published %v with the store away", id, st.Published)
		}
	}
	f.pg.srv.Restart(t)
	f.waitAll(t, followers, publishedIs(c4))
	sameVersions(t, "after the store came back", map[string]*adstest.Client{followers[0]: clients[followers[0]], followers[1]: clients[followers[1]]})

	// The killed replica comes back and follows.
	f.start(t, decider)
	f.waitAll(t, ids, func(st reconcile.Status) bool { return publishedIs(c4)(st) && len(st.Replicas) == 3 })
	// It started after the commits its proxies' resources first came
	// with, and serves them under the versions they hold.
	back := resumeOn(t, f.procs[decider], clients[followers[0]])
	noPush(t, "a proxy moved to the replica started again", f.procs[decider], back)
}

// TestFleetMTLSAcrossReplicas runs two real gRPC-Go workloads, each
// configured by another replica: they call each other over mTLS, their
// certificates issued from the one mesh CA the replicas share.
func TestFleetMTLSAcrossReplicas(t *testing.T) {
	dataplanes, files := productpageAndDetails(t)
	r := newRemote(t)
	r.push(t, "productpage and details", files)
	f := newFleet(t, r, "a", "b")
	f.waitAll(t, []string{"a", "b"}, func(st reconcile.Status) bool { return st.Ready && len(st.Replicas) == 2 })

	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	httpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	for _, dp := range dataplanes {
		replica := "a"
		if dp.Service == "details" {
			replica = "b"
		}
		startDataplane(t, ctx, dp, f.procs[replica].xds, httpAddr, true)
	}
	pollPage(t, httpAddr, "productpage (configured by replica a) reaching details (configured by replica b) over mTLS",
		func(p *app.Reply) bool { return p.Calls[0].OK })
}

// resumeOn reconnects the proxy of from to the replica p, naming the
// versions from holds.
func resumeOn(t *testing.T, p *process, from *adstest.Client) *adstest.Client {
	t.Helper()
	return dialAddrWith(t, p.xds, from.Node, adstest.Options{Resume: from})
}

// noPush checks that c, a proxy that reconnected to p naming what it
// holds, is counted in sync by p and was sent nothing.
func noPush(t *testing.T, what string, p *process, c *adstest.Client) {
	t.Helper()
	waitHTTPStatus(t, p.api, func(st reconcile.Status) bool { return st.Convergence.Connected >= 1 })
	time.Sleep(500 * time.Millisecond)
	if n := c.Responses(); n != 0 {
		t.Errorf("%s: pushed %d responses of what it held; versions now %v", what, n, versions(c))
	}
}

// TestConsoleReplicas opens the console of a replica that does not
// decide, in headless Chromium: the overview lists both replicas, which
// one decides, and that they serve the same commit.
func TestConsoleReplicas(t *testing.T) {
	b := newBrowser(t)
	r := newRemote(t)
	c1 := r.push(t, "Initial policies", policyFiles(t))
	f := newFleet(t, r, "cp-1", "cp-2")
	sts := f.waitAll(t, []string{"cp-1", "cp-2"}, func(st reconcile.Status) bool {
		return publishedIs(c1)(st) && st.Decider != "" && len(st.Replicas) == 2 && st.ReplicasAgree != nil && *st.ReplicasAgree
	})
	decider := sts["cp-1"].Decider
	follower := "cp-1"
	if decider == follower {
		follower = "cp-2"
	}
	b.run("open the console", chromedp.Navigate("http://"+f.procs[follower].api+"/ui/"))
	b.until("both replicas", `document.querySelectorAll("#replicas tr").length === 3`)
	b.until("the decider", js(`document.querySelector("#replicas-summary").textContent.includes(%q + " decides")`, decider))
	if got := b.text("#replicas-summary"); !strings.Contains(got, "they serve the same commit") || !strings.Contains(got, "served by "+follower) {
		t.Errorf("replicas summary: %q", got)
	}
	if n := value(b, "deciders", chromedp.Evaluate[int](`document.querySelectorAll("#replicas .chip.decides").length`)); n != 1 {
		t.Errorf("%d replicas shown deciding, want 1", n)
	}
	if got := b.text("#replicas"); !strings.Contains(got, c1[:12]) || !strings.Contains(got, "(this one)") {
		t.Errorf("replicas table: %q", got)
	}
	b.screenshot("replicas")
}

// TestFleetRecordsNACKsOfEveryReplica: a proxy attached to a replica that
// does not decide rejects a commit; the history, which the decider
// writes, marks the commit rejected by it, on every replica.
func TestFleetRecordsNACKsOfEveryReplica(t *testing.T) {
	r := newRemote(t)
	c1 := r.push(t, "Initial policies", policyFiles(t))
	f := newFleet(t, r, "n1", "n2")
	sts := f.waitAll(t, []string{"n1", "n2"}, func(st reconcile.Status) bool {
		return publishedIs(c1)(st) && st.Decider != "" && len(st.Replicas) == 2
	})
	follower := "n1"
	if sts["n1"].Decider == "n1" {
		follower = "n2"
	}
	var reject atomic.Value
	reject.Store("")
	c := dialAddrWith(t, f.procs[follower].xds, "default.backend-01", adstest.Options{Reject: func(resp *discoverygrpc.DiscoveryResponse) error {
		if bad := reject.Load().(string); bad != "" && strings.HasPrefix(resp.VersionInfo, bad) {
			return fmt.Errorf("listener refused by the test")
		}
		return nil
	}})
	waitVersionPrefix(t, c, c1)
	gittest.Git(t, r.work, "rm", "-q", "policies/permissions/web-to-backend.yaml")
	h := gittest.Commit(t, r.work, "Stop web from calling backend", nil)
	reject.Store(h[:12])
	gittest.Push(t, r.work, r.bare)
	for _, id := range []string{"n1", "n2"} {
		deadline := time.Now().Add(20 * time.Second)
		for {
			var list api.HistoryList
			getJSON(t, "http://"+f.procs[id].api+"/history", &list)
			if len(list.Items) > 0 && string(list.Items[0].Commit.Hash) == h && list.Items[0].Verdict == reconcile.VerdictRejected &&
				len(list.Items[0].Rejections) > 0 && list.Items[0].Rejections[0].Node == "default.backend-01" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("replica %s: the commit a proxy of %s rejected is not marked so: %+v", id, follower, list.Items)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// TestFleetSurvivesKilledDeciders pushes valid and invalid commits to
// three replicas and kills the replica that decides with SIGKILL after
// each push, at a random moment of its deciding, then starts it again
// under the same id: no invalid commit is ever published, no valid one is
// recorded published twice, no history record is given twice, and the
// replicas end on the newest valid commit.
func TestFleetSurvivesKilledDeciders(t *testing.T) {
	r := newRemote(t)
	valid := map[string]bool{r.push(t, "Initial policies", policyFiles(t)): true}
	ids := []string{"k1", "k2", "k3"}
	f := newFleetWith(t, r, []string{"--lease-duration", "1s"}, ids...)
	f.waitAll(t, ids, func(st reconcile.Status) bool { return st.Ready && st.Decider != "" })
	const perm = "policies/permissions/web-to-backend.yaml"
	invalid := map[string]bool{}
	var last string
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 6 {
		var h string
		switch round % 3 {
		case 0:
			gittest.Git(t, r.work, "rm", "-q", perm)
			h = r.push(t, fmt.Sprintf("round %d: web may not call backend", round), nil)
			valid[h], last = true, h
		case 1:
			h = r.push(t, fmt.Sprintf("round %d: a typo", round), typoInWeb(t))
			invalid[h] = true
		case 2:
			files := policyFiles(t)
			h = r.push(t, fmt.Sprintf("round %d: web may call backend, typo fixed", round),
				map[string]string{perm: files[perm], "policies/dataplanes/web.yaml": files["policies/dataplanes/web.yaml"]})
			valid[h], last = true, h
		}
		time.Sleep(time.Duration(rng.IntN(400)) * time.Millisecond)
		decider := f.decider(t, ids)
		f.procs[decider].kill(t)
		t.Logf("round %d: pushed %s, killed %s", round, h[:12], decider)
		f.start(t, decider)
	}
	f.waitAll(t, ids, func(st reconcile.Status) bool {
		return publishedIs(last)(st) && st.Head != nil && st.Head.Hash == f.head(t) && st.HeadVerdict == reconcile.VerdictPublished
	})
	var list api.HistoryList
	getJSON(t, "http://"+f.procs[ids[0]].api+"/history?limit=0", &list)
	seen, published := map[int64]bool{}, map[string]int{}
	for _, rec := range list.Items {
		if seen[rec.ID] {
			t.Errorf("history record %d appears twice", rec.ID)
		}
		seen[rec.ID] = true
		h := string(rec.Commit.Hash)
		if rec.Verdict == reconcile.VerdictPublished || rec.Verdict == reconcile.VerdictRejected {
			if invalid[h] {
				t.Errorf("invalid commit %s was published: %+v", h[:12], rec)
			}
			published[h]++
		}
	}
	// A commit the branch moved past before it was decided on is never
	// looked at (as with one replica): each valid one is published at most
	// once, the newest exactly once.
	for h := range valid {
		if n := published[h]; n > 1 || h == last && n != 1 {
			t.Errorf("valid commit %s recorded published %d times", h[:12], n)
		}
	}
}

// head is the hash the remote's branch points at.
func (f *fleet) head(t *testing.T) source.Hash {
	t.Helper()
	return source.Hash(strings.TrimSpace(gittest.Git(t, f.r.work, "rev-parse", "HEAD")))
}

// decider is the replica among ids that decides now, waited for while the
// lease is vacant.
func (f *fleet) decider(t *testing.T, ids []string) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		for _, id := range ids {
			var st reconcile.Status
			getJSON(t, "http://"+f.procs[id].api+"/status", &st)
			if st.Decides {
				return id
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no replica decides")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// metricsText is the /metrics page of the API at addr.
func metricsText(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
