package xds

import (
	"fmt"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/proto"

	"github.com/gitmesh/gitmesh/schema"
)

// addInbounds adds, for each inbound, its listener, its local cluster and,
// for HTTP, its route configuration. With mTLS the listener requires client
// certificates and an RBAC filter comes first. Inbounds tagged tcp or grpc
// (or not tagged) are proxied as TCP.
func (rs *resourceSet) addInbounds(mi *meshIndex, dp *schema.Dataplane) error {
	for i, in := range dp.Inbound {
		name := InboundName(in)
		local := LocalClusterName(in.ServicePort)
		lp := mi.locals[in.ServicePort]
		if lp == nil {
			return fmt.Errorf("listener %s: service port %d is not indexed", name, in.ServicePort)
		}
		if err := rs.addShared(clusterIdx, local, &lp.cluster); err != nil {
			return err
		}
		var filters []*listenerv3.Filter
		var err error
		// The conf policies' edits, when any applies to the inbound.
		var edit *inboundEdit
		if ic := mi.confs.inbound(dp, i); ic != nil {
			edit = &inboundEdit{flavor: FlavorEnvoy, dp: dp, in: in, conf: ic}
		}
		if in.Protocol() == schema.ProtocolHTTP {
			rc := routeConfig(name, in.Service(), local)
			if edit != nil {
				edit.action = rc.GetVirtualHosts()[0].GetRoutes()[0].GetRoute()
			}
			filters, err = rs.inboundHTTPFilters(mi, dp, i, name, edit)
			if err == nil {
				err = rs.add(routeIdx, name, rc, nil)
			}
		} else {
			filters, err = rs.inboundTCPFilters(mi, dp, i, name, lp, edit)
		}
		if err != nil {
			return fmt.Errorf("listener %s: %w", name, err)
		}
		if edit != nil {
			rs.unsupported = addNotes(rs.unsupported, edit.notes...)
		}
		l := &listenerv3.Listener{
			Name:             name,
			Address:          socketAddress(in.Address, in.Port),
			TrafficDirection: corev3.TrafficDirection_INBOUND,
			FilterChains: []*listenerv3.FilterChain{{
				Filters:         filters,
				TransportSocket: mi.downstreamTLS,
			}},
		}
		if err := rs.add(listenerIdx, name, l, nil); err != nil {
			return err
		}
	}
	return nil
}

// inboundTCPFilters are [RBAC (with mTLS), the conf policies' network
// filters, tcp_proxy to the local cluster]; the tcp_proxy is the port's
// shared one unless a conf policy edits it.
func (rs *resourceSet) inboundTCPFilters(mi *meshIndex, dp *schema.Dataplane, i int, name string, lp *localPort, edit *inboundEdit) ([]*listenerv3.Filter, error) {
	var filters []*listenerv3.Filter
	if mi.mesh.MTLS.Enabled {
		rf, err := mi.rbacFor(dp, i)
		if err != nil {
			return nil, err
		}
		f, err := rs.filter(wellknown.RoleBasedAccessControl, networkRBAC(statPrefix(name), rf.rules, rf.shadow))
		if err != nil {
			return nil, err
		}
		filters = append(filters, f)
	}
	if edit == nil {
		return append(filters, lp.tcpFilter), nil
	}
	local := LocalClusterName(dp.Inbound[i].ServicePort)
	edit.tcp = &tcpproxyv3.TcpProxy{StatPrefix: statPrefix(local), ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: local}}
	if err := edit.apply(); err != nil {
		return nil, err
	}
	tcp, err := rs.filter(wellknown.TCPProxy, edit.tcp)
	if err != nil {
		return nil, err
	}
	filters = append(filters, edit.networkFilters...)
	return append(filters, tcp), nil
}

// inboundHTTPFilters is an HTTP connection manager with [RBAC (with mTLS),
// the conf policies' HTTP filters, router] using the inbound's route
// configuration, named like the listener, after the conf policies' network
// filters.
func (rs *resourceSet) inboundHTTPFilters(mi *meshIndex, dp *schema.Dataplane, i int, name string, edit *inboundEdit) ([]*listenerv3.Filter, error) {
	httpFilters, err := inboundRBAC(mi, dp, i)
	if err != nil {
		return nil, err
	}
	hcm := hcmConfig(statPrefix(name), name, httpFilters)
	if edit != nil {
		edit.hcm = hcm
		if err := edit.apply(); err != nil {
			return nil, err
		}
		if len(edit.httpFilters) > 0 {
			router := hcm.HttpFilters[len(hcm.HttpFilters)-1]
			hcm.HttpFilters = append(append(hcm.HttpFilters[:len(hcm.HttpFilters)-1:len(hcm.HttpFilters)-1], edit.httpFilters...), router)
		}
	}
	f, err := rs.filter(wellknown.HTTPConnectionManager, hcm)
	if err != nil {
		return nil, err
	}
	if edit != nil {
		return append(edit.networkFilters, f), nil
	}
	return []*listenerv3.Filter{f}, nil
}

