package xds

import (
	"fmt"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	localratelimithttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	localratelimitnetv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/local_ratelimit/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/gitmesh/gitmesh/schema"
)

// MeshRateLimit: Envoy limits an inbound's requests (HTTP inbounds) and
// connections (every inbound) locally, with a token bucket per listener,
// as Kuma configures it; proxyless gRPC has no rate limit filter.
func init() {
	registerApplier(&confApplier{typ: schema.TypeMeshRateLimit, inbound: rateLimitInbound})
}

// The filters' names, and the runtime keys Kuma gives their switches.
const (
	httpLocalRateLimit    = "envoy.filters.http.local_ratelimit"
	networkLocalRateLimit = "envoy.filters.network.local_ratelimit"
	rateLimitEnabledKey   = "local_rate_limit_enabled"
	rateLimitEnforcedKey  = "local_rate_limit_enforced"
)

func rateLimitInbound(e *inboundEdit, c schema.Conf) error {
	rl := &schema.RateLimits{}
	if err := c.Decode(rl); err != nil {
		return err
	}
	if rl.Local == nil {
		return nil
	}
	h, t := rl.Local.HTTP, rl.Local.TCP
	if e.flavor == FlavorGRPC {
		if h.Limits() || t.Limits() {
			e.notes = append(e.notes, fmt.Sprintf("inbound %s: proxyless gRPC servers have no rate limit filter: MeshRateLimit is ignored", e.in.HostPort()))
		}
		return nil
	}
	if h.Limits() {
		switch {
		case e.hcm != nil:
			f, err := httpRateLimitFilter(h)
			if err != nil {
				return err
			}
			e.httpFilters = append(e.httpFilters, f)
		case e.in.Protocol() == schema.ProtocolGRPC:
			// Kuma runs an HTTP connection manager on a gRPC inbound;
			// gitmesh proxies it as TCP.
			e.notes = append(e.notes, fmt.Sprintf("inbound %s: Envoy proxies a gRPC inbound as TCP: MeshRateLimit local.http is ignored (local.tcp applies)", e.in.HostPort()))
		}
	}
	if t.Limits() {
		f, err := networkFilter(networkLocalRateLimit, &localratelimitnetv3.LocalRateLimit{
			StatPrefix:  "tcp_rate_limit",
			TokenBucket: tokenBucket(t.ConnectionRate),
		})
		if err != nil {
			return err
		}
		e.networkFilters = append(e.networkFilters, f)
	}
	return nil
}

// tokenBucket holds num tokens and puts them all back every interval.
func tokenBucket(r *schema.Rate) *typev3.TokenBucket {
	return &typev3.TokenBucket{MaxTokens: r.Num, TokensPerFill: wrapperspb.UInt32(r.Num), FillInterval: durationpb.New(r.Interval.Duration)}
}

// httpRateLimitFilter is the HTTP local rate limit of an inbound: its
// bucket, on for every request, and the status and headers of the answer
// to a request over the limit (Envoy's 429 when the policy sets none).
// Kuma puts the bucket in the per-filter config of each of the inbound's
// routes; a gitmesh inbound has one route, so it is the filter's own.
func httpRateLimitFilter(h *schema.LocalHTTPRateLimit) (*hcmv3.HttpFilter, error) {
	all := func(key string) *corev3.RuntimeFractionalPercent {
		return &corev3.RuntimeFractionalPercent{
			DefaultValue: &typev3.FractionalPercent{Numerator: 100, Denominator: typev3.FractionalPercent_HUNDRED},
			RuntimeKey:   key,
		}
	}
	rl := &localratelimithttpv3.LocalRateLimit{
		StatPrefix:     "rate_limit",
		TokenBucket:    tokenBucket(h.RequestRate),
		FilterEnabled:  all(rateLimitEnabledKey),
		FilterEnforced: all(rateLimitEnforcedKey),
	}
	if o := h.OnRateLimit; o != nil {
		if o.Status != nil {
			rl.Status = &typev3.HttpStatus{Code: typev3.StatusCode(*o.Status)}
		}
		if m := o.Headers; m != nil {
			// As Kuma: each added header as written, each set one split at
			// its commas.
			for _, a := range m.Add {
				rl.ResponseHeadersToAdd = append(rl.ResponseHeadersToAdd, &corev3.HeaderValueOption{
					Header: &corev3.HeaderValue{Key: a.Name, Value: a.Value}, AppendAction: corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD})
			}
			for _, s := range m.Set {
				for v := range strings.SplitSeq(s.Value, ",") {
					rl.ResponseHeadersToAdd = append(rl.ResponseHeadersToAdd, &corev3.HeaderValueOption{
						Header: &corev3.HeaderValue{Key: s.Name, Value: v}, AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD})
				}
			}
		}
	}
	a, err := toAny(rl)
	if err != nil {
		return nil, err
	}
	return &hcmv3.HttpFilter{Name: httpLocalRateLimit, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: a}}, nil
}
