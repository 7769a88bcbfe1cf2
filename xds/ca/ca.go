// Package ca is the certificate authority of meshes with mTLS. A builtin mesh
// CA is an ECDSA P-256 root created on first use and kept in a state
// directory, so a restarted control plane keeps its trust root; a provided CA
// is read from a certificate and key file on the control-plane host. The
// Authority issues each dataplane a short-lived certificate for its SPIFFE
// identities and serves both as SDS secrets.
package ca

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/gitmesh/gitmesh/schema"
	"github.com/gitmesh/gitmesh/store"
)

// Defaults of an Authority whose fields are left zero.
const (
	DefaultValidity   = 24 * time.Hour
	DefaultCAValidity = 10 * 365 * 24 * time.Hour
)

// backdate moves NotBefore into the past so that a proxy whose clock lags the
// control plane's a little still accepts a fresh certificate.
const backdate = time.Minute

// meshName is the shape of a mesh name (see schema); it also keeps a mesh
// name from escaping the state directory.
var meshName = regexp.MustCompile(`^[a-z0-9_-]+$`)

// Authority issues dataplane certificates from the CA of each mesh.
//
// Set the exported fields before the first call and do not change them
// afterwards. All methods are safe for concurrent use. Builtin CAs are kept in
// StateDir; one process at a time may own a state directory.
type Authority struct {
	// StateDir holds builtin CAs as <StateDir>/ca/<mesh>/ca.crt and ca.key.
	// Required for meshes with a builtin CA.
	StateDir string
	// Store, when set, keeps the builtin CAs instead of StateDir (under
	// the keys ca/<mesh>/ca.crt and ca.key, the key a store.Secret).
	// Issued certificates stay in StateDir, unless Store is shared by
	// replicas (a store.Swapper): then it keeps them too, so that every
	// replica hands a node the same one (see issueShared).
	Store store.Store
	// Validity of an issued dataplane certificate; DefaultValidity when zero.
	Validity time.Duration
	// CAValidity of a newly created builtin CA; DefaultCAValidity when zero.
	CAValidity time.Duration
	// Now is the clock; time.Now when nil.
	Now func() time.Time

	// Log receives what the Authority recovers from (a kept certificate
	// that cannot be used); nothing is logged when nil.
	Log *slog.Logger

	mu      sync.Mutex
	cas     map[string]*CA           // mesh -> loaded CA
	issued  map[string]*Certificate  // node id -> last certificate issued
	secrets map[string]issuedSecrets // node id -> secrets of its last certificate

	signing singleflight.Group // one signature at a time per node

	keptMu  sync.Mutex            // guards stores and what they hold
	stores  map[string]*keptStore // mesh -> its issued certificates file
	flushMu sync.Mutex            // one Flush at a time
}

func (a *Authority) warn(msg string, err error) {
	if a.Log != nil {
		a.Log.Warn(msg, "error", err)
	}
}

// CA is a loaded mesh certificate authority. It is immutable.
type CA struct {
	Mesh string
	Kind schema.CAKind
	// Cert is the CA certificate; CertPEM its PEM encoding, the trust root
	// handed to proxies.
	Cert    *x509.Certificate
	CertPEM []byte

	signer      crypto.Signer
	source      string // where it came from, for error messages and cache keys
	fingerprint string // names it in the issued certificates file
}

func (a *Authority) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

func (a *Authority) validity() time.Duration {
	if a.Validity > 0 {
		return a.Validity
	}
	return DefaultValidity
}

func (a *Authority) caValidity() time.Duration {
	if a.CAValidity > 0 {
		return a.CAValidity
	}
	return DefaultCAValidity
}

// MeshCA returns the CA of a mesh as spec describes it: for CABuiltin the CA
// in the state directory, created on first use; for CAProvided the
// certificate and key files it names. A CA is loaded once and then cached
// until the mesh's spec changes (a provided CA's files are not watched).
func (a *Authority) MeshCA(mesh string, spec schema.CA) (*CA, error) {
	if !meshName.MatchString(mesh) {
		return nil, fmt.Errorf("mesh CA: invalid mesh name %q", mesh)
	}
	source, err := a.sourceOf(mesh, spec)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if ca := a.cas[mesh]; ca != nil && ca.source == source {
		return ca, nil
	}
	var ca *CA
	switch spec.Kind {
	case schema.CAProvided:
		ca, err = loadProvided(mesh, spec.Provided.CertFile, spec.Provided.KeyFile)
	default:
		ca, err = a.loadOrCreateBuiltin(mesh)
	}
	if err != nil {
		return nil, err
	}
	ca.source = source
	if a.cas == nil {
		a.cas = map[string]*CA{}
	}
	a.cas[mesh] = ca
	return ca, nil
}

// sourceOf names where a mesh's CA comes from.
func (a *Authority) sourceOf(mesh string, spec schema.CA) (string, error) {
	switch spec.Kind {
	case schema.CABuiltin, "":
		if a.StateDir == "" && a.Store == nil {
			return "", fmt.Errorf("mesh %s: builtin CA needs a state directory", mesh)
		}
		return "builtin\x00" + builtinDir(a.StateDir, mesh), nil
	case schema.CAProvided:
		p := spec.Provided
		if p == nil || p.CertFile == "" || p.KeyFile == "" {
			return "", fmt.Errorf("mesh %s: provided CA needs a certificate file and a key file", mesh)
		}
		return "provided\x00" + p.CertFile + "\x00" + p.KeyFile, nil
	default:
		return "", fmt.Errorf("mesh %s: unknown CA kind %q", mesh, spec.Kind)
	}
}

// newCA checks that cert is a usable CA certificate whose key is signer.
func newCA(mesh string, kind schema.CAKind, cert *x509.Certificate, certPEM []byte, signer crypto.Signer) (*CA, error) {
	if !cert.BasicConstraintsValid || !cert.IsCA {
		return nil, errors.New("certificate is not a CA (basic constraints CA:TRUE missing)")
	}
	if cert.KeyUsage != 0 && cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, errors.New("CA certificate may not sign certificates (key usage lacks certSign)")
	}
	if !keyMatches(signer, cert) {
		return nil, errors.New("private key does not match the CA certificate")
	}
	return &CA{Mesh: mesh, Kind: kind, Cert: cert, CertPEM: bytes.Clone(certPEM), signer: signer, fingerprint: fingerprint(cert)}, nil
}

// keyMatches reports whether key is the private key of cert.
func keyMatches(key crypto.Signer, cert *x509.Certificate) bool {
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	return ok && pub.Equal(cert.PublicKey)
}
