package xds

import (
	"fmt"
	"net/url"
	"strconv"

	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tracingv3 "github.com/envoyproxy/go-control-plane/envoy/type/tracing/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/gitmesh/gitmesh/schema"
)

// MeshTrace, and the tracing section of a Mesh (Kuma 0.x's TrafficTrace
// with the mesh's default backend): every HTTP connection manager of the
// proxy traces to one collector, through a cluster of the proxy's own, as
// Kuma 2.14 configures it. A MeshTrace that selects the proxy takes the
// place of the Mesh's tracing. Proxyless gRPC has no tracing.
func init() {
	registerApplier(&confApplier{typ: schema.TypeMeshTrace, proxy: traceProxy})
}

// tracer is what every HTTP connection manager of a proxy is given: the
// provider, per direction (Datadog names the service per direction), and
// the sampling and tags.
type tracer struct {
	provider func(f *filterEdit) (*tracev3.Tracing_Http, error)
	overall  *typev3.Percent
	client   *typev3.Percent
	random   *typev3.Percent
	tags     []*tracingv3.CustomTag
}

func traceProxy(e *proxyEdit, policies []*schema.ConfPolicy) error {
	var t *tracer
	var err error
	c := schema.ProxyConf(policies, e.dp)
	switch {
	case !c.Empty():
		if e.flavor == FlavorGRPC {
			e.notes = append(e.notes, fmt.Sprintf("proxyless gRPC has no tracing: MeshTrace %s is ignored", c.From[len(c.From)-1].Policy.Name))
			return nil
		}
		t, err = meshTracer(e, c)
	case e.mesh.Tracing != nil && e.mesh.Tracing.DefaultBackend != "":
		if e.flavor == FlavorGRPC {
			e.notes = append(e.notes, fmt.Sprintf("proxyless gRPC has no tracing: mesh %s's tracing backend %s is ignored", e.mesh.Name, e.mesh.Tracing.DefaultBackend))
			return nil
		}
		t, err = legacyTracer(e)
	}
	if err != nil || t == nil {
		return err
	}
	for _, f := range e.listeners() {
		hcm, err := e.hcm(f)
		if err != nil {
			return err
		}
		if hcm == nil {
			continue
		}
		p, err := t.provider(f)
		if err != nil {
			return err
		}
		hcm.Tracing = &hcmv3.HttpConnectionManager_Tracing{
			SpawnUpstreamSpan: wrapperspb.Bool(false),
			OverallSampling:   t.overall,
			ClientSampling:    t.client,
			RandomSampling:    t.random,
			CustomTags:        cloneTags(t.tags),
			Provider:          p,
		}
	}
	return nil
}

func cloneTags(tags []*tracingv3.CustomTag) []*tracingv3.CustomTag {
	out := make([]*tracingv3.CustomTag, len(tags))
	for i, t := range tags {
		out[i] = proto.Clone(t).(*tracingv3.CustomTag)
	}
	return out
}

// meshTracer is the tracer of a merged MeshTrace conf; nil without a
// backend. The collector's cluster is meshtrace:<provider>.
func meshTracer(e *proxyEdit, c schema.Conf) (*tracer, error) {
	var conf schema.Trace
	if err := c.Decode(&conf); err != nil {
		return nil, err
	}
	if len(conf.Backends) == 0 {
		return nil, nil
	}
	t := &tracer{}
	if s := conf.Sampling; s != nil {
		t.overall, t.client, t.random = percent(s.Overall), percent(s.Client), percent(s.Random)
	}
	for _, tag := range conf.Tags {
		if tag.Header != nil {
			var def string
			if tag.Header.Default != nil {
				def = *tag.Header.Default
			}
			t.tags = append(t.tags, &tracingv3.CustomTag{Tag: tag.Name, Type: &tracingv3.CustomTag_RequestHeader{
				RequestHeader: &tracingv3.CustomTag_Header{Name: tag.Header.Name, DefaultValue: def}}})
		} else if tag.Literal != nil {
			t.tags = append(t.tags, literalTag(tag.Name, *tag.Literal))
		}
	}
	if !hasTag(t.tags, "kuma.mesh") {
		t.tags = append(t.tags, literalTag("kuma.mesh", e.dp.Mesh))
	}
	b := conf.Backends[0]
	switch {
	case b.Zipkin != nil:
		return t, t.zipkin(e, "meshtrace:zipkin", b.Zipkin.URL, b.Zipkin.TraceID128Bit, b.Zipkin.APIVersion == "httpProto", wrapperspb.Bool(b.Zipkin.SharedSpanContext))
	case b.Datadog != nil:
		u, err := url.Parse(b.Datadog.URL)
		if err != nil {
			return nil, err
		}
		port, _ := strconv.Atoi(u.Port())
		return t, t.datadog(e, "meshtrace:datadog", u.Hostname(), uint32(port), b.Datadog.SplitService)
	case b.OpenTelemetry != nil:
		host, port, err := schema.OTelEndpoint(b.OpenTelemetry.Endpoint)
		if err != nil {
			return nil, err
		}
		const name = "meshtrace:opentelemetry"
		if err := e.addCluster(collectorCluster(name, host, port, false, true)); err != nil {
			return nil, err
		}
		cfg := &tracev3.OpenTelemetryConfig{ServiceName: serviceName(e.dp), GrpcService: envoyGRPC(name)}
		t.provider = fixedProvider("envoy.tracers.opentelemetry", cfg)
		return t, nil
	}
	return nil, nil
}

