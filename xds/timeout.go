package xds

import (
	"fmt"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/gitmesh/gitmesh/schema"
)

// MeshTimeout: Kuma's fields, with Kuma's defaults where a policy that
// applies leaves one unset; for proxyless gRPC, the deadline of each call.
func init() {
	registerApplier(&confApplier{typ: schema.TypeMeshTimeout, cluster: timeoutCluster, outbound: timeoutOutbound, inbound: timeoutInbound})
}

func decodeTimeouts(c schema.Conf) (*schema.Timeouts, error) {
	t := &schema.Timeouts{}
	return t, c.Decode(t)
}

func timeoutCluster(e *clusterEdit, c schema.Conf) error {
	t, err := decodeTimeouts(c)
	if err != nil {
		return err
	}
	if e.flavor == FlavorGRPC {
		if t.ConnectionTimeout != nil {
			e.notes = append(e.notes, fmt.Sprintf("cluster %s: proxyless gRPC ignores MeshTimeout connectionTimeout", e.cluster.GetName()))
		}
		return nil
	}
	return clusterTimeouts(e.cluster, t, e.http)
}

func timeoutOutbound(e *outboundEdit, c schema.Conf) error {
	t, err := decodeTimeouts(c)
	if err != nil {
		return err
	}
	if e.flavor == FlavorGRPC {
		e.notes = append(e.notes, grpcTimeoutNotes(e.out, t)...)
		if d := grpcDeadline(t); d != nil {
			for _, a := range e.actions {
				a.MaxStreamDuration = &routev3.RouteAction_MaxStreamDuration{MaxStreamDuration: d}
			}
		}
		return nil
	}
	for _, a := range e.actions {
		routeTimeouts(a, t)
	}
	if e.hcm != nil {
		hcmTimeouts(e.hcm, t)
	}
	if e.tcp != nil {
		e.tcp.IdleTimeout = durationpb.New(t.IdleTimeout.Or(schema.DefaultIdleTimeout))
	}
	return nil
}

func timeoutInbound(e *inboundEdit, c schema.Conf) error {
	t, err := decodeTimeouts(c)
	if err != nil {
		return err
	}
	if e.flavor == FlavorGRPC {
		e.notes = append(e.notes, fmt.Sprintf("inbound %s: proxyless gRPC servers ignore MeshTimeout from[] and rules[]: set the timeout on the callers (to[])", e.in.HostPort()))
		return nil
	}
	if e.action != nil {
		routeTimeouts(e.action, t)
	}
	if e.hcm != nil {
		hcmTimeouts(e.hcm, t)
	}
	if e.tcp != nil {
		e.tcp.IdleTimeout = durationpb.New(t.IdleTimeout.Or(schema.DefaultIdleTimeout))
	}
	return nil
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

// routeTimeouts sets a MeshTimeout's route fields on an Envoy route action,
// with Kuma's defaults: the request timeout and the stream idle timeout.
func routeTimeouts(a *routev3.RouteAction, t *schema.Timeouts) {
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
