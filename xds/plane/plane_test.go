package plane

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/gitmesh/gitmesh/schema"
	"github.com/gitmesh/gitmesh/schema/schematest"
	"github.com/gitmesh/gitmesh/xds"
	"github.com/gitmesh/gitmesh/xds/ads"
	"github.com/gitmesh/gitmesh/xds/adstest"
	"github.com/gitmesh/gitmesh/xds/ca"
)

const (
	commitA = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	commitB = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	commitC = "cccccccccccccccccccccccccccccccccccccccc"
)

// policies loads the bundled policy repository with some files replaced
// ("" removes one).
func policies(t *testing.T, edits map[string]string) *schema.Set {
	t.Helper()
	return schematest.Load(t, schematest.Dir(t, "../../policies", edits))
}

type fixture struct {
	plane  *Plane
	server *ads.Server
	conn   *grpc.ClientConn
	reg    *prometheus.Registry
	addr   string // of the xDS server

	// builder translates the commits the tests apply, each from the one
	// before (last), as the daemon's pipeline does.
	builder *xds.Builder
	last    *xds.Translation
	// nacks and converged collect the plane's Feedback.
	nacks     chan Rejection
	converged chan Converged
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	return newFixtureWith(t, nil)
}

// newFixtureWith is newFixture with the Plane's Config adjusted by edit
// (when not nil).
func newFixtureWith(t *testing.T, edit func(*Config)) *fixture {
	t.Helper()
	f, run := newIdleFixture(t, edit)
	run()
	return f
}

