package schema

import (
	"fmt"
	"slices"
	"time"
)

// TypeMeshRateLimit is Kuma 2.x's local rate limit policy.
const TypeMeshRateLimit = "MeshRateLimit"

func init() {
	registerConfKind(&confKind{
		typ: TypeMeshRateLimit, plural: "meshratelimits", schema: "meshratelimit.json",
		top: targetRefRules{kinds: []TargetKind{KindMesh, KindMeshSubset, KindMeshService, KindMeshServiceSubset, KindDataplane}},
		// to[] configures gateways (Kuma's own rule, checkRateLimitSpec);
		// from[] and rules[] the inbounds of sidecars.
		to:              &targetRefRules{kinds: []TargetKind{KindMesh}},
		from:            &targetRefRules{kinds: []TargetKind{KindMesh}},
		rules:           true,
		check:           checkRateLimit,
		grpcDrops:       rateLimitGRPCDrops,
		defaultRequired: true,
		checkSpec:       checkRateLimitSpec,
		warnPolicy:      warnRateLimit,
	})
}

// RateLimits is a merged MeshRateLimit conf; nil fields are not set.
type RateLimits struct {
	Local *struct {
		HTTP *LocalHTTPRateLimit `json:"http,omitempty"`
		TCP  *LocalTCPRateLimit  `json:"tcp,omitempty"`
	} `json:"local,omitempty"`
}

// LocalHTTPRateLimit limits the requests of an HTTP inbound.
type LocalHTTPRateLimit struct {
	Disabled    bool  `json:"disabled,omitempty"`
	RequestRate *Rate `json:"requestRate,omitempty"`
	OnRateLimit *struct {
		Status  *uint32       `json:"status,omitempty"`
		Headers *HeaderSetAdd `json:"headers,omitempty"`
	} `json:"onRateLimit,omitempty"`
}

// Limits reports whether l limits anything: it is not disabled and has a
// rate.
func (l *LocalHTTPRateLimit) Limits() bool { return l != nil && !l.Disabled && l.RequestRate != nil }

// LocalTCPRateLimit limits the connections an inbound accepts.
type LocalTCPRateLimit struct {
	Disabled       bool  `json:"disabled,omitempty"`
	ConnectionRate *Rate `json:"connectionRate,omitempty"`
}

// Limits reports whether l limits anything.
func (l *LocalTCPRateLimit) Limits() bool { return l != nil && !l.Disabled && l.ConnectionRate != nil }

// Rate is a number of requests or connections per interval.
type Rate struct {
	Num      uint32   `json:"num"`
	Interval Duration `json:"interval"`
}

// minRateInterval is the shortest interval Kuma accepts (exclusive).
const minRateInterval = 50 * time.Millisecond

// envoyStatuses are the HTTP status codes Envoy can answer with (its
// envoy.type.v3.StatusCode): another code makes it reject the filter.
var envoyStatuses = []uint32{100, 200, 201, 202, 203, 204, 205, 206, 207, 208, 226, 300, 301, 302, 303, 304, 305, 307, 308,
	400, 401, 402, 403, 404, 405, 406, 407, 408, 409, 410, 411, 412, 413, 414, 415, 416, 417, 421, 422, 423, 424, 426, 428, 429, 431,
	500, 501, 502, 503, 504, 505, 506, 507, 508, 510, 511}

