package xds

import (
	"os"
	"path/filepath"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/gitmesh/gitmesh/schema/schematest"
)

// TestProxyAppliersEditOwnCopies: tracing and access logs are per proxy,
// on filters of the proxy's own; the values the proxies of an Index share
// (a service's outbound filter, a MeshTimeout's outbound variant) are
// left as they were made, and no edited filter is one of them.
func TestProxyAppliersEditOwnCopies(t *testing.T) {
	for _, c := range []string{"tracing", "access-logs", "mesh-observability"} {
		t.Run(c, func(t *testing.T) {
			set := schematest.Load(t, os.DirFS(filepath.Join("testdata", c, policiesDir)))
			idx, err := NewIndex(set)
			if err != nil {
				t.Fatal(err)
			}
			// Translate once so that every memoised variant exists, then
			// take the encoding of every shared filter.
			var proxies []*Proxy
			for _, dp := range set.Dataplanes {
				p, err := TranslateProxy(idx, dp, Options{})
				if err != nil {
					t.Fatal(err)
				}
				proxies = append(proxies, p)
			}
			before := map[*anypb.Any][]byte{}
			sharedFilters(t, idx, proxies, func(a *anypb.Any) { before[a] = append([]byte(nil), a.GetValue()...) })
			for _, dp := range set.Dataplanes {
				if _, err := TranslateProxy(idx, dp, Options{}); err != nil {
					t.Fatal(err)
				}
			}
			edited := 0
			for _, p := range proxies {
				for _, r := range p.Resources[resource.ListenerType] {
					for _, f := range r.(*listenerv3.Listener).GetFilterChains()[0].GetFilters() {
						m, err := f.GetTypedConfig().UnmarshalNew()
						if err != nil {
							t.Fatal(err)
						}
						if !hasObservability(m) {
							continue
						}
						edited++
						if idx.isShared(p.Mesh, f) || idx.isShared(p.Mesh, f.GetTypedConfig()) {
							t.Errorf("%s: %s: an edited filter is a shared value", p.NodeID, r.(*listenerv3.Listener).GetName())
						}
					}
				}
			}
			if edited == 0 {
				t.Fatal("no filter carries tracing or access logs")
			}
			sharedFilters(t, idx, proxies, func(a *anypb.Any) {
				if string(before[a]) != string(a.GetValue()) {
					t.Errorf("a shared filter's config changed")
				}
			})
		})
	}
}

// sharedFilters calls f with the typed config of every filter of the
// proxies' listeners that the Index shares.
func sharedFilters(t *testing.T, idx *Index, proxies []*Proxy, f func(*anypb.Any)) {
	t.Helper()
	for _, p := range proxies {
		for _, r := range p.Resources[resource.ListenerType] {
			for _, fc := range r.(*listenerv3.Listener).GetFilterChains() {
				for _, fl := range fc.GetFilters() {
					if idx.isShared(p.Mesh, fl.GetTypedConfig()) {
						f(fl.GetTypedConfig())
					}
				}
			}
		}
	}
	for _, s := range idx.meshes {
		for _, svc := range s.services {
			if svc.outboundFilter != nil {
				f(svc.outboundFilter.GetTypedConfig())
			}
		}
	}
}

// hasObservability reports whether a filter config carries tracing or
// access logs.
func hasObservability(m proto.Message) bool {
	r := m.ProtoReflect()
	for _, name := range []protoreflect.Name{"tracing", "access_log"} {
		if fd := r.Descriptor().Fields().ByName(name); fd != nil && r.Has(fd) {
			return true
		}
	}
	return false
}
