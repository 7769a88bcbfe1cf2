package schema

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// TypeMeshHealthCheck is Kuma 2.x's active health check policy.
const TypeMeshHealthCheck = "MeshHealthCheck"

func init() {
	registerConfKind(&confKind{
		typ: TypeMeshHealthCheck, plural: "meshhealthchecks", schema: "meshhealthcheck.json",
		top:             targetRefRules{kinds: []TargetKind{KindMesh, KindMeshSubset, KindMeshService, KindMeshServiceSubset, KindDataplane}},
		to:              &targetRefRules{kinds: []TargetKind{KindMesh, KindMeshService}},
		check:           checkHealthCheck,
		grpcDrops:       healthCheckGRPCDrops,
		defaultRequired: true,
	})
}

// HealthCheck is a merged MeshHealthCheck conf; nil fields are not set.
type HealthCheck struct {
	Interval                     *Duration        `json:"interval,omitempty"`
	Timeout                      *Duration        `json:"timeout,omitempty"`
	UnhealthyThreshold           *uint32          `json:"unhealthyThreshold,omitempty"`
	HealthyThreshold             *uint32          `json:"healthyThreshold,omitempty"`
	InitialJitter                *Duration        `json:"initialJitter,omitempty"`
	IntervalJitter               *Duration        `json:"intervalJitter,omitempty"`
	IntervalJitterPercent        *uint32          `json:"intervalJitterPercent,omitempty"`
	HealthyPanicThreshold        *Number          `json:"healthyPanicThreshold,omitempty"`
	FailTrafficOnPanic           *bool            `json:"failTrafficOnPanic,omitempty"`
	EventLogPath                 *string          `json:"eventLogPath,omitempty"`
	AlwaysLogHealthCheckFailures *bool            `json:"alwaysLogHealthCheckFailures,omitempty"`
	NoTrafficInterval            *Duration        `json:"noTrafficInterval,omitempty"`
	ReuseConnection              *bool            `json:"reuseConnection,omitempty"`
	TCP                          *TCPHealthCheck  `json:"tcp,omitempty"`
	HTTP                         *HTTPHealthCheck `json:"http,omitempty"`
	GRPC                         *GRPCHealthCheck `json:"grpc,omitempty"`
}

// TCPHealthCheck is MeshHealthCheck's tcp section: what to send and the
// blocks the answer must hold, in order (connect only when none).
type TCPHealthCheck struct {
	Disabled bool     `json:"disabled,omitempty"`
	Send     *string  `json:"send,omitempty"`
	Receive  []string `json:"receive,omitempty"`
}

// HTTPHealthCheck is MeshHealthCheck's http section.
type HTTPHealthCheck struct {
	Disabled            bool          `json:"disabled,omitempty"`
	Path                *string       `json:"path,omitempty"`
	RequestHeadersToAdd *HeaderSetAdd `json:"requestHeadersToAdd,omitempty"`
	ExpectedStatuses    []uint32      `json:"expectedStatuses,omitempty"`
}

// GRPCHealthCheck is MeshHealthCheck's grpc section.
type GRPCHealthCheck struct {
	Disabled    bool   `json:"disabled,omitempty"`
	ServiceName string `json:"serviceName,omitempty"`
	Authority   string `json:"authority,omitempty"`
}

// HeaderSetAdd is the header modifier of MeshHealthCheck and
// MeshRateLimit: headers set (replacing) and added (appending).
type HeaderSetAdd struct {
	Set []NameValue `json:"set,omitempty"`
	Add []NameValue `json:"add,omitempty"`
}

// NameValue is a header's name and value.
type NameValue struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Kuma's defaults for what a MeshHealthCheck that applies leaves unset.
const (
	DefaultHealthCheckInterval = time.Minute
	DefaultHealthCheckTimeout  = 15 * time.Second
	DefaultUnhealthyThreshold  = 5
	DefaultHealthyThreshold    = 1
	DefaultHealthCheckPath     = "/"
)

// Paths Kuma accepts for a file (govalidator's IsFilePath): absolute Unix
// paths and Windows paths with a drive letter.
var (
	unixPathRE    = regexp.MustCompile(`^(/[^/\x00]*)+/?$`)
	windowsPathRE = regexp.MustCompile(`^[a-zA-Z]:\\(?:[^\\/:*?"<>|\r\n]+\\)*[^\\/:*?"<>|\r\n]*$`)
)

// positiveDuration checks a duration field of conf that must be above
// zero when set.
func (d *decoder) positiveDuration(ptr string, conf map[string]any, field string) {
	v, ok := conf[field]
	if !ok {
		return
	}
	s, _ := v.(string)
	dur, err := time.ParseDuration(s)
	switch {
	case err != nil:
		d.add(ptr+"/"+field, CodeInvalidValue, "write a duration such as 300ms, 5s or 1m30s", "%q is not a duration", s)
	case dur <= 0:
		d.add(ptr+"/"+field, CodeOutOfRange, "write a positive duration such as 500ms, 10s or 1m", "must be greater than zero when defined")
	}
}

