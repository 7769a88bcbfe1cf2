package xds

// The conf policies (MeshTimeout, ...) in translation. What a to[] item
// configures is of two kinds: what belongs to a destination service's
// cluster (connect timeout, ...), which a proxy holds once per service
// whichever outbound or route reaches it; and what belongs to the calls of
// one outbound (request timeouts, ...), which joins its routed values.
// Both are made once per Index for every proxy the same policies select.

import (
	"encoding/binary"
	"fmt"
	"slices"
	"sync"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/gitmesh/gitmesh/schema"
)

// confIndex is a mesh's conf policies by type.
type confIndex struct {
	byType map[string][]*schema.ConfPolicy
	// clusters memoises cluster variants by name, flavour and the policies
	// that make them.
	clusters *sync.Map
}

func newConfIndex(set *schema.Set, mesh string) confIndex {
	ci := confIndex{clusters: new(sync.Map)}
	for _, typ := range schema.ConfKinds() {
		if ps := set.PoliciesOfType(typ, mesh); len(ps) > 0 {
			if ci.byType == nil {
				ci.byType = map[string][]*schema.ConfPolicy{}
			}
			ci.byType[typ] = ps
		}
	}
	return ci
}

func (ci *confIndex) none() bool { return len(ci.byType) == 0 }

// names reports whether a conf policy that configures calls (an
// outbound type) has a to[] item for service, or for every service.
func (ci *confIndex) names(service string) bool {
	for _, typ := range outboundTypes {
		for _, p := range ci.byType[typ] {
			for _, it := range p.To {
				if it.TargetRef.Kind == schema.KindMesh || (it.TargetRef.Kind == schema.KindMeshService && it.TargetRef.Name == service) {
					return true
				}
			}
		}
	}
	return false
}

// toKey appends to key, for each of types, the positions of its policies
// that select dp and have a to[] item for service (or every service).
func (ci *confIndex) toKey(key []byte, dp *schema.Dataplane, service string, types ...string) ([]byte, bool) {
	found := false
	for _, typ := range types {
		key = append(key, 0xfe)
		for pos, p := range ci.byType[typ] {
			if !p.TargetRef.SelectsClient(dp) {
				continue
			}
			for _, it := range p.To {
				if it.TargetRef.Kind == schema.KindMesh || (it.TargetRef.Kind == schema.KindMeshService && it.TargetRef.Name == service) {
					key, found = binary.BigEndian.AppendUint32(key, uint32(pos)), true
					break
				}
			}
		}
	}
	return key, found
}

// outboundConf is what the conf policies set on the calls of one outbound.
type outboundConf struct {
	timeouts *schema.Timeouts // nil when no MeshTimeout applies
	retries  *schema.Retries  // nil when no MeshRetry applies
}

func (ci *confIndex) outbound(dp *schema.Dataplane, service string) (outboundConf, error) {
	var oc outboundConf
	if c := schema.ToConf(ci.byType[schema.TypeMeshTimeout], dp, service); !c.Empty() {
		oc.timeouts = &schema.Timeouts{}
		if err := c.Decode(oc.timeouts); err != nil {
			return oc, fmt.Errorf("MeshTimeout: %w", err)
		}
	}
	if c := schema.ToConf(ci.byType[schema.TypeMeshRetry], dp, service); !c.Empty() {
		oc.retries = &schema.Retries{}
		if err := c.Decode(oc.retries); err != nil {
			return oc, fmt.Errorf("MeshRetry: %w", err)
		}
	}
	return oc, nil
}

// clusterTypes are the conf types that configure a destination's clusters.
var clusterTypes = []string{schema.TypeMeshTimeout}

