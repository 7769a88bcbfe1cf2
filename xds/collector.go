package xds

import (
	"net"
	"strings"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
)

// collectorCluster is the cluster of a proxy's own that reaches a
// collector (tracing, access logs) or a local endpoint at host:port, as
// Kuma's ProvidedEndpointCluster makes it: static for an IP address, else
// resolved by DNS (IPv4), a 5s connect timeout, TLS with the host as SNI
// when tls, HTTP/2 when h2 (an OpenTelemetry collector speaks gRPC).
func collectorCluster(name, host string, port uint32, tls, h2 bool) (*clusterv3.Cluster, error) {
	c := &clusterv3.Cluster{
		Name:           name,
		AltStatName:    strings.ReplaceAll(name, ":", "_"),
		ConnectTimeout: durationpb.New(5 * time.Second),
		LoadAssignment: &endpointv3.ClusterLoadAssignment{
			ClusterName: name,
			Endpoints: []*endpointv3.LocalityLbEndpoints{{
				LbEndpoints: []*endpointv3.LbEndpoint{lbEndpoint(host, port)},
			}},
		},
	}
	if net.ParseIP(host) != nil {
		c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC}
	} else {
		c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STRICT_DNS}
		c.DnsLookupFamily = clusterv3.Cluster_V4_ONLY
	}
	if tls {
		ts, err := transportSocket(&tlsv3.UpstreamTlsContext{Sni: host, AllowRenegotiation: true})
		if err != nil {
			return nil, err
		}
		c.TransportSocketMatches = []*clusterv3.Cluster_TransportSocketMatch{{Name: host, Match: &structpb.Struct{}, TransportSocket: ts}}
	}
	if h2 {
		opts, err := toAny(http2Options)
		if err != nil {
			return nil, err
		}
		c.TypedExtensionProtocolOptions = map[string]*anypb.Any{httpProtocolOptions: opts}
	}
	return c, nil
}

var http2Options = &upstreamhttpv3.HttpProtocolOptions{
	UpstreamProtocolOptions: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig{
		ProtocolConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}},
	}},
}

// envoyGRPC is a gRPC service reached through an Envoy cluster.
func envoyGRPC(cluster string) *corev3.GrpcService {
	return &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: cluster}}}
}
