package main

import (
	"crypto/tls"
	"path/filepath"

	"github.com/spf13/pflag"

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
	f.StringVar(&x.tokenFile, "token-file", "", "file holding the dataplane's token (gitmesh token issue), for gitmesh serve --xds-auth token")
	f.StringVar(&x.caFile, "ca-file", "", "PEM file of the CA that signed the xDS server's certificate (<state-dir>/control-plane-ca.pem with gitmesh serve --tls auto)")
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

// tlsClientConfig is the CLI's TLS config for the API and for the xDS
// server of certs: nil without a CA file.
func tlsClientConfig(caFile string) (*tls.Config, error) {
	if caFile == "" {
		return nil, nil
	}
	return servertls.ClientConfig(caFile)
}
