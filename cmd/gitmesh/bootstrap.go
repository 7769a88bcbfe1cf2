package main

import (
	"fmt"
	"io"
	"net"
	"path"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"github.com/spf13/cobra"

	"github.com/gitmesh/gitmesh/schema"
	"github.com/gitmesh/gitmesh/xds"
	"github.com/gitmesh/gitmesh/xds/bootstrap"
)

// defaultCertDirRoot holds the certificate directories of dataplanes, one
// per MESH/NAME, when --cert-dir (bootstrap) or --dir (certs) is not given.
const defaultCertDirRoot = "/var/run/gitmesh"

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
		Example: `  gitmesh bootstrap --dataplane default/web-01 --xds-address 10.0.0.5:5678 > envoy.yaml
  gitmesh bootstrap --dataplane bookinfo/reviews-v1 --xds-address 10.0.0.5:5678 --grpc > bootstrap.json`,
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
	c, err := bootstrapConfig(o)
	if err != nil {
		return err
	}
	var out []byte
	if o.grpc {
		out, err = bootstrap.GRPC(c)
	} else {
		var b *bootstrapv3.Bootstrap
		if b, err = bootstrap.Envoy(c); err == nil {
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

// bootstrapConfig checks the flags and reads the token file.
func bootstrapConfig(o bootstrapOptions) (bootstrap.Config, error) {
	node, err := schema.ParseRef(o.dataplane)
	if err != nil {
		return bootstrap.Config{}, usageError("--dataplane: %w", err)
	}
	if _, _, err := bootstrap.SplitHostPort(o.xdsAddress); err != nil {
		return bootstrap.Config{}, usageError("--xds-address: %w", err)
	}
	access, err := o.access.absPaths()
	if err != nil {
		return bootstrap.Config{}, err
	}
	tok, err := access.dataplaneToken(node.Mesh, node.Name)
	if err != nil {
		return bootstrap.Config{}, err
	}
	if access.caFile != "" {
		if _, err := tlsClientConfig(access.caFile); err != nil {
			return bootstrap.Config{}, usageError("--ca-file: %v", err)
		}
	}
	c := bootstrap.Config{Node: node, XDSAddress: o.xdsAddress, Token: tok, TokenFile: access.tokenFile, CAFile: access.caFile}
	if o.grpc {
		if access.tokenFile != "" && access.caFile == "" {
			return bootstrap.Config{}, usageError("--grpc --token-file needs --ca-file: gRPC sends call credentials over TLS only")
		}
		c.CertDir = o.certDir
		if c.CertDir == "" {
			c.CertDir = defaultCertDir(node)
		}
		return c, nil
	}
	adminHost, _, err := bootstrap.SplitHostPort(o.adminAddress)
	if err != nil {
		return bootstrap.Config{}, usageError("--admin-address: %w", err)
	}
	if ip := net.ParseIP(adminHost); ip == nil || !ip.IsLoopback() {
		return bootstrap.Config{}, usageError("--admin-address: %q is not a loopback IP address; the admin interface must not be reachable from the network", adminHost)
	}
	c.AdminAddress = o.adminAddress
	return c, nil
}

// defaultCertDir is where the certificate files of a dataplane are when no
// directory is given, for bootstrap --grpc and certs alike.
func defaultCertDir(node schema.NodeID) string {
	return path.Join(defaultCertDirRoot, node.Mesh, node.Name)
}

// parseDataplane splits MESH/NAME.
func parseDataplane(s string) (mesh, name string, err error) {
	id, err := schema.ParseRef(s)
	return id.Mesh, id.Name, err
}
