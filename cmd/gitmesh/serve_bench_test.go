package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/gitmesh/gitmesh/api"
	"github.com/gitmesh/gitmesh/internal/logtest"
	"github.com/gitmesh/gitmesh/reconcile/gittest"
	"github.com/gitmesh/gitmesh/xds/ads"
	"github.com/gitmesh/gitmesh/xds/adstest"
)

// Shape of the benchmark mesh: 10,000 dataplanes in one mTLS mesh, of which
// benchClients call the service "backend" (benchBackends instances) and are
// connected; the rest call each other in pairs of services.
const (
	benchDataplanes = 10_000
	benchClients    = 1_000
	benchBackends   = 10
)

// writeBenchMesh writes the benchmark mesh under dir/policies, one file per
// dataplane.
func writeBenchMesh(b *testing.B, dir string) {
	b.Helper()
	p := filepath.Join(dir, "policies")
	for _, sub := range []string{"meshes", "permissions", "dataplanes"} {
		if err := os.MkdirAll(filepath.Join(p, sub), 0o755); err != nil {
			b.Fatal(err)
		}
	}
	write := func(name, content string) {
		if err := os.WriteFile(filepath.Join(p, name), []byte(content), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	write("meshes/default.yaml", "type: Mesh\nname: default\nmtls:\n  enabled: true\n  ca:\n    builtin: {}\n")
	write("permissions/allow-all.yaml", "type: TrafficPermission\nmesh: default\nname: allow-all\n"+
		"sources:\n  - match:\n      service: '*'\ndestinations:\n  - match:\n      service: '*'\n")
	for i := range benchDataplanes {
		var name, service, calls string
		switch {
		case i < benchBackends:
			name, service, calls = fmt.Sprintf("backend-%d", i), "backend", ""
		case i < benchBackends+benchClients:
			name, service, calls = fmt.Sprintf("client-%d", i), fmt.Sprintf("client-%d", i), "backend"
		default:
			name, service, calls = fmt.Sprintf("app-%d", i), fmt.Sprintf("svc-%d", i%500), fmt.Sprintf("svc-%d", (i+1)%500)
		}
		write("dataplanes/"+name+".yaml", benchDataplane(name, service, calls, i, 0))
	}
}

// benchDataplane is one dataplane; gen varies its address.
func benchDataplane(name, service, calls string, i, gen int) string {
	var out string
	if calls != "" {
		out = fmt.Sprintf("  outbound:\n    - port: 20001\n      service: %s\n", calls)
	}
	return fmt.Sprintf("type: Dataplane\nmesh: default\nname: %s\nnetworking:\n  address: 10.%d.%d.%d\n"+
		"  inbound:\n    - port: 10001\n      servicePort: 8080\n      tags:\n        service: %s\n        protocol: http\n%s",
		name, 1+gen%200, i/250, i%250, service, out)
}

// BenchmarkWebhookToACK measures, for a one-file change in a 10,000-dataplane
// repository served by a real git daemon, the time from the webhook to the
// moment all 1,000 connected ADS streams the change reaches hold the new
// version: the change moves one backend instance, so the endpoints of every
// client change. Run it with -benchtime 100x (make bench-serve) for
// meaningful percentiles.
func BenchmarkWebhookToACK(b *testing.B) {
	m := startBenchMesh(b, benchClients)
	app, s, clients := m.app, m.s, m.clients
	logs := m.logs

	// latencies: webhook to every client holding the commit; fanout: the
	// part from the end of publishing to the last ACK, as the daemon sees it.
	latencies := make([]time.Duration, 0, b.N)
	var fanout []time.Duration
	defer profile(b)()
	b.ResetTimer()
	for n := range b.N {
		b.StopTimer()
		head := m.push(b, n+1)
		b.StartTimer()

		start := time.Now()
		if code := s.hook(b, webhookSecret); code != 202 {
			b.Fatalf("webhook answered %d", code)
		}
		if err := waitAll(clients, app.server, head, time.Minute); err != nil {
			b.Fatal(err)
		}
		latencies = append(latencies, time.Since(start))
		b.StopTimer()
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
			if lc := app.plane.LastConvergence(); lc.Commit == head && lc.Done {
				fanout = append(fanout, lc.Duration())
				break
			}
		}
		b.StartTimer()
	}
	b.StopTimer()
	if os.Getenv("GITMESH_BENCH_LOG") != "" {
		b.Log(logs.String())
	}
	b.ReportMetric(percentile(latencies, 0.50), "p50-ms")
	b.ReportMetric(percentile(latencies, 0.99), "p99-ms")
	b.ReportMetric(percentile(latencies, 1), "max-ms")
	b.ReportMetric(percentile(fanout, 0.50), "fanout-p50-ms")
}

// benchMesh is the benchmark mesh in a repository served by a real git
// daemon, followed by gitmesh serve, with benchClients ADS streams that hold
// its head.
type benchMesh struct {
	work, bare string
	stateDir   string
	app        *serveApp
	s          *served
	clients    []*adstest.Client
	logs       *logtest.Buffer
}

func startBenchMesh(b *testing.B, nclients int) *benchMesh {
	return startBenchMeshAt(b, nclients, false)
}

// startBenchMeshAt is startBenchMesh; with local, gitmesh serve follows the
// working repository itself (watching its refs), not a git daemon.
func startBenchMeshAt(b *testing.B, nclients int, local bool) *benchMesh {
	b.Helper()
	bare := gittest.Bare(b)
	url := gittest.Daemon(b, filepath.Dir(bare)) + filepath.Base(bare)
	work := gittest.Init(b)
	writeBenchMesh(b, work)
	gittest.Git(b, work, "add", "-A")
	gittest.Git(b, work, "commit", "-q", "-m", "Benchmark mesh")
	gittest.Push(b, work, bare)
	head := gittest.Git(b, work, "rev-parse", "HEAD")
	if local {
		url = work
	}

	o := serveOptions{repo: url, branch: "main", path: "policies", stateDir: b.TempDir(), interval: time.Hour,
		xdsAddress: "127.0.0.1:0", apiAddress: "127.0.0.1:0", logFormat: "text", logLevel: "warn",
		gitTimeout: 30 * time.Second, certValidity: 24 * time.Hour, limits: limitFlags{maxFileBytes: 8 << 20},
		webhookSecretFile: writeSecret(b, webhookSecret)}
	logs := &logtest.Buffer{}
	if os.Getenv("GITMESH_BENCH_LOG") != "" {
		o.logLevel = "info"
	}
	app, err := newServeApp(o, logs)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- app.Run(ctx) }()
	b.Cleanup(func() { cancel(); <-done })

	clients := make([]*adstest.Client, nclients)
	for i := range clients {
		conn, err := grpc.NewClient(app.xdsLis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			b.Fatal(err)
		}
		c, err := adstest.Dial(conn, fmt.Sprintf("default.client-%d", benchBackends+i), adstest.Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close(); conn.Close() })
		clients[i] = c
	}
	if err := waitAll(clients, app.server, head, 5*time.Minute); err != nil {
		b.Fatal(err)
	}
	return &benchMesh{work: work, bare: bare, stateDir: o.stateDir, app: app, s: &served{app: app}, clients: clients, logs: logs}
}

