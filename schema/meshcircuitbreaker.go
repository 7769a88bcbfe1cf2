package schema

import (
	"fmt"
	"strconv"
	"time"
)

// TypeMeshCircuitBreaker is Kuma 2.x's circuit breaker policy.
const TypeMeshCircuitBreaker = "MeshCircuitBreaker"

func init() {
	registerConfKind(&confKind{
		typ: TypeMeshCircuitBreaker, plural: "meshcircuitbreakers", schema: "meshcircuitbreaker.json",
		top:       targetRefRules{kinds: []TargetKind{KindMesh, KindMeshSubset, KindMeshService, KindMeshServiceSubset, KindDataplane}},
		to:        &targetRefRules{kinds: []TargetKind{KindMesh, KindMeshService}},
		from:      &targetRefRules{kinds: []TargetKind{KindMesh}},
		rules:     true,
		check:     checkCircuitBreaker,
		grpcDrops: circuitBreakerGRPCDrops,
	})
}

// CircuitBreaker is a merged MeshCircuitBreaker conf.
type CircuitBreaker struct {
	ConnectionLimits *struct {
		MaxConnections     *uint32 `json:"maxConnections,omitempty"`
		MaxConnectionPools *uint32 `json:"maxConnectionPools,omitempty"`
		MaxPendingRequests *uint32 `json:"maxPendingRequests,omitempty"`
		MaxRetries         *uint32 `json:"maxRetries,omitempty"`
		MaxRequests        *uint32 `json:"maxRequests,omitempty"`
	} `json:"connectionLimits,omitempty"`
	OutlierDetection *OutlierDetection `json:"outlierDetection,omitempty"`
}

// OutlierDetection is MeshCircuitBreaker's outlier detection.
type OutlierDetection struct {
	Disabled                    *bool     `json:"disabled,omitempty"`
	Interval                    *Duration `json:"interval,omitempty"`
	BaseEjectionTime            *Duration `json:"baseEjectionTime,omitempty"`
	MaxEjectionPercent          *uint32   `json:"maxEjectionPercent,omitempty"`
	SplitExternalAndLocalErrors *bool     `json:"splitExternalAndLocalErrors,omitempty"`
	HealthyPanicThreshold       *Number   `json:"healthyPanicThreshold,omitempty"`
	Detectors                   *struct {
		TotalFailures       *Consecutive `json:"totalFailures,omitempty"`
		GatewayFailures     *Consecutive `json:"gatewayFailures,omitempty"`
		LocalOriginFailures *Consecutive `json:"localOriginFailures,omitempty"`
		SuccessRate         *struct {
			MinimumHosts            *uint32 `json:"minimumHosts,omitempty"`
			RequestVolume           *uint32 `json:"requestVolume,omitempty"`
			StandardDeviationFactor *Number `json:"standardDeviationFactor,omitempty"`
		} `json:"successRate,omitempty"`
		FailurePercentage *struct {
			MinimumHosts  *uint32 `json:"minimumHosts,omitempty"`
			RequestVolume *uint32 `json:"requestVolume,omitempty"`
			Threshold     *uint32 `json:"threshold,omitempty"`
		} `json:"failurePercentage,omitempty"`
	} `json:"detectors,omitempty"`
}

// Consecutive is a detector of consecutive failures.
type Consecutive struct {
	Consecutive *uint32 `json:"consecutive,omitempty"`
}

// Number is an integer or a decimal string, as Kuma writes percentages and
// factors ("12.5").
type Number float64

// UnmarshalJSON reads a number or a decimal string.
func (n *Number) UnmarshalJSON(b []byte) error {
	s := string(b)
	if len(s) > 1 && s[0] == '"' {
		s = s[1 : len(s)-1]
	}
	f, err := strconv.ParseFloat(s, 64)
	*n = Number(f)
	return err
}

// number checks an int-or-decimal-string field; it returns the value and
// whether it is set and valid.
func (d *decoder) number(ptr string, m map[string]any, field string) (float64, bool) {
	v, ok := m[field]
	if !ok {
		return 0, false
	}
	switch x := v.(type) {
	case int64:
		return float64(x), true
	case float64:
		return x, true
	case string:
		f, err := strconv.ParseFloat(x, 64)
		if err != nil {
			d.add(ptr+"/"+field, CodeInvalidValue, "write a number, e.g. 1.5 or \"1.5\"", "invalid number %q", x)
			return 0, false
		}
		return f, true
	}
	return 0, false
}

