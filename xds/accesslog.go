package xds

import (
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	celv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/filters/cel/v3"
	otelv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/open_telemetry/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	otlpcommon "go.opentelemetry.io/proto/otlp/common/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/gitmesh/gitmesh/schema"
)

// MeshAccessLog, and the logging section of a Mesh (Kuma 0.x's TrafficLog
// with the mesh's default backend): access logs on the HTTP connection
// managers and tcp_proxies of a proxy's listeners, as Kuma 2.14 writes
// them. Kuma's placeholders (%KUMA_MESH%, %KUMA_SOURCE_SERVICE%, ...) are
// expanded per proxy, so the logs are on the proxy's own copies. A TCP
// backend is Kuma's: Envoy writes {address, message} lines to a pipe that
// a forwarder on the dataplane's host (kuma-dp's access-log streamer)
// sends on. Proxyless gRPC has no access logs.
func init() {
	registerApplier(&confApplier{typ: schema.TypeMeshAccessLog, proxy: accessLogProxy})
}

// Kuma's default formats.
const (
	networkLogFormat = `[%START_TIME%] %RESPONSE_FLAGS% %KUMA_MESH% %KUMA_SOURCE_ADDRESS_WITHOUT_PORT%(%KUMA_SOURCE_SERVICE%)->%UPSTREAM_HOST%(%KUMA_DESTINATION_SERVICE%) took %DURATION%ms, sent %BYTES_SENT% bytes, received: %BYTES_RECEIVED% bytes`
	httpLogFormat    = `[%START_TIME%] %KUMA_MESH% "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" "%REQ(X-B3-TRACEID?X-DATADOG-TRACEID)%" "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%KUMA_SOURCE_SERVICE%" "%KUMA_DESTINATION_SERVICE%" "%KUMA_SOURCE_ADDRESS_WITHOUT_PORT%" "%UPSTREAM_HOST%"`
)

// kumaValues are what Kuma's placeholders expand to for one listener.
type kumaValues struct {
	mesh, sourceService, sourceIP, destinationService, direction string
}

func (v kumaValues) expand(s string) string {
	return strings.NewReplacer(
		"%KUMA_SOURCE_ADDRESS_WITHOUT_PORT%", v.sourceIP,
		"%KUMA_SOURCE_ADDRESS%", net.JoinHostPort(v.sourceIP, "0"),
		"%KUMA_SOURCE_SERVICE%", v.sourceService,
		"%KUMA_DESTINATION_SERVICE%", v.destinationService,
		"%KUMA_MESH%", v.mesh,
		"%KUMA_TRAFFIC_DIRECTION%", v.direction,
		"%KUMA_ZONE%", "",
		"%KUMA_WORKLOAD%", "",
	).Replace(s)
}

// valuesFor are the placeholders' values on f: an outbound is from the
// proxy's service to its destination; an inbound from an unknown client
// (Kuma does not name it) to the inbound's service. The source address is
// the dataplane's, in either direction, as Kuma has it.
func valuesFor(dp *schema.Dataplane, f *filterEdit) kumaValues {
	v := kumaValues{mesh: dp.Mesh, sourceIP: dp.Address, sourceService: serviceName(dp), destinationService: f.service, direction: "OUTBOUND"}
	if v.sourceIP == "" && len(dp.Inbound) > 0 {
		v.sourceIP = dp.Inbound[0].Address
	}
	if f.inbound {
		v.sourceService, v.direction = "unknown", "INBOUND"
	}
	return v
}

// accessLogSocket is the pipe Kuma's TCP backends write to:
// /tmp/kuma-al-<dataplane>-<mesh>.sock, cut to fit a Unix socket path.
func accessLogSocket(dp *schema.Dataplane) string {
	s := filepath.Join("/tmp", "kuma-al-"+dp.Name+"-"+dp.Mesh)
	return s[:min(len(s), 98)] + ".sock"
}

// logBuilder makes one proxy's access logs, naming the OpenTelemetry
// collectors' clusters in the order they are first used.
type logBuilder struct {
	e     *proxyEdit
	otels []string // host:port, by cluster index
}

