package xds

import (
	"encoding/hex"
	"fmt"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filesinkv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/health_check/event_sinks/file/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/gitmesh/gitmesh/schema"
)

// MeshHealthCheck: Envoy checks each destination's instances actively, as
// Kuma configures it; proxyless gRPC runs no active health checks.
func init() {
	registerApplier(&confApplier{typ: schema.TypeMeshHealthCheck, cluster: healthCheckCluster, h2: grpcHealthCheck})
}

// grpcHealthCheck reports whether a MeshHealthCheck item has a grpc
// section, which Envoy runs only on an HTTP/2 cluster.
func grpcHealthCheck(conf map[string]any) bool {
	_, ok := conf["grpc"]
	return ok
}

// healthCheckEventSink is the extension that writes health check events to
// a file.
const healthCheckEventSink = "envoy.health_check.event_sinks.file"

func healthCheckCluster(e *clusterEdit, c schema.Conf) error {
	hc := &schema.HealthCheck{}
	if err := c.Decode(hc); err != nil {
		return err
	}
	if e.flavor == FlavorGRPC {
		e.notes = append(e.notes, fmt.Sprintf("cluster %s: proxyless gRPC runs no active health checks: MeshHealthCheck is ignored", e.cluster.GetName()))
		return nil
	}
	panicThreshold(e.cluster, hc)
	checker := healthChecker(e, hc)
	if checker == nil {
		return nil
	}
	h, err := healthCheck(hc)
	if err != nil {
		return err
	}
	switch c := checker.(type) {
	case *corev3.HealthCheck_HttpHealthCheck_:
		h.HealthChecker = c
	case *corev3.HealthCheck_TcpHealthCheck_:
		h.HealthChecker = c
	case *corev3.HealthCheck_GrpcHealthCheck_:
		h.HealthChecker = c
	}
	e.cluster.HealthChecks = append(e.cluster.HealthChecks, h)
	return nil
}

// panicThreshold sets the cluster's healthy panic threshold and whether it
// fails all traffic in panic mode.
func panicThreshold(cl *clusterv3.Cluster, hc *schema.HealthCheck) {
	if hc.HealthyPanicThreshold == nil && hc.FailTrafficOnPanic == nil {
		return
	}
	if cl.CommonLbConfig == nil {
		cl.CommonLbConfig = &clusterv3.Cluster_CommonLbConfig{}
	}
	if p := hc.HealthyPanicThreshold; p != nil {
		cl.CommonLbConfig.HealthyPanicThreshold = &typev3.Percent{Value: float64(*p)}
	}
	f := hc.FailTrafficOnPanic
	if f == nil || cl.CommonLbConfig.GetLocalityWeightedLbConfig() != nil {
		return // locality-weighted balancing has no such switch (Kuma leaves it too)
	}
	za := cl.CommonLbConfig.GetZoneAwareLbConfig()
	if za == nil {
		za = &clusterv3.Cluster_CommonLbConfig_ZoneAwareLbConfig{}
		cl.CommonLbConfig.LocalityConfigSpecifier = &clusterv3.Cluster_CommonLbConfig_ZoneAwareLbConfig_{ZoneAwareLbConfig: za}
	}
	za.FailTrafficOnPanic = *f
}

// healthChecker picks the check as Kuma does: the one of the destination's
// protocol (http for HTTP services, grpc for gRPC ones, tcp for the
// others); tcp instead when the protocol's is disabled; none when the
// protocol's section is absent, or nothing is on.
func healthChecker(e *clusterEdit, hc *schema.HealthCheck) any {
	tcpOn := hc.TCP != nil && !hc.TCP.Disabled
	switch {
	case e.http:
		if hc.HTTP == nil {
			return nil
		}
		if !hc.HTTP.Disabled {
			return httpHealthCheck(hc.HTTP)
		}
	case e.grpc:
		if hc.GRPC == nil {
			return nil
		}
		if !hc.GRPC.Disabled {
			return &corev3.HealthCheck_GrpcHealthCheck_{GrpcHealthCheck: &corev3.HealthCheck_GrpcHealthCheck{
				ServiceName: hc.GRPC.ServiceName, Authority: hc.GRPC.Authority}}
		}
	}
	if tcpOn {
		return tcpHealthCheck(hc.TCP)
	}
	return nil
}

