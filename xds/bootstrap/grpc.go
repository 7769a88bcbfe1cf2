package bootstrap

import (
	"encoding/json"
	"errors"
	"fmt"
	"path"

	"github.com/gitmesh/gitmesh/xds"
)

// GRPC builds the bootstrap of a proxyless gRPC application (the file of
// GRPC_XDS_BOOTSTRAP, or the content of GRPC_XDS_BOOTSTRAP_CONFIG) as
// indented JSON ending in a newline. It names the server listener template
// and the file_watcher certificate provider reading c.CertDir. It reads
// c.Node, c.XDSAddress, c.TokenFile, c.CAFile and c.CertDir, and opens no
// file: gRPC reads them.
func GRPC(c Config) ([]byte, error) {
	if err := c.checkNode(); err != nil {
		return nil, fmt.Errorf("grpc bootstrap: %w", err)
	}
	if _, _, err := SplitHostPort(c.XDSAddress); err != nil {
		return nil, fmt.Errorf("grpc bootstrap: xDS address: %w", err)
	}
	if c.CertDir == "" {
		return nil, errors.New("grpc bootstrap: no certificate directory")
	}
	if c.TokenFile != "" && c.CAFile == "" {
		return nil, errors.New("grpc bootstrap: a token file needs a CA file: gRPC sends call credentials over TLS only")
	}
	server := grpcXDSServer{
		ServerURI:      c.XDSAddress,
		ChannelCreds:   []grpcChannelCred{{Type: "insecure"}},
		ServerFeatures: []string{"xds_v3"},
	}
	if c.CAFile != "" {
		server.ChannelCreds = []grpcChannelCred{{Type: "tls", Config: map[string]string{"ca_certificate_file": c.CAFile}}}
	}
	if c.TokenFile != "" {
		server.CallCreds = []grpcCallCred{{Type: "jwt_token_file", Config: map[string]string{"jwt_token_file": c.TokenFile}}}
	}
	b := grpcBootstrap{
		XDSServers: []grpcXDSServer{server},
		Node: grpcNode{
			ID:       c.Node.String(),
			Cluster:  c.Node.Mesh,
			Metadata: map[string]string{xds.FlavorMetadataKey: string(xds.FlavorGRPC)},
		},
		ServerListenerResourceNameTemplate: xds.GRPCServerListenerTemplate,
		CertificateProviders: map[string]grpcCertProvider{xds.CertProviderInstance: {
			PluginName: "file_watcher",
			Config: grpcFileWatcherCfg{
				CertificateFile:   path.Join(c.CertDir, xds.CertFileName),
				PrivateKeyFile:    path.Join(c.CertDir, xds.KeyFileName),
				CACertificateFile: path.Join(c.CertDir, xds.CAFileName),
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
