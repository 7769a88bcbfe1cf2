package xds

// The proxyless gRPC flavour. A gRPC application is its own data plane: its
// client resolves `xds:///<service>` and its server (xds.NewGRPCServer) asks
// for the listener of the address it listens on. gRPC accepts a narrower set
// of shapes than Envoy (see the comments below), and it reads certificates
// from the certificate providers of its bootstrap, never from SDS.

import (
	"fmt"
	"net"
	"strconv"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"

	"github.com/gitmesh/gitmesh/schema"
)

// CertProviderInstance is the certificate-provider instance every TLS
// context of a gRPC proxy names, for its identity certificate and for the
// mesh CA alike. A gRPC application's bootstrap defines it under
// certificate_providers (the file_watcher plugin, reading the files gitmesh
// writes from the proxy's SDS secrets SecretIdentity and SecretMeshCA).
const CertProviderInstance = "gitmesh"

// GRPCServerListenerTemplate is the server_listener_resource_name_template
// of a gRPC application's bootstrap: gRPC replaces %s with the address its
// server listens on, as GRPCServerListenerName does.
const GRPCServerListenerTemplate = "grpc/server?xds.resource.listening_address=%s"

// GRPCServerListenerName names the listener a gRPC server listening on
// address:port asks for: GRPCServerListenerTemplate with "address:port",
// an IPv6 address in brackets ("[fd00::1]:8080"), as gRPC formats its
// listening address. address must be in canonical form, as the schema
// loader leaves it.
func GRPCServerListenerName(address string, port uint32) string {
	return fmt.Sprintf(GRPCServerListenerTemplate, net.JoinHostPort(address, strconv.FormatUint(uint64(port), 10)))
}

// addGRPC adds the resources of a proxyless gRPC proxy: a server listener
// per inbound, and the client resources of each service it has an outbound
// to. Every client resource of a service S is named S: the API listener
// (the client dials xds:///S), its route configuration, the cluster and its
// endpoints. The outbound's address and port play no part: a gRPC client
// dials the service by name.
func (rs *resourceSet) addGRPC(mi *meshIndex, dp *schema.Dataplane) error {
	for i, in := range dp.Inbound {
		l, err := rs.grpcServerListener(mi, dp, i)
		if err != nil {
			return fmt.Errorf("listener %s: %w", GRPCServerListenerName(in.Address, in.Port), err)
		}
		if err := rs.add(listenerIdx, l.GetName(), l, nil); err != nil {
			return err
		}
	}
	for _, out := range dp.Outbound {
		s := mi.services[out.Service]
		if s == nil {
			return fmt.Errorf("listener %s: service %q is not indexed", out.Service, out.Service)
		}
		if rs.has(listenerIdx, s.name) {
			continue // a second outbound to the same service
		}
		rt, err := mi.routesFor(dp, s)
		if err != nil {
			return fmt.Errorf("listener %s: %w", s.name, err)
		}
		if rt != nil && rt.grpc.route != nil {
			if err := rs.addGRPCRouted(mi, dp, s, &rt.grpc); err != nil {
				return fmt.Errorf("listener %s: %w", s.name, err)
			}
			continue
		}
		if err := rs.addGRPCClient(mi, dp, s); err != nil {
			return fmt.Errorf("listener %s: %w", s.name, err)
		}
	}
	return nil
}

// addGRPCRouted adds what a gRPC client needs to reach service s when
// route policies decide: its API listener, the routed configuration and
// the clusters it names (no other: gRPC asks for clusters by name).
func (rs *resourceSet) addGRPCRouted(mi *meshIndex, dp *schema.Dataplane, s *service, fr *flavorRoutes) error {
	if s.grpcListener.res == nil {
		return fmt.Errorf("service %q has no gRPC client resources", s.name)
	}
	listener := &s.grpcListener
	if fr.listener != nil {
		listener = fr.listener
	}
	if err := rs.addShared(listenerIdx, s.name, listener); err != nil {
		return err
	}
	if err := rs.addShared(routeIdx, s.name, fr.route); err != nil {
		return err
	}
	return rs.addRouted(mi, dp, fr, FlavorGRPC)
}

// addGRPCClient adds what a gRPC client needs to reach service s. The
// endpoints are the ones Envoy proxies get, shared through the Index: one
// locality with a positive weight (gRPC drops a locality without one),
// distinct addresses (gRPC rejects duplicates).
func (rs *resourceSet) addGRPCClient(mi *meshIndex, dp *schema.Dataplane, s *service) error {
	if s.grpcListener.res == nil {
		return fmt.Errorf("service %q has no gRPC client resources", s.name)
	}
	for _, r := range []struct {
		typ int
		sh  *shared
	}{{listenerIdx, &s.grpcListener}, {routeIdx, &s.grpcRoute}} {
		if err := rs.addShared(r.typ, s.name, r.sh); err != nil {
			return err
		}
	}
	return rs.addCluster(mi, dp, s.name, s.name, &s.grpcCluster, &s.endpoint, FlavorGRPC, s.http)
}