// legacyTracer is the tracer of the mesh's default tracing backend, as
// Kuma's TracingConfigurer makes it: its sampling as the overall sampling,
// the collector's cluster tracing:<backend>.
func legacyTracer(e *proxyEdit) (*tracer, error) {
	tr := e.mesh.Tracing
	var b *schema.TracingBackend
	for i := range tr.Backends {
		if tr.Backends[i].Name == tr.DefaultBackend {
			b = &tr.Backends[i]
		}
	}
	if b == nil {
		return nil, nil
	}
	t := &tracer{}
	if b.Sampling != nil {
		t.overall = &typev3.Percent{Value: *b.Sampling}
	}
	name := "tracing:" + b.Name
	if d := b.Datadog; d != nil {
		return t, t.datadog(e, name, d.Address, d.Port, d.SplitService)
	}
	return t, t.zipkin(e, name, b.Zipkin.URL, b.Zipkin.TraceID128Bit, b.Zipkin.APIVersion == "httpProto", nil)
}

// zipkin sends spans to the Zipkin collector at rawURL through cluster;
// shared is the shared span context setting (nil: Envoy's default).
func (t *tracer) zipkin(e *proxyEdit, cluster, rawURL string, id128, proto bool, shared *wrapperspb.BoolValue) error {
	u, err := url.Parse(rawURL)
	if err != nil {
		return fmt.Errorf("zipkin url: %w", err)
	}
	port := u.Port()
	if port == "" {
		port = map[bool]string{true: "443", false: "80"}[u.Scheme == "https"]
	}
	n, _ := strconv.Atoi(port)
	if err := e.addCluster(collectorCluster(cluster, u.Hostname(), uint32(n), u.Scheme == "https", false)); err != nil {
		return err
	}
	version := tracev3.ZipkinConfig_HTTP_JSON
	if proto {
		version = tracev3.ZipkinConfig_HTTP_PROTO
	}
	t.provider = fixedProvider("envoy.tracers.zipkin", &tracev3.ZipkinConfig{
		CollectorCluster:         cluster,
		CollectorEndpoint:        u.Path,
		TraceId_128Bit:           id128,
		CollectorEndpointVersion: version,
		SharedSpanContext:        shared,
		CollectorHostname:        u.Host,
	})
	return nil
}

// datadog sends spans to the Datadog agent at host:port through cluster;
// with split, the service name says the direction (and the destination of
// an outbound), as Kuma's does.
func (t *tracer) datadog(e *proxyEdit, cluster, host string, port uint32, split bool) error {
	if err := e.addCluster(collectorCluster(cluster, host, port, false, false)); err != nil {
		return err
	}
	service := serviceName(e.dp)
	t.provider = func(f *filterEdit) (*tracev3.Tracing_Http, error) {
		name := service
		if split && f.inbound {
			name = service + "_INBOUND"
		} else if split {
			name = service + "_OUTBOUND_" + f.service
		}
		return tracingProvider("envoy.tracers.datadog", &tracev3.DatadogConfig{CollectorCluster: cluster, ServiceName: name})
	}
	return nil
}

func fixedProvider(name string, cfg proto.Message) func(*filterEdit) (*tracev3.Tracing_Http, error) {
	return func(*filterEdit) (*tracev3.Tracing_Http, error) { return tracingProvider(name, cfg) }
}

func tracingProvider(name string, cfg proto.Message) (*tracev3.Tracing_Http, error) {
	a, err := toAny(cfg)
	if err != nil {
		return nil, err
	}
	return &tracev3.Tracing_Http{Name: name, ConfigType: &tracev3.Tracing_Http_TypedConfig{TypedConfig: a}}, nil
}

func percent(p *schema.Percent) *typev3.Percent {
	if p == nil {
		return nil
	}
	return &typev3.Percent{Value: p.Value}
}

func literalTag(name, value string) *tracingv3.CustomTag {
	return &tracingv3.CustomTag{Tag: name, Type: &tracingv3.CustomTag_Literal_{Literal: &tracingv3.CustomTag_Literal{Value: value}}}
}

func hasTag(tags []*tracingv3.CustomTag, name string) bool {
	for _, t := range tags {
		if t.GetTag() == name {
			return true
		}
	}
	return false
}

// serviceName is the service a proxy is known by, as Kuma's
// IdentifyingName: the first of its inbounds' services in sorted order,
// "unknown" without inbounds.
func serviceName(dp *schema.Dataplane) string {
	name := ""
	for _, in := range dp.Inbound {
		if s := in.Service(); name == "" || s < name {
			name = s
		}
	}
	if name == "" {
		return "unknown"
	}
	return name
}
