package schema

import (
	"encoding/json"
	"fmt"
	"time"
)

// TypeMeshTimeout is Kuma 2.x's timeout policy.
const TypeMeshTimeout = "MeshTimeout"

func init() {
	registerConfKind(&confKind{
		typ: TypeMeshTimeout, plural: "meshtimeouts", schema: "meshtimeout.json",
		top:       targetRefRules{kinds: []TargetKind{KindMesh, KindMeshSubset, KindMeshService, KindMeshServiceSubset, KindDataplane}},
		to:        &targetRefRules{kinds: []TargetKind{KindMesh, KindMeshService}},
		from:      &targetRefRules{kinds: []TargetKind{KindMesh}},
		rules:     true,
		check:     checkTimeout,
		grpcDrops: timeoutGRPCDrops,
	})
}

// Timeouts is a merged MeshTimeout conf; nil fields are not set.
type Timeouts struct {
	ConnectionTimeout *Duration `json:"connectionTimeout,omitempty"`
	IdleTimeout       *Duration `json:"idleTimeout,omitempty"`
	HTTP              *struct {
		RequestTimeout        *Duration `json:"requestTimeout,omitempty"`
		StreamIdleTimeout     *Duration `json:"streamIdleTimeout,omitempty"`
		MaxStreamDuration     *Duration `json:"maxStreamDuration,omitempty"`
		MaxConnectionDuration *Duration `json:"maxConnectionDuration,omitempty"`
		RequestHeadersTimeout *Duration `json:"requestHeadersTimeout,omitempty"`
	} `json:"http,omitempty"`
}

// Kuma's defaults for what a MeshTimeout that applies leaves unset.
const (
	DefaultConnectTimeout    = 5 * time.Second
	DefaultIdleTimeout       = time.Hour
	DefaultStreamIdleTimeout = 30 * time.Minute
	DefaultRequestTimeout    = 15 * time.Second
)

// Or is d, or def when d is not set.
func (d *Duration) Or(def time.Duration) time.Duration {
	if d == nil {
		return def
	}
	return d.Duration
}

// Duration is a duration written as Go writes one (300ms, 5s, 1h30m).
type Duration struct{ time.Duration }

// UnmarshalJSON reads a duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	d.Duration = v
	return err
}

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// duration checks a duration field of conf.
func (d *decoder) duration(ptr string, conf map[string]any, field string) bool {
	v, ok := conf[field]
	if !ok {
		return false
	}
	s, _ := v.(string)
	dur, err := time.ParseDuration(s)
	switch {
	case err != nil:
		d.add(ptr+"/"+field, CodeInvalidValue, "write a duration such as 300ms, 5s or 1m30s", "%q is not a duration", s)
	case dur < 0:
		d.add(ptr+"/"+field, CodeOutOfRange, "a timeout is 0 (none) or more", "%s must not be negative", field)
	}
	return true
}

func checkTimeout(d *decoder, ptr string, conf map[string]any, _ ConfPosition, _ TargetRef) {
	set := false
	for _, f := range []string{"connectionTimeout", "idleTimeout"} {
		set = d.duration(ptr, conf, f) || set
	}
	if h := mapOf(conf, "http"); h != nil {
		any := false
		for _, f := range []string{"requestTimeout", "streamIdleTimeout", "maxStreamDuration", "maxConnectionDuration", "requestHeadersTimeout"} {
			any = d.duration(ptr+"/http", h, f) || any
		}
		if !any {
			d.add(ptr+"/http", CodeMissingField, "set requestTimeout, streamIdleTimeout, maxStreamDuration, maxConnectionDuration or requestHeadersTimeout",
				"at least one timeout in this section should be configured")
		}
		set = true
	}
	if !set {
		d.add(ptr, CodeMissingField, "set connectionTimeout, idleTimeout or an http timeout", "at least one timeout should be configured")
	}
}

// String is a duration as a person reads it.
func (d Duration) String() string { return fmt.Sprint(d.Duration) }

// timeoutGRPCDrops: a gRPC client applies the request timeout and the
// maximum stream duration (as the deadline of each call); a gRPC server
// applies none.
func timeoutGRPCDrops(conf map[string]any, pos ConfPosition) []string {
	var out []string
	for _, f := range []string{"connectionTimeout", "idleTimeout"} {
		if _, ok := conf[f]; ok {
			out = append(out, f)
		}
	}
	h := mapOf(conf, "http")
	for _, f := range []string{"requestTimeout", "maxStreamDuration", "streamIdleTimeout", "requestHeadersTimeout", "maxConnectionDuration"} {
		if _, ok := h[f]; ok && (pos != PosTo || (f != "requestTimeout" && f != "maxStreamDuration")) {
			out = append(out, "http."+f)
		}
	}
	return out
}
