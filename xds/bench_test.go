package xds

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/gitmesh/gitmesh/schema"
)

// Scale of the benchmark mesh.
const (
	benchDataplanes  = 10_000
	benchServices    = 1_000
	benchPermissions = 2_000
)

// benchSet generates, deterministically, one mesh with mTLS where each
// dataplane has one inbound (every other service speaks HTTP) and three
// outbounds, and each service is the destination of two permissions.
func benchSet() *schema.Set {
	set := &schema.Set{Meshes: []*schema.Mesh{{
		Name: "bench",
		MTLS: schema.MTLS{Enabled: true, CA: schema.CA{Kind: schema.CABuiltin}},
	}}}
	svc := func(i int) string { return fmt.Sprintf("svc-%04d", i%benchServices) }
	for i := range benchDataplanes {
		tags := map[string]string{schema.TagService: svc(i), "version": fmt.Sprintf("v%d", i%3)}
		if i%2 == 0 {
			tags[schema.TagProtocol] = schema.ProtocolHTTP
		}
		dp := &schema.Dataplane{
			Mesh:    "bench",
			Name:    fmt.Sprintf("dp-%05d", i),
			Address: fmt.Sprintf("10.%d.%d.%d", i>>16, (i>>8)&255, i&255),
		}
		dp.Inbound = []schema.Inbound{{Address: dp.Address, Port: 10000, ServicePort: 8080, Tags: tags}}
		for j, off := range []int{1, 7, 31} {
			dp.Outbound = append(dp.Outbound, schema.Outbound{
				Address: "127.0.0.1", Port: uint32(20000 + j), Service: svc(i + off),
			})
		}
		set.Dataplanes = append(set.Dataplanes, dp)
	}
	for k := range benchPermissions {
		set.TrafficPermissions = append(set.TrafficPermissions, benchPermission(k, svc(k+1)))
	}
	return set
}

// benchPermission lets source reach the k-th permission's destination
// service; every tenth permission allows any source.
func benchPermission(k int, source string) *schema.TrafficPermission {
	if k%10 == 0 {
		source = "*"
	}
	return &schema.TrafficPermission{
		Mesh: "bench",
		Name: fmt.Sprintf("tp-%04d", k),
		Rules: []schema.PermissionRule{{
			Sources:      []schema.Selector{{schema.TagService: source}},
			Destinations: []schema.Selector{{schema.TagService: fmt.Sprintf("svc-%04d", (k*7)%benchServices)}},
		}},
	}
}

// heapPeak samples runtime.ReadMemStats until stopped and reports the
// largest HeapInuse seen, in MB.
type heapPeak struct {
	stop chan struct{}
	done sync.WaitGroup
	peak uint64
}