func checkRateLimit(d *decoder, ptr string, conf map[string]any, _ ConfPosition, _ TargetRef) {
	lptr := ptr + "/local"
	local := mapOf(conf, "local")
	if _, ok := conf["local"]; !ok {
		d.add(lptr, CodeMissingField, "add `local: {http: {requestRate: {num: 100, interval: 1s}}}` (or `tcp: {connectionRate: ...}`)", "must be defined")
		return
	}
	_, hasHTTP := local["http"]
	_, hasTCP := local["tcp"]
	if !hasHTTP && !hasTCP {
		d.add(lptr, CodeMissingField, "set `http` (requests) or `tcp` (connections)", "must have at least one defined: tcp, http")
	}
	if hasHTTP {
		h := mapOf(local, "http")
		hp := lptr + "/http"
		_, dis := h["disabled"]
		_, rate := h["requestRate"]
		_, on := h["onRateLimit"]
		switch {
		case !dis && !rate && !on:
			d.add(hp, CodeMissingField, "set `requestRate: {num, interval}`, `onRateLimit` or `disabled`", "must have at least one defined: disabled, requestRate, onRateLimit")
		default:
			if rate {
				d.rate(hp+"/requestRate", mapOf(h, "requestRate"), "requests")
			}
			if o := mapOf(h, "onRateLimit"); o != nil {
				if n, ok := numberOf(o, "status"); ok {
					switch {
					case n <= 0:
						d.add(hp+"/onRateLimit/status", CodeOutOfRange, "answer with a status such as 429", "must be greater than 0")
					case !slices.Contains(envoyStatuses, uint32(n)):
						d.add(hp+"/onRateLimit/status", CodeInvalidValue, "answer with a status Envoy knows, such as 429 or 503",
							"Envoy cannot answer with status %v: it rejects a code outside its list", n)
					}
				}
				d.headerSetAdd(hp+"/onRateLimit/headers", mapOf(o, "headers"))
			}
		}
	}
	if hasTCP {
		t := mapOf(local, "tcp")
		tp := lptr + "/tcp"
		_, dis := t["disabled"]
		_, rate := t["connectionRate"]
		if !dis && !rate {
			d.add(tp, CodeMissingField, "set `connectionRate: {num, interval}` or `disabled`", "must have at least one defined: disabled, connectionRate")
		} else if rate {
			d.rate(tp+"/connectionRate", mapOf(t, "connectionRate"), "connections")
		}
	}
}

// rate checks a requestRate or connectionRate.
func (d *decoder) rate(ptr string, m map[string]any, what string) {
	if m == nil {
		return // the schema reports the type
	}
	if n, ok := numberOf(m, "num"); ok && n <= 0 {
		d.add(ptr+"/num", CodeOutOfRange, "allow at least one of the "+what+" per interval", "must be greater than 0")
	}
	v, ok := m["interval"]
	if !ok {
		return // the schema reports it missing
	}
	s, _ := v.(string)
	switch dur, err := time.ParseDuration(s); {
	case err != nil:
		d.add(ptr+"/interval", CodeInvalidValue, "write a duration such as 100ms, 1s or 1m", "%q is not a duration", s)
	case dur <= minRateInterval:
		d.add(ptr+"/interval", CodeOutOfRange, "count over more than 50ms, such as 1s", "must be greater than: %s", minRateInterval)
	}
}

// includesGateways reports whether a top-level targetRef selects gateways
// too, as Kuma reads it: kind Mesh or MeshSubset without proxyTypes, or
// with Gateway among them.
func includesGateways(top map[string]any) bool {
	switch TargetKind(str(top, "kind")) {
	case KindMesh, KindMeshSubset, "":
	default:
		return false
	}
	if top == nil {
		return true // the implicit kind Mesh
	}
	types := listOf(top, "proxyTypes")
	return len(types) == 0 || slices.Contains(types, any("Gateway"))
}

