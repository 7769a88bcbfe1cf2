package schema

import (
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// TypeMeshTrace is Kuma 2.x's tracing policy.
const TypeMeshTrace = "MeshTrace"

func init() {
	registerConfKind(&confKind{
		typ: TypeMeshTrace, plural: "meshtraces", schema: "meshtrace.json",
		top:        targetRefRules{kinds: []TargetKind{KindMesh, KindMeshSubset, KindMeshService, KindMeshServiceSubset, KindDataplane}},
		topDefault: true,
		check:      checkTrace,
		grpcDrops:  observabilityGRPCDrops("tracing"),
	})
}

// Trace is a merged MeshTrace conf.
type Trace struct {
	// Backends holds at most one backend, as Kuma allows.
	Backends []TraceBackend `json:"backends,omitempty"`
	Sampling *struct {
		Overall *Percent `json:"overall,omitempty"`
		Client  *Percent `json:"client,omitempty"`
		Random  *Percent `json:"random,omitempty"`
	} `json:"sampling,omitempty"`
	Tags []TraceTag `json:"tags,omitempty"`
}

// TraceBackend is a MeshTrace backend: one of Zipkin, Datadog and
// OpenTelemetry is set.
type TraceBackend struct {
	Type   string `json:"type"`
	Zipkin *struct {
		URL               string `json:"url"`
		TraceID128Bit     bool   `json:"traceId128bit,omitempty"`
		APIVersion        string `json:"apiVersion,omitempty"`
		SharedSpanContext bool   `json:"sharedSpanContext,omitempty"`
	} `json:"zipkin,omitempty"`
	Datadog *struct {
		URL          string `json:"url"`
		SplitService bool   `json:"splitService,omitempty"`
	} `json:"datadog,omitempty"`
	OpenTelemetry *struct {
		Endpoint string `json:"endpoint"`
	} `json:"openTelemetry,omitempty"`
}

// TraceTag is a custom tag: a literal, or a request header's value.
type TraceTag struct {
	Name    string  `json:"name"`
	Literal *string `json:"literal,omitempty"`
	Header  *struct {
		Name    string  `json:"name"`
		Default *string `json:"default,omitempty"`
	} `json:"header,omitempty"`
}

// Percent is a percentage written as a number or as a decimal string
// ("12.5"), as Kuma's sampling fields are.
type Percent struct{ Value float64 }

// UnmarshalJSON reads a number or a string holding one.
func (p *Percent) UnmarshalJSON(b []byte) error {
	var s string
	if json.Unmarshal(b, &s) == nil {
		v, err := strconv.ParseFloat(s, 64)
		p.Value = v
		return err
	}
	return json.Unmarshal(b, &p.Value)
}

// MarshalJSON writes the percentage as a number.
func (p Percent) MarshalJSON() ([]byte, error) { return json.Marshal(p.Value) }

func checkTrace(d *decoder, ptr string, conf map[string]any, _ ConfPosition, _ TargetRef) {
	backends, ok := conf["backends"].([]any)
	switch {
	case !ok:
		d.add(ptr+"/backends", CodeMissingField, "add `backends: [{type: Zipkin, zipkin: {url: ...}}]` (or `[]` for none)", "must be defined")
	case len(backends) > 1:
		d.add(ptr+"/backends", CodeInvalidValue, "keep one backend: Envoy sends traces to one collector", "must have zero or one backend defined")
	case len(backends) == 1:
		b, _ := backends[0].(map[string]any)
		bp := ptr + "/backends/0"
		switch str(b, "type") {
		case "Zipkin":
			z := mapOf(b, "zipkin")
			if z == nil {
				d.add(bp+"/zipkin", CodeMissingField, "add `zipkin: {url: http://zipkin:9411/api/v2/spans}`", "must be defined")
			} else if u, err := url.ParseRequestURI(str(z, "url")); err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
				d.add(bp+"/zipkin/url", CodeInvalidValue, "write an http(s) URL such as http://zipkin:9411/api/v2/spans", "must be a valid url")
			}
		case "Datadog":
			dd := mapOf(b, "datadog")
			if dd == nil {
				d.add(bp+"/datadog", CodeMissingField, "add `datadog: {url: http://datadog-agent:8126}`", "must be defined")
				break
			}
			d.datadogURL(bp+"/datadog/url", str(dd, "url"))
		case "OpenTelemetry":
			d.otelEndpoint(bp+"/openTelemetry", mapOf(b, "openTelemetry"))
		}
	}
	for i, raw := range listOf(conf, "tags") {
		t, _ := raw.(map[string]any)
		tp := fmt.Sprintf("%s/tags/%d", ptr, i)
		if str(t, "name") == "" {
			d.add(tp+"/name", CodeMissingField, "name the tag", "must not be empty")
		}
		_, hasHeader := t["header"]
		_, hasLiteral := t["literal"]
		if hasHeader == hasLiteral {
			d.add(tp, CodeInvalidValue, "set either `literal` or `header`", `tag must have only one type defined: header, literal`)
		}
	}
	s := mapOf(conf, "sampling")
	for _, f := range []string{"overall", "client", "random"} {
		v, ok := s[f]
		if !ok {
			continue
		}
		var n float64
		switch x := v.(type) {
		case int64:
			n = float64(x)
		case float64:
			n = x
		case string:
			var err error
			if n, err = strconv.ParseFloat(x, 64); err != nil {
				d.add(ptr+"/sampling/"+f, CodeInvalidValue, "write a percentage such as 10 or \"12.5\"", "string is not a number")
				continue
			}
		}
		if n < 0 || n > 100 {
			d.add(ptr+"/sampling/"+f, CodeOutOfRange, "write a percentage from 0 to 100", "must be between 0 and 100")
		}
	}
}

