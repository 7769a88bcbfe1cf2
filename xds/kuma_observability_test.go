package xds

import (
	"encoding/json"
	"testing"
	"testing/fstest"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/google/go-cmp/cmp"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/gitmesh/gitmesh/schema/schematest"
)

// The access logs and tracing gitmesh makes for a MeshAccessLog and a
// MeshTrace, checked field by field against what Kuma 2.14.3 generates for
// the same policies: the expected values are those of Kuma's plugin test
// golden files (github.com/kumahq/kuma, tag v2.14.3), named at each case.
// The proxy is the one those tests build: dataplane backend of mesh
// default at 127.0.0.1, an HTTP inbound on port 17777 and an outbound to
// the TCP service other-service-tcp on port 37777.

const kumaDataplanes = `
type: Dataplane
mesh: default
name: backend
networking:
  address: 127.0.0.1
  inbound:
    - port: 17777
      tags: {kuma.io/service: backend, kuma.io/protocol: http}
  outbound:
    - port: 37777
      tags: {kuma.io/service: other-service-tcp}
---
type: Dataplane
mesh: default
name: other
networking:
  address: 10.0.0.2
  inbound:
    - port: 9000
      tags: {kuma.io/service: other-service-tcp}
`

// The MeshAccessLog of three cases of Kuma's
// pkg/plugins/policies/meshaccesslog/plugin/v1alpha1/plugin_test.go: "outbound
// tcpproxy with file backend and default format", "... with tcp backend and
// plain format" and "... with opentelemetry backend and plain format" (its
// backend for every service), here one policy with the three backends.
const kumaAccessLog = `
type: MeshAccessLog
mesh: default
name: outbound
spec:
  targetRef: {kind: Mesh}
  to:
    - targetRef: {kind: Mesh}
      default:
        backends:
          - type: File
            file: {path: /tmp/log}
          - type: Tcp
            tcp:
              address: logging.backend
              format: {type: Plain, plain: "custom format [%START_TIME%] %RESPONSE_FLAGS%"}
          - type: OpenTelemetry
            openTelemetry: {endpoint: otel-collector}
`

// Kuma's access logs, in the order of the backends above: the accessLog
// entries of testdata/outbound_file_backend_default_format.listener.golden.yaml,
// testdata/outbound_tcp_backend_plain_format.listener.golden.yaml and
// testdata/outbound_otel_backend_plain_format.listener.golden.yaml (all under
// pkg/plugins/policies/meshaccesslog/plugin/v1alpha1/).
const kumaAccessLogs = `
- name: envoy.access_loggers.file
  typedConfig:
    '@type': type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
    logFormat:
      textFormatSource:
        inlineString: |
          [%START_TIME%] %RESPONSE_FLAGS% default 127.0.0.1(backend)->%UPSTREAM_HOST%(other-service-tcp) took %DURATION%ms, sent %BYTES_SENT% bytes, received: %BYTES_RECEIVED% bytes
    path: /tmp/log
- name: envoy.access_loggers.file
  typedConfig:
    '@type': type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
    logFormat:
      jsonFormat:
        address: logging.backend
        message: |
          custom format [%START_TIME%] %RESPONSE_FLAGS%
    path: /tmp/kuma-al-backend-default.sock
- name: envoy.access_loggers.open_telemetry
  typedConfig:
    '@type': type.googleapis.com/envoy.extensions.access_loggers.open_telemetry.v3.OpenTelemetryAccessLogConfig
    attributes: {}
    body:
      stringValue: '[%START_TIME%] %RESPONSE_FLAGS% default 127.0.0.1(backend)->%UPSTREAM_HOST%(other-service-tcp)
        took %DURATION%ms, sent %BYTES_SENT% bytes, received: %BYTES_RECEIVED%
        bytes'
    grpcService:
      envoyGrpc:
        clusterName: meshaccesslog:opentelemetry:0
    logName: MeshAccessLog
    resourceAttributes:
      values:
      - key: kuma.mesh
        value:
          stringValue: default
`