// push commits a move of backend-0 to generation gen and pushes it.
func (m *benchMesh) push(b *testing.B, gen int) string {
	b.Helper()
	if err := os.WriteFile(filepath.Join(m.work, "policies/dataplanes/backend-0.yaml"),
		[]byte(benchDataplane("backend-0", "backend", "", 0, gen)), 0o644); err != nil {
		b.Fatal(err)
	}
	gittest.Git(b, m.work, "commit", "-q", "-am", fmt.Sprintf("Move backend-0 (%d)", gen))
	gittest.Push(b, m.work, m.bare)
	return gittest.Git(b, m.work, "rev-parse", "HEAD")
}

// BenchmarkLocalCommit measures, on the same mesh and clients with gitmesh
// serve following the working repository itself, the time from a one-file
// `git commit` returning to the commit published (served by the plane), and
// to all 1,000 clients holding it. The daemon learns of the commit from its
// watch on the branch's ref.
func BenchmarkLocalCommit(b *testing.B) {
	m := startBenchMeshAt(b, benchClients, true)
	defer func() {
		if os.Getenv("GITMESH_BENCH_LOG") != "" {
			b.Log(m.logs.String())
		}
	}()
	var published, acked []time.Duration
	defer profile(b)()
	b.ResetTimer()
	for n := range b.N {
		b.StopTimer()
		if err := os.WriteFile(filepath.Join(m.work, "policies/dataplanes/backend-0.yaml"),
			[]byte(benchDataplane("backend-0", "backend", "", 0, n+1)), 0o644); err != nil {
			b.Fatal(err)
		}
		gittest.Git(b, m.work, "add", "-A")
		b.StartTimer()
		// The commit itself (git's own time) is left out: the clock
		// starts as git returns, the ref moved.
		gittest.Git(b, m.work, "commit", "-q", "-m", fmt.Sprintf("Move backend-0 (%d)", n+1))
		start := time.Now()
		head := gittest.Git(b, m.work, "rev-parse", "HEAD")
		for {
			if c, _ := m.app.plane.Served(); c == head {
				break
			}
			if time.Since(start) > time.Minute {
				b.Fatalf("commit %s not published after a minute", head[:12])
			}
			time.Sleep(200 * time.Microsecond)
		}
		published = append(published, time.Since(start))
		if err := waitAll(m.clients, m.app.server, head, time.Minute); err != nil {
			b.Fatal(err)
		}
		acked = append(acked, time.Since(start))
	}
	b.StopTimer()
	b.ReportMetric(percentile(published, 0.50), "published-p50-ms")
	b.ReportMetric(percentile(published, 0.99), "published-p99-ms")
	b.ReportMetric(percentile(published, 1), "published-max-ms")
	b.ReportMetric(percentile(acked, 0.50), "acked-p50-ms")
}