func accessLogProxy(e *proxyEdit, policies []*schema.ConfPolicy) error {
	if lg := e.mesh.Logging; len(policies) == 0 && (lg == nil || lg.DefaultBackend == "") {
		return nil
	}
	b := &logBuilder{e: e}
	for _, f := range e.listeners() {
		logs, err := b.forFilter(f, policies)
		if err != nil {
			return err
		}
		if len(logs) > 0 {
			if err := appendLogs(e, f, logs); err != nil {
				return err
			}
		}
	}
	if e.flavor == FlavorGRPC {
		b.grpcNotes(policies)
	}
	return nil
}

// forFilter is the access logs of f: the MeshAccessLog items that apply
// to it, else (outbounds only) the mesh's default logging backend.
func (b *logBuilder) forFilter(f *filterEdit, policies []*schema.ConfPolicy) ([]*accesslogv3.AccessLog, error) {
	e := b.e
	v := valuesFor(e.dp, f)
	format := networkLogFormat
	if f.http {
		format = httpLogFormat
	}
	var logs []*accesslogv3.AccessLog
	add := func(c map[string]any, cel string) error {
		var conf schema.AccessLog
		if err := (schema.Conf{Values: c}).Decode(&conf); err != nil {
			return err
		}
		for _, be := range conf.Backends {
			l, err := b.accessLog(be, format, v, cel)
			if err != nil {
				return err
			}
			logs = append(logs, l)
		}
		return nil
	}
	if f.inbound {
		for _, it := range schema.FromItems(policies, e.dp, f.index) {
			if err := add(it.Item.Default, celMatch(it.Match)); err != nil {
				return nil, err
			}
		}
		return logs, nil
	}
	if c := schema.ToConf(policies, e.dp, f.service); !c.Empty() {
		return logs, add(c.Values, "")
	}
	return b.legacy(format, v)
}

// legacy is the access log of an outbound to the mesh's default logging
// backend, as Kuma's TrafficLog configures it; none without one.
func (b *logBuilder) legacy(format string, v kumaValues) ([]*accesslogv3.AccessLog, error) {
	lg := b.e.mesh.Logging
	if lg == nil || lg.DefaultBackend == "" {
		return nil, nil
	}
	for _, be := range lg.Backends {
		if be.Name != lg.DefaultBackend {
			continue
		}
		if be.Format != "" {
			format = be.Format
		}
		format = v.expand(format) + "\n"
		path := be.FilePath
		if be.TCPAddress != "" {
			format, path = be.TCPAddress+";"+format, accessLogSocket(b.e.dp)
		}
		l, err := fileLog(&filev3.FileAccessLog{Path: path, AccessLogFormat: &filev3.FileAccessLog_LogFormat{LogFormat: textFormat(format, false)}})
		return []*accesslogv3.AccessLog{l}, err
	}
	return nil, nil
}

// accessLog is one backend's access log, with a CEL filter when cel is
// not empty.
func (b *logBuilder) accessLog(be schema.AccessLogBackend, format string, v kumaValues, cel string) (*accesslogv3.AccessLog, error) {
	var l *accesslogv3.AccessLog
	var err error
	switch {
	case be.File != nil:
		l, err = fileLog(&filev3.FileAccessLog{Path: be.File.Path, AccessLogFormat: &filev3.FileAccessLog_LogFormat{LogFormat: logFormat(be.File.Format, format, v)}})
	case be.TCP != nil:
		l, err = fileLog(&filev3.FileAccessLog{Path: accessLogSocket(b.e.dp), AccessLogFormat: &filev3.FileAccessLog_LogFormat{LogFormat: tcpFormat(be.TCP.Address, be.TCP.Format, format, v)}})
	case be.OpenTelemetry != nil:
		l, err = b.otelLog(be, format, v)
	default:
		return nil, fmt.Errorf("access log backend of type %q has no configuration", be.Type)
	}
	if err != nil || cel == "" {
		return l, err
	}
	a, err := toAny(&celv3.ExpressionFilter{Expression: cel})
	if err != nil {
		return nil, err
	}
	l.Filter = &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_ExtensionFilter{ExtensionFilter: &accesslogv3.ExtensionFilter{
		Name: "envoy.access_loggers.extension_filters.cel", ConfigType: &accesslogv3.ExtensionFilter_TypedConfig{TypedConfig: a}}}}
	return l, nil
}

