package xds

import (
	"fmt"
	"math"
	"reflect"

	faultcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/gitmesh/gitmesh/schema"
)

// MeshFaultInjection: each fault of the merged from[]/rules[] conf is an
// HTTP fault filter on the inbound's connection manager (after RBAC, before
// the router), as Kuma adds them. A gRPC server cannot run a fault filter
// (gRPC rejects one on a server listener): for proxyless gRPC the faults of
// a service's inbounds go on its callers' client listeners instead
// (gRFC A33), when every instance of the service has the same.
func init() {
	registerApplier(&confApplier{typ: schema.TypeMeshFaultInjection, inbound: faultInbound})
}

// faultFilterName names the i-th fault filter (gRPC refuses two filters of
// one name).
func faultFilterName(i int) string { return fmt.Sprintf("envoy.filters.http.fault.%d", i) }

func decodeFaults(c schema.Conf) (*schema.Faults, error) {
	f := &schema.Faults{}
	return f, c.Decode(f)
}

func faultInbound(e *inboundEdit, c schema.Conf) error {
	faults, err := decodeFaults(c)
	if err != nil {
		return err
	}
	switch {
	case e.flavor == FlavorGRPC:
		return nil // on the callers' client listeners (clientFaults)
	case e.hcm == nil:
		e.notes = append(e.notes, fmt.Sprintf("inbound %s: MeshFaultInjection applies to HTTP inbounds only, as in Kuma", e.in.HostPort()))
		return nil
	}
	filters, _, err := faultFilters(faults, false)
	if err != nil {
		return err
	}
	e.httpFilters = append(e.httpFilters, filters...)
	return nil
}

// faultFilters are the HTTP fault filters of faults; for a gRPC client,
// without response bandwidth limits, which it does not apply (notes).
func faultFilters(faults *schema.Faults, grpc bool) ([]*hcmv3.HttpFilter, []string, error) {
	var out []*hcmv3.HttpFilter
	var notes []string
	for _, f := range faults.HTTP {
		cfg := &faultv3.HTTPFault{}
		if a := f.Abort; a != nil {
			cfg.Abort = &faultv3.FaultAbort{
				ErrorType:  &faultv3.FaultAbort_HttpStatus{HttpStatus: uint32(a.HTTPStatus)},
				Percentage: fractionalPercent(float64(a.Percentage)),
			}
		}
		if d := f.Delay; d != nil {
			cfg.Delay = &faultcommonv3.FaultDelay{
				FaultDelaySecifier: &faultcommonv3.FaultDelay_FixedDelay{FixedDelay: durationpb.New(d.Value.Duration)},
				Percentage:         fractionalPercent(float64(d.Percentage)),
			}
		}
		if b := f.ResponseBandwidth; b != nil {
			if grpc {
				notes = append(notes, "proxyless gRPC ignores MeshFaultInjection responseBandwidth")
			} else {
				kbps, err := schema.BandwidthKbps(b.Limit)
				if err != nil {
					return nil, nil, err
				}
				cfg.ResponseRateLimit = &faultcommonv3.FaultRateLimit{
					LimitType:  &faultcommonv3.FaultRateLimit_FixedLimit_{FixedLimit: &faultcommonv3.FaultRateLimit_FixedLimit{LimitKbps: kbps}},
					Percentage: fractionalPercent(float64(b.Percentage)),
				}
			}
		}
		if cfg.Abort == nil && cfg.Delay == nil && cfg.ResponseRateLimit == nil {
			continue
		}
		a, err := toAny(cfg)
		if err != nil {
			return nil, nil, err
		}
		out = append(out, &hcmv3.HttpFilter{Name: faultFilterName(len(out)), ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: a}})
	}
	return out, notes, nil
}

// fractionalPercent is a percentage: per hundred when whole, per million
// otherwise, as Kuma converts it.
func fractionalPercent(p float64) *typev3.FractionalPercent {
	if p == math.Trunc(p) {
		return &typev3.FractionalPercent{Numerator: uint32(p), Denominator: typev3.FractionalPercent_HUNDRED}
	}
	return &typev3.FractionalPercent{Numerator: uint32(p*10000 + 0.5), Denominator: typev3.FractionalPercent_MILLION}
}

// clientFaults is what a gRPC client of s runs for the MeshFaultInjections
// of s's inbounds: the merged faults of one, when every inbound of s has
// the same; nil when none has any.
func (mi *meshIndex) clientFaults(s *service) (*clientFaults, error) {
	ci := &mi.confs
	policies := ci.byType[schema.TypeMeshFaultInjection]
	if len(policies) == 0 {
		return nil, nil
	}
	if v, ok := ci.faults.Load(s.name); ok {
		return v.(*clientFaults), nil
	}
	// conf is the first inbound's; same says every inbound's is equal.
	var conf *schema.Conf
	same, any := true, false
	for _, dp := range s.providers {
		for i, in := range dp.Inbound {
			if in.Service() != s.name {
				continue
			}
			c := schema.FromConf(policies, dp, i)
			if conf == nil {
				conf = &c
			} else if !reflect.DeepEqual(c.Values, conf.Values) {
				same = false
			}
			any = any || !c.Empty()
		}
	}
	var cf *clientFaults
	if any {
		cf = &clientFaults{}
		if !same {
			cf.notes = []string{fmt.Sprintf("outbound %s: the instances of %s have different MeshFaultInjections, which a gRPC client cannot tell apart: none is applied", s.name, s.name)}
		} else {
			faults, err := decodeFaults(*conf)
			if err != nil {
				return nil, err
			}
			var notes []string
			if cf.filters, notes, err = faultFilters(faults, true); err != nil {
				return nil, err
			}
			for _, n := range notes {
				cf.notes = append(cf.notes, fmt.Sprintf("outbound %s: %s", s.name, n))
			}
		}
	}
	v, _ := ci.faults.LoadOrStore(s.name, cf)
	return v.(*clientFaults), nil
}

// clientFaults are a service's faults as its gRPC clients run them.
type clientFaults struct {
	filters []*hcmv3.HttpFilter
	notes   []string
}
