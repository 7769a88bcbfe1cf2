package xds

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/gitmesh/gitmesh/schema/schematest"
	"google.golang.org/protobuf/proto"
)

// TestCheckFindsProblems breaks a good proxy in the ways Check exists for.
func TestCheckFindsProblems(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(p *Proxy)
		want   []string // substrings of the error
	}{{
		name: "endpoints missing",
		mutate: func(p *Proxy) {
			p.Resources[resource.EndpointType] = p.Resources[resource.EndpointType][1:]
		},
		want: []string{`cluster "db": references endpoints "db", which does not exist`},
	}, {
		name: "listener to a missing cluster",
		mutate: func(p *Proxy) {
			p.Resources[resource.ClusterType] = without(p.Resources[resource.ClusterType], "localhost:9080")
		},
		want: []string{`route "inbound:10.1.0.2:10001": references cluster "localhost:9080", which does not exist`},
	}, {
		name: "route missing",
		mutate: func(p *Proxy) {
			p.Resources[resource.RouteType] = nil
		},
		want: []string{`listener "inbound:10.1.0.2:10001": references route "inbound:10.1.0.2:10001", which does not exist`},
	}, {
		name:   "secrets without mTLS",
		mutate: func(p *Proxy) { p.MTLS = false },
		want:   []string{`references secret "identity_cert" in a mesh without mTLS`},
	}, {
		name: "unknown secret",
		mutate: func(p *Proxy) {
			c := p.Resources[resource.ClusterType][0].(*clusterv3.Cluster)
			ts, err := upstreamTLS("prod", "other")
			if err != nil {
				t.Fatal(err)
			}
			ts.GetTypedConfig().Value = []byte(strings.Replace(string(ts.GetTypedConfig().Value), SecretMeshCA, "mesh_cb", 1))
			c.TransportSocket = ts
		},
		want: []string{`cluster "db": references unknown secret "mesh_cb"`},
	}, {
		name: "invalid typed config",
		mutate: func(p *Proxy) {
			for _, r := range p.Resources[resource.ListenerType] {
				l := r.(*listenerv3.Listener)
				if l.GetName() == "outbound:127.0.0.1:20002" {
					f, err := networkFilter("envoy.filters.network.tcp_proxy", &tcpproxyv3.TcpProxy{
						ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: "db"},
					})
					if err != nil {
						t.Fatal(err)
					}
					l.FilterChains[0].Filters[0] = f
				}
			}
		},
		want: []string{`listener "outbound:127.0.0.1:20002": typed config type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy: invalid TcpProxy.StatPrefix`},
	}, {
		name: "invalid resource",
		mutate: func(p *Proxy) {
			rc := p.Resources[resource.RouteType][0].(*routev3.RouteConfiguration)
			rc.VirtualHosts[0].Domains = nil
		},
		want: []string{`route "inbound:10.1.0.2:10001": invalid RouteConfiguration.VirtualHosts[0]`},
	}, {
		name: "duplicate",
		mutate: func(p *Proxy) {
			ls := p.Resources[resource.ListenerType]
			p.Resources[resource.ListenerType] = append(ls, ls[0])
		},
		want: []string{`listener "inbound:10.1.0.2:10001": appears twice`},
	}, {
		name: "endpoints nothing references",
		mutate: func(p *Proxy) {
			e := proto.Clone(p.Resources[resource.EndpointType][0]).(*endpointv3.ClusterLoadAssignment)
			e.ClusterName = "orphan"
			p.Resources[resource.EndpointType] = append(p.Resources[resource.EndpointType], e)
		},
		want: []string{`endpoints "orphan": is referenced by nothing`},
	}, {
		name: "route nothing references",
		mutate: func(p *Proxy) {
			rc := proto.Clone(p.Resources[resource.RouteType][0]).(*routev3.RouteConfiguration)
			rc.Name = "orphan"
			p.Resources[resource.RouteType] = append(p.Resources[resource.RouteType], rc)
		},
		want: []string{`route "orphan": is referenced by nothing`},
	}, {
		name: "wrong type",
		mutate: func(p *Proxy) {
			p.Resources[resource.RouteType] = append(p.Resources[resource.RouteType], p.Resources[resource.ClusterType][0])
		},
		want: []string{`: has type envoy.config.cluster.v3.Cluster`},
	}, {
		name: "nil resource",
		mutate: func(p *Proxy) {
			p.Resources[resource.ListenerType] = append(p.Resources[resource.ListenerType], nil)
		},
		want: []string{"listener 3 is nil"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := reviewsProxy(t)
			tt.mutate(p)
			err := Check(p)
			if err == nil {
				t.Fatal("Check passed a broken proxy")
			}
			for _, w := range append(tt.want, "proxy prod.reviews-1: ") {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}

// TestCheckAPIListener checks that a route configuration referenced only
// from an api_listener (proxyless gRPC) counts as referenced, though
// Snapshot.Consistent does not follow api_listener.
func TestCheckAPIListener(t *testing.T) {
	p := reviewsProxy(t)
	var l *listenerv3.Listener
	for _, r := range p.Resources[resource.ListenerType] {
		if r.(*listenerv3.Listener).GetName() == "inbound:10.1.0.2:10001" {
			l = r.(*listenerv3.Listener)
		}
	}
	for _, f := range l.GetFilterChains()[0].GetFilters() {
		if f.GetTypedConfig().MessageIs((*hcmv3.HttpConnectionManager)(nil)) {
			l.ApiListener = &listenerv3.ApiListener{ApiListener: f.GetTypedConfig()}
		}
	}
	l.FilterChains = nil
	if err := Check(p); err != nil {
		t.Fatalf("api listener: %v", err)
	}
	l.ApiListener = nil
	if err := Check(p); err == nil || !strings.Contains(err.Error(), `route "inbound:10.1.0.2:10001": is referenced by nothing`) {
		t.Fatalf("route of a listener without filters: %v", err)
	}
}

// reviewsProxy is a checked proxy with mTLS, inbound HTTP and outbound TCP,
// whose resources the caller may change.
func reviewsProxy(t *testing.T) *Proxy {
	t.Helper()
	set := schematest.Load(t, os.DirFS(filepath.Join("testdata", "mtls-permissions", policiesDir)))
	idx, err := NewIndex(set)
	if err != nil {
		t.Fatal(err)
	}
	p, err := TranslateProxy(idx, set.Dataplane("prod", "reviews-1"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := Check(p); err != nil {
		t.Fatalf("before breaking it: %v", err)
	}
	return cloneProxy(p)
}

// cloneProxy deep-copies p's resources, which it shares with other proxies.
func cloneProxy(p *Proxy) *Proxy {
	c := *p
	c.Resources = make(map[resource.Type][]types.Resource, len(p.Resources))
	for typ, rs := range p.Resources {
		for _, r := range rs {
			c.Resources[typ] = append(c.Resources[typ], proto.Clone(r))
		}
	}
	return &c
}

func without(rs []types.Resource, name string) []types.Resource {
	var out []types.Resource
	for _, r := range rs {
		if c, ok := r.(*clusterv3.Cluster); ok && c.GetName() == name {
			continue
		}
		out = append(out, r)
	}
	return out
}