// celMatch is the CEL expression of a client match, as Kuma writes it; ""
// for every client.
func celMatch(m *schema.SpiffeMatch) string {
	switch {
	case m == nil:
		return ""
	case m.Prefix:
		return "connection.uri_san_peer_certificate.startsWith(" + strconv.Quote(m.Value) + ")"
	}
	return "connection.uri_san_peer_certificate == " + strconv.Quote(m.Value)
}

func fileLog(cfg *filev3.FileAccessLog) (*accesslogv3.AccessLog, error) {
	a, err := toAny(cfg)
	if err != nil {
		return nil, err
	}
	return &accesslogv3.AccessLog{Name: wellknown.FileAccessLog, ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: a}}, nil
}

// logFormat is a file backend's format: the default (plain) when f is nil.
func logFormat(f *schema.LogFormat, def string, v kumaValues) *corev3.SubstitutionFormatString {
	switch {
	case f == nil:
		return textFormat(v.expand(def+"\n"), false)
	case f.Plain != nil:
		return textFormat(v.expand(*f.Plain+"\n"), f.OmitEmptyValues)
	}
	return jsonFormat(jsonFields(f.JSON, v), f.OmitEmptyValues)
}

// tcpFormat is a TCP backend's format: JSON lines {address, message} for
// the forwarder, the message plain text or JSON fields.
func tcpFormat(address string, f *schema.LogFormat, def string, v kumaValues) *corev3.SubstitutionFormatString {
	msg, omit := structpb.NewStringValue(v.expand(def+"\n")), false
	if f != nil {
		omit = f.OmitEmptyValues
		if f.Plain != nil {
			msg = structpb.NewStringValue(v.expand(*f.Plain + "\n"))
		} else {
			msg = structpb.NewStructValue(&structpb.Struct{Fields: jsonFields(f.JSON, v)})
		}
	}
	return jsonFormat(map[string]*structpb.Value{"address": structpb.NewStringValue(address), "message": msg}, omit)
}

func textFormat(s string, omit bool) *corev3.SubstitutionFormatString {
	return &corev3.SubstitutionFormatString{
		Format:          &corev3.SubstitutionFormatString_TextFormatSource{TextFormatSource: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: s}}},
		OmitEmptyValues: omit,
	}
}

func jsonFormat(fields map[string]*structpb.Value, omit bool) *corev3.SubstitutionFormatString {
	return &corev3.SubstitutionFormatString{
		Format:          &corev3.SubstitutionFormatString_JsonFormat{JsonFormat: &structpb.Struct{Fields: fields}},
		OmitEmptyValues: omit,
	}
}

func jsonFields(kvs []schema.KeyValue, v kumaValues) map[string]*structpb.Value {
	fields := make(map[string]*structpb.Value, len(kvs))
	for _, kv := range kvs {
		fields[kv.Key] = structpb.NewStringValue(v.expand(kv.Value))
	}
	return fields
}

// otelLog sends access logs to an OpenTelemetry collector, through the
// cluster meshaccesslog:opentelemetry:<n> of the proxy's own.
func (b *logBuilder) otelLog(be schema.AccessLogBackend, format string, v kumaValues) (*accesslogv3.AccessLog, error) {
	o := be.OpenTelemetry
	host, port, err := schema.OTelEndpoint(o.Endpoint)
	if err != nil {
		return nil, err
	}
	ep := net.JoinHostPort(host, strconv.FormatUint(uint64(port), 10))
	n := slices.Index(b.otels, ep)
	if n < 0 {
		n, b.otels = len(b.otels), append(b.otels, ep)
	}
	cluster := "meshaccesslog:opentelemetry:" + strconv.Itoa(n)
	if err := b.e.addCluster(collectorCluster(cluster, host, port, false, true)); err != nil {
		return nil, err
	}
	body := &otlpcommon.AnyValue{Value: &otlpcommon.AnyValue_StringValue{StringValue: v.expand(format)}}
	if len(o.Body) > 0 {
		if body, err = otelBody(o.Body, v); err != nil {
			return nil, err
		}
	}
	attrs := &otlpcommon.KeyValueList{}
	for _, kv := range o.Attributes {
		attrs.Values = append(attrs.Values, &otlpcommon.KeyValue{Key: kv.Key,
			Value: &otlpcommon.AnyValue{Value: &otlpcommon.AnyValue_StringValue{StringValue: v.expand(kv.Value)}}})
	}
	a, err := toAny(&otelv3.OpenTelemetryAccessLogConfig{
		LogName:     "MeshAccessLog",
		GrpcService: envoyGRPC(cluster),
		Body:        body,
		Attributes:  attrs,
		ResourceAttributes: &otlpcommon.KeyValueList{Values: []*otlpcommon.KeyValue{{Key: "kuma.mesh",
			Value: &otlpcommon.AnyValue{Value: &otlpcommon.AnyValue_StringValue{StringValue: v.mesh}}}}},
	})
	if err != nil {
		return nil, err
	}
	return &accesslogv3.AccessLog{Name: "envoy.access_loggers.open_telemetry", ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: a}}, nil
}