// The collector's cluster: testdata/outbound_otel_backend_plain_format.cluster.golden.yaml.
const kumaAccessLogCluster = `
altStatName: meshaccesslog_opentelemetry_0
connectTimeout: 5s
dnsLookupFamily: V4_ONLY
loadAssignment:
  clusterName: meshaccesslog:opentelemetry:0
  endpoints:
  - lbEndpoints:
    - endpoint:
        address:
          socketAddress:
            address: otel-collector
            portValue: 4317
name: meshaccesslog:opentelemetry:0
type: STRICT_DNS
typedExtensionProtocolOptions:
  envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
    '@type': type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
    explicitHttpConfig:
      http2ProtocolOptions: {}
`

// The MeshTrace of the case "inbound/outbound for zipkin" of Kuma's
// pkg/plugins/policies/meshtrace/plugin/v1alpha1/plugin_test.go.
const kumaTrace = `
type: MeshTrace
mesh: default
name: zipkin
spec:
  targetRef: {kind: Mesh}
  default:
    tags:
      - {name: app, literal: backend}
      - {name: app_code, header: {name: app_code}}
      - {name: client_id, header: {name: client_id, default: none}}
    sampling: {overall: 10, client: 20, random: 50}
    backends:
      - type: Zipkin
        zipkin:
          url: http://jaeger-collector.mesh-observability:9411/api/v2/spans
          sharedSpanContext: true
          apiVersion: httpProto
          traceId128bit: true
`

// Kuma's tracing of the inbound's connection manager, from
// pkg/plugins/policies/meshtrace/plugin/v1alpha1/testdata/inbound-outbound-zipkin.listener.golden.yaml,
// but for the tag kuma.zone: test-zone, the zone of Kuma's test proxy
// (gitmesh has no zones).
const kumaTracing = `
clientSampling:
  value: 20
customTags:
- literal:
    value: backend
  tag: app
- requestHeader:
    name: app_code
  tag: app_code
- requestHeader:
    defaultValue: none
    name: client_id
  tag: client_id
- literal:
    value: default
  tag: kuma.mesh
overallSampling:
  value: 10
provider:
  name: envoy.tracers.zipkin
  typedConfig:
    '@type': type.googleapis.com/envoy.config.trace.v3.ZipkinConfig
    collectorCluster: meshtrace:zipkin
    collectorEndpoint: /api/v2/spans
    collectorEndpointVersion: HTTP_PROTO
    collectorHostname: jaeger-collector.mesh-observability:9411
    sharedSpanContext: true
    traceId128bit: true
randomSampling:
  value: 50
spawnUpstreamSpan: false
`

// The collector's cluster:
// pkg/plugins/policies/meshtrace/plugin/v1alpha1/testdata/inbound-outbound-zipkin.cluster.golden.yaml.
const kumaTraceCluster = `
altStatName: meshtrace_zipkin
connectTimeout: 5s
dnsLookupFamily: V4_ONLY
loadAssignment:
  clusterName: meshtrace:zipkin
  endpoints:
  - lbEndpoints:
    - endpoint:
        address:
          socketAddress:
            address: jaeger-collector.mesh-observability
            portValue: 9411
name: meshtrace:zipkin
type: STRICT_DNS
`

func TestAccessLogAsKumaGenerates(t *testing.T) {
	p := kumaProxy(t, kumaAccessLog)
	var tcp tcpproxyv3.TcpProxy
	unpackFilter(t, listenerNamed(t, p, "outbound:127.0.0.1:37777"), &tcp)
	want := yamlToJSONList(t, kumaAccessLogs)
	if len(tcp.GetAccessLog()) != len(want) {
		t.Fatalf("%d access logs, Kuma has %d", len(tcp.GetAccessLog()), len(want))
	}
	for i, raw := range want {
		w := &accesslogv3.AccessLog{}
		if err := protojson.Unmarshal(raw, w); err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff(w, tcp.GetAccessLog()[i], protocmp.Transform()); d != "" {
			t.Errorf("access log %d differs from Kuma's (-kuma +gitmesh):\n%s", i, d)
		}
	}
	wantCluster := &clusterv3.Cluster{}
	fromYAML(t, kumaAccessLogCluster, wantCluster)
	if d := cmp.Diff(wantCluster, clusterNamed(t, p, "meshaccesslog:opentelemetry:0"), protocmp.Transform()); d != "" {
		t.Errorf("collector cluster differs from Kuma's (-kuma +gitmesh):\n%s", d)
	}
}

