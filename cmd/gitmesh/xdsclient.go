package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"path/filepath"

	"github.com/spf13/pflag"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/gitmesh/gitmesh/reconcile/source"
	"github.com/gitmesh/gitmesh/xds/servertls"
	"github.com/gitmesh/gitmesh/xds/token"
)

// xdsAccess is how a client proves itself to gitmesh's xDS server and
// checks it: the flags --token-file and --ca-file of bootstrap and certs.
type xdsAccess struct {
	tokenFile string
	caFile    string
}

func (x *xdsAccess) bind(f *pflag.FlagSet) {
	f.StringVar(&x.tokenFile, "token-file", "", "file holding the dataplane's token (gitmesh token issue), for `gitmesh serve --xds-auth token`")
	f.StringVar(&x.caFile, "ca-file", "", "PEM file of the CA that signed the xDS server's certificate (<state-dir>/control-plane-ca.pem with `gitmesh serve --tls auto`)")
}

// dataplaneToken reads the token file and checks that it names the node
// mesh.name; "" when no file is given. The token is not verified here: the
// signing key is the server's.
func (x xdsAccess) dataplaneToken(mesh, name string) (string, error) {
	if x.tokenFile == "" {
		return "", nil
	}
	t, err := source.ReadSecretFile(x.tokenFile)
	if err != nil {
		return "", usageError("--token-file: %v", err)
	}
	c, err := token.Parse(t)
	if err != nil {
		return "", usageError("--token-file: %v", err)
	}
	if c.Mesh != mesh || c.Name != name {
		return "", usageError("--token-file: the token is for %s/%s, not %s/%s", c.Mesh, c.Name, mesh, name)
	}
	return t, nil
}

// absPaths makes the file flags absolute, for a bootstrap read from
// another working directory.
func (x xdsAccess) absPaths() (xdsAccess, error) {
	var err error
	for _, p := range []*string{&x.tokenFile, &x.caFile} {
		if *p != "" {
			if *p, err = filepath.Abs(*p); err != nil {
				return x, usageError("%v", err)
			}
		}
	}
	return x, nil
}

// dialOptions are the transport and per-call credentials of a connection
// to the xDS server.
func (x xdsAccess) dialOptions(mesh, name string) ([]grpc.DialOption, error) {
	var opts []grpc.DialOption
	if x.caFile != "" {
		cfg, err := servertls.ClientConfig(x.caFile)
		if err != nil {
			return nil, usageError("--ca-file: %v", err)
		}
		opts = append(opts, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	} else {
		opts = append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))
	}
	tok, err := x.dataplaneToken(mesh, name)
	if err != nil {
		return nil, err
	}
	if tok != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearer{token: tok, secure: x.caFile != ""}))
	}
	return opts, nil
}

// bearer sends "authorization: Bearer <token>" on every call.
type bearer struct {
	token  string
	secure bool
}

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.token}, nil
}

// RequireTransportSecurity is true over TLS, so that the token is never
// sent in plaintext on a connection that was meant to be secure; without
// --ca-file the operator chose a plaintext xDS port.
func (b bearer) RequireTransportSecurity() bool { return b.secure }

// String keeps the token out of any formatting of the credentials.
func (b bearer) String() string { return fmt.Sprintf("bearer{secure: %v}", b.secure) }

var _ credentials.PerRPCCredentials = bearer{}

// tlsClientConfig is the CLI's TLS config for the API: nil without a CA file.
func tlsClientConfig(caFile string) (*tls.Config, error) {
	if caFile == "" {
		return nil, nil
	}
	return servertls.ClientConfig(caFile)
}
