package schema

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
)

// TypeMeshAccessLog is Kuma 2.x's access-log policy.
const TypeMeshAccessLog = "MeshAccessLog"

func init() {
	registerConfKind(&confKind{
		typ: TypeMeshAccessLog, plural: "meshaccesslogs", schema: "meshaccesslog.json",
		top:       targetRefRules{kinds: []TargetKind{KindMesh, KindMeshSubset, KindMeshService, KindMeshServiceSubset, KindDataplane}},
		to:        &targetRefRules{kinds: []TargetKind{KindMesh, KindMeshService}},
		from:      &targetRefRules{kinds: []TargetKind{KindMesh}},
		rules:     true,
		check:     checkAccessLog,
		grpcDrops: observabilityGRPCDrops("access logs"),
	})
}

// AccessLog is a MeshAccessLog conf. Merged, the backends of the last item
// replace the others', as in Kuma (its Conf.Backends has no append merge).
type AccessLog struct {
	Backends []AccessLogBackend `json:"backends,omitempty"`
}

// AccessLogBackend is one place access logs go: one of TCP, File and
// OpenTelemetry is set.
type AccessLogBackend struct {
	Type string `json:"type"`
	TCP  *struct {
		Format  *LogFormat `json:"format,omitempty"`
		Address string     `json:"address"`
	} `json:"tcp,omitempty"`
	File *struct {
		Format *LogFormat `json:"format,omitempty"`
		Path   string     `json:"path"`
	} `json:"file,omitempty"`
	OpenTelemetry *struct {
		Endpoint   string          `json:"endpoint"`
		Attributes []KeyValue      `json:"attributes,omitempty"`
		Body       json.RawMessage `json:"body,omitempty"`
	} `json:"openTelemetry,omitempty"`
}

// LogFormat is an access log's format: Plain text, or Json fields.
type LogFormat struct {
	Type            string     `json:"type"`
	Plain           *string    `json:"plain,omitempty"`
	JSON            []KeyValue `json:"json,omitempty"`
	OmitEmptyValues bool       `json:"omitEmptyValues,omitempty"`
}

// KeyValue is a key and a value, as JSON log fields and OpenTelemetry
// attributes are written.
type KeyValue struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

func checkAccessLog(d *decoder, ptr string, conf map[string]any, _ ConfPosition, _ TargetRef) {
	backends, ok := conf["backends"].([]any)
	if !ok {
		d.add(ptr+"/backends", CodeMissingField, "add `backends: [{type: File, file: {path: /dev/stdout}}]`", "must be defined")
		return
	}
	for i, raw := range backends {
		b, _ := raw.(map[string]any)
		bp := fmt.Sprintf("%s/backends/%d", ptr, i)
		switch str(b, "type") {
		case "File":
			f := mapOf(b, "file")
			if f == nil {
				d.add(bp+"/file", CodeMissingField, "add `file: {path: /var/log/envoy/access.log}`", "must be defined")
				continue
			}
			d.logFormat(bp+"/file/format", mapOf(f, "format"))
			if p := str(f, "path"); strings.ContainsRune(p, 0) {
				d.add(bp+"/file/path", CodeInvalidValue, "write a file path such as /var/log/envoy/access.log", "file backend requires a valid path")
			}
		case "Tcp":
			t := mapOf(b, "tcp")
			if t == nil {
				d.add(bp+"/tcp", CodeMissingField, "add `tcp: {address: HOST:PORT}`", "must be defined")
				continue
			}
			d.logFormat(bp+"/tcp/format", mapOf(t, "format"))
			if u, err := url.Parse("tcp://" + str(t, "address")); err != nil || u.Host == "" || u.Path != "" {
				d.add(bp+"/tcp/address", CodeInvalidAddress, "write HOST:PORT, e.g. logstash:5000", "tcp backend requires valid address")
			}
		case "OpenTelemetry":
			o := mapOf(b, "openTelemetry")
			d.otelEndpoint(bp+"/openTelemetry", o)
			for j, raw := range listOf(o, "attributes") {
				a, _ := raw.(map[string]any)
				if k := str(a, "key"); !otelAttributeKey(k) {
					d.add(fmt.Sprintf("%s/openTelemetry/attributes/%d/key", bp, j), CodeInvalidValue,
						"write a static OpenTelemetry attribute name such as `mesh` or `kuma.service`",
						"%q is not a valid OpenTelemetry attribute name", k)
				}
			}
		}
	}
}

// otelAttributeKey reports whether k is a static OpenTelemetry attribute
// name, as Kuma requires: lower-case letters and digits, words joined by
// '.' or '_'.
func otelAttributeKey(k string) bool {
	if k == "" || k[0] < 'a' || k[0] > 'z' {
		return false
	}
	prev := byte('a')
	for i := 1; i < len(k); i++ {
		c := k[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case (c == '.' || c == '_') && prev != '.' && prev != '_' && i < len(k)-1:
		default:
			return false
		}
		prev = c
	}
	return true
}

// logFormat checks an access log's format as Kuma does.
func (d *decoder) logFormat(ptr string, f map[string]any) {
	if f == nil {
		return
	}
	switch str(f, "type") {
	case "Plain":
		p, ok := f["plain"].(string)
		switch {
		case !ok:
			d.add(ptr+"/plain", CodeMissingField, "write the format, e.g. `plain: '[%START_TIME%] %KUMA_MESH% %UPSTREAM_HOST%'`", "must be defined")
		case p == "":
			d.add(ptr+"/plain", CodeMissingField, "write the format, e.g. `plain: '[%START_TIME%] %KUMA_MESH% %UPSTREAM_HOST%'`", "must not be empty")
		}
	case "Json":
		js, ok := f["json"].([]any)
		if !ok {
			d.add(ptr+"/json", CodeMissingField, "list the fields, e.g. `json: [{key: start_time, value: '%START_TIME%'}]`", "must be defined")
			return
		}
		if len(js) == 0 {
			d.add(ptr+"/json", CodeMissingField, "list the fields, e.g. `json: [{key: start_time, value: '%START_TIME%'}]`", "must not be empty")
		}
		for i, raw := range js {
			kv, _ := raw.(map[string]any)
			fp := fmt.Sprintf("%s/json/%d", ptr, i)
			k, v := str(kv, "key"), str(kv, "value")
			if k == "" {
				d.add(fp+"/key", CodeMissingField, "name the field", "key cannot be empty")
			}
			if v == "" {
				d.add(fp+"/value", CodeMissingField, "write the field's value, e.g. '%START_TIME%'", "value cannot be empty")
			}
			if !json.Valid([]byte(fmt.Sprintf(`{"%s": "%s"}`, k, v))) {
				d.add(fp, CodeInvalidValue, "leave out `\"` and `\\`, or escape them", "is not a valid JSON object")
			}
		}
	}
}
