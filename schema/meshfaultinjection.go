package schema

import (
	"fmt"
	"regexp"
	"strconv"
)

// TypeMeshFaultInjection is Kuma 2.x's fault injection policy.
const TypeMeshFaultInjection = "MeshFaultInjection"

func init() {
	registerConfKind(&confKind{
		typ: TypeMeshFaultInjection, plural: "meshfaultinjections", schema: "meshfaultinjection.json",
		top: targetRefRules{kinds: []TargetKind{KindMesh, KindMeshSubset, KindMeshService, KindMeshServiceSubset, KindDataplane}},
		// to[] configures gateways in Kuma (see checkFaultSpec).
		to:        &targetRefRules{kinds: []TargetKind{KindMesh}},
		from:      &targetRefRules{kinds: []TargetKind{KindMesh, KindMeshSubset, KindMeshService, KindMeshServiceSubset}},
		rules:     true,
		check:     checkFaultInjection,
		grpcDrops: faultGRPCDrops,
		checkSpec: checkFaultSpec,
		warnPolicy: func(c *routeChecker, e *entry) {
			if len(e.conf.To) > 0 {
				c.warnAt(e, "/spec/to", CodeNoEffect, "MeshFaultInjection to[] configures gateways, and gitmesh serves none: it has no effect",
					"inject faults on inbounds with `from` (or `rules`), and `proxyTypes: [Sidecar]` in a Mesh targetRef")
			}
		},
	})
}

// checkFaultSpec applies Kuma's rules on where a MeshFaultInjection's
// items may be: to[] configures gateways and from[] sidecars, so a scope
// that includes gateways (kind Mesh or MeshSubset without `proxyTypes:
// [Sidecar]`) takes no from[], and one that does not takes no to[].
func checkFaultSpec(d *decoder, spec map[string]any, p *ConfPolicy) {
	gateways := includesGateways(mapOf(spec, "targetRef"))
	if gateways && len(listOf(spec, "from")) > 0 {
		d.add("/spec/from", CodeInvalidValue,
			"add `proxyTypes: [Sidecar]` to the top-level targetRef (a Mesh or MeshSubset targetRef without it includes gateways), or use `rules`",
			"must not be defined when the scope includes a Gateway, select only proxyType Sidecar or select only gateways and use spec.to")
	}
	if !gateways && len(listOf(spec, "to")) > 0 {
		d.add("/spec/to", CodeInvalidValue, "inject faults where the requests arrive: `from` (or `rules`) on the destination's inbounds",
			"must not be defined")
		p.To = nil
	}
}

// Faults is a merged MeshFaultInjection conf: the faults, each applied to
// a share of the requests.
type Faults struct {
	HTTP []Fault `json:"http,omitempty"`
}

// Fault is one item of a MeshFaultInjection's http list.
type Fault struct {
	Abort *struct {
		HTTPStatus int32  `json:"httpStatus"`
		Percentage Number `json:"percentage"`
	} `json:"abort,omitempty"`
	Delay *struct {
		Value      Duration `json:"value"`
		Percentage Number   `json:"percentage"`
	} `json:"delay,omitempty"`
	ResponseBandwidth *struct {
		Limit      string `json:"limit"`
		Percentage Number `json:"percentage"`
	} `json:"responseBandwidth,omitempty"`
}

// bandwidthRE is a bandwidth as Kuma writes one: 100kbps, 5 Mbps, 1Gbps.
var bandwidthRE = regexp.MustCompile(`^(\d+)\s?(kbps|Mbps|Gbps)$`)

// BandwidthKbps is a bandwidth (bandwidthRE) in kbps.
func BandwidthKbps(s string) (uint64, error) {
	m := bandwidthRE.FindStringSubmatch(s)
	if m == nil {
		return 0, fmt.Errorf("%q is not a bandwidth", s)
	}
	n, err := strconv.ParseUint(m[1], 10, 64)
	return n * map[string]uint64{"kbps": 1, "Mbps": 1000, "Gbps": 1000000}[m[2]], err
}

func checkFaultInjection(d *decoder, ptr string, conf map[string]any, pos ConfPosition, _ TargetRef) {
	for i, raw := range listOf(conf, "http") {
		f, _ := raw.(map[string]any)
		p := fmt.Sprintf("%s/http/%d", ptr, i)
		percent := func(pp string, m map[string]any) {
			if v, ok := d.number(pp, m, "percentage"); ok && (v < 0 || v > 100) {
				d.add(pp+"/percentage", CodeOutOfRange, "a percentage from 0 to 100", "percentage has to be in [0, 100]")
			}
		}
		if a := mapOf(f, "abort"); a != nil {
			if c := uint32Of(a, "httpStatus"); c < 100 || c > 599 {
				d.add(p+"/abort/httpStatus", CodeOutOfRange, "an HTTP status code from 100 to 599", "%d is not a valid HTTP status code", c)
			}
			percent(p+"/abort", a)
		}
		if dl := mapOf(f, "delay"); dl != nil {
			d.duration(p+"/delay", dl, "value")
			percent(p+"/delay", dl)
		}
		if b := mapOf(f, "responseBandwidth"); b != nil {
			if l := str(b, "limit"); !bandwidthRE.MatchString(l) {
				d.add(p+"/responseBandwidth/limit", CodeInvalidValue, "write a number and a unit: kbps, Mbps or Gbps, e.g. 100kbps", "%q must have a bps unit (kbps, Mbps, Gbps)", l)
			}
			percent(p+"/responseBandwidth", b)
		}
	}
}

// faultGRPCDrops: a gRPC client applies aborts and delays (gRFC A33) of the
// services it calls; no response bandwidth.
func faultGRPCDrops(conf map[string]any, _ ConfPosition) []string {
	for _, raw := range listOf(conf, "http") {
		f, _ := raw.(map[string]any)
		if _, ok := f["responseBandwidth"]; ok {
			return []string{"responseBandwidth"}
		}
	}
	return nil
}