// positiveCount checks an integer field of conf that must be above zero
// when set.
func (d *decoder) positiveCount(ptr string, conf map[string]any, field, hint string) {
	if n, ok := numberOf(conf, field); ok && n <= 0 {
		d.add(ptr+"/"+field, CodeOutOfRange, hint, "must be greater than zero when defined")
	}
}

// numberOf is the numeric field of m, and whether it is one.
func numberOf(m map[string]any, k string) (float64, bool) {
	switch n := m[k].(type) {
	case int64:
		return float64(n), true
	case int:
		return float64(n), true
	case float64:
		return n, true
	}
	return 0, false
}

func checkHealthCheck(d *decoder, ptr string, conf map[string]any, _ ConfPosition, _ TargetRef) {
	for _, f := range []string{"interval", "timeout", "initialJitter", "intervalJitter", "noTrafficInterval"} {
		d.positiveDuration(ptr, conf, f)
	}
	d.positiveCount(ptr, conf, "unhealthyThreshold", "count at least one failed check")
	d.positiveCount(ptr, conf, "healthyThreshold", "count at least one passed check")
	if n, ok := numberOf(conf, "intervalJitterPercent"); ok && (n < 0 || n > 100) {
		d.add(ptr+"/intervalJitterPercent", CodeOutOfRange, "write a percentage from 0 to 100", "must be in inclusive range [0, 100]")
	}
	d.percent(ptr, conf, "healthyPanicThreshold")
	if v, ok := conf["eventLogPath"]; ok {
		if s, _ := v.(string); !unixPathRE.MatchString(s) && !windowsPathRE.MatchString(s) {
			d.add(ptr+"/eventLogPath", CodeInvalidValue, "write an absolute path, such as /tmp/health-checks.log", "must be a valid path when defined")
		}
	}
	h := mapOf(conf, "http")
	if h != nil {
		if p, ok := h["path"]; ok && p == "" {
			d.add(ptr+"/http/path", CodeMissingField, "write the path to request, such as /health (or leave it out for /)", "must be defined")
		}
		for i, raw := range listOf(h, "expectedStatuses") {
			if n, ok := raw.(int64); ok && (n < 100 || n > 599) {
				d.add(fmt.Sprintf("%s/http/expectedStatuses/%d", ptr, i), CodeOutOfRange, "name an HTTP status code, from 100 to 599", "must be in inclusive range [100, 599]")
			}
		}
		d.headerSetAdd(ptr+"/http/requestHeadersToAdd", mapOf(h, "requestHeadersToAdd"))
	}
	if tcp := mapOf(conf, "tcp"); tcp != nil {
		if s, ok := tcp["send"]; ok && s == "" {
			d.add(ptr+"/tcp/send", CodeInvalidValue, "write the text to send, or leave `send` out to check the connection only", "must not be empty")
		}
		for i, raw := range listOf(tcp, "receive") {
			if raw == "" {
				d.add(fmt.Sprintf("%s/tcp/receive/%d", ptr, i), CodeInvalidValue, "write the text the answer must hold", "must not be empty")
			}
		}
	}
	if _, ok := conf["http"]; !ok {
		if _, ok := conf["tcp"]; !ok {
			if _, ok := conf["grpc"]; !ok {
				d.add(ptr, CodeMissingField, "set `http`, `tcp` or `grpc` (an empty section checks with its defaults)", "must have at least one defined: http, tcp, grpc")
			}
		}
	}
}

// percent checks a percentage field written as a decimal string (the
// schema bounds an integer and the string's form): from 0 to 100.
func (d *decoder) percent(ptr string, conf map[string]any, field string) {
	s, ok := conf[field].(string)
	if !ok {
		return
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil && (f < 0 || f > 100) {
		d.add(ptr+"/"+field, CodeOutOfRange, "write a percentage from 0 to 100", "must be in inclusive range [0.0, 100.0]")
	}
}

// headerSetAdd checks a set/add header modifier: each list names a header
// once (Kuma keys them by name).
func (d *decoder) headerSetAdd(ptr string, m map[string]any) {
	for _, list := range []string{"set", "add"} {
		seen := map[string]bool{}
		for i, raw := range listOf(m, list) {
			kv, _ := raw.(map[string]any)
			name := strings.ToLower(str(kv, "name"))
			if name == "" {
				continue
			}
			if seen[name] {
				d.add(fmt.Sprintf("%s/%s/%d/name", ptr, list, i), CodeInvalidValue, "name each header once in `"+list+"`; separate several values with commas",
					"duplicate header name %q", name)
			}
			seen[name] = true
		}
	}
}

// healthCheckGRPCDrops: a proxyless gRPC client runs no active health
// checks and has no panic threshold; it drops the whole conf.
func healthCheckGRPCDrops(conf map[string]any, _ ConfPosition) []string {
	var out []string
	for _, f := range []string{"http", "tcp", "grpc"} {
		if _, ok := conf[f]; ok {
			out = append(out, "the "+f+" health check")
		}
	}
	for _, f := range []string{"healthyPanicThreshold", "failTrafficOnPanic"} {
		if _, ok := conf[f]; ok {
			out = append(out, f)
		}
	}
	return out
}