// otelBody is an OpenTelemetry body written as an OTLP AnyValue (JSON),
// its strings expanded; a body that is no AnyValue is a string (a JSON
// string unquoted).
func otelBody(raw json.RawMessage, v kumaValues) (*otlpcommon.AnyValue, error) {
	body := &otlpcommon.AnyValue{}
	if err := protojson.Unmarshal(raw, body); err == nil {
		expandAnyValue(body, v)
		return body, nil
	}
	s := string(raw)
	var str string
	if json.Unmarshal(raw, &str) == nil {
		s = str
	}
	return &otlpcommon.AnyValue{Value: &otlpcommon.AnyValue_StringValue{StringValue: v.expand(s)}}, nil
}

func expandAnyValue(a *otlpcommon.AnyValue, v kumaValues) {
	switch x := a.GetValue().(type) {
	case *otlpcommon.AnyValue_StringValue:
		x.StringValue = v.expand(x.StringValue)
	case *otlpcommon.AnyValue_ArrayValue:
		for _, e := range x.ArrayValue.GetValues() {
			expandAnyValue(e, v)
		}
	case *otlpcommon.AnyValue_KvlistValue:
		for _, kv := range x.KvlistValue.GetValues() {
			kv.Key = v.expand(kv.Key)
			if kv.Value != nil {
				expandAnyValue(kv.Value, v)
			}
		}
	}
}

// appendLogs adds logs to f's connection manager or tcp_proxy.
func appendLogs(e *proxyEdit, f *filterEdit, logs []*accesslogv3.AccessLog) error {
	if f.http {
		hcm, err := e.hcm(f)
		if err != nil {
			return err
		}
		hcm.AccessLog = append(hcm.AccessLog, logs...)
		return nil
	}
	tcp, err := e.tcp(f)
	if err != nil {
		return err
	}
	tcp.AccessLog = append(tcp.AccessLog, logs...)
	return nil
}

// grpcNotes says what a gRPC proxy drops: the MeshAccessLogs and the
// mesh's logging that would configure it.
func (b *logBuilder) grpcNotes(policies []*schema.ConfPolicy) {
	e := b.e
	names := map[string]bool{}
	for i := range e.dp.Inbound {
		for _, it := range schema.FromItems(policies, e.dp, i) {
			names[it.Policy.Name] = true
		}
	}
	legacy := false
	for _, o := range e.dp.Outbound {
		c := schema.ToConf(policies, e.dp, o.Service)
		for _, s := range c.From {
			names[s.Policy.Name] = true
		}
		legacy = legacy || c.Empty()
	}
	for _, n := range slices.Sorted(maps.Keys(names)) {
		e.notes = append(e.notes, fmt.Sprintf("proxyless gRPC has no access logs: MeshAccessLog %s is ignored", n))
	}
	if lg := e.mesh.Logging; legacy && lg != nil && lg.DefaultBackend != "" {
		e.notes = append(e.notes, fmt.Sprintf("proxyless gRPC has no access logs: mesh %s's logging backend %s is ignored", e.mesh.Name, lg.DefaultBackend))
	}
}
