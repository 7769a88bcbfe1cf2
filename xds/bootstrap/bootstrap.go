// Package bootstrap builds the configuration a data plane starts with: an
// Envoy v3 bootstrap, or the JSON bootstrap of a proxyless gRPC application.
// Both name the node and reach gitmesh's xDS server over ADS, with TLS and a
// dataplane token when the Config asks for them.
package bootstrap

import (
	"errors"
	"fmt"
	"net"
	"strconv"

	"github.com/gitmesh/gitmesh/schema"
)

// Config is what a bootstrap says: which node it is and how it reaches the
// xDS server. Fields marked Envoy or gRPC are read by that flavour only.
type Config struct {
	// Node is the dataplane: the bootstrap's node id is Node.String() and
	// its cluster the mesh.
	Node schema.NodeID
	// XDSAddress is HOST:PORT of gitmesh's xDS server. Envoy reaches it
	// through the static cluster gitmesh_xds (by DNS unless HOST is an IP
	// address); gRPC gets it, as given, as its server_uri.
	XDSAddress string
	// AdminAddress is the IP:PORT of Envoy's admin interface, which must
	// be a loopback address (Envoy).
	AdminAddress string
	// Token, when not empty, is the dataplane token, sent as the ADS
	// stream's "authorization: Bearer <token>" initial metadata; the
	// bootstrap then holds the token (Envoy).
	Token string
	// TokenFile, when not empty, is the file holding the dataplane token,
	// which gRPC reads as jwt_token_file call credentials and sends over
	// TLS only, so it needs CAFile (gRPC).
	TokenFile string
	// CAFile, when not empty, makes the connection to the xDS server TLS,
	// checked against the CA certificates in that file; Envoy checks the
	// server's name or IP as in XDSAddress too.
	CAFile string
	// CertDir is the directory of the dataplane's certificate files, which
	// gRPC's file_watcher certificate provider reads and `gitmesh certs`
	// writes (gRPC).
	CertDir string
}

// checkNode checks that the config names a node.
func (c Config) checkNode() error {
	if c.Node.Mesh == "" || c.Node.Name == "" {
		return errors.New("no node: the mesh and the name of the dataplane are required")
	}
	return nil
}

// SplitHostPort splits HOST:PORT, as an xDS or admin address is given, and
// checks that the host is not empty and the port is 1 to 65535.
func SplitHostPort(s string) (string, uint32, error) {
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
