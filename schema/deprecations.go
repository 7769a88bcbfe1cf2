package schema

import "fmt"

// CodeDeprecated marks a legacy form that has a Kuma 2.x successor; it is
// reported only when Options.Deprecations is set (validate --deprecations).
const CodeDeprecated Code = "deprecated"

// deprecations lists the legacy forms of one document, each at the field the
// author wrote, with its Kuma 2.x successor as the hint. It reads the raw
// document, so it sees the form, not the normalised model.
func deprecations(typ string, m map[string]any) []issue {
	var out []issue
	add := func(ptr, msg, hint string) {
		out = append(out, issue{pointer: ptr, code: CodeDeprecated, message: msg, hint: hint})
	}
	tagsOf := func(ptr string, tags map[string]any) {
		for _, short := range []string{TagService, TagProtocol} {
			if _, ok := tags[short]; ok {
				add(ptr+"/"+short, fmt.Sprintf("tag %q is the Kuma 0.x spelling", short),
					fmt.Sprintf("write `kuma.io/%s`, as Kuma 2.x does", short))
			}
		}
	}
	switch typ {
	case TypeTrafficPermission:
		add("/type", "TrafficPermission is a legacy kind, being removed from Kuma",
			"write a MeshTrafficPermission: `spec: {targetRef: <destination>, from: [{targetRef: <source>, default: {action: Allow}}]}`")
		for i := range listOf(m, "rules") {
			add(fmt.Sprintf("/rules/%d", i), "rules[] is the Kuma 0.2 form of TrafficPermission", "in a MeshTrafficPermission, each source is a from[] item")
		}
	case TypeMesh:
		if mt := mapOf(m, "mtls"); mt != nil {
			for _, f := range []string{"enabled", "ca"} {
				if _, ok := mt[f]; ok {
					add("/mtls/"+f, fmt.Sprintf("mtls.%s is the Kuma 0.x form of mTLS", f),
						"write `mtls: {enabledBackend: ca-1, backends: [{name: ca-1, type: builtin}]}`")
				}
			}
		}
		for _, section := range []string{"logging", "tracing"} {
			for i, raw := range listOf(mapOf(m, section), "backends") {
				bk, _ := raw.(map[string]any)
				for _, f := range []string{"file", "tcp", "zipkin"} {
					if _, ok := bk[f]; ok {
						add(fmt.Sprintf("/%s/backends/%d/%s", section, i, f), fmt.Sprintf("%s backend `%s:` is the Kuma 0.x shape", section, f),
							fmt.Sprintf("write `type: %s` and the settings under `conf:`", f))
					}
				}
			}
		}
		if _, ok := mapOf(m, "metrics")["prometheus"]; ok {
			add("/metrics/prometheus", "metrics.prometheus is the Kuma 0.x shape",
				"write `metrics: {enabledBackend: prometheus-1, backends: [{name: prometheus-1, type: prometheus, conf: {...}}]}`")
		}
	case TypeMeshHealthCheck:
		for i, raw := range listOf(mapOf(m, "spec"), "to") {
			it, _ := raw.(map[string]any)
			if _, ok := mapOf(it, "default")["healthyPanicThreshold"]; ok {
				add(fmt.Sprintf("/spec/to/%d/default/healthyPanicThreshold", i), "healthyPanicThreshold of MeshHealthCheck is deprecated in Kuma 2.x",
					"set `outlierDetection.healthyPanicThreshold` in a MeshCircuitBreaker, where Kuma has moved it")
			}
		}
	case TypeMeshRateLimit:
		spec := mapOf(m, "spec")
		if _, ok := spec["from"]; ok {
			add("/spec/from", "from[] of MeshRateLimit is deprecated in Kuma 2.x", "write the items as `rules: [{default: ...}]`")
		}
		for _, pos := range []string{"from", "rules", "to"} {
			for i, raw := range listOf(spec, pos) {
				it, _ := raw.(map[string]any)
				o := mapOf(mapOf(mapOf(mapOf(it, "default"), "local"), "http"), "onRateLimit")
				if n, ok := numberOf(o, "status"); ok && n > 0 && n < 400 {
					add(fmt.Sprintf("/spec/%s/%d/default/local/http/onRateLimit/status", pos, i), "a rate limit status below 400 is deprecated in Kuma 2.x",
						"answer those over the limit with 400 or higher, such as 429")
				}
			}
		}
	case TypeDataplane:
		nw := mapOf(m, "networking")
		for i, raw := range listOf(nw, "inbound") {
			in, _ := raw.(map[string]any)
			ptr := fmt.Sprintf("/networking/inbound/%d", i)
			if _, ok := in["interface"]; ok {
				add(ptr+"/interface", "inbound `interface` is the Kuma 0.2 form", "write `port` and `servicePort` (and `networking.address`)")
			}
			tagsOf(ptr+"/tags", mapOf(in, "tags"))
		}
		for i, raw := range listOf(nw, "outbound") {
			out, _ := raw.(map[string]any)
			ptr := fmt.Sprintf("/networking/outbound/%d", i)
			if _, ok := out["interface"]; ok {
				add(ptr+"/interface", "outbound `interface` is the Kuma 0.2 form", "write `port` (and `address`)")
			}
			if _, ok := out["service"]; ok {
				add(ptr+"/service", "outbound `service` is the Kuma 0.x form", "write `tags: {kuma.io/service: NAME}`, as Kuma 2.x does")
			}
		}
	}
	return out
}