// BenchmarkRollback measures `gitmesh rollback` on the 10,000-dataplane
// mesh: POST /rollback (with the admin token, over real HTTP) until the
// answer says the commit is published and pinned (published-ms), and until
// the 1,000 clients it changes hold it (acked-ms), with and without those
// clients connected. Every rollback moves backend-0, so all 1,000 clients'
// endpoints change. Two cases:
//
//   - previous: back and forth between the head and a commit 20 back that
//     was served just before, the usual incident (the translation of the
//     commit served before is kept);
//   - unserved: each round to another commit that was never served (all
//     translated afresh).
func BenchmarkRollback(b *testing.B) {
	for _, clients := range []int{0, benchClients} {
		for _, mode := range []string{"previous", "unserved"} {
			b.Run(fmt.Sprintf("%s/clients=%d", mode, clients), func(b *testing.B) { benchmarkRollback(b, clients, mode) })
		}
	}
}

// rollbackHistory is how many commits the rollback benchmark makes after
// the first.
const rollbackHistory = 40

func benchmarkRollback(b *testing.B, clients int, mode string) {
	m := startBenchMesh(b, clients)
	var commits []string // newest first
	for gen := rollbackHistory; gen >= 1; gen-- {
		commits = append([]string{m.push(b, gen)}, commits...)
	}
	head := commits[0]
	if code := m.s.hook(b, webhookSecret); code != 202 {
		b.Fatalf("webhook answered %d", code)
	}
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(time.Millisecond) {
		if st := m.app.daemon.Status(); st.Published != nil && string(st.Published.Hash) == head {
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("the head was not published")
		}
	}
	if err := waitAll(m.clients, m.app.server, head, time.Minute); err != nil {
		b.Fatal(err)
	}
	token, err := os.ReadFile(filepath.Join(m.stateDir, adminTokenFileName))
	if err != nil {
		b.Fatal(err)
	}
	c, err := api.NewClient(m.s.api(""), strings.TrimSpace(string(token)), nil)
	if err != nil {
		b.Fatal(err)
	}
	target := func(n int) string {
		if mode == "previous" {
			if n%2 == 1 {
				return head
			}
			return commits[20]
		}
		return commits[1+n%(len(commits)-1)]
	}

	var published, acked []time.Duration
	defer profile(b)()
	b.ResetTimer()
	for n := range b.N {
		commit := target(n)
		start := time.Now()
		if _, _, err := c.Rollback(context.Background(), api.OperationRequest{Commit: commit}); err != nil {
			b.Fatal(err)
		}
		published = append(published, time.Since(start))
		if err := waitAll(m.clients, m.app.server, commit, time.Minute); err != nil {
			b.Fatal(err)
		}
		acked = append(acked, time.Since(start))
	}
	b.StopTimer()
	if os.Getenv("GITMESH_BENCH_LOG") != "" {
		b.Log(m.logs.String())
	}
	b.ReportMetric(percentile(published, 0.50), "published-p50-ms")
	b.ReportMetric(percentile(published, 0.99), "published-p99-ms")
	b.ReportMetric(percentile(acked, 0.50), "acked-p50-ms")
	b.ReportMetric(percentile(acked, 0.99), "acked-p99-ms")
}

// profile writes a CPU profile to the file GITMESH_BENCH_CPUPROFILE names
// until the returned func is called.
func profile(b *testing.B) func() {
	f := os.Getenv("GITMESH_BENCH_CPUPROFILE")
	if f == "" {
		return func() {}
	}
	out, err := os.Create(f)
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(out); err != nil {
		b.Fatal(err)
	}
	return func() { pprof.StopCPUProfile(); out.Close() }
}

// percentile is the p-th percentile of ds in milliseconds, by nearest
// rank: the smallest value that at least a fraction p of ds does not
// exceed (of 100 values, p99 is the 99th, p=1 the largest).
func percentile(ds []time.Duration, p float64) float64 {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	rank := int(math.Ceil(p * float64(len(ds))))
	return float64(ds[min(len(ds), max(rank, 1))-1].Microseconds()) / 1000
}

// waitAll waits until every client holds what server published for it at
// commit.
func waitAll(clients []*adstest.Client, server *ads.Server, commit string, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, len(clients))
	for i, c := range clients {
		wg.Go(func() { errs[i] = c.WaitPublished(ctx, server, commit) })
	}
	wg.Wait()
	return errors.Join(errs...)
}