// grpcClientListener is the API listener of a service: an HTTP connection
// manager fetching the route configuration named like the service over
// ADS, with the router as its only filter (gRPC rejects RBAC on the client
// side, and a filter list that does not end with the router).
func grpcClientListener(service string) (*listenerv3.Listener, error) {
	return grpcClientListenerWith(service, nil)
}

// grpcClientListenerWith is grpcClientListener with filters before the
// router (a client-side fault filter, say).
func grpcClientListenerWith(service string, filters []*hcmv3.HttpFilter) (*listenerv3.Listener, error) {
	f, err := httpConnectionManager(statPrefix(service), service, filters)
	if err != nil {
		return nil, err
	}
	return &listenerv3.Listener{
		Name:        service,
		ApiListener: &listenerv3.ApiListener{ApiListener: f.GetTypedConfig()},
	}, nil
}

// grpcServerListener is the listener of a gRPC server on an inbound. Its
// socket address must be the address the server listens on: gRPC stops
// serving on a listener whose address differs. One filter chain holds an
// HTTP connection manager with an inline route that lets every request
// through to the server itself (a non-forwarding action; a route to a
// cluster fails every RPC), after the RBAC filter with mTLS. Every inbound
// becomes one, whatever its protocol tag: a gRPC server speaks only gRPC.
//
// As for Envoy, TrafficPermission takes effect only with mTLS, where the
// caller's identity is its certificate's SPIFFE id; the filter chain then
// requires a client certificate.
func (rs *resourceSet) grpcServerListener(mi *meshIndex, dp *schema.Dataplane, i int) (*listenerv3.Listener, error) {
	in := dp.Inbound[i]
	name := InboundName(in)
	filters, err := inboundRBAC(mi, dp, i)
	if err != nil {
		return nil, err
	}
	if ic := mi.confs.inbound(dp, i); ic != nil {
		e := &inboundEdit{flavor: FlavorGRPC, dp: dp, in: in, conf: ic}
		if err := e.apply(); err != nil {
			return nil, err
		}
		rs.unsupported = addNotes(rs.unsupported, e.notes...)
	}
	if mi.mesh.MTLS.Enabled {
		if rf, err := mi.rbacFor(dp, i); err == nil && rf.shadow != nil {
			rs.unsupported = append(rs.unsupported, fmt.Sprintf(
				"inbound %s: AllowWithShadowDeny of MeshTrafficPermission only allows: gRPC has no RBAC shadow rules, nothing is logged", in.HostPort()))
		}
	}
	filters = append(filters, routerFilter)
	hcm, err := rs.filter(wellknown.HTTPConnectionManager, &hcmv3.HttpConnectionManager{
		StatPrefix: statPrefix(name),
		RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{
			Name: name,
			VirtualHosts: []*routev3.VirtualHost{{
				Name:    in.Service(),
				Domains: []string{"*"},
				Routes: []*routev3.Route{{
					Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
					Action: &routev3.Route_NonForwardingAction{NonForwardingAction: &routev3.NonForwardingAction{}},
				}},
			}},
		}},
		HttpFilters: filters,
	})
	if err != nil {
		return nil, err
	}
	chain := &listenerv3.FilterChain{Filters: []*listenerv3.Filter{hcm}, TransportSocket: mi.grpcDownstreamTLS}
	return &listenerv3.Listener{
		Name:             GRPCServerListenerName(in.Address, in.Port),
		Address:          socketAddress(in.Address, in.Port),
		TrafficDirection: corev3.TrafficDirection_INBOUND,
		FilterChains:     []*listenerv3.FilterChain{chain},
	}, nil
}

// grpcTLSContext presents the proxy's identity certificate and trusts the
// mesh CA, both from CertProviderInstance (gRPC ignores the certificate
// names, so they are left empty). peer, when set, is the SPIFFE id the
// peer's certificate must carry: clients only, since gRPC rejects a server
// that matches subject alternative names.
func grpcTLSContext(peer string) *tlsv3.CommonTlsContext {
	vc := &tlsv3.CertificateValidationContext{
		CaCertificateProviderInstance: &tlsv3.CertificateProviderPluginInstance{InstanceName: CertProviderInstance},
	}
	if peer != "" {
		// gRPC reads match_subject_alt_names only, not its typed successor.
		//lint:ignore SA1019 the field gRPC-Go reads
		vc.MatchSubjectAltNames = []*matcherv3.StringMatcher{{
			MatchPattern: &matcherv3.StringMatcher_Exact{Exact: peer},
		}}
	}
	return &tlsv3.CommonTlsContext{
		TlsCertificateProviderInstance: &tlsv3.CertificateProviderPluginInstance{InstanceName: CertProviderInstance},
		ValidationContextType:          &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: vc},
	}
}