// inboundRBAC is the HTTP RBAC filter of inbound i of dp from the mesh's
// permissions, alone in the list; none without mTLS, where a caller has no
// identity to check (as in Kuma).
func inboundRBAC(mi *meshIndex, dp *schema.Dataplane, i int) ([]*hcmv3.HttpFilter, error) {
	if !mi.mesh.MTLS.Enabled {
		return nil, nil
	}
	rf, err := mi.rbacFor(dp, i)
	if err != nil {
		return nil, err
	}
	return []*hcmv3.HttpFilter{rf.http}, nil
}

// addOutbounds adds, for each outbound, its listener and the cluster,
// endpoints and (for HTTP services) route the mesh's proxies share. The
// listener's filter is shared too: only its name and address are its own.
func (rs *resourceSet) addOutbounds(mi *meshIndex, dp *schema.Dataplane) error {
	for _, out := range dp.Outbound {
		name := OutboundName(out)
		s := mi.services[out.Service]
		if s == nil {
			return fmt.Errorf("listener %s: service %q is not indexed", name, out.Service)
		}
		if err := rs.addCluster(mi, dp, s.name, s.name, &s.cluster, &s.endpoint, FlavorEnvoy, s.http); err != nil {
			return err
		}
		rt, err := mi.routesFor(dp, s)
		if err != nil {
			return fmt.Errorf("listener %s: %w", name, err)
		}
		var route *shared
		filter := s.outboundFilter
		if s.http {
			route = &s.route
		}
		if rt != nil {
			if err := rs.addRouted(mi, dp, &rt.envoy, FlavorEnvoy); err != nil {
				return err
			}
			if rt.envoy.filter != nil {
				filter, route = rt.envoy.filter, nil
			}
			if rt.envoy.route != nil {
				route = rt.envoy.route
			}
		}
		if route != nil {
			if err := rs.addShared(routeIdx, OutboundRouteName(s.name), route); err != nil {
				return err
			}
		}
		l := &listenerv3.Listener{
			Name:             name,
			Address:          socketAddress(out.Address, out.Port),
			TrafficDirection: corev3.TrafficDirection_OUTBOUND,
			FilterChains:     []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{filter}}},
		}
		if err := rs.add(listenerIdx, name, l, nil); err != nil {
			return err
		}
	}
	return nil
}

func (rs *resourceSet) addShared(typ int, name string, sh *shared) error {
	return rs.add(typ, name, sh.res, &sh.digest)
}

func (rs *resourceSet) has(typ int, name string) bool {
	for _, n := range rs.byType[typ] {
		if n.name == name {
			return true
		}
	}
	return false
}

// tcpProxy forwards connections to a cluster.
func tcpProxy(statPrefix, cluster string) (*listenerv3.Filter, error) {
	return networkFilter(wellknown.TCPProxy, &tcpproxyv3.TcpProxy{
		StatPrefix:       statPrefix,
		ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: cluster},
	})
}

// httpConnectionManager serves HTTP with the route configuration named
// route, fetched over RDS, after the given filters and then the router.
func httpConnectionManager(statPrefix, route string, filters []*hcmv3.HttpFilter) (*listenerv3.Filter, error) {
	return networkFilter(wellknown.HTTPConnectionManager, hcmConfig(statPrefix, route, filters))
}

// hcmConfig is the configuration of httpConnectionManager.
func hcmConfig(statPrefix, route string, filters []*hcmv3.HttpFilter) *hcmv3.HttpConnectionManager {
	return &hcmv3.HttpConnectionManager{
		StatPrefix: statPrefix,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			ConfigSource:    adsSource(),
			RouteConfigName: route,
		}},
		HttpFilters: append(filters, routerFilter),
	}
}

// routerFilter is the last HTTP filter of every HTTP connection manager:
// one value, shared by all of them.
var routerFilter = func() *hcmv3.HttpFilter {
	router, err := toAny(&routerv3.Router{})
	if err != nil {
		panic(err) // an empty message always encodes
	}
	return &hcmv3.HttpFilter{Name: wellknown.Router, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router}}
}()

func networkFilter(name string, config proto.Message) (*listenerv3.Filter, error) {
	a, err := toAny(config)
	if err != nil {
		return nil, err
	}
	return &listenerv3.Filter{Name: name, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: a}}, nil
}

// statPrefix turns a resource name into an Envoy stat prefix, which uses
// '.' as its separator: "localhost:8080" becomes "localhost_8080".
func statPrefix(name string) string {
	return strings.Map(func(r rune) rune {
		switch r {
		case ':', '.':
			return '_'
		case '[', ']':
			return -1
		}
		return r
	}, name)
}