// healthCheck is the common part of a check, Kuma's defaults where the
// policy leaves a field unset.
func healthCheck(hc *schema.HealthCheck) (*corev3.HealthCheck, error) {
	unhealthy, healthy := uint32(schema.DefaultUnhealthyThreshold), uint32(schema.DefaultHealthyThreshold)
	if hc.UnhealthyThreshold != nil {
		unhealthy = *hc.UnhealthyThreshold
	}
	if hc.HealthyThreshold != nil {
		healthy = *hc.HealthyThreshold
	}
	h := &corev3.HealthCheck{
		Interval:           durationpb.New(hc.Interval.Or(schema.DefaultHealthCheckInterval)),
		Timeout:            durationpb.New(hc.Timeout.Or(schema.DefaultHealthCheckTimeout)),
		UnhealthyThreshold: wrapperspb.UInt32(unhealthy),
		HealthyThreshold:   wrapperspb.UInt32(healthy),
	}
	if hc.InitialJitter != nil {
		h.InitialJitter = durationpb.New(hc.InitialJitter.Duration)
	}
	if hc.IntervalJitter != nil {
		h.IntervalJitter = durationpb.New(hc.IntervalJitter.Duration)
	}
	if hc.IntervalJitterPercent != nil {
		h.IntervalJitterPercent = *hc.IntervalJitterPercent
	}
	if hc.NoTrafficInterval != nil {
		h.NoTrafficInterval = durationpb.New(hc.NoTrafficInterval.Duration)
	}
	if hc.ReuseConnection != nil {
		h.ReuseConnection = wrapperspb.Bool(*hc.ReuseConnection)
	}
	if hc.AlwaysLogHealthCheckFailures != nil {
		h.AlwaysLogHealthCheckFailures = *hc.AlwaysLogHealthCheckFailures
	}
	if hc.EventLogPath != nil {
		sink, err := toAny(&filesinkv3.HealthCheckEventFileSink{EventLogPath: *hc.EventLogPath})
		if err != nil {
			return nil, err
		}
		h.EventLogger = []*corev3.TypedExtensionConfig{{Name: healthCheckEventSink, TypedConfig: sink}}
	}
	return h, nil
}

// httpHealthCheck requests the path (/ by default) over HTTP/1.1 and takes
// the expected statuses (Envoy's default, 200, when none) as healthy.
func httpHealthCheck(h *schema.HTTPHealthCheck) *corev3.HealthCheck_HttpHealthCheck_ {
	c := &corev3.HealthCheck_HttpHealthCheck{Path: schema.DefaultHealthCheckPath, CodecClientType: typev3.CodecClientType_HTTP1}
	if h.Path != nil {
		c.Path = *h.Path
	}
	for _, s := range h.ExpectedStatuses {
		c.ExpectedStatuses = append(c.ExpectedStatuses, &typev3.Int64Range{Start: int64(s), End: int64(s) + 1})
	}
	if m := h.RequestHeadersToAdd; m != nil {
		c.RequestHeadersToAdd = append(splitHeaders(m.Add, corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD),
			splitHeaders(m.Set, corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD)...)
	}
	return &corev3.HealthCheck_HttpHealthCheck_{HttpHealthCheck: c}
}

// splitHeaders is one header value option per comma-separated value, as
// Kuma writes them.
func splitHeaders(hs []schema.NameValue, action corev3.HeaderValueOption_HeaderAppendAction) []*corev3.HeaderValueOption {
	var out []*corev3.HeaderValueOption
	for _, h := range hs {
		for v := range strings.SplitSeq(h.Value, ",") {
			out = append(out, &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: h.Name, Value: v}, AppendAction: action})
		}
	}
	return out
}

// tcpHealthCheck sends `send` and looks for the `receive` blocks in the
// answer, the text as written (Envoy reads payloads in hex, and Kuma
// encodes the text itself); connect only when neither is set.
func tcpHealthCheck(t *schema.TCPHealthCheck) *corev3.HealthCheck_TcpHealthCheck_ {
	c := &corev3.HealthCheck_TcpHealthCheck{}
	payload := func(s string) *corev3.HealthCheck_Payload {
		return &corev3.HealthCheck_Payload{Payload: &corev3.HealthCheck_Payload_Text{Text: hex.EncodeToString([]byte(s))}}
	}
	if t.Send != nil {
		c.Send = payload(*t.Send)
	}
	for _, r := range t.Receive {
		c.Receive = append(c.Receive, payload(r))
	}
	return &corev3.HealthCheck_TcpHealthCheck_{TcpHealthCheck: c}
}
