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
		// to[] is for MeshGateway only in Kuma: refused below.
		to:        &targetRefRules{kinds: []TargetKind{KindMesh}},
		from:      &targetRefRules{kinds: []TargetKind{KindMesh, KindMeshSubset, KindMeshService, KindMeshServiceSubset}},
		rules:     true,
		check:     checkFaultInjection,
		grpcDrops: faultGRPCDrops,
	})
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
	if pos == PosTo {
		d.add(ptr, CodeInvalidValue, "inject faults where the requests arrive: `from` (or `rules`) on the destination's inbounds",
			"`to` must not be defined: it applies to MeshGateway only")
		return
	}
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
