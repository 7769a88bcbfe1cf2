package schema

import "fmt"

// TypeMeshMetric is Kuma 2.x's metrics policy.
const TypeMeshMetric = "MeshMetric"

func init() {
	registerConfKind(&confKind{
		typ: TypeMeshMetric, plural: "meshmetrics", schema: "meshmetric.json",
		top:        targetRefRules{kinds: []TargetKind{KindMesh, KindMeshSubset, KindMeshService, KindMeshServiceSubset, KindDataplane}},
		topDefault: true,
		check:      checkMetric,
		grpcDrops:  observabilityGRPCDrops("the Prometheus endpoint"),
	})
}

// Metric is a merged MeshMetric conf, as gitmesh reads it.
type Metric struct {
	Sidecar *struct {
		IncludeUnused *bool `json:"includeUnused,omitempty"`
	} `json:"sidecar,omitempty"`
	Backends []struct {
		Type       string `json:"type"`
		Prometheus *struct {
			ClientID *string `json:"clientId,omitempty"`
			Port     uint32  `json:"port"`
			Path     string  `json:"path"`
		} `json:"prometheus,omitempty"`
	} `json:"backends,omitempty"`
}

// checkMetric checks a MeshMetric's default. What Kuma does through
// kuma-dp, which gitmesh does not run (scraping applications, pushing to
// OpenTelemetry, filtering by profile, TLS on the endpoint), is refused:
// Envoy serves its own stats only.
func checkMetric(d *decoder, ptr string, conf map[string]any, _ ConfPosition, _ TargetRef) {
	noDP := "gitmesh serves Envoy's own stats, without kuma-dp: remove it"
	if s := mapOf(conf, "sidecar"); s != nil {
		if _, ok := s["profiles"]; ok {
			d.add(ptr+"/sidecar/profiles", CodeUnsupported, noDP+" (or use includeUnused)", "profiles are not supported by gitmesh")
		}
	}
	if _, ok := conf["applications"]; ok {
		d.add(ptr+"/applications", CodeUnsupported, noDP, "applications are not supported by gitmesh")
	}
	for i, raw := range listOf(conf, "backends") {
		b, _ := raw.(map[string]any)
		bp := fmt.Sprintf("%s/backends/%d", ptr, i)
		switch str(b, "type") {
		case "Prometheus":
			p := mapOf(b, "prometheus")
			if p == nil {
				d.add(bp+"/prometheus", CodeMissingField, "add `prometheus: {port: 5670, path: /metrics}`", "must be defined")
				continue
			}
			if n := uint32Of(p, "port"); n < 1 || n > 65535 {
				d.add(bp+"/prometheus/port", CodeOutOfRange, "a port is 1 to 65535", "port must be in the range [1, 65535]")
			}
			if m := str(mapOf(p, "tls"), "mode"); m != "" && m != "Disabled" {
				d.add(bp+"/prometheus/tls/mode", CodeUnsupported, "use mode Disabled: "+noDP, "TLS mode %s is not supported by gitmesh", m)
			}
		case "OpenTelemetry":
			d.add(bp, CodeUnsupported, noDP+"; a Prometheus backend is scraped", "OpenTelemetry metrics backends are not supported by gitmesh")
		}
	}
}
