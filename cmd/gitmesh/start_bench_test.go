package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/gitmesh/gitmesh/internal/benchtree"
	"github.com/gitmesh/gitmesh/reconcile/gittest"
	"github.com/gitmesh/gitmesh/xds/adstest"
)

// benchRepo is the benchmark tree (internal/benchtree at scale 1: 8,000
// dataplanes, 800 services, 1,999 permissions, mTLS) committed under
// policies/ and served by a real git daemon. It returns the URL and the
// bare repository's directory.
func benchRepo(b *testing.B) (url, bare string) {
	b.Helper()
	bare = gittest.Bare(b)
	url = gittest.Daemon(b, filepath.Dir(bare)) + filepath.Base(bare)
	work := gittest.Init(b)
	if _, err := benchtree.Write(filepath.Join(work, "policies"), benchtree.Scaled(1)); err != nil {
		b.Fatal(err)
	}
	gittest.Git(b, work, "add", "-A")
	gittest.Git(b, work, "commit", "-q", "-m", "Benchmark tree")
	gittest.Push(b, work, bare)
	return url, bare
}

// serveArgs runs gitmesh serve on url with its state in stateDir.
func serveArgs(url, stateDir string) []string {
	return []string{"serve", "--repo", url, "--path", "policies", "--state-dir", stateDir, "--interval", "1h",
		"--log-level", "warn"}
}

// childProfiles passes GITMESH_BENCH_CPUPROFILE on to the gitmesh processes
// a benchmark starts.
func childProfiles(b *testing.B) {
	if p := os.Getenv("GITMESH_BENCH_CPUPROFILE"); p != "" {
		b.Setenv("GITMESH_BENCH_CHILD_CPUPROFILE", p)
	}
}

// waitReady polls the API's /readyz until it answers 200.
func waitReady(b *testing.B, p *process, limit time.Duration) {
	b.Helper()
	client := &http.Client{Timeout: time.Second}
	for deadline := time.Now().Add(limit); ; time.Sleep(2 * time.Millisecond) {
		resp, err := client.Get("http://" + p.api + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			b.Fatalf("/readyz not 200 after %s (last: %v)", limit, err)
		}
	}
}

// procMemory is a process's resident memory now and at its peak, in bytes,
// from /proc.
func procMemory(b *testing.B, pid int) (rss, peak int64) {
	b.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			b.Fatal(err)
		}
		if k == "VmRSS" {
			rss = kb << 10
		} else {
			peak = kb << 10
		}
	}
	return rss, peak
}

// BenchmarkServeStart measures gitmesh serve, a process of its own, on the
// benchmark tree: the time from starting the process to /readyz answering
// 200, and the process's peak RSS by then. first starts with an empty state
// directory (clone, CA, every certificate); restart-git-up starts on the
// state a previous run left; restart-git-down does too with the repository
// gone from the git daemon, so that it serves from local objects.
func BenchmarkServeStart(b *testing.B) {
	childProfiles(b)
	url, bare := benchRepo(b)
	for _, mode := range []string{"first", "restart-git-up", "restart-git-down"} {
		b.Run(mode, func(b *testing.B) {
			stateDir := b.TempDir()
			if mode != "first" {
				p := startProcess(b, serveArgs(url, stateDir)...)
				waitReady(b, p, 5*time.Minute)
				p.stop(b)
			}
			if mode == "restart-git-down" {
				if err := os.Rename(bare, bare+".gone"); err != nil {
					b.Fatal(err)
				}
				defer os.Rename(bare+".gone", bare)
			}
			var total, worst time.Duration
			var peak int64
			for b.Loop() {
				dir := stateDir
				if mode == "first" {
					dir = filepath.Join(b.TempDir(), "state")
				}
				start := time.Now()
				p := startProcess(b, serveArgs(url, dir)...)
				waitReady(b, p, 5*time.Minute)
				d := time.Since(start)
				_, hwm := procMemory(b, p.cmd.Process.Pid)
				p.stop(b)
				total += d
				worst = max(worst, d)
				peak = max(peak, hwm)
			}
			b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ready-ms")
			b.ReportMetric(float64(worst.Milliseconds()), "ready-max-ms")
			b.ReportMetric(float64(peak)/(1<<20), "peak-RSS-MB")
		})
	}
}

// BenchmarkServeStreams measures gitmesh serve, a process, on the benchmark
// tree with 1,000 ADS streams (of dp-0 to dp-999, Envoy and proxyless gRPC
// alternately) opened at once: the time until every stream holds its
// whole configuration, and the process's RSS before and with them.
func BenchmarkServeStreams(b *testing.B) {
	childProfiles(b)
	url, _ := benchRepo(b)
	const streams = 1000
	var total time.Duration
	var base, with, peak int64
	var perStream []float64 // each run's RSS growth per stream, KB
	for b.Loop() {
		p := startProcess(b, serveArgs(url, b.TempDir())...)
		waitReady(b, p, 5*time.Minute)
		rss0, _ := procMemory(b, p.cmd.Process.Pid)
		// One connection per proxy, as proxies connect: the server allows a
		// connection only so many streams.
		conns := make([]*grpc.ClientConn, streams)
		for i := range conns {
			conn, err := grpc.NewClient(p.xds, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				b.Fatal(err)
			}
			conns[i] = conn
		}
		clients := make([]*adstest.Client, streams)
		errs := make([]error, streams)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		start := time.Now()
		var wg sync.WaitGroup
		for i := range clients {
			wg.Go(func() {
				opts := adstest.Options{}
				if i%2 == 1 {
					opts.UserAgent = "gRPC Go"
				}
				c, err := adstest.Dial(conns[i], fmt.Sprintf("default.dp-%d", i), opts)
				if err != nil {
					errs[i] = err
					return
				}
				clients[i] = c
				errs[i] = c.Wait(ctx, holdsConfig)
			})
		}
		wg.Wait()
		d := time.Since(start)
		cancel()
		if err := errors.Join(errs...); err != nil {
			b.Fatal(err)
		}
		time.Sleep(500 * time.Millisecond) // let the streams settle before measuring
		rss1, hwm := procMemory(b, p.cmd.Process.Pid)
		for i, c := range clients {
			c.Close()
			conns[i].Close()
		}
		p.stop(b)
		total += d
		base, with, peak = max(base, rss0), max(with, rss1), max(peak, hwm)
		perStream = append(perStream, float64(rss1-rss0)/streams/1024)
	}
	slices.Sort(perStream)
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "all-hold-ms")
	b.ReportMetric(float64(base)/(1<<20), "RSS-MB-no-streams")
	b.ReportMetric(float64(with)/(1<<20), "RSS-MB-1000-streams")
	b.ReportMetric(perStream[len(perStream)/2], "KB/stream") // the median run's
	b.ReportMetric(float64(peak)/(1<<20), "peak-RSS-MB")
}

// holdsConfig: the client accepted listeners, clusters, endpoints and both
// secrets.
func holdsConfig(c *adstest.Client) bool {
	for _, typ := range []string{resource.ListenerType, resource.ClusterType, resource.EndpointType, resource.SecretType} {
		if c.Version(typ) == "" {
			return false
		}
	}
	return len(c.Resources(resource.SecretType)) == 2
}
