package plane

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/proto"

	"github.com/gitmesh/gitmesh/schema"
	"github.com/gitmesh/gitmesh/xds"
	"github.com/gitmesh/gitmesh/xds/ads"
	"github.com/gitmesh/gitmesh/xds/adstest"
)

// The proxy these tests follow: commit B (no web-to-backend permission)
// changes its inbound listener only.
const backendNode = "default.backend-01"

// wait bounds every wait in these tests.
const wait = 10 * time.Second

// Policies of the commits: A is the bundled repository, B drops the
// permission of web to backend, C lets any service reach backend. Each
// changes the backends' inbound listener (its RBAC filter).
func policiesA(t *testing.T) *schema.Set { return policies(t, nil) }
func policiesB(t *testing.T) *schema.Set {
	return policies(t, map[string]string{"permissions/web-to-backend.yaml": ""})
}
func policiesC(t *testing.T) *schema.Set {
	return policies(t, map[string]string{"permissions/web-to-backend.yaml": `type: TrafficPermission
mesh: default
name: web-to-backend
sources:
  - match:
      service: '*'
destinations:
  - match:
      service: backend
`})
}

// rollingBack sets RollbackOnNACK.
func rollingBack(on bool) func(*Config) {
	return func(cfg *Config) { cfg.RollbackOnNACK = on }
}

func next[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(wait):
		t.Fatalf("no %s within %v", what, wait)
		var zero T
		return zero
	}
}

// rejectListenersOf NACKs every listener response of the given commits.
func rejectListenersOf(commits ...string) adstest.Options {
	return adstest.Options{Reject: func(resp *discoverygrpc.DiscoveryResponse) error {
		for _, c := range commits {
			if resp.GetTypeUrl() == resource.ListenerType && strings.HasPrefix(resp.GetVersionInfo(), c[:12]) {
				return errors.New("listener rejected: pretend its RBAC filter is unsupported")
			}
		}
		return nil
	}}
}

