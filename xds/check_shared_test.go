package xds

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/gitmesh/gitmesh/schema/schematest"
)

// sharedFixture translates frontend-1 and reviews-1, which share the
// cluster, endpoints and outbound filter of the service db.
func sharedFixture(t *testing.T) (*Index, []*Proxy) {
	t.Helper()
	set := schematest.Load(t, os.DirFS(filepath.Join("testdata", "mtls-permissions", policiesDir)))
	idx, err := NewIndex(set)
	if err != nil {
		t.Fatal(err)
	}
	var ps []*Proxy
	for _, name := range []string{"frontend-1", "reviews-1"} {
		p, err := TranslateProxy(idx, set.Dataplane("prod", name), Options{})
		if err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	return idx, ps
}

// dbOutbound is the shared network filter of every outbound listener to db.
func dbOutbound(t *testing.T, p *Proxy) *listenerv3.Filter {
	t.Helper()
	for _, r := range p.Resources[resource.ListenerType] {
		if l := r.(*listenerv3.Listener); l.GetName() == "outbound:127.0.0.1:20002" {
			return l.GetFilterChains()[0].GetFilters()[0]
		}
	}
	t.Fatal("no outbound listener to db")
	return nil
}

// TestCheckerReportsASharedProblemForEveryProxy: what the proxies of an
// Index share is validated once, and a problem in it fails every proxy that
// holds it, not only the first one checked.
func TestCheckerReportsASharedProblemForEveryProxy(t *testing.T) {
	for name, tc := range map[string]struct {
		breakIt func(t *testing.T, idx *Index, ps []*Proxy)
		want    string
	}{
		"shared resource": {
			breakIt: func(t *testing.T, idx *Index, ps []*Proxy) {
				c := idx.meshes["prod"].services["db"].cluster.res.(*clusterv3.Cluster)
				c.ConnectTimeout = durationpb.New(-1)
			},
			want: `cluster "db": invalid Cluster.ConnectTimeout`,
		},
		"typed config in a shared filter": {
			breakIt: func(t *testing.T, idx *Index, ps []*Proxy) {
				f := dbOutbound(t, ps[0])
				if f != dbOutbound(t, ps[1]) || !idx.isShared("prod", f) {
					t.Fatal("the outbound filter to db is not shared")
				}
				f.ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: &anypb.Any{
					TypeUrl: "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy", Value: []byte{0xff}}}
			},
			want: `listener "outbound:127.0.0.1:20002": typed config type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy`,
		},
	} {
		t.Run(name, func(t *testing.T) {
			idx, ps := sharedFixture(t)
			tc.breakIt(t, idx, ps)
			k := NewChecker()
			for range 2 { // the second round finds every result remembered
				for _, p := range ps {
					err := k.checkIn(idx, p)
					if err == nil || !strings.Contains(err.Error(), "proxy "+p.NodeID+": "+tc.want) {
						t.Errorf("%s: %v, want an error with %q", p.NodeID, err, tc.want)
					}
				}
			}
		})
	}
}

// TestCheckerRemembersOnlyShared: a Checker keeps, by pointer, only values
// the Index shares, so that checking many proxies does not keep them alive.
func TestCheckerRemembersOnlyShared(t *testing.T) {
	idx, ps := sharedFixture(t)
	k := NewChecker()
	for _, p := range ps {
		if err := k.checkIn(idx, p); err != nil {
			t.Fatal(err)
		}
	}
	if len(k.validated) == 0 {
		t.Fatal("nothing shared was remembered")
	}
	for x := range k.validated {
		if !idx.isShared("prod", x) {
			t.Errorf("remembered %T, which is not shared", x)
		}
	}
	for a := range k.typed {
		if !idx.isShared("prod", a) {
			t.Errorf("kept the unpacked %s, which is not shared", a.GetTypeUrl())
		}
	}
	if len(k.unpacked) != 0 {
		t.Errorf("%d configs of the last proxy still unpacked", len(k.unpacked))
	}
}

// TestMayHoldAny: the walk for typed configs skips the types that cannot
// hold one, and only those.
func TestMayHoldAny(t *testing.T) {
	for m, want := range map[protoreflect.ProtoMessage]bool{
		&anypb.Any{}:                                    true,
		&listenerv3.Listener{}:                          true,
		&hcmv3.HttpConnectionManager{}:                  true,
		&rbacv3.Principal{}:                             true, // recursive, and holds typed matchers
		&corev3.SocketAddress{}:                         false,
		&durationpb.Duration{}:                          false,
		&listenerv3.ListenerFilterChainMatchPredicate{}: false,
	} {
		if got := mayHoldAny(m.ProtoReflect().Descriptor()); got != want {
			t.Errorf("mayHoldAny(%s) = %v, want %v", m.ProtoReflect().Descriptor().FullName(), got, want)
		}
	}
}

// TestEverySharedValueIsFound: isShared knows every type the Index shares
// (it looks values up by type first).
func TestEverySharedValueIsFound(t *testing.T) {
	idx, _ := sharedFixture(t) // translating memoises RBAC filters
	if len(idx.shared) == 0 {
		t.Fatal("nothing is shared")
	}
	for x := range idx.shared {
		if !idx.isShared("prod", x) {
			t.Errorf("isShared does not find the shared %T", x)
		}
	}
	n := 0
	idx.meshes["prod"].rbacShared.Range(func(x, _ any) bool {
		n++
		if !idx.isShared("prod", x) {
			t.Errorf("isShared does not find the shared RBAC value %T", x)
		}
		return true
	})
	if n == 0 {
		t.Error("no RBAC value is shared")
	}
}