// cluster is c, the cluster of backend bc (service's, a subset or the
// whole) for flavour, as the conf policies that select dp for service
// make it; c itself when none does.
func (mi *meshIndex) cluster(dp *schema.Dataplane, service string, c *shared, flavor Flavor, http bool) (*shared, []string, error) {
	ci := &mi.confs
	if ci.none() {
		return c, nil, nil
	}
	key := append(make([]byte, 0, 64), c.res.(*clusterv3.Cluster).GetName()...)
	key = append(append(append(key, 0), flavor...), 0)
	key, found := ci.toKey(key, dp, service, clusterTypes...)
	if !found {
		return c, nil, nil
	}
	type variant struct {
		c     *shared
		notes []string
	}
	if v, ok := ci.clusters.Load(string(key)); ok {
		return v.(*variant).c, v.(*variant).notes, nil
	}
	cl := proto.Clone(c.res.(*clusterv3.Cluster)).(*clusterv3.Cluster)
	var notes []string
	if conf := schema.ToConf(ci.byType[schema.TypeMeshTimeout], dp, service); !conf.Empty() {
		var t schema.Timeouts
		if err := conf.Decode(&t); err != nil {
			return nil, nil, fmt.Errorf("MeshTimeout: %w", err)
		}
		if flavor == FlavorGRPC {
			if t.ConnectionTimeout != nil {
				notes = append(notes, fmt.Sprintf("cluster %s: proxyless gRPC ignores MeshTimeout connectionTimeout", cl.GetName()))
			}
		} else if err := clusterTimeouts(cl, &t, http); err != nil {
			return nil, nil, err
		}
	}
	v := &variant{c: &shared{}, notes: notes}
	if _, err := v.c.set(cl, nil); err != nil {
		return nil, nil, err
	}
	mi.routing.shared.Store(cl, true)
	if ts := cl.GetTransportSocket(); ts != nil {
		mi.routing.shared.Store(ts.GetTypedConfig(), true)
	}
	for _, a := range cl.GetTypedExtensionProtocolOptions() {
		mi.routing.shared.Store(a, true)
	}
	got, _ := ci.clusters.LoadOrStore(string(key), v)
	return got.(*variant).c, got.(*variant).notes, nil
}

// clusterTimeouts sets a MeshTimeout's cluster fields as Kuma does: the
// connect timeout, and for clusters that speak HTTP the idle timeout and
// the maximum stream and connection durations, Kuma's defaults where the
// policy leaves them unset.
func clusterTimeouts(cl *clusterv3.Cluster, t *schema.Timeouts, http bool) error {
	cl.ConnectTimeout = durationpb.New(t.ConnectionTimeout.Or(schema.DefaultConnectTimeout))
	if !http {
		return nil
	}
	opts := &upstreamhttpv3.HttpProtocolOptions{}
	if a := cl.GetTypedExtensionProtocolOptions()[httpProtocolOptions]; a != nil {
		if err := a.UnmarshalTo(opts); err != nil {
			return err
		}
	} else {
		opts.UpstreamProtocolOptions = &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions{HttpProtocolOptions: &corev3.Http1ProtocolOptions{}},
		}}
	}
	common := &corev3.HttpProtocolOptions{IdleTimeout: durationpb.New(t.IdleTimeout.Or(schema.DefaultIdleTimeout))}
	if h := t.HTTP; h != nil {
		if h.MaxStreamDuration != nil {
			common.MaxStreamDuration = durationpb.New(h.MaxStreamDuration.Duration)
		}
		if h.MaxConnectionDuration != nil {
			common.MaxConnectionDuration = durationpb.New(h.MaxConnectionDuration.Duration)
		}
	}
	opts.CommonHttpProtocolOptions = common
	a, err := anypb.New(opts)
	if err != nil {
		return err
	}
	cl.TypedExtensionProtocolOptions = map[string]*anypb.Any{httpProtocolOptions: a}
	return nil
}

