package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/gitmesh/gitmesh/schema"
	"github.com/gitmesh/gitmesh/xds/bootstrap"
	"github.com/gitmesh/gitmesh/xds/certagent"
)

type certsOptions struct {
	dataplane  string
	xdsAddress string
	dir        string
	once       bool
	timeout    time.Duration
	logFormat  string
	logLevel   string
	access     xdsAccess
}

func newCertsCmd() *cobra.Command {
	var o certsOptions
	cmd := &cobra.Command{
		Use:   "certs --dataplane MESH/NAME [--xds-address HOST:PORT] [--dir DIR] [--once]",
		Short: "Keep the certificate files of a proxyless gRPC application current",
		Long: `Certs is the certificate agent of a proxyless gRPC application in a mesh
with mTLS. It connects to gitmesh's xDS server as the dataplane's node
(<mesh>.<name>), takes the dataplane's certificate and the mesh CA over SDS,
checks them (the key matches the certificate, which chains to the CA and has
not expired), and writes cert.pem, key.pem (0600) and ca.pem into --dir,
where the bootstrap of ` + "`gitmesh bootstrap --grpc`" + ` points gRPC's
certificate provider. A response that fails the checks is rejected (NACK)
and the files are kept.

It keeps running and rewrites the files when gitmesh renews the
certificate, reconnecting when the stream breaks. With --once it exits after
the first write, as an init container would, and fails when no certificate
arrives within --timeout.

Every flag can also be set with an environment variable: --xds-address is
GITMESH_XDS_ADDRESS.`,
		Example: `  gitmesh certs --dataplane bookinfo/reviews-v1 --xds-address 10.0.0.5:5678
  gitmesh certs --dataplane bookinfo/reviews-v1 --xds-address 10.0.0.5:5678 --once --dir /etc/reviews/tls`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runCerts(cmd.Context(), cmd.ErrOrStderr(), o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.dataplane, "dataplane", "", "the dataplane, as MESH/NAME (required)")
	f.StringVar(&o.xdsAddress, "xds-address", "127.0.0.1:5678", "HOST:PORT of gitmesh's xDS server")
	f.StringVar(&o.dir, "dir", "", "directory of cert.pem, key.pem and ca.pem (default "+defaultCertDirRoot+"/MESH/NAME)")
	f.BoolVar(&o.once, "once", false, "exit after the first certificate is written")
	f.DurationVar(&o.timeout, "timeout", 30*time.Second, "with --once, how long to wait for a certificate; otherwise when to warn that none came")
	f.StringVar(&o.logFormat, "log-format", "text", "log format: text or json")
	f.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	o.access.bind(f)
	_ = cmd.MarkFlagRequired("dataplane")
	return cmd
}

func runCerts(ctx context.Context, stderr io.Writer, o certsOptions) error {
	c, err := certsConfig(o, stderr)
	if err != nil {
		return err
	}
	a, err := certagent.New(c)
	if err != nil {
		return &exitError{code: exitUsage, err: fmt.Errorf("certs: %w", err)}
	}
	return certsExit(a.Run(ctx))
}

// certsConfig checks the flags and reads the token and CA files.
func certsConfig(o certsOptions, stderr io.Writer) (certagent.Config, error) {
	node, err := schema.ParseRef(o.dataplane)
	if err != nil {
		return certagent.Config{}, usageError("--dataplane: %w", err)
	}
	if _, _, err := bootstrap.SplitHostPort(o.xdsAddress); err != nil {
		return certagent.Config{}, usageError("--xds-address: %w", err)
	}
	if o.timeout <= 0 {
		return certagent.Config{}, usageError("--timeout must be positive")
	}
	log, err := newLogger(stderr, o.logFormat, o.logLevel)
	if err != nil {
		return certagent.Config{}, err
	}
	dir := o.dir
	if dir == "" {
		dir = defaultCertDir(node)
	}
	tlsConfig, err := tlsClientConfig(o.access.caFile)
	if err != nil {
		return certagent.Config{}, usageError("--ca-file: %v", err)
	}
	tok, err := o.access.dataplaneToken(node.Mesh, node.Name)
	if err != nil {
		return certagent.Config{}, err
	}
	return certagent.Config{Node: node, XDSAddress: o.xdsAddress, TLS: tlsConfig, Token: tok,
		Dir: dir, Once: o.once, Timeout: o.timeout, Logger: log}, nil
}

// certsExit gives the agent's errors their exit codes: 1 when --once got
// no certificate, 2 for an unusable --xds-address or files it cannot write.
func certsExit(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, certagent.ErrNoCertificate):
		return &exitError{code: exitFailed, err: fmt.Errorf("certs: %w", err)}
	case errors.Is(err, certagent.ErrAddress):
		return usageError("--xds-address: %v", err)
	}
	return &exitError{code: exitUsage, err: fmt.Errorf("certs: %w", err)}
}