// newIdleFixture is newFixtureWith, but the Plane's Run starts only when
// run is called (once).
func newIdleFixture(t *testing.T, edit func(*Config)) (f *fixture, run func()) {
	t.Helper()
	server, addr := adstest.Serve(t, ads.Config{})
	ctx, cancel := context.WithCancel(context.Background())
	reg := prometheus.NewRegistry()
	cfg := Config{Server: server, Authority: &ca.Authority{StateDir: t.TempDir()}, Metrics: NewMetrics(reg, server)}
	if edit != nil {
		edit(&cfg)
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ran := make(chan struct{})
	start := func() { go func() { p.Run(ctx); close(ran) }() }
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	started := false
	t.Cleanup(func() {
		conn.Close()
		cancel()
		if started {
			<-ran
		}
	})
	f = &fixture{plane: p, server: server, conn: conn, reg: reg, addr: addr, builder: xds.NewBuilder(xds.BuilderOptions{}),
		nacks: make(chan Rejection, 64), converged: make(chan Converged, 64)}
	go func() {
		for {
			select {
			case fb := <-p.Feedback():
				if fb.Rejection != nil {
					f.nacks <- *fb.Rejection
				}
				if fb.Converged != nil {
					f.converged <- *fb.Converged
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	return f, func() { started = true; start() }
}

func (f *fixture) dial(t *testing.T, node string) *adstest.Client {
	t.Helper()
	c, err := adstest.Dial(f.conn, node, adstest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// waitCommit waits until c holds what f's server published for it at
// commit.
func (f *fixture) waitCommit(t *testing.T, c *adstest.Client, commit string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.WaitPublished(ctx, f.server, commit); err != nil {
		t.Fatal(err)
	}
}

func TestApplyPushesOnlyChangedProxies(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	// Proxies are served to the nodes that connect: before any does,
	// applying a commit pushes nothing; each node is served the applied
	// commit as it connects.
	res := f.apply(t, commitA, policiesA(t))
	if len(res.Changed) != 0 {
		t.Fatalf("first apply: changed %v, want none (no node connected)", res.Changed)
	}
	web, backend := f.dial(t, "default.web-01"), f.dial(t, "default.backend-01")
	f.waitCommit(t, web, commitA)
	f.waitCommit(t, backend, commitA)
	secretsCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := web.Wait(secretsCtx, func(c *adstest.Client) bool { return len(c.Resources(resource.SecretType)) == 2 }); err != nil {
		t.Errorf("web-01 never got its identity and the mesh CA: %v", err)
	}

	// Dropping web→backend reaches the backends only, of which one is
	// connected (backend-02 never was: it is served nothing).
	res = f.apply(t, commitB, policiesB(t))
	if got := strings.Join(res.Changed, " "); got != "default.backend-01" {
		t.Errorf("changed = %s, want backend-01", got)
	}
	if got := strings.Join(res.Unchanged, " "); got != "default.web-01" {
		t.Errorf("unchanged = %s, want web-01", got)
	}
	f.waitCommit(t, backend, commitB)
	if v := web.Version(resource.ListenerType); !strings.HasPrefix(v, commitA[:12]) {
		t.Errorf("web-01 listener version %q, want it kept at commit A", v)
	}

	// Convergence: both connected proxies hold what is served.
	deadline := time.Now().Add(10 * time.Second)
	for {
		c := f.plane.Convergence()
		if c.Proxies == 4 && c.Connected == 2 && c.Acked == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("convergence %+v, want 4 proxies, 2 connected and ACKed", c)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for time.Now().Before(deadline) && !f.plane.LastConvergence().Done {
		time.Sleep(10 * time.Millisecond)
	}
	if lc := f.plane.LastConvergence(); !lc.Done || lc.Commit != commitB || lc.Proxies != 1 {
		t.Errorf("last convergence %+v, want commit B done for its one connected changed proxy", lc)
	}
	if n := testutil.CollectAndCount(f.reg, "gitmesh_convergence_seconds"); n != 1 {
		t.Errorf("convergence histogram series = %d", n)
	}
	if v := testutil.ToFloat64(f.plane.cfg.Metrics.acks.WithLabelValues("Cluster")); v < 2 {
		t.Errorf("cluster ACKs counted = %v, want at least 2", v)
	}

	// Removing a dataplane drops it and reaches its consumers; served
	// nothing, redis-01 has nothing to remove.
	setC := policies(t, map[string]string{"permissions/web-to-backend.yaml": "", "dataplanes/redis.yaml": ""})
	res = f.apply(t, commitC, setC)
	if len(res.Removed) != 0 {
		t.Errorf("removed = %v, want none (redis-01 was never served)", res.Removed)
	}
	if got := strings.Join(res.Changed, " "); got != "default.backend-01" {
		t.Errorf("changed = %s, want backend-01 (a consumer of redis)", got)
	}
	// Only the backends' endpoints changed, so only they are sent again:
	// each type is versioned by its own hash.
	f.waitCommit(t, backend, commitC)
	if v := backend.Version(resource.EndpointType); !strings.HasPrefix(v, commitC[:12]+"-") {
		t.Errorf("backend-01 endpoints at %q, want commit C", v)
	}
	for typ, at := range map[string]string{resource.ListenerType: commitB, resource.ClusterType: commitA} {
		if v := backend.Version(typ); !strings.HasPrefix(v, at[:12]+"-") {
			t.Errorf("backend-01 %s at %q, want it kept at %.12s, where it last changed", typ, v, at)
		}
	}
	if commit, tr := f.plane.Served(); commit != commitC || tr != f.last || tr.Set() != setC {
		t.Errorf("served %s", commit)
	}
}

func TestApplyFailureKeepsServedState(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.apply(t, commitA, policiesA(t))
	served := f.last
	web := f.dial(t, "default.web-01")
	f.waitCommit(t, web, commitA)

	// A mesh whose provided CA files do not exist cannot issue secrets.
	setB := policies(t, map[string]string{"meshes/default.yaml": `type: Mesh
name: default
mtls:
  enabled: true
  ca:
    provided:
      cert: {file: /nonexistent/ca.crt}
      key: {file: /nonexistent/ca.key}
`})
	if _, err := f.plane.Apply(context.Background(), commitB, f.translate(t, setB)); err == nil {
		t.Fatal("apply with an unreadable CA succeeded")
	}
	if commit, tr := f.plane.Served(); commit != commitA || tr != served {
		t.Errorf("served %s after a failed apply, want commit A", commit)
	}
	if v := web.Version(resource.ListenerType); !strings.HasPrefix(v, commitA[:12]) {
		t.Errorf("web-01 at %q, want commit A", v)
	}
	if st, _ := f.server.StatusOf("default.web-01"); st.Commit != commitA {
		t.Errorf("web-01 published at %.4s, want A", st.Commit)
	}
}

// TestApplyNeedsATranslation: Apply publishes what it is given and refuses
// nothing.
func TestApplyNeedsATranslation(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	if _, err := f.plane.Apply(context.Background(), commitA, nil); err == nil {
		t.Error("Apply without a translation: no error")
	}
	if commit, tr := f.plane.Served(); commit != "" || tr != nil {
		t.Errorf("served %q after a refused Apply", commit)
	}
}
