package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"path"
	"strconv"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/gitmesh/gitmesh/schema"
	"github.com/gitmesh/gitmesh/xds"
)

// Names shared by the bootstraps and the xDS server.
const (
	xdsClusterName     = "gitmesh_xds"
	defaultCertDirRoot = "/var/run/gitmesh"
	http2OptionsKey    = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
)

type bootstrapOptions struct {
	dataplane    string
	xdsAddress   string
	adminAddress string
	grpc         bool
	certDir      string
	access       xdsAccess
}

func newBootstrapCmd() *cobra.Command {
	var o bootstrapOptions
	cmd := &cobra.Command{
		Use:   "bootstrap --dataplane MESH/NAME --xds-address HOST:PORT",
		Short: "Print the bootstrap a proxy needs to reach gitmesh",
		Long: `Bootstrap prints the configuration a data plane starts with: its node id
(<mesh>.<name>) and how to reach gitmesh's xDS server over ADS.

By default it prints an Envoy v3 bootstrap as YAML, with the admin interface
bound to the loopback address. With --grpc it prints the JSON bootstrap of a
proxyless gRPC application (GRPC_XDS_BOOTSTRAP or GRPC_XDS_BOOTSTRAP_CONFIG),
whose certificates gitmesh writes under --cert-dir.

With --token-file the dataplane token goes into the bootstrap: for Envoy as
the "authorization: Bearer <token>" initial metadata of the ADS gRPC
service (the bootstrap then holds the token: keep it as secret as the
token); for gRPC as call credentials of type jwt_token_file naming the file,
which gRPC-Go reads only with GRPC_EXPERIMENTAL_XDS_BOOTSTRAP_CALL_CREDS=true
and sends only over TLS, so --grpc --token-file needs --ca-file. With
--ca-file the connection to the xDS server is TLS, checked against that CA
(and, for Envoy, the server's name or IP as in --xds-address).`,
		Example: `  gitmesh bootstrap --dataplane default/web-1 --xds-address 10.0.0.5:5678 > envoy.yaml
  gitmesh bootstrap --dataplane default/reviews-v1 --xds-address 10.0.0.5:5678 --grpc > bootstrap.json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cmd.Flags().Changed("cert-dir") && !o.grpc {
				return usageError("--cert-dir applies to --grpc only")
			}
			if cmd.Flags().Changed("admin-address") && o.grpc {
				return usageError("--admin-address applies to Envoy only, not --grpc")
			}
			return runBootstrap(cmd.OutOrStdout(), o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.dataplane, "dataplane", "", "the dataplane, as MESH/NAME (required)")
	f.StringVar(&o.xdsAddress, "xds-address", "", "HOST:PORT of gitmesh's xDS server (required)")
	f.StringVar(&o.adminAddress, "admin-address", "127.0.0.1:9901", "loopback IP:PORT of Envoy's admin interface")
	f.BoolVar(&o.grpc, "grpc", false, "print a proxyless gRPC xDS bootstrap (JSON) instead of an Envoy one")
	f.StringVar(&o.certDir, "cert-dir", "", "with --grpc: directory of cert.pem, key.pem and ca.pem (default "+defaultCertDirRoot+"/MESH/NAME)")
	o.access.bind(f)
	_ = cmd.MarkFlagRequired("dataplane")
	_ = cmd.MarkFlagRequired("xds-address")
	return cmd
}

func runBootstrap(w io.Writer, o bootstrapOptions) error {
	mesh, name, err := parseDataplane(o.dataplane)
	if err != nil {
		return usageError("--dataplane: %w", err)
	}
	xdsHost, xdsPort, err := parseHostPort(o.xdsAddress)
	if err != nil {
		return usageError("--xds-address: %w", err)
	}
	access, err := o.access.absPaths()
	if err != nil {
		return err
	}
	tok, err := access.dataplaneToken(mesh, name)
	if err != nil {
		return err
	}
	if access.caFile != "" {
		if _, err := tlsClientConfig(access.caFile); err != nil {
			return usageError("--ca-file: %v", err)
		}
	}
	var out []byte
	if o.grpc {
		if access.tokenFile != "" && access.caFile == "" {
			return usageError("--grpc --token-file needs --ca-file: gRPC sends call credentials over TLS only")
		}
		certDir := o.certDir
		if certDir == "" {
			certDir = path.Join(defaultCertDirRoot, mesh, name)
		}
		out, err = grpcBootstrapJSON(mesh, name, o.xdsAddress, certDir, access)
	} else {
		adminHost, adminPort, perr := parseHostPort(o.adminAddress)
		if perr != nil {
			return usageError("--admin-address: %w", perr)
		}
		if ip := net.ParseIP(adminHost); ip == nil || !ip.IsLoopback() {
			return usageError("--admin-address: %q is not a loopback IP address; the admin interface must not be reachable from the network", adminHost)
		}
		var b *bootstrapv3.Bootstrap
		b, err = envoyBootstrap(mesh, name, xdsHost, xdsPort, adminHost, adminPort, tok, access.caFile)
		if err == nil {
			out, err = xds.MarshalMessage(b, xds.FormatYAML)
		}
	}
	if err != nil {
		return fmt.Errorf("bootstrap: %w", err)
	}
	if _, err := w.Write(out); err != nil {
		return &exitError{code: exitUsage, err: fmt.Errorf("bootstrap: %w", err)}
	}
	return nil
}

// parseDataplane splits MESH/NAME.
func parseDataplane(s string) (mesh, name string, err error) {
	id, err := schema.ParseRef(s)
	return id.Mesh, id.Name, err
}

// parseHostPort splits HOST:PORT and checks the port.
func parseHostPort(s string) (string, uint32, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, err
	}
	if host == "" {
		return "", 0, fmt.Errorf("%q has no host", s)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 {
		return "", 0, fmt.Errorf("%q: port must be 1 to 65535", s)
	}
	return host, uint32(p), nil
}

// envoyBootstrap builds an Envoy bootstrap that takes listeners and clusters
// over ADS from the static cluster gitmesh_xds (HTTP/2). A token, when not
// empty, is sent as the ADS stream's authorization metadata; caFile, when
// not empty, makes the cluster speak TLS and check the server against it.
func envoyBootstrap(mesh, name, xdsHost string, xdsPort uint32, adminHost string, adminPort uint32, tok, caFile string) (*bootstrapv3.Bootstrap, error) {
	metadata, err := structpb.NewStruct(map[string]any{xds.FlavorMetadataKey: "envoy"})
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
		Node: &corev3.Node{Id: mesh + "." + name, Cluster: mesh, Metadata: metadata},
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
						EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: xdsClusterName},
					},
				}},
			},
			LdsConfig: ads(),
			CdsConfig: ads(),
		},
		StaticResources: &bootstrapv3.Bootstrap_StaticResources{
			Clusters: []*clusterv3.Cluster{{
				Name:                          xdsClusterName,
				ClusterDiscoveryType:          &clusterv3.Cluster_Type{Type: discovery},
				ConnectTimeout:                durationpb.New(time.Second),
				TypedExtensionProtocolOptions: map[string]*anypb.Any{http2OptionsKey: http2},
				LoadAssignment: &endpointv3.ClusterLoadAssignment{
					ClusterName: xdsClusterName,
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
	if tok != "" {
		b.DynamicResources.AdsConfig.GrpcServices[0].InitialMetadata = []*corev3.HeaderValue{{Key: "authorization", Value: "Bearer " + tok}}
	}
	if caFile != "" {
		ts, err := xdsTransportSocket(xdsHost, caFile)
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

// xdsTransportSocket is the TLS of the xDS cluster: HTTP/2 by ALPN (gRPC
// servers require it), SNI and the peer's name or IP checked against host,
// and the CA read from caFile.
func xdsTransportSocket(host, caFile string) (*corev3.TransportSocket, error) {
	san := &tlsv3.SubjectAltNameMatcher{SanType: tlsv3.SubjectAltNameMatcher_DNS,
		Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: host}}}
	if net.ParseIP(host) != nil {
		san.SanType = tlsv3.SubjectAltNameMatcher_IP_ADDRESS
	}
	utc := &tlsv3.UpstreamTlsContext{
		CommonTlsContext: &tlsv3.CommonTlsContext{
			AlpnProtocols: []string{"h2"},
			ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				TrustedCa:                 &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: caFile}},
				MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{san},
			}},
		},
	}
	if net.ParseIP(host) == nil {
		utc.Sni = host
	}
	cfg, err := anypb.New(utc)
	if err != nil {
		return nil, err
	}
	return &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: cfg}}, nil
}

func socketAddress(host string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address:       host,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

// grpcBootstrap is gRPC-Go's xDS bootstrap file.
type grpcBootstrap struct {
	XDSServers                         []grpcXDSServer             `json:"xds_servers"`
	Node                               grpcNode                    `json:"node"`
	ServerListenerResourceNameTemplate string                      `json:"server_listener_resource_name_template"`
	CertificateProviders               map[string]grpcCertProvider `json:"certificate_providers"`
}

type grpcXDSServer struct {
	ServerURI      string            `json:"server_uri"`
	ChannelCreds   []grpcChannelCred `json:"channel_creds"`
	CallCreds      []grpcCallCred    `json:"call_creds,omitempty"`
	ServerFeatures []string          `json:"server_features"`
}

// grpcChannelCred is a channel credential: "insecure", or "tls" with config
// {"ca_certificate_file": ...}.
type grpcChannelCred struct {
	Type   string            `json:"type"`
	Config map[string]string `json:"config,omitempty"`
}

// grpcCallCred is a call credential (gRFC A97): "jwt_token_file" with config
// {"jwt_token_file": ...}.
type grpcCallCred struct {
	Type   string            `json:"type"`
	Config map[string]string `json:"config"`
}

type grpcNode struct {
	ID       string            `json:"id"`
	Cluster  string            `json:"cluster"`
	Metadata map[string]string `json:"metadata"`
}

type grpcCertProvider struct {
	PluginName string             `json:"plugin_name"`
	Config     grpcFileWatcherCfg `json:"config"`
}

type grpcFileWatcherCfg struct {
	CertificateFile   string `json:"certificate_file"`
	PrivateKeyFile    string `json:"private_key_file"`
	CACertificateFile string `json:"ca_certificate_file"`
	RefreshInterval   string `json:"refresh_interval"`
}

// grpcBootstrapJSON builds the bootstrap of a proxyless gRPC application.
func grpcBootstrapJSON(mesh, name, xdsAddress, certDir string, access xdsAccess) ([]byte, error) {
	server := grpcXDSServer{
		ServerURI:      xdsAddress,
		ChannelCreds:   []grpcChannelCred{{Type: "insecure"}},
		ServerFeatures: []string{"xds_v3"},
	}
	if access.caFile != "" {
		server.ChannelCreds = []grpcChannelCred{{Type: "tls", Config: map[string]string{"ca_certificate_file": access.caFile}}}
	}
	if access.tokenFile != "" {
		server.CallCreds = []grpcCallCred{{Type: "jwt_token_file", Config: map[string]string{"jwt_token_file": access.tokenFile}}}
	}
	b := grpcBootstrap{
		XDSServers: []grpcXDSServer{server},
		Node: grpcNode{
			ID:       mesh + "." + name,
			Cluster:  mesh,
			Metadata: map[string]string{xds.FlavorMetadataKey: "grpc"},
		},
		ServerListenerResourceNameTemplate: xds.GRPCServerListenerTemplate,
		CertificateProviders: map[string]grpcCertProvider{xds.CertProviderInstance: {
			PluginName: "file_watcher",
			Config: grpcFileWatcherCfg{
				CertificateFile:   path.Join(certDir, "cert.pem"),
				PrivateKeyFile:    path.Join(certDir, "key.pem"),
				CACertificateFile: path.Join(certDir, "ca.pem"),
				RefreshInterval:   "600s",
			},
		}},
	}
	out, err := json.MarshalIndent(b, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}