// grpcTimeoutNotes are what proxyless gRPC ignores of t on an outbound.
func grpcTimeoutNotes(out string, t *schema.Timeouts) []string {
	var notes []string
	add := func(set bool, field string) {
		if set {
			notes = append(notes, fmt.Sprintf("%s: proxyless gRPC ignores MeshTimeout %s", out, field))
		}
	}
	add(t.IdleTimeout != nil, "idleTimeout")
	if h := t.HTTP; h != nil {
		add(h.StreamIdleTimeout != nil, "http.streamIdleTimeout")
		add(h.RequestHeadersTimeout != nil, "http.requestHeadersTimeout")
		add(h.MaxConnectionDuration != nil, "http.maxConnectionDuration")
	}
	return notes
}

// grpcDeadline is the longest a gRPC call may take under t: the request
// timeout (Kuma's default when unset) or the maximum stream duration,
// whichever is shorter; gRPC reads it from the route's max_stream_duration.
func grpcDeadline(t *schema.Timeouts) *durationpb.Duration {
	d := schema.DefaultRequestTimeout
	if h := t.HTTP; h != nil {
		d = h.RequestTimeout.Or(d)
		if h.MaxStreamDuration != nil && h.MaxStreamDuration.Duration > 0 && (d == 0 || h.MaxStreamDuration.Duration < d) {
			d = h.MaxStreamDuration.Duration
		}
	}
	if d == 0 {
		return nil
	}
	return durationpb.New(d)
}

// addCluster adds a backend's cluster and endpoints for flavour, as the
// conf policies that select dp make the cluster.
func (rs *resourceSet) addCluster(mi *meshIndex, dp *schema.Dataplane, service, name string, c, endpoints *shared, flavor Flavor, http bool) error {
	v, notes, err := mi.cluster(dp, service, c, flavor, http)
	if err != nil {
		return err
	}
	if err := rs.addShared(clusterIdx, name, v); err != nil {
		return err
	}
	for _, n := range notes {
		if !slices.Contains(rs.unsupported, n) {
			rs.unsupported = append(rs.unsupported, n)
		}
	}
	return rs.addShared(endpointIdx, name, endpoints)
}

// inboundTimeouts is the merged MeshTimeout of inbound i of dp, from the
// from[] and rules[] items that apply to every client; nil when none does.
func (ci *confIndex) inboundTimeouts(dp *schema.Dataplane, i int) (*schema.Timeouts, error) {
	if ci.none() {
		return nil, nil
	}
	c := schema.FromConf(ci.byType[schema.TypeMeshTimeout], dp, i)
	if c.Empty() {
		return nil, nil
	}
	t := &schema.Timeouts{}
	if err := c.Decode(t); err != nil {
		return nil, fmt.Errorf("MeshTimeout: %w", err)
	}
	return t, nil
}

// routeTimeouts sets a MeshTimeout's route fields on an Envoy route action,
// with Kuma's defaults: the request timeout and the stream idle timeout.
func routeTimeouts(a *routev3.RouteAction, t *schema.Timeouts) {
	if a == nil {
		return
	}
	var req, idle *schema.Duration
	if t.HTTP != nil {
		req, idle = t.HTTP.RequestTimeout, t.HTTP.StreamIdleTimeout
	}
	a.Timeout = durationpb.New(req.Or(schema.DefaultRequestTimeout))
	a.IdleTimeout = durationpb.New(idle.Or(schema.DefaultStreamIdleTimeout))
}

// hcmTimeouts sets a MeshTimeout's HTTP connection manager fields, as Kuma
// does: the request headers timeout, and no idle timeout of its own (the
// cluster's applies).
func hcmTimeouts(hcm *hcmv3.HttpConnectionManager, t *schema.Timeouts) {
	hcm.CommonHttpProtocolOptions = &corev3.HttpProtocolOptions{IdleTimeout: durationpb.New(0)}
	if h := t.HTTP; h != nil && h.RequestHeadersTimeout != nil {
		hcm.RequestHeadersTimeout = durationpb.New(h.RequestHeadersTimeout.Duration)
	}
}
