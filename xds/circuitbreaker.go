package xds

import (
	"fmt"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/gitmesh/gitmesh/schema"
)

// MeshCircuitBreaker: connection limits as the cluster's default circuit
// breaker thresholds, outlier detection as its outlier_detection, as Kuma
// sets them. gRPC-Go reads max_requests (gRFC A32) and the success-rate and
// failure-percentage detectors (gRFC A50) of the same fields.
func init() {
	registerApplier(&confApplier{typ: schema.TypeMeshCircuitBreaker, cluster: circuitBreakerCluster, inbound: circuitBreakerInbound})
}

func circuitBreakerCluster(e *clusterEdit, c schema.Conf) error {
	cb := &schema.CircuitBreaker{}
	if err := c.Decode(cb); err != nil {
		return err
	}
	cl := e.cluster
	grpc := e.flavor == FlavorGRPC
	note := func(field string) {
		e.notes = append(e.notes, fmt.Sprintf("cluster %s: proxyless gRPC ignores MeshCircuitBreaker %s", cl.GetName(), field))
	}
	th := &clusterv3.CircuitBreakers_Thresholds{Priority: corev3.RoutingPriority_DEFAULT, TrackRemaining: true}
	cl.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{th}}
	if l := cb.ConnectionLimits; l != nil {
		for _, f := range []struct {
			v    *uint32
			dst  **wrapperspb.UInt32Value
			name string
		}{
			{l.MaxConnections, &th.MaxConnections, "maxConnections"},
			{l.MaxConnectionPools, &th.MaxConnectionPools, "maxConnectionPools"},
			{l.MaxPendingRequests, &th.MaxPendingRequests, "maxPendingRequests"},
			{l.MaxRetries, &th.MaxRetries, "maxRetries"},
			{l.MaxRequests, &th.MaxRequests, "maxRequests"},
		} {
			if f.v == nil {
				continue
			}
			*f.dst = wrapperspb.UInt32(*f.v)
			if grpc && f.name != "maxRequests" {
				note("connectionLimits." + f.name)
			}
		}
	}
	od := cb.OutlierDetection
	if od == nil || (od.Disabled != nil && *od.Disabled) {
		return nil
	}
	o := &clusterv3.OutlierDetection{}
	if od.Interval != nil {
		o.Interval = durationpb.New(od.Interval.Duration)
	}
	if od.BaseEjectionTime != nil {
		o.BaseEjectionTime = durationpb.New(od.BaseEjectionTime.Duration)
	}
	o.MaxEjectionPercent = optUInt32(od.MaxEjectionPercent)
	if od.SplitExternalAndLocalErrors != nil {
		o.SplitExternalLocalOriginErrors = *od.SplitExternalAndLocalErrors
		if grpc {
			note("outlierDetection.splitExternalAndLocalErrors")
		}
	}
	// Every detector is disabled (enforcing 0) unless the policy sets it,
	// as in Kuma.
	consecutive := func(d *schema.Consecutive, n, enforcing **wrapperspb.UInt32Value, name string) {
		*enforcing = wrapperspb.UInt32(0)
		if d == nil || d.Consecutive == nil {
			return
		}
		*enforcing, *n = wrapperspb.UInt32(100), wrapperspb.UInt32(*d.Consecutive)
		if grpc {
			note("outlierDetection.detectors." + name)
		}
	}
	det := od.Detectors
	if det == nil {
		return fmt.Errorf("outlierDetection without detectors")
	}
	consecutive(det.TotalFailures, &o.Consecutive_5Xx, &o.EnforcingConsecutive_5Xx, "totalFailures")
	consecutive(det.LocalOriginFailures, &o.ConsecutiveLocalOriginFailure, &o.EnforcingConsecutiveLocalOriginFailure, "localOriginFailures")
	consecutive(det.GatewayFailures, &o.ConsecutiveGatewayFailure, &o.EnforcingConsecutiveGatewayFailure, "gatewayFailures")
	o.EnforcingSuccessRate, o.EnforcingLocalOriginSuccessRate = wrapperspb.UInt32(0), wrapperspb.UInt32(0)
	if sr := det.SuccessRate; sr != nil {
		o.EnforcingSuccessRate, o.EnforcingLocalOriginSuccessRate = wrapperspb.UInt32(100), wrapperspb.UInt32(100)
		o.SuccessRateMinimumHosts, o.SuccessRateRequestVolume = optUInt32(sr.MinimumHosts), optUInt32(sr.RequestVolume)
		if f := sr.StandardDeviationFactor; f != nil {
			// Envoy reads the factor in thousandths.
			o.SuccessRateStdevFactor = wrapperspb.UInt32(uint32(float64(*f)*1000 + 0.5))
		}
	}
	o.EnforcingFailurePercentage, o.EnforcingFailurePercentageLocalOrigin = wrapperspb.UInt32(0), wrapperspb.UInt32(0)
	if fp := det.FailurePercentage; fp != nil {
		o.EnforcingFailurePercentage, o.EnforcingFailurePercentageLocalOrigin = wrapperspb.UInt32(100), wrapperspb.UInt32(100)
		o.FailurePercentageMinimumHosts, o.FailurePercentageRequestVolume = optUInt32(fp.MinimumHosts), optUInt32(fp.RequestVolume)
		o.FailurePercentageThreshold = optUInt32(fp.Threshold)
	}
	cl.OutlierDetection = o
	if t := od.HealthyPanicThreshold; t != nil {
		if cl.CommonLbConfig == nil {
			cl.CommonLbConfig = &clusterv3.Cluster_CommonLbConfig{}
		}
		cl.CommonLbConfig.HealthyPanicThreshold = &typev3.Percent{Value: float64(*t)}
		if grpc {
			note("outlierDetection.healthyPanicThreshold")
		}
	}
	return nil
}

// circuitBreakerInbound: gitmesh sets no circuit breaker on an inbound's
// local cluster (Kuma does); it says so.
func circuitBreakerInbound(e *inboundEdit, _ schema.Conf) error {
	e.notes = append(e.notes, fmt.Sprintf("inbound %s: MeshCircuitBreaker from[] and rules[] are not applied: set the limits on the callers (to[])", e.in.HostPort()))
	return nil
}

// optUInt32 is *v as a protobuf wrapper; nil (unset) when v is.
func optUInt32(v *uint32) *wrapperspb.UInt32Value {
	if v == nil {
		return nil
	}
	return wrapperspb.UInt32(*v)
}
