package bootstrap

import (
	"fmt"
	"net"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/gitmesh/gitmesh/xds"
)

// Names in an Envoy bootstrap.
const (
	// XDSCluster is the static cluster of gitmesh's xDS server.
	XDSCluster      = "gitmesh_xds"
	http2OptionsKey = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
)

// Envoy builds the bootstrap of an Envoy proxy: it takes listeners and
// clusters over ADS from the static cluster XDSCluster (HTTP/2), and its
// admin interface listens on c.AdminAddress. It reads c.Node, c.XDSAddress,
// c.AdminAddress, c.Token and c.CAFile (whose file it does not open: Envoy
// reads it), and the bootstrap it returns passes ValidateAll.
func Envoy(c Config) (*bootstrapv3.Bootstrap, error) {
	if err := c.checkNode(); err != nil {
		return nil, fmt.Errorf("envoy bootstrap: %w", err)
	}
	xdsHost, xdsPort, err := SplitHostPort(c.XDSAddress)
	if err != nil {
		return nil, fmt.Errorf("envoy bootstrap: xDS address: %w", err)
	}
	adminHost, adminPort, err := SplitHostPort(c.AdminAddress)
	if err != nil {
		return nil, fmt.Errorf("envoy bootstrap: admin address: %w", err)
	}
	if ip := net.ParseIP(adminHost); ip == nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("envoy bootstrap: admin address %q is not a loopback IP address", adminHost)
	}
	metadata, err := structpb.NewStruct(map[string]any{xds.FlavorMetadataKey: string(xds.FlavorEnvoy)})
	if err != nil {
		return nil, err
	}
	http2, err := anypb.New(&httpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{
			ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{
					Http2ProtocolOptions: &corev3.Http2ProtocolOptions{},
				},
			},
		},
	})
	if err != nil {
		return nil, err
	}
	discovery := clusterv3.Cluster_STRICT_DNS
	if net.ParseIP(xdsHost) != nil {
		discovery = clusterv3.Cluster_STATIC
	}
	ads := func() *corev3.ConfigSource {
		return &corev3.ConfigSource{
			ResourceApiVersion:    corev3.ApiVersion_V3,
			ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
		}
	}
	b := &bootstrapv3.Bootstrap{
		Node: &corev3.Node{Id: c.Node.String(), Cluster: c.Node.Mesh, Metadata: metadata},
		Admin: &bootstrapv3.Admin{
			Address: socketAddress(adminHost, adminPort),
		},
		DynamicResources: &bootstrapv3.Bootstrap_DynamicResources{
			AdsConfig: &corev3.ApiConfigSource{
				ApiType:                   corev3.ApiConfigSource_GRPC,
				TransportApiVersion:       corev3.ApiVersion_V3,
				SetNodeOnFirstMessageOnly: true,
				GrpcServices: []*corev3.GrpcService{{
					TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{
						EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: XDSCluster},
					},
				}},
			},
			LdsConfig: ads(),
			CdsConfig: ads(),
		},
		StaticResources: &bootstrapv3.Bootstrap_StaticResources{
			Clusters: []*clusterv3.Cluster{{
				Name:                          XDSCluster,
				ClusterDiscoveryType:          &clusterv3.Cluster_Type{Type: discovery},
				ConnectTimeout:                durationpb.New(time.Second),
				TypedExtensionProtocolOptions: map[string]*anypb.Any{http2OptionsKey: http2},
				LoadAssignment: &endpointv3.ClusterLoadAssignment{
					ClusterName: XDSCluster,
					Endpoints: []*endpointv3.LocalityLbEndpoints{{
						LbEndpoints: []*endpointv3.LbEndpoint{{
							HostIdentifier: &endpointv3.LbEndpoint_Endpoint{
								Endpoint: &endpointv3.Endpoint{Address: socketAddress(xdsHost, xdsPort)},
							},
						}},
					}},
				},
			}},
		},
	}
	if c.Token != "" {
		b.DynamicResources.AdsConfig.GrpcServices[0].InitialMetadata = []*corev3.HeaderValue{{Key: "authorization", Value: "Bearer " + c.Token}}
	}
	if c.CAFile != "" {
		ts, err := xdsTransportSocket(xdsHost, c.CAFile)
		if err != nil {
			return nil, err
		}
		b.StaticResources.Clusters[0].TransportSocket = ts
	}
	if err := b.ValidateAll(); err != nil {
		return nil, fmt.Errorf("envoy bootstrap: %w", err)
	}
	return b, nil
}

func socketAddress(host string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address:       host,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}