// datadogURL checks a Datadog agent URL as Kuma does: http, a port, and
// nothing else.
func (d *decoder) datadogURL(ptr, s string) {
	u, err := url.ParseRequestURI(s)
	if err != nil {
		d.add(ptr, CodeInvalidValue, "write the agent's address as http://HOST:PORT", "must be a valid url")
		return
	}
	if u.Scheme != "http" {
		d.add(ptr, CodeInvalidValue, "write the agent's address as http://HOST:PORT", "scheme must be http")
	}
	if p := u.Port(); p == "" {
		d.add(ptr, CodeInvalidValue, "write the agent's address as http://HOST:PORT", "port must be defined")
	} else if !validPort(p) {
		d.add(ptr, CodeInvalidValue, "write the agent's address as http://HOST:PORT", "port must be a valid (1-65535)")
	}
	if u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		d.add(ptr, CodeInvalidValue, "write the agent's address as http://HOST:PORT", "path, query, fragment and user must not be defined")
	}
}

// otelEndpoint checks an OpenTelemetry backend: gitmesh has no
// MeshOpenTelemetryBackend, so its endpoint is required.
func (d *decoder) otelEndpoint(ptr string, otel map[string]any) {
	if otel == nil {
		d.add(ptr, CodeMissingField, "add `openTelemetry: {endpoint: otel-collector:4317}`", "must be defined")
		return
	}
	if _, ok := otel["backendRef"]; ok {
		d.add(ptr+"/backendRef", CodeUnsupported, "write the collector's `endpoint: HOST:PORT` instead: gitmesh has no MeshOpenTelemetryBackend",
			"backendRef is not supported by gitmesh")
		return
	}
	ep := str(otel, "endpoint")
	if ep == "" {
		d.add(ptr+"/endpoint", CodeMissingField, "write the collector's address, e.g. otel-collector:4317", "must be defined")
		return
	}
	if _, _, err := OTelEndpoint(ep); err != nil {
		d.add(ptr+"/endpoint", CodeInvalidAddress, "write HOST:PORT, or HOST for port 4317", "%v", err)
	}
}

// OTelEndpoint splits an OpenTelemetry collector's endpoint, HOST:PORT or
// HOST (port 4317, as in Kuma).
func OTelEndpoint(ep string) (string, uint32, error) {
	host, port, err := net.SplitHostPort(ep)
	if err != nil {
		if ep == "" || strings.ContainsAny(ep, ":[]/") {
			return "", 0, fmt.Errorf("endpoint %q is not HOST:PORT", ep)
		}
		return ep, 4317, nil
	}
	if host == "" || !validPort(port) {
		return "", 0, fmt.Errorf("endpoint %q is not HOST:PORT", ep)
	}
	n, _ := strconv.Atoi(port)
	return host, uint32(n), nil
}

// observabilityGRPCDrops: proxyless gRPC has no access logs, tracing or
// Envoy stats, so it drops the whole conf of these kinds.
func observabilityGRPCDrops(what string) func(map[string]any, ConfPosition) []string {
	return func(conf map[string]any, _ ConfPosition) []string {
		if len(conf) == 0 {
			return nil
		}
		return []string{what}
	}
}