func TestTracingAsKumaGenerates(t *testing.T) {
	p := kumaProxy(t, kumaTrace)
	var hcm hcmv3.HttpConnectionManager
	unpackFilter(t, listenerNamed(t, p, "inbound:127.0.0.1:17777"), &hcm)
	want := &hcmv3.HttpConnectionManager_Tracing{}
	fromYAML(t, kumaTracing, want)
	if d := cmp.Diff(want, hcm.GetTracing(), protocmp.Transform()); d != "" {
		t.Errorf("tracing differs from Kuma's (-kuma +gitmesh):\n%s", d)
	}
	wantCluster := &clusterv3.Cluster{}
	fromYAML(t, kumaTraceCluster, wantCluster)
	if d := cmp.Diff(wantCluster, clusterNamed(t, p, "meshtrace:zipkin"), protocmp.Transform()); d != "" {
		t.Errorf("collector cluster differs from Kuma's (-kuma +gitmesh):\n%s", d)
	}
}

// kumaProxy translates the Envoy proxy of dataplane backend with policy,
// and checks it.
func kumaProxy(t *testing.T, policy string) *Proxy {
	t.Helper()
	set := schematest.Load(t, fstest.MapFS{
		"dataplanes.yaml": {Data: []byte(kumaDataplanes)},
		"policy.yaml":     {Data: []byte(policy)},
	})
	proxies, err := Translate(set, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range proxies {
		if p.Dataplane != "backend" {
			continue
		}
		if err := Check(p); err != nil {
			t.Fatalf("Check: %v", err)
		}
		return p
	}
	t.Fatal("no proxy for dataplane backend")
	return nil
}

func listenerNamed(t *testing.T, p *Proxy, name string) *listenerv3.Listener {
	t.Helper()
	for _, r := range p.Resources[resource.ListenerType] {
		if l := r.(*listenerv3.Listener); l.GetName() == name {
			return l
		}
	}
	t.Fatalf("no listener %s", name)
	return nil
}

func clusterNamed(t *testing.T, p *Proxy, name string) *clusterv3.Cluster {
	t.Helper()
	for _, r := range p.Resources[resource.ClusterType] {
		if c := r.(*clusterv3.Cluster); c.GetName() == name {
			return c
		}
	}
	t.Fatalf("no cluster %s", name)
	return nil
}

// unpackFilter unpacks the last filter of l's only filter chain into m.
func unpackFilter(t *testing.T, l *listenerv3.Listener, m proto.Message) {
	t.Helper()
	fs := l.GetFilterChains()[0].GetFilters()
	if err := fs[len(fs)-1].GetTypedConfig().UnmarshalTo(m); err != nil {
		t.Fatal(err)
	}
}

// fromYAML reads m from YAML in the protojson form Kuma's golden files
// use.
func fromYAML(t *testing.T, y string, m proto.Message) {
	t.Helper()
	var v any
	if err := yaml.Unmarshal([]byte(y), &v); err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := protojson.Unmarshal(b, m); err != nil {
		t.Fatal(err)
	}
}

// yamlToJSONList is each item of a YAML list, as JSON.
func yamlToJSONList(t *testing.T, y string) []json.RawMessage {
	t.Helper()
	var v []any
	if err := yaml.Unmarshal([]byte(y), &v); err != nil {
		t.Fatal(err)
	}
	out := make([]json.RawMessage, len(v))
	for i, item := range v {
		b, err := json.Marshal(item)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = b
	}
	return out
}
