package ca

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/gitmesh/gitmesh/schema"
	"github.com/gitmesh/gitmesh/store"
)

// Certificate is a dataplane's identity: a leaf certificate, its private key
// and the CA that issued it. It is immutable.
type Certificate struct {
	NodeID     string
	Identities []string // URI SANs, as requested
	Cert       *x509.Certificate
	CertPEM    []byte
	KeyPEM     []byte
	CAPEM      []byte
	// Version identifies the certificate material (leaf and CA): it changes
	// whenever the certificate is renewed or the CA changes.
	Version string

	mesh          string
	keyDER        []byte
	caFingerprint string
}

// NeedsRenewal reports whether less than a third of the certificate's
// lifetime remains at now.
func (c *Certificate) NeedsRenewal(now time.Time) bool {
	life := c.Cert.NotAfter.Sub(c.Cert.NotBefore)
	return c.Cert.NotAfter.Sub(now) < life/3
}

// fits reports whether c may be served for identities from ca at now.
func (c *Certificate) fits(identities []string, ca *CA, now time.Time) bool {
	return c != nil && slices.Equal(c.Identities, identities) && bytes.Equal(c.CAPEM, ca.CertPEM) && !c.NeedsRenewal(now)
}

// Issue returns a certificate for node carrying identities (SPIFFE URIs such
// as spiffe://<mesh>/<service>) from the CA of mesh. The last certificate of
// each node is kept, in memory and in the state directory (see Flush), and
// returned again until it needs renewal (less than a third of its life
// left), or its identities or CA change, so repeated calls are cheap and give
// the same Version, before and after a restart. Certificates of different
// nodes are signed in parallel, outside the Authority's lock; concurrent
// calls for one node sign once.
func (a *Authority) Issue(nodeID, mesh string, spec schema.CA, identities []string) (*Certificate, error) {
	if len(identities) == 0 {
		return nil, fmt.Errorf("issue certificate for %s: no identities", nodeID)
	}
	ca, err := a.MeshCA(mesh, spec)
	if err != nil {
		return nil, fmt.Errorf("issue certificate for %s: %w", nodeID, err)
	}
	now := a.now()
	// The common case, checked first: the certificate held still fits.
	a.mu.Lock()
	c, held := a.issued[nodeID]
	a.mu.Unlock()
	if c.fits(identities, ca, now) {
		return c, nil
	}
	key := nodeID + "\x00" + strings.Join(identities, "\x00") + "\x00" + ca.source
	v, err, _ := a.signing.Do(key, func() (any, error) {
		a.mu.Lock()
		c := a.issued[nodeID]
		a.mu.Unlock()
		if c.fits(identities, ca, now) {
			return c, nil // issued by a call that just finished
		}
		if !held {
			// The first call for the node since the start: the one kept
			// in the state directory, when it still fits.
			if k := a.kept(mesh, nodeID, ca); k.fits(identities, ca, now) {
				a.store1(k, false)
				return k, nil
			}
		}
		uris := make([]*url.URL, 0, len(identities))
		for _, id := range identities {
			u, err := url.Parse(id)
			if err != nil || u.Scheme != "spiffe" || u.Host == "" {
				return nil, fmt.Errorf("identity %q is not a spiffe:// URI", id)
			}
			uris = append(uris, u)
		}
		if sw, ok := a.Store.(store.Swapper); ok {
			if key, ok := sharedKey(mesh, nodeID); ok {
				c, err := a.issueShared(sw, key, ca, mesh, nodeID, identities, uris, now)
				if err != nil {
					return nil, err
				}
				a.store1(c, false)
				return c, nil
			}
		}
		c, err := a.sign(ca, mesh, nodeID, identities, uris, now)
		if err != nil {
			return nil, err
		}
		a.store1(c, true)
		return c, nil
	})
	if err != nil {
		return nil, fmt.Errorf("issue certificate for %s: %w", nodeID, err)
	}
	return v.(*Certificate), nil
}

// store1 makes c the node's certificate; a new one is also kept in the
// state directory at the next Flush.
func (a *Authority) store1(c *Certificate, isNew bool) {
	a.mu.Lock()
	if a.issued == nil {
		a.issued = map[string]*Certificate{}
	}
	a.issued[c.NodeID] = c
	a.mu.Unlock()
	if isNew {
		a.keep(c)
	}
}

// Forget drops the certificate kept for a node that no longer exists, in
// memory and (at the next Flush) in the state directory.
func (a *Authority) Forget(nodeID string) {
	a.mu.Lock()
	c := a.issued[nodeID]
	delete(a.issued, nodeID)
	delete(a.secrets, nodeID)
	a.mu.Unlock()
	mesh := ""
	if c != nil {
		mesh = c.mesh
	}
	a.forgetKept(mesh, nodeID)
}

// sign creates a new key and leaf certificate.
func (a *Authority) sign(ca *CA, mesh, nodeID string, identities []string, uris []*url.URL, now time.Time) (*Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	notAfter := now.Add(a.validity())
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		NotBefore:             now.Add(-backdate),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  uris,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.signer)
	if err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return newCertificate(mesh, nodeID, identities, cert, keyDER, ca), nil
}

// newCertificate is the Certificate of a signed leaf and its key.
func newCertificate(mesh, nodeID string, identities []string, cert *x509.Certificate, keyDER []byte, ca *CA) *Certificate {
	h := sha256.New()
	h.Write(cert.Raw)
	h.Write(ca.Cert.Raw)
	return &Certificate{
		NodeID:        nodeID,
		Identities:    slices.Clone(identities),
		Cert:          cert,
		CertPEM:       pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}),
		KeyPEM:        pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		CAPEM:         bytes.Clone(ca.CertPEM),
		Version:       hex.EncodeToString(h.Sum(nil))[:16],
		mesh:          mesh,
		keyDER:        keyDER,
		caFingerprint: ca.fingerprint,
	}
}

// randomSerial returns a random positive 127-bit serial number.
func randomSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 127)
	n, err := rand.Int(rand.Reader, limit)
	if err != nil {
		return nil, err
	}
	return n.Add(n, big.NewInt(1)), nil
}
