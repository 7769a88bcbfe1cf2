package xds

import (
	"fmt"
	"strconv"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/gitmesh/gitmesh/schema"
)

func init() {
	registerApplier(&confApplier{typ: schema.TypeMeshRetry, outbound: retryOutbound})
}

// retryOutbound sets a MeshRetry's retry policy on the outbound's routes
// (the grpc section for a gRPC service or client, the http one for an HTTP
// service) and its tcp section on an Envoy tcp_proxy.
func retryOutbound(e *outboundEdit, c schema.Conf) error {
	r := &schema.Retries{}
	if err := c.Decode(r); err != nil {
		return err
	}
	var p *routev3.RetryPolicy
	if e.flavor == FlavorGRPC {
		var notes []string
		p, notes = grpcClientRetryPolicy(e.out, r)
		e.notes = append(e.notes, notes...)
	} else {
		p = envoyRetryPolicy(r, !e.service.http)
	}
	if p != nil {
		for _, a := range e.actions {
			a.RetryPolicy = p
		}
	}
	if e.tcp != nil && r.TCP != nil && r.TCP.MaxConnectAttempt != nil {
		e.tcp.MaxConnectAttempts = wrapperspb.UInt32(*r.TCP.MaxConnectAttempt)
	}
	return nil
}

// Kuma's retry conditions when a MeshRetry leaves retryOn unset.
const (
	httpRetryOnDefault = "gateway-error,connect-failure,refused-stream"
	grpcRetryOnDefault = "cancelled,connect-failure,gateway-error,refused-stream,reset,resource-exhausted,unavailable"
	// grpcClientRetryOnDefault is the part of grpcRetryOnDefault a gRPC
	// client reads: status names.
	grpcClientRetryOnDefault = "cancelled,resource-exhausted,unavailable"
)

// httpRetryOn maps MeshRetry's HTTP conditions to Envoy's.
var httpRetryOn = map[string]string{
	"5xx": "5xx", "GatewayError": "gateway-error", "Reset": "reset", "Retriable4xx": "retriable-4xx",
	"ConnectFailure": "connect-failure", "EnvoyRatelimited": "envoy-ratelimited", "RefusedStream": "refused-stream",
	"Http3PostConnectFailure": "http3-post-connect-failure",
}

// grpcRetryOn maps MeshRetry's gRPC conditions to the names Envoy and gRPC
// read (gRPC ignores Envoy's spelling "canceled": both take "cancelled").
var grpcRetryOn = map[string]string{
	"Canceled": "cancelled", "DeadlineExceeded": "deadline-exceeded", "Internal": "internal",
	"ResourceExhausted": "resource-exhausted", "Unavailable": "unavailable",
}

// envoyRetryPolicy is a MeshRetry's route retry policy for Envoy, as Kuma
// makes it: the grpc section for a gRPC service, the http one otherwise;
// nil when that section is unset or sets numRetries 0.
func envoyRetryPolicy(r *schema.Retries, grpc bool) *routev3.RetryPolicy {
	if grpc {
		g := r.GRPC
		if g == nil || (g.NumRetries != nil && *g.NumRetries == 0) {
			return nil
		}
		p := &routev3.RetryPolicy{RetryOn: grpcRetryOnDefault}
		if len(g.RetryOn) > 0 {
			p.RetryOn = joinMapped(g.RetryOn, grpcRetryOn)
		}
		commonRetry(p, g.NumRetries, g.PerTryTimeout, g.BackOff, g.RateLimitedBackOff, true)
		return p
	}
	h := r.HTTP
	if h == nil || (h.NumRetries != nil && *h.NumRetries == 0) {
		return nil
	}
	p := &routev3.RetryPolicy{RetryOn: httpRetryOnDefault}
	var on []string
	for _, c := range h.RetryOn {
		switch code, err := strconv.Atoi(c); {
		case err == nil:
			p.RetriableStatusCodes = append(p.RetriableStatusCodes, uint32(code))
		case strings.HasPrefix(c, "HttpMethod"):
			p.RetriableRequestHeaders = append(p.RetriableRequestHeaders, headerMatcher(schema.HeaderMatch{
				Type: "Exact", Name: ":method", Value: strings.ToUpper(strings.TrimPrefix(c, "HttpMethod"))}, false))
		default:
			on = append(on, httpRetryOn[c])
		}
	}
	if len(on) > 0 {
		p.RetryOn = strings.Join(on, ",")
	}
	if len(p.RetriableStatusCodes) > 0 && !strings.Contains(p.RetryOn, "retriable-status-codes") {
		p.RetryOn += ",retriable-status-codes"
	}
	commonRetry(p, h.NumRetries, h.PerTryTimeout, h.BackOff, h.RateLimitedBackOff, false)
	for _, m := range h.RetriableRequestHeaders {
		p.RetriableRequestHeaders = append(p.RetriableRequestHeaders, headerMatcher(m, false))
	}
	for _, m := range h.RetriableResponseHeaders {
		p.RetriableHeaders = append(p.RetriableHeaders, headerMatcher(m, false))
	}
	if h.HostSelectionMaxAttempts != nil {
		p.HostSelectionRetryMaxAttempts = *h.HostSelectionMaxAttempts
	}
	return p
}

