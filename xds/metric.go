package xds

import (
	"fmt"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/gitmesh/gitmesh/schema"
)

// MeshMetric, and the metrics section of a Mesh: each proxy exposes
// Envoy's stats in Prometheus's format on its address, at the configured
// port and path, through a listener that routes to Envoy's admin interface
// (Kuma 0.x's way; Kuma 2.x routes to kuma-dp, which gitmesh does not
// run). A MeshMetric that selects the proxy takes the place of the Mesh's
// metrics, as in Kuma. Proxyless gRPC has no Envoy stats.
func init() {
	registerApplier(&confApplier{typ: schema.TypeMeshMetric, proxy: metricProxy})
}

// Names of the Prometheus endpoint's resources, as Kuma's.
const (
	// AdminCluster reaches Envoy's admin interface at AdminAddress, where
	// `gitmesh bootstrap` puts it by default.
	AdminCluster = "kuma:envoy:admin"
	// LegacyPrometheusListener is the listener of a Mesh's metrics;
	// a MeshMetric backend's is PrometheusListenerPrefix + its client id.
	LegacyPrometheusListener = "kuma:metrics:prometheus"
	PrometheusListenerPrefix = "_kuma:metrics:prometheus:"
	adminHost                = "127.0.0.1"
	adminPort                = 9901
)

func metricProxy(e *proxyEdit, policies []*schema.ConfPolicy) error {
	type endpoint struct {
		listener, path, stats string
		port                  uint32
	}
	var eps []endpoint
	var from string
	if c := schema.ProxyConf(policies, e.dp); !c.Empty() {
		var m schema.Metric
		if err := c.Decode(&m); err != nil {
			return err
		}
		stats := "/stats/prometheus?usedonly"
		if m.Sidecar != nil && m.Sidecar.IncludeUnused != nil && *m.Sidecar.IncludeUnused {
			stats = "/stats/prometheus"
		}
		for _, b := range m.Backends {
			if p := b.Prometheus; p != nil {
				id := "default-backend"
				if p.ClientID != nil {
					id = *p.ClientID
				}
				eps = append(eps, endpoint{listener: PrometheusListenerPrefix + id, path: p.Path, stats: stats, port: p.Port})
			}
		}
		from = "MeshMetric " + c.From[len(c.From)-1].Policy.Name
	} else if mx := e.mesh.Metrics; mx != nil && mx.Prometheus != nil {
		eps = append(eps, endpoint{listener: LegacyPrometheusListener, path: mx.Prometheus.Path, stats: "/stats/prometheus", port: mx.Prometheus.Port})
		from = "mesh " + e.mesh.Name + "'s metrics"
	}
	if len(eps) == 0 {
		return nil
	}
	if e.flavor == FlavorGRPC {
		e.notes = append(e.notes, fmt.Sprintf("proxyless gRPC has no Envoy stats: the Prometheus endpoint of %s is not served", from))
		return nil
	}
	address := e.dp.Address
	if address == "" && len(e.dp.Inbound) > 0 {
		address = e.dp.Inbound[0].Address
	}
	for _, ep := range eps {
		if clash := portInUse(e.dp, address, ep.port); clash != "" {
			e.notes = append(e.notes, fmt.Sprintf("%s: the Prometheus endpoint %s:%d is not served: %s uses the port", from, address, ep.port, clash))
			continue
		}
		if err := e.addCluster(collectorCluster(AdminCluster, adminHost, adminPort, false, false)); err != nil {
			return err
		}
		l, err := prometheusListener(e.rs, ep.listener, address, ep.port, ep.path, ep.stats)
		if err != nil {
			return err
		}
		if err := e.addListener(l); err != nil {
			return err
		}
	}
	return nil
}

// portInUse names the inbound or outbound of dp on address:port, "" when
// none is.
func portInUse(dp *schema.Dataplane, address string, port uint32) string {
	for _, in := range dp.Inbound {
		if in.Port == port && in.Address == address {
			return InboundName(in)
		}
	}
	for _, o := range dp.Outbound {
		if o.Port == port && o.Address == address {
			return OutboundName(o)
		}
	}
	return ""
}

// prometheusListener serves path on address:port from Envoy's admin
// interface at stats, as Kuma's static endpoint listener: an HTTP
// connection manager with an inline route that does not wait for the
// cluster.
func prometheusListener(rs *resourceSet, name, address string, port uint32, path, stats string) (*listenerv3.Listener, error) {
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix: statPrefix(name),
		RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{
			VirtualHosts: []*routev3.VirtualHost{{
				Name:    name,
				Domains: []string{"*"},
				Routes: []*routev3.Route{{
					Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: path}},
					Action: &routev3.Route_Route{Route: &routev3.RouteAction{
						ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: AdminCluster},
						PrefixRewrite:    stats,
					}},
				}},
			}},
			ValidateClusters: wrapperspb.Bool(false),
		}},
		HttpFilters: []*hcmv3.HttpFilter{routerFilter},
	}
	f, err := rs.filter(wellknown.HTTPConnectionManager, hcm)
	if err != nil {
		return nil, err
	}
	return &listenerv3.Listener{
		Name:         name,
		Address:      socketAddress(address, port),
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{f}}},
	}, nil
}