func checkCircuitBreaker(d *decoder, ptr string, conf map[string]any, _ ConfPosition, _ TargetRef) {
	limits, od := mapOf(conf, "connectionLimits"), mapOf(conf, "outlierDetection")
	_, hasLimits := conf["connectionLimits"]
	_, hasOD := conf["outlierDetection"]
	if !hasLimits && !hasOD {
		d.add(ptr, CodeMissingField, "set `connectionLimits` or `outlierDetection`", "at least one of: 'connectionLimits' or 'outlierDetection' should be configured")
		return
	}
	positive := func(p string, m map[string]any, fields ...string) {
		for _, f := range fields {
			if _, ok := m[f]; ok && uint32Of(m, f) == 0 {
				d.add(p+"/"+f, CodeOutOfRange, "leave it out for no limit", "%s has to be greater than 0", f)
			}
		}
	}
	positive(ptr+"/connectionLimits", limits, "maxConnections", "maxConnectionPools", "maxPendingRequests", "maxRetries", "maxRequests")
	if !hasOD {
		return
	}
	p := ptr + "/outlierDetection"
	for _, f := range []string{"interval", "baseEjectionTime"} {
		if d.duration(p, od, f) {
			if v, err := time.ParseDuration(str(od, f)); err == nil && v == 0 {
				d.add(p+"/"+f, CodeOutOfRange, "a positive duration, e.g. 10s", "%s has to be greater than 0", f)
			}
		}
	}
	percent := func(p string, m map[string]any, f string) {
		if v, ok := d.number(p, m, f); ok && (v < 0 || v > 100) {
			d.add(p+"/"+f, CodeOutOfRange, "a percentage from 0 to 100", "%s has to be in [0, 100]", f)
		}
	}
	percent(p, od, "maxEjectionPercent")
	percent(p, od, "healthyPanicThreshold")
	det, hasDet := od["detectors"]
	dm, _ := det.(map[string]any)
	if !hasDet {
		d.add(p+"/detectors", CodeMissingField, "add `detectors`, e.g. {totalFailures: {consecutive: 5}}", "must be defined")
		return
	}
	if len(dm) == 0 {
		d.add(p+"/detectors", CodeMissingField, "add one of totalFailures, gatewayFailures, localOriginFailures, successRate, failurePercentage",
			"must have at least one defined: totalFailures, gatewayFailures, localOriginFailures, successRate, failurePercentage")
		return
	}
	dp := p + "/detectors"
	for _, f := range []string{"totalFailures", "gatewayFailures", "localOriginFailures"} {
		positive(dp+"/"+f, mapOf(dm, f), "consecutive")
	}
	sr := mapOf(dm, "successRate")
	positive(dp+"/successRate", sr, "minimumHosts", "requestVolume")
	if v, ok := d.number(dp+"/successRate", sr, "standardDeviationFactor"); ok && v <= 0 {
		d.add(dp+"/successRate/standardDeviationFactor", CodeOutOfRange, "a factor above 0, e.g. 1.9", "standardDeviationFactor has to be greater than 0")
	}
	fp := mapOf(dm, "failurePercentage")
	positive(dp+"/failurePercentage", fp, "minimumHosts", "requestVolume")
	percent(dp+"/failurePercentage", fp, "threshold")
}

// circuitBreakerGRPCDrops: a gRPC client applies maxRequests (gRFC A32)
// and the successRate and failurePercentage detectors (gRFC A50), on its
// outbounds only.
func circuitBreakerGRPCDrops(conf map[string]any, pos ConfPosition) []string {
	if pos != PosTo {
		return []string{fmt.Sprintf("this %s (a gRPC server breaks no circuit)", pos)}
	}
	var out []string
	for _, f := range []string{"maxConnections", "maxConnectionPools", "maxPendingRequests", "maxRetries"} {
		if _, ok := mapOf(conf, "connectionLimits")[f]; ok {
			out = append(out, "connectionLimits."+f)
		}
	}
	od := mapOf(conf, "outlierDetection")
	for _, f := range []string{"totalFailures", "gatewayFailures", "localOriginFailures"} {
		if _, ok := mapOf(od, "detectors")[f]; ok {
			out = append(out, "outlierDetection.detectors."+f)
		}
	}
	for _, f := range []string{"splitExternalAndLocalErrors", "healthyPanicThreshold"} {
		if _, ok := od[f]; ok {
			out = append(out, "outlierDetection."+f)
		}
	}
	return out
}
