package schema

import (
	"fmt"
	"net/http"
	"strconv"
)

// TypeMeshRetry is Kuma 2.x's retry policy.
const TypeMeshRetry = "MeshRetry"

func init() {
	registerConfKind(&confKind{
		typ: TypeMeshRetry, plural: "meshretries", schema: "meshretry.json",
		top:       targetRefRules{kinds: []TargetKind{KindMesh, KindMeshSubset, KindMeshService, KindMeshServiceSubset, KindDataplane}},
		to:        &targetRefRules{kinds: []TargetKind{KindMesh, KindMeshService}},
		check:     checkRetry,
		grpcDrops: retryGRPCDrops,
	})
}

// Retries is a merged MeshRetry conf; nil fields are not set.
type Retries struct {
	TCP *struct {
		MaxConnectAttempt *uint32 `json:"maxConnectAttempt,omitempty"`
	} `json:"tcp,omitempty"`
	HTTP *HTTPRetries `json:"http,omitempty"`
	GRPC *GRPCRetries `json:"grpc,omitempty"`
}

// HTTPRetries is MeshRetry's http section.
type HTTPRetries struct {
	NumRetries               *uint32             `json:"numRetries,omitempty"`
	PerTryTimeout            *Duration           `json:"perTryTimeout,omitempty"`
	BackOff                  *BackOff            `json:"backOff,omitempty"`
	RateLimitedBackOff       *RateLimitedBackOff `json:"rateLimitedBackOff,omitempty"`
	RetryOn                  []string            `json:"retryOn,omitempty"`
	RetriableResponseHeaders []HeaderMatch       `json:"retriableResponseHeaders,omitempty"`
	RetriableRequestHeaders  []HeaderMatch       `json:"retriableRequestHeaders,omitempty"`
	HostSelection            []struct {
		Predicate       string            `json:"predicate"`
		Tags            map[string]string `json:"tags,omitempty"`
		UpdateFrequency int32             `json:"updateFrequency,omitempty"`
	} `json:"hostSelection,omitempty"`
	HostSelectionMaxAttempts *int64 `json:"hostSelectionMaxAttempts,omitempty"`
}

// GRPCRetries is MeshRetry's grpc section.
type GRPCRetries struct {
	NumRetries         *uint32             `json:"numRetries,omitempty"`
	PerTryTimeout      *Duration           `json:"perTryTimeout,omitempty"`
	BackOff            *BackOff            `json:"backOff,omitempty"`
	RateLimitedBackOff *RateLimitedBackOff `json:"rateLimitedBackOff,omitempty"`
	RetryOn            []string            `json:"retryOn,omitempty"`
}

// BackOff is a retry back-off.
type BackOff struct {
	BaseInterval *Duration `json:"baseInterval,omitempty"`
	MaxInterval  *Duration `json:"maxInterval,omitempty"`
}

// RateLimitedBackOff backs off as the upstream's reset headers say.
type RateLimitedBackOff struct {
	ResetHeaders []struct {
		Name   string `json:"name"`
		Format string `json:"format"`
	} `json:"resetHeaders,omitempty"`
	MaxInterval *Duration `json:"maxInterval,omitempty"`
}

func checkRetry(d *decoder, ptr string, conf map[string]any, _ ConfPosition, _ TargetRef) {
	tcp, h, g := mapOf(conf, "tcp"), mapOf(conf, "http"), mapOf(conf, "grpc")
	if tcp == nil && h == nil && g == nil {
		d.add(ptr, CodeMissingField, "set `tcp`, `http` or `grpc`", "at least one of the 'tcp', 'http', 'grpc' must be specified")
		return
	}
	if _, ok := conf["tcp"]; ok {
		if len(tcp) == 0 {
			d.add(ptr+"/tcp", CodeMissingField, "set `maxConnectAttempt`", "must not be empty")
		} else if _, ok := tcp["maxConnectAttempt"]; ok && uint32Of(tcp, "maxConnectAttempt") == 0 {
			d.add(ptr+"/tcp/maxConnectAttempt", CodeOutOfRange, "make at least one attempt", "has to be greater than 0")
		}
	}
	section := func(name string, m map[string]any) {
		p := ptr + "/" + name
		if _, ok := conf[name]; !ok {
			return
		}
		if len(m) == 0 {
			d.add(p, CodeMissingField, "set numRetries, perTryTimeout, backOff or retryOn", "must not be empty")
			return
		}
		d.duration(p, m, "perTryTimeout")
		if _, ok := m["backOff"]; ok {
			bo := mapOf(m, "backOff")
			if len(bo) == 0 {
				d.add(p+"/backOff", CodeMissingField, "set baseInterval or maxInterval", "must not be empty")
			}
			d.duration(p+"/backOff", bo, "baseInterval")
			d.duration(p+"/backOff", bo, "maxInterval")
		}
		if _, ok := m["rateLimitedBackOff"]; ok {
			rl := mapOf(m, "rateLimitedBackOff")
			if _, ok := rl["resetHeaders"]; !ok {
				d.add(p+"/rateLimitedBackOff/resetHeaders", CodeMissingField, "name the headers, e.g. [{name: retry-after, format: Seconds}]", "must be defined")
			}
			d.duration(p+"/rateLimitedBackOff", rl, "maxInterval")
		}
		if name != "http" {
			return
		}
		for i, raw := range listOf(m, "retryOn") {
			s, _ := raw.(string)
			if code, err := strconv.Atoi(s); err == nil && http.StatusText(code) == "" {
				d.add(fmt.Sprintf("%s/retryOn/%d", p, i), CodeInvalidValue, "name an HTTP status code, or a condition such as 5xx or GatewayError", "unknown item '%v'", s)
			}
		}
		seen := map[string]bool{}
		for i, raw := range listOf(m, "hostSelection") {
			hs, _ := raw.(map[string]any)
			hp := fmt.Sprintf("%s/hostSelection/%d", p, i)
			pred := str(hs, "predicate")
			if pred == "OmitHostsWithTags" && hs["tags"] == nil {
				d.add(hp+"/tags", CodeMissingField, "add the tags of the hosts to leave out", "must be defined")
			}
			if pred == "OmitPreviousPriorities" && uint32Of(hs, "updateFrequency") == 0 {
				d.add(hp+"/updateFrequency", CodeMissingField, "set how often the priorities are updated", "must be defined and greater than zero")
			}
			if pred != "OmitHostsWithTags" && seen[pred] {
				d.add(hp+"/predicate", CodeInvalidValue, "keep one "+pred, "%s must only be specified once", pred)
			}
			seen[pred] = true
		}
	}
	section("http", h)
	section("grpc", g)
}

// retryGRPCDrops: a gRPC client applies the grpc section's numRetries,
// retryOn and backOff (gRFC A44), nothing else.
func retryGRPCDrops(conf map[string]any, _ ConfPosition) []string {
	var out []string
	if _, ok := conf["tcp"]; ok {
		out = append(out, "tcp")
	}
	if _, ok := conf["http"]; ok {
		out = append(out, "http (gRPC applies the grpc section)")
	}
	g := mapOf(conf, "grpc")
	for _, f := range []string{"perTryTimeout", "rateLimitedBackOff"} {
		if _, ok := g[f]; ok {
			out = append(out, "grpc."+f)
		}
	}
	return out
}