func (f *fixture) dialWith(t *testing.T, node string, opts adstest.Options) *adstest.Client {
	t.Helper()
	c, err := adstest.Dial(f.conn, node, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// translate translates set from the last translation, as the daemon's
// pipeline does from the commit served.
func (f *fixture) translate(t *testing.T, set *schema.Set) *xds.Translation {
	t.Helper()
	var prev *schema.Set
	if f.last != nil {
		prev = f.last.Set()
	}
	tr, _, failures, err := f.builder.Build(context.Background(), set, schema.DiffSets(prev, set), f.last)
	if err != nil || len(failures) > 0 {
		t.Fatalf("translate: %v %v", failures, err)
	}
	f.last = tr
	return tr
}

// apply translates set and applies it as commit.
func (f *fixture) apply(t *testing.T, commit string, set *schema.Set) Result {
	t.Helper()
	res, err := f.plane.Apply(context.Background(), commit, f.translate(t, set))
	if err != nil {
		t.Fatalf("apply %.4s: %v", commit, err)
	}
	return res
}

// translation is the proxy the plane serves node at the served commit.
func (f *fixture) translation(node string) *xds.Proxy {
	f.plane.mu.Lock()
	defer f.plane.mu.Unlock()
	return f.plane.proxies[node]
}

// waitStatus polls the server's status of node until cond holds.
func (f *fixture) waitStatus(t *testing.T, node string, cond func(ads.ProxyStatus) bool) ads.ProxyStatus {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		st, _ := f.server.StatusOf(node)
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("status of %s did not reach the expected state: %+v", node, st)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitConvergence polls Plane.Convergence until it equals want.
func (f *fixture) waitConvergence(t *testing.T, want Convergence) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		c := f.plane.Convergence()
		if c == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("convergence %+v, want %+v", c, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func publishedVersions(st ads.ProxyStatus) map[string]string {
	out := map[string]string{}
	for _, ts := range st.Types {
		if ts.Published != "" {
			out[ts.TypeURL] = ts.Published
		}
	}
	return out
}

func listenerVersion(commit string, p *xds.Proxy) string {
	return commit[:12] + "-" + p.TypeHashes[resource.ListenerType][:12]
}

// holds reports whether c's accepted resources are p's, type by type
// (in any order: a response lists them in no particular one).
func holds(t *testing.T, c *adstest.Client, p *xds.Proxy) bool {
	t.Helper()
	for typ, want := range p.Resources {
		got := c.Resources(typ)
		if len(got) != len(want) {
			return false
		}
		byName := make(map[string]types.Resource, len(want))
		for _, r := range want {
			byName[cachev3.GetResourceName(r)] = r
		}
		for _, a := range got {
			m, err := a.UnmarshalNew()
			if err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(m, byName[cachev3.GetResourceName(m)]) {
				return false
			}
		}
	}
	return true
}

// acceptA serves commit A to a client of backendNode that ACKs it whole.
func acceptA(t *testing.T, f *fixture, opts adstest.Options) (*adstest.Client, ads.ProxyStatus) {
	t.Helper()
	f.apply(t, commitA, policiesA(t))
	c := f.dialWith(t, backendNode, opts)
	f.waitCommit(t, c, commitA)
	st := f.waitStatus(t, backendNode, ads.ProxyStatus.InSync)
	return c, st
}

func TestNACKRollsTheProxyBack(t *testing.T) {
	t.Parallel()
	f := newFixtureWith(t, rollingBack(true))
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	c, stA := acceptA(t, f, rejectListenersOf(commitB))
	pxA := f.translation(backendNode)
	if lc := next(t, f.converged, "convergence of A"); lc.Commit != commitA || !lc.Done {
		t.Errorf("converged %+v, want commit A done", lc)
	}

	f.apply(t, commitB, policiesB(t))
	pxB := f.translation(backendNode)
	r := next(t, f.nacks, "rejection")
	want := Rejection{Commit: commitB, Node: backendNode, Type: resource.ListenerType,
		Version: listenerVersion(commitB, pxB), Error: "listener rejected: pretend its RBAC filter is unsupported",
		RevertedTo: commitA}
	if r.At.IsZero() {
		t.Error("rejection without a time")
	}
	r.At = time.Time{}
	if r != want {
		t.Fatalf("rejection\n%+v, want\n%+v", r, want)
	}

	// The proxy is sent commit A's listener again and ACKs it: it is in
	// sync with A's translation at A's versions.
	versionA := publishedVersions(stA)[resource.ListenerType]
	st := f.waitStatus(t, backendNode, func(st ads.ProxyStatus) bool {
		ls := typeStatusOf(st, resource.ListenerType)
		return ls.Sent == versionA && ls.LastNACK != nil && ls.AckedAt.After(ls.LastNACK.At) && st.InSync()
	})
	if got, want := publishedVersions(st), publishedVersions(stA); !maps.Equal(got, want) {
		t.Errorf("served versions after the rollback\n%v, want commit A's\n%v", got, want)
	}
	if st.Commit != commitA || st.Hash != pxA.Hash {
		t.Errorf("status commit %.4s, want A", st.Commit)
	}
	if err := c.Wait(ctx, func(c *adstest.Client) bool { return c.Version(resource.ListenerType) == versionA }); err != nil || !holds(t, c, pxA) {
		t.Fatalf("client does not hold commit A's translation: %v", err)
	}
	if c.NACKs() != 1 {
		t.Errorf("client NACKed %d times, want once", c.NACKs())
	}
	f.waitConvergence(t, Convergence{Proxies: 4, Connected: 1, Reverted: 1})
	if lc := f.plane.LastConvergence(); lc.Commit != commitB || lc.Done || lc.Reverted != 1 {
		t.Errorf("last convergence %+v, want commit B not done, one proxy reverted", lc)
	}

	// Renewing certificates keeps it on A: nothing is pushed to it.
	res, err := f.plane.Renew(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(res.Unchanged, backendNode) {
		t.Errorf("renew changed %v, want %s unchanged", res.Changed, backendNode)
	}
	if st, _ := f.server.StatusOf(backendNode); !maps.Equal(publishedVersions(st), publishedVersions(stA)) ||
		typeStatusOf(st, resource.ListenerType).Sent != versionA {
		t.Errorf("after renew, served %v, want commit A's %v", publishedVersions(st), publishedVersions(stA))
	}

	// The next commit reaches it, and it accepts it.
	setC := policiesC(t)
	if res := f.apply(t, commitC, setC); !slices.Contains(res.Changed, backendNode) {
		t.Fatalf("commit C changed %v, want %s among them", res.Changed, backendNode)
	}
	f.waitCommit(t, c, commitC)
	if !holds(t, c, f.translation(backendNode)) {
		t.Error("client does not hold commit C's translation")
	}
	if lc := next(t, f.converged, "convergence of C"); lc.Commit != commitC || !lc.Done {
		t.Errorf("converged %+v, want commit C", lc)
	}
	f.waitConvergence(t, Convergence{Proxies: 4, Connected: 1, Acked: 1})
	f.plane.mu.Lock()
	accepted := f.plane.accepted[backendNode]
	f.plane.mu.Unlock()
	if accepted.commit != commitC {
		t.Errorf("accepted commit %.4s, want C", accepted.commit)
	}
	select {
	case r := <-f.nacks:
		t.Errorf("unexpected rejection %+v", r)
	default:
	}
}

func TestNACKWithoutRollback(t *testing.T) {
	t.Parallel()
	f := newFixtureWith(t, rollingBack(false))
	c, stA := acceptA(t, f, rejectListenersOf(commitB))

	f.apply(t, commitB, policiesB(t))
	pxB := f.translation(backendNode)
	r := next(t, f.nacks, "rejection")
	if r.Commit != commitB || r.Node != backendNode || r.Type != resource.ListenerType ||
		r.Version != listenerVersion(commitB, pxB) || r.RevertedTo != "" || r.RevertError != "" {
		t.Fatalf("rejection %+v, want commit B's listener and no rollback", r)
	}
	// It stays on its NACK: served B, running A's listener.
	st, _ := f.server.StatusOf(backendNode)
	ls := typeStatusOf(st, resource.ListenerType)
	if ls.Published != r.Version || ls.LastNACK == nil || ls.LastNACK.Version != r.Version ||
		ls.Acked != publishedVersions(stA)[resource.ListenerType] || st.Hash != pxB.Hash {
		t.Errorf("listener status %+v, want B served and NACKed, A ACKed", ls)
	}
	if v := c.Version(resource.ListenerType); v != ls.Acked {
		t.Errorf("client runs listener %q, want %q", v, ls.Acked)
	}
	f.waitConvergence(t, Convergence{Proxies: 4, Connected: 1, Nacked: 1})
}

func TestNACKOfAProxyThatNeverAcceptedACommit(t *testing.T) {
	t.Parallel()
	f := newFixtureWith(t, rollingBack(true))
	f.apply(t, commitA, policiesA(t))
	f.dialWith(t, backendNode, rejectListenersOf(commitA))
	r := next(t, f.nacks, "rejection")
	if r.Commit != commitA || r.Node != backendNode || r.Type != resource.ListenerType || r.RevertedTo != "" || r.RevertError != "" {
		t.Fatalf("rejection %+v, want commit A's listener and no rollback", r)
	}
	if st, _ := f.server.StatusOf(backendNode); st.Commit != commitA {
		t.Errorf("served commit %.4s, want A", st.Commit)
	}
}

func TestStaleNACKIsSkipped(t *testing.T) {
	t.Parallel()
	f := newFixtureWith(t, rollingBack(true))
	// The client holds back its NACK of commit B's listener until commit C
	// is published.
	gotB, release := make(chan struct{}), make(chan struct{})
	opts := adstest.Options{Reject: func(resp *discoverygrpc.DiscoveryResponse) error {
		if resp.GetTypeUrl() == resource.ListenerType && strings.HasPrefix(resp.GetVersionInfo(), commitB[:12]) {
			close(gotB)
			<-release
			return errors.New("too late")
		}
		return nil
	}}
	c, _ := acceptA(t, f, opts)
	if lc := next(t, f.converged, "convergence of A"); lc.Commit != commitA {
		t.Fatalf("converged %+v, want commit A", lc)
	}
	f.apply(t, commitB, policiesB(t))
	next(t, gotB, "listener of commit B")
	f.apply(t, commitC, policiesC(t))
	close(release)

	// The NACK of B reaches the server before the ACKs of C, and Run
	// handles events in order: once C has converged, the NACK was seen.
	f.waitCommit(t, c, commitC)
	if lc := next(t, f.converged, "convergence"); lc.Commit != commitC || !lc.Done {
		t.Fatalf("converged %+v, want commit C (B never converges)", lc)
	}
	if n := testutil.ToFloat64(f.plane.cfg.Metrics.nacks.WithLabelValues("Listener")); n != 1 {
		t.Errorf("listener NACKs counted %v, want 1", n)
	}
	select {
	case r := <-f.nacks:
		t.Errorf("stale NACK reported: %+v", r)
	default:
	}
	if st, _ := f.server.StatusOf(backendNode); st.Commit != commitC {
		t.Errorf("served commit %.4s after a stale NACK, want C", st.Commit)
	}
}

func TestRollbackAtMostOncePerCommit(t *testing.T) {
	t.Parallel()
	f := newFixtureWith(t, rollingBack(true))
	// Once it has seen commit B the client rejects every listener, commit
	// A's included.
	sawB := false
	opts := adstest.Options{Reject: func(resp *discoverygrpc.DiscoveryResponse) error {
		if resp.GetTypeUrl() != resource.ListenerType {
			return nil
		}
		sawB = sawB || strings.HasPrefix(resp.GetVersionInfo(), commitB[:12])
		if sawB {
			return errors.New("no listener is good")
		}
		return nil
	}}
	c, stA := acceptA(t, f, opts)
	f.apply(t, commitB, policiesB(t))
	if r := next(t, f.nacks, "rejection of B"); r.Commit != commitB || r.RevertedTo != commitA {
		t.Fatalf("rejection %+v, want B's, reverted to A", r)
	}
	// Commit A's listener, sent again, is rejected too: the proxy stays
	// there, with no further rollback.
	if r := next(t, f.nacks, "rejection of A"); r.Commit != commitA || r.RevertedTo != "" ||
		r.Version != publishedVersions(stA)[resource.ListenerType] {
		t.Fatalf("rejection %+v, want A's listener, no rollback", r)
	}
	if n := c.NACKs(); n != 2 {
		t.Errorf("client NACKed %d times, want 2", n)
	}
	f.waitConvergence(t, Convergence{Proxies: 4, Connected: 1, Reverted: 1})

	// A new commit is published to it, and it may be rolled back once more.
	f.apply(t, commitC, policiesC(t))
	if r := next(t, f.nacks, "rejection of C"); r.Commit != commitC || r.RevertedTo != commitA {
		t.Fatalf("rejection %+v, want C's, reverted to A", r)
	}
	if r := next(t, f.nacks, "rejection of A again"); r.Commit != commitA || r.RevertedTo != "" {
		t.Fatalf("rejection %+v, want A's, no rollback", r)
	}
}

func TestConvergedOncePerPublish(t *testing.T) {
	t.Parallel()
	f := newFixtureWith(t, rollingBack(false))
	// Commit A reaches no connected proxy: it converges at once.
	c, _ := acceptA(t, f, adstest.Options{})
	f.waitCommit(t, f.dialWith(t, "default.web-01", adstest.Options{}), commitA)
	if lc := next(t, f.converged, "convergence of A"); lc != (Converged{Commit: commitA, Done: true}) {
		t.Fatalf("converged %+v, want commit A at once", lc)
	}

	// A renewal that changes nothing is no new convergence.
	if _, err := f.plane.Renew(context.Background()); err != nil {
		t.Fatal(err)
	}
	f.apply(t, commitB, policiesB(t))
	f.waitCommit(t, c, commitB)
	if lc := next(t, f.converged, "convergence of B"); lc.Commit != commitB || !lc.Done || lc.Proxies != 1 {
		t.Fatalf("converged %+v, want commit B with its one connected proxy", lc)
	}

	// Commit C changes redis alone, which is not connected.
	setC := policies(t, map[string]string{"permissions/web-to-backend.yaml": "", "permissions/backend-to-redis.yaml": `type: TrafficPermission
mesh: default
name: backend-to-redis
sources:
  - match:
      service: '*'
destinations:
  - match:
      service: redis
`})
	// redis-01 never connected: it is served nothing, so C pushes nothing.
	if res := f.apply(t, commitC, setC); len(res.Changed) != 0 || !slices.Equal(res.Unchanged, []string{"default.backend-01", "default.web-01"}) {
		t.Fatalf("commit C changed %v, unchanged %v; want no change to the connected backend-01 and web-01", res.Changed, res.Unchanged)
	}
	if lc := next(t, f.converged, "convergence of C"); lc != (Converged{Commit: commitC, Done: true}) {
		t.Fatalf("converged %+v, want commit C at once", lc)
	}
	// Only B waited for a proxy.
	if n := histogramCount(t, f, "gitmesh_convergence_seconds"); n != 1 {
		t.Errorf("convergence observed %d times, want once", n)
	}
}

// histogramCount is the sample count of a histogram of f's registry.
func histogramCount(t *testing.T, f *fixture, name string) uint64 {
	t.Helper()
	mfs, err := f.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetHistogram().GetSampleCount()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

func typeStatusOf(st ads.ProxyStatus, typeURL string) ads.TypeStatus {
	for _, ts := range st.Types {
		if ts.TypeURL == typeURL {
			return ts
		}
	}
	return ads.TypeStatus{TypeURL: typeURL}
}