func startHeapPeak() *heapPeak {
	h := &heapPeak{stop: make(chan struct{})}
	h.done.Add(1)
	go func() {
		defer h.done.Done()
		var ms runtime.MemStats
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			runtime.ReadMemStats(&ms)
			h.peak = max(h.peak, ms.HeapInuse)
			select {
			case <-h.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return h
}

func (h *heapPeak) report(b *testing.B) {
	close(h.stop)
	h.done.Wait()
	b.ReportMetric(float64(h.peak)/(1<<20), "heap-MB")
}

func BenchmarkTranslateAll(b *testing.B) {
	set := benchSet()
	benchTranslate(b, set)
}

func BenchmarkRetranslateOnePermission(b *testing.B) {
	set := benchSet()
	idx, err := NewIndex(set)
	if err != nil {
		b.Fatal(err)
	}
	const k = 42 // the permission to edit
	var affected int
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		// Alternate the permission's source so that every step changes it.
		next := *set
		next.TrafficPermissions = append([]*schema.TrafficPermission(nil), set.TrafficPermissions...)
		next.TrafficPermissions[k] = benchPermission(k, fmt.Sprintf("svc-%04d", 500+i%2))
		nextIdx, err := idx.WithPermissions(&next)
		if err != nil {
			b.Fatal(err)
		}
		nodes := AffectedBetween(idx, nextIdx, Change{Permissions: []Ref{{"bench", next.TrafficPermissions[k].Name}}})
		for _, node := range nodes {
			dp := next.Dataplane("bench", node[len("bench."):])
			if _, err := TranslateProxy(nextIdx, dp, Options{}); err != nil {
				b.Fatal(err)
			}
		}
		affected = len(nodes)
	}
	b.StopTimer()
	b.ReportMetric(float64(affected), "proxies/op")
}

func BenchmarkNewIndex(b *testing.B) {
	set := benchSet()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := NewIndex(set); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBuild is the translate-and-check stage of the pipeline on the
// benchmark mesh: every dataplane for both flavours, every proxy checked,
// on GOMAXPROCS workers; then, from that Translation, one permission edited.
func BenchmarkBuild(b *testing.B) {
	set := benchSet()
	diff := schema.DiffSets(nil, set)
	// full: a cold gate, a new Builder each time, every proxy kept;
	// full-none-kept: a daemon with no node connected, every proxy checked
	// and none kept.
	for _, c := range []struct {
		name string
		keep func(*schema.Dataplane) []Flavor
	}{{"full", nil}, {"full-none-kept", func(*schema.Dataplane) []Flavor { return nil }}} {
		b.Run(c.name, func(b *testing.B) {
			runtime.GC()
			b.ReportAllocs()
			peak := startHeapPeak()
			b.ResetTimer()
			for range b.N {
				tr, _, failures, err := NewBuilder(BuilderOptions{Keep: c.keep}).Build(context.Background(), set, diff, nil)
				if err != nil || len(failures) > 0 || len(tr.Nodes()) != benchDataplanes {
					b.Fatal(err, failures)
				}
			}
			b.StopTimer()
			peak.report(b)
		})
	}
	b.Run("one-permission", func(b *testing.B) {
		builder := NewBuilder(BuilderOptions{})
		prev, _, _, err := builder.Build(context.Background(), set, diff, nil)
		if err != nil {
			b.Fatal(err)
		}
		const k = 42
		var stats BuildStats
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			next := *set
			next.TrafficPermissions = append([]*schema.TrafficPermission(nil), set.TrafficPermissions...)
			next.TrafficPermissions[k] = benchPermission(k, fmt.Sprintf("svc-%04d", 500+i%2))
			if _, stats, _, err = builder.Build(context.Background(), &next, schema.DiffSets(prev.Set(), &next), prev); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		b.ReportMetric(float64(stats.Translated), "dataplanes/op")
	})
}

// BenchmarkTranslateAllRouted is BenchmarkTranslateAll with a tenth of the
// services split between two versions by a mesh-wide MeshHTTPRoute (HTTP
// services) or MeshTCPRoute (the others), for every caller.
func BenchmarkTranslateAllRouted(b *testing.B) {
	set := benchSet()
	for k := range benchServices / 10 {
		svc := fmt.Sprintf("svc-%04d", k*10)
		meta := schema.PolicyMeta{Mesh: "bench", Name: fmt.Sprintf("split-%04d", k), TargetRef: schema.TargetRef{Kind: schema.KindMesh}}
		to := schema.TargetRef{Kind: schema.KindMeshService, Name: svc}
		backends := []schema.BackendRef{
			{Kind: schema.KindMeshServiceSubset, Name: svc, Tags: map[string]string{"version": "v0"}, Weight: 90},
			{Kind: schema.KindMeshServiceSubset, Name: svc, Tags: map[string]string{"version": "v1"}, Weight: 10},
		}
		if k%2 == 0 {
			set.MeshHTTPRoutes = append(set.MeshHTTPRoutes, &schema.MeshHTTPRoute{PolicyMeta: meta, To: []schema.HTTPRouteTo{{TargetRef: to,
				Rules: []schema.HTTPRouteRule{{Matches: []schema.HTTPMatch{{Path: &schema.PathMatch{Type: schema.PathPrefix, Value: "/"}}},
					BackendRefs: backends, HasBackendRefs: true}}}}})
		} else {
			set.MeshTCPRoutes = append(set.MeshTCPRoutes, &schema.MeshTCPRoute{PolicyMeta: meta, To: []schema.TCPRouteTo{{TargetRef: to,
				BackendRefs: backends, Rule: "/spec/to/0/rules/0"}}})
		}
	}
	benchTranslate(b, set)
}

// benchTranslate measures Translate of set, with its allocations and peak
// heap.
func benchTranslate(b *testing.B, set *schema.Set) {
	runtime.GC()
	b.ReportAllocs()
	peak := startHeapPeak()
	b.ResetTimer()
	var proxies []*Proxy
	for range b.N {
		var err error
		if proxies, err = Translate(set, Options{}); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	peak.report(b)
	if len(proxies) != benchDataplanes {
		b.Fatalf("%d proxies", len(proxies))
	}
}