// checkRateLimitSpec applies Kuma's rules on where a MeshRateLimit's items
// may be: to[] configures gateways, from[] and rules[] sidecars, so a
// scope that includes gateways (kind Mesh or MeshSubset without
// `proxyTypes: [Sidecar]`) takes to[] only, and one that does not takes
// no to[]; a rules[] item that matches clients by SPIFFE id cannot limit
// their connections (a connection is counted before its client is known).
func checkRateLimitSpec(d *decoder, spec map[string]any, p *ConfPolicy) {
	top := mapOf(spec, "targetRef")
	gateways := includesGateways(top)
	const sidecars = "add `proxyTypes: [Sidecar]` to the top-level targetRef: a Mesh or MeshSubset targetRef without it includes gateways, which take `to`"
	if gateways && len(listOf(spec, "rules")) > 0 {
		d.add("/spec/rules", CodeInvalidValue, sidecars, "must not be defined")
	}
	if gateways && len(listOf(spec, "from")) > 0 {
		d.add("/spec/from", CodeInvalidValue, sidecars,
			"must not be defined when the scope includes a Gateway, select only proxyType Sidecar or select only gateways and use spec.to")
	}
	if !gateways && len(listOf(spec, "to")) > 0 {
		d.add("/spec/to", CodeInvalidValue, "limit what an inbound accepts with `rules` (or `from`): `to` configures gateways", "must not be defined")
		p.To = nil // refused: nothing more to say about them
	}
	for _, it := range p.Rules {
		if len(it.Matches) == 0 {
			continue
		}
		if _, ok := mapOf(it.Default, "local")["tcp"]; ok {
			d.add(it.Pointer+"/default/local/tcp", CodeInvalidValue, "limit connections in a rules[] item without `matches`",
				"can't be specified when matches contain spiffeID because this field cannot be conditioned on source identity")
		}
	}
}

// warnRateLimit warns where a valid MeshRateLimit does nothing in gitmesh:
// to[] (gitmesh serves no gateways), and rules[] items for some clients
// only (gitmesh limits an inbound's clients all alike).
func warnRateLimit(c *routeChecker, e *entry) {
	p := e.conf
	if len(p.To) > 0 {
		c.warnAt(e, "/spec/to", CodeNoEffect, "MeshRateLimit to[] configures gateways, and gitmesh serves none: it has no effect",
			"limit what an inbound accepts with `rules`, and `proxyTypes: [Sidecar]` in a Mesh targetRef")
	}
	var inbound []ConfItem
	for _, it := range p.Rules {
		if len(it.Matches) > 0 {
			c.warnAt(e, it.Pointer+"/matches", CodeNoEffect,
				"gitmesh limits every client of an inbound alike: this rules[] item, for some clients only, is not applied",
				"drop `matches` to limit every client, or keep the item for Kuma")
			continue
		}
		inbound = append(inbound, it)
	}
	inbound = append(inbound, p.From...) // of kind Mesh only
	// Envoy proxies gRPC inbounds as TCP: their requests are not limited.
	var grpc []string
	known := false
	for _, it := range inbound {
		h := mapOf(mapOf(it.Default, "local"), "http")
		if dis, _ := h["disabled"].(bool); dis || h["requestRate"] == nil {
			continue
		}
		if !known {
			for _, dp := range c.set.DataplanesIn(p.Mesh) {
				if dp.Labels[FlavorLabel] != "envoy" {
					continue
				}
				for i, in := range dp.Inbound {
					if in.Protocol() == ProtocolGRPC && p.TargetRef.SelectsInbound(dp, i) {
						grpc = append(grpc, fmt.Sprintf("%s (port %d)", dp.Name, in.Port))
					}
				}
			}
			known = true
		}
		if len(grpc) > 0 {
			c.warnAt(e, it.Pointer+"/default/local/http", CodeUnsupportedByFlavor,
				fmt.Sprintf("Envoy proxies gRPC inbounds as TCP and does not limit their requests: dataplanes %s are labelled %s: envoy", listNames(grpc), FlavorLabel),
				"limit their connections with `local.tcp`; the README's support matrix says what each data plane takes")
		}
	}
}

// rateLimitGRPCDrops: a proxyless gRPC server has no rate limit filter; it
// drops every limit (to[] items are for gateways, which it is not).
func rateLimitGRPCDrops(conf map[string]any, pos ConfPosition) []string {
	if pos == PosTo {
		return nil
	}
	local := mapOf(conf, "local")
	var out []string
	for _, f := range []struct{ section, rate string }{{"http", "requestRate"}, {"tcp", "connectionRate"}} {
		s := mapOf(local, f.section)
		if dis, _ := s["disabled"].(bool); !dis && s[f.rate] != nil {
			out = append(out, fmt.Sprintf("local.%s.%s", f.section, f.rate))
		}
	}
	return out
}