// grpcClientRetryPolicy is a MeshRetry's retry policy for a proxyless gRPC
// client (gRFC A44: the grpc section's numRetries, retryOn and back-off),
// and what the client cannot apply.
func grpcClientRetryPolicy(out string, r *schema.Retries) (*routev3.RetryPolicy, []string) {
	var notes []string
	if r.TCP != nil {
		notes = append(notes, fmt.Sprintf("%s: proxyless gRPC ignores MeshRetry tcp", out))
	}
	if r.HTTP != nil {
		notes = append(notes, fmt.Sprintf("%s: proxyless gRPC ignores MeshRetry http (it applies the grpc section)", out))
	}
	g := r.GRPC
	if g == nil || (g.NumRetries != nil && *g.NumRetries == 0) {
		return nil, notes
	}
	if g.PerTryTimeout != nil {
		notes = append(notes, fmt.Sprintf("%s: proxyless gRPC ignores MeshRetry grpc.perTryTimeout", out))
	}
	if g.RateLimitedBackOff != nil {
		notes = append(notes, fmt.Sprintf("%s: proxyless gRPC ignores MeshRetry grpc.rateLimitedBackOff", out))
	}
	p := &routev3.RetryPolicy{RetryOn: grpcClientRetryOnDefault}
	if len(g.RetryOn) > 0 {
		p.RetryOn = joinMapped(g.RetryOn, grpcRetryOn)
	}
	if g.NumRetries != nil {
		p.NumRetries = wrapperspb.UInt32(*g.NumRetries)
	}
	if b := g.BackOff; b != nil {
		p.RetryBackOff = &routev3.RetryPolicy_RetryBackOff{BaseInterval: durationpb.New(b.BaseInterval.Or(defaultBaseInterval))}
		if b.MaxInterval != nil {
			p.RetryBackOff.MaxInterval = durationpb.New(b.MaxInterval.Duration)
		}
	}
	return p, notes
}

// defaultBaseInterval is Kuma's (and Envoy's) retry back-off base.
const defaultBaseInterval = 25_000_000 // 25ms, in nanoseconds

func commonRetry(p *routev3.RetryPolicy, n *uint32, perTry *schema.Duration, b *schema.BackOff, rl *schema.RateLimitedBackOff, grpc bool) {
	if n != nil {
		p.NumRetries = wrapperspb.UInt32(*n)
	}
	if perTry != nil {
		p.PerTryTimeout = durationpb.New(perTry.Duration)
	}
	if b != nil {
		p.RetryBackOff = &routev3.RetryPolicy_RetryBackOff{}
		if b.BaseInterval != nil {
			p.RetryBackOff.BaseInterval = durationpb.New(b.BaseInterval.Duration)
		} else if grpc {
			p.RetryBackOff.BaseInterval = durationpb.New(defaultBaseInterval)
		}
		if b.MaxInterval != nil {
			p.RetryBackOff.MaxInterval = durationpb.New(b.MaxInterval.Duration)
		}
	}
	if rl != nil {
		rb := &routev3.RetryPolicy_RateLimitedRetryBackOff{}
		for _, h := range rl.ResetHeaders {
			format := routev3.RetryPolicy_SECONDS
			if h.Format == "UnixTimestamp" {
				format = routev3.RetryPolicy_UNIX_TIMESTAMP
			}
			rb.ResetHeaders = append(rb.ResetHeaders, &routev3.RetryPolicy_ResetHeader{Name: h.Name, Format: format})
		}
		if rl.MaxInterval != nil {
			rb.MaxInterval = durationpb.New(rl.MaxInterval.Duration)
		}
		p.RateLimitedRetryBackOff = rb
	}
}

func joinMapped(items []string, m map[string]string) string {
	out := make([]string, 0, len(items))
	for _, it := range items {
		if v := m[it]; v != "" {
			out = append(out, v)
		}
	}
	return strings.Join(out, ",")
}
