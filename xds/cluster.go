package xds

import (
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/gitmesh/gitmesh/schema"
)

// httpProtocolOptions is the key of a cluster's HTTP protocol options.
const httpProtocolOptions = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

// localhost is where an inbound's application listens, on its service port.
const localhost = "127.0.0.1"

// locality is the one locality of every ClusterLoadAssignment. gRPC
// rejects endpoints without a locality and silently drops a locality
// without a positive load_balancing_weight, so both are always set.
func locality() *corev3.Locality { return &corev3.Locality{Zone: "default"} }

// edsCluster is the cluster of a service that outbounds reach: its
// endpoints come over EDS on the ADS stream, balanced round robin; with
// mTLS it presents the proxy's identity and checks the peer's SPIFFE id,
// over SDS for Envoy and through CertProviderInstance for gRPC.
//
// h2 says that the service speaks gRPC: Envoy then speaks HTTP/2 to it
// when it routes requests (a tcp_proxy ignores the option).
func edsCluster(m *schema.Mesh, service string, flavor Flavor, h2 bool) (*clusterv3.Cluster, error) {
	return edsClusterNamed(m, service, service, flavor, h2)
}

// edsClusterNamed is edsCluster under another name: a subset of service's
// instances, which present the service's identity.
func edsClusterNamed(m *schema.Mesh, name, service string, flavor Flavor, h2 bool) (*clusterv3.Cluster, error) {
	c := &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsSource()},
		LbPolicy:             clusterv3.Cluster_ROUND_ROBIN,
	}
	if h2 && flavor == FlavorEnvoy {
		opts, err := toAny(&upstreamhttpv3.HttpProtocolOptions{
			UpstreamProtocolOptions: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}},
			}},
		})
		if err != nil {
			return nil, err
		}
		c.TypedExtensionProtocolOptions = map[string]*anypb.Any{httpProtocolOptions: opts}
	}
	if !m.MTLS.Enabled {
		return c, nil
	}
	var err error
	if flavor == FlavorGRPC {
		c.TransportSocket, err = transportSocket(&tlsv3.UpstreamTlsContext{CommonTlsContext: grpcTLSContext(SpiffeID(m.Name, service))})
	} else {
		c.TransportSocket, err = upstreamTLS(m.Name, service)
	}
	if err != nil {
		return nil, err
	}
	return c, nil
}

// loadAssignment lists a service's endpoints (sorted and distinct) in one
// weighted locality. A service without endpoints gets an assignment with
// none, so that its cluster is consistent and has nowhere to send traffic.
func loadAssignment(service string, eps []endpoint) *endpointv3.ClusterLoadAssignment {
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: service}
	if len(eps) == 0 {
		return cla
	}
	lbs := make([]*endpointv3.LbEndpoint, len(eps))
	for i, e := range eps {
		lbs[i] = lbEndpoint(e.address, e.port)
	}
	cla.Endpoints = []*endpointv3.LocalityLbEndpoints{{
		Locality:            locality(),
		LbEndpoints:         lbs,
		LoadBalancingWeight: wrapperspb.UInt32(1),
	}}
	return cla
}

func lbEndpoint(address string, port uint32) *endpointv3.LbEndpoint {
	return &endpointv3.LbEndpoint{
		HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
			Address: socketAddress(address, port),
		}},
	}
}

func socketAddress(address string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address:       address,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

// localCluster is the static cluster of an inbound: the application on
// 127.0.0.1 at its service port, in plain text.
func localCluster(servicePort uint32) *clusterv3.Cluster {
	name := LocalClusterName(servicePort)
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		LbPolicy:             clusterv3.Cluster_ROUND_ROBIN,
		LoadAssignment: &endpointv3.ClusterLoadAssignment{
			ClusterName: name,
			Endpoints: []*endpointv3.LocalityLbEndpoints{{
				LbEndpoints: []*endpointv3.LbEndpoint{lbEndpoint(localhost, servicePort)},
			}},
		},
	}
}

// routeConfig routes every request, whatever its host and path, to one
// cluster. HTTP inbounds and outbounds both reach their route over RDS.
func routeConfig(name, virtualHost, cluster string) *routev3.RouteConfiguration {
	return &routev3.RouteConfiguration{
		Name: name,
		VirtualHosts: []*routev3.VirtualHost{{
			Name:    virtualHost,
			Domains: []string{"*"},
			Routes: []*routev3.Route{{
				Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{
					ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster},
				}},
			}},
		}},
	}
}
