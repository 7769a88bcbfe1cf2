// Package servertls gives the control plane's own servers (xDS and the HTTP
// API) their TLS configuration: a certificate issued by a control-plane CA
// kept in the state directory, or one read from files. The control-plane
// CA is separate from the mesh CAs, which only sign dataplane identities.
package servertls

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/gitmesh/gitmesh/internal/atomicfile"
	"github.com/gitmesh/gitmesh/store"
)

// Files in the state directory.
const (
	// CADir holds the control-plane CA: ca.crt and ca.key (0600).
	CADir = "control-plane-ca"
	// CAFile is the CA certificate clients trust: give it to
	// `gitmesh bootstrap --ca-file`, `gitmesh certs --ca-file` and the CLI.
	CAFile = "control-plane-ca.pem"
)

// Validity of what Auto issues.
const (
	caValidity     = 10 * 365 * 24 * time.Hour
	serverValidity = 90 * 24 * time.Hour
)

// Auto returns a TLS config whose server certificate, for the names sans
// (plus 127.0.0.1 and localhost), is issued by the control-plane CA kept in
// stateDir, created there on first use. It writes the CA certificate to
// <stateDir>/control-plane-ca.pem and returns that path. The server
// certificate is issued in memory at start and again when a third of its
// life is left; its key never touches the disk.
func Auto(stateDir string, sans []string, now func() time.Time) (*tls.Config, string, error) {
	return AutoStore(store.Dir{Path: stateDir}, stateDir, sans, now)
}

// AutoStore is Auto with the control-plane CA kept in st (under the keys
// control-plane-ca/ca.crt and ca.key, the key a store.Secret); the CA
// certificate to trust is still written to <stateDir>/control-plane-ca.pem.
func AutoStore(st store.Store, stateDir string, sans []string, now func() time.Time) (*tls.Config, string, error) {
	if now == nil {
		now = time.Now
	}
	ca, caCert, err := loadOrCreateCA(st, now())
	if err != nil {
		return nil, "", fmt.Errorf("control-plane CA: %w", err)
	}
	caPath := filepath.Join(stateDir, CAFile)
	if err := atomicfile.Write(caPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caCert.Raw}), 0o644); err != nil {
		return nil, "", fmt.Errorf("control-plane CA: %w", err)
	}
	names := append([]string{"127.0.0.1", "localhost"}, sans...)
	is := &issuer{ca: ca, caCert: caCert, names: names, now: now}
	if _, err := is.certificate(); err != nil {
		return nil, "", err
	}
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return is.certificate() },
		NextProtos:     []string{"h2", "http/1.1"},
	}, caPath, nil
}

// Files returns a TLS config serving the certificate and key in the given
// PEM files (the certificate file may hold the chain).
func Files(certFile, keyFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("server certificate: %w", err)
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}}, nil
}

// ClientConfig returns a TLS client config trusting only the CAs in the PEM
// file caFile.
func ClientConfig(caFile string) (*tls.Config, error) {
	b, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s holds no PEM certificate", caFile)
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}, nil
}

type issuer struct {
	ca     crypto.Signer
	caCert *x509.Certificate
	names  []string
	now    func() time.Time

	mu   sync.Mutex
	cert *tls.Certificate
}

func (is *issuer) certificate() (*tls.Certificate, error) {
	is.mu.Lock()
	defer is.mu.Unlock()
	now := is.now()
	if c := is.cert; c != nil && c.Leaf.NotAfter.Sub(now) > serverValidity/3 {
		return c, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "gitmesh control plane"},
		NotBefore:   now.Add(-5 * time.Minute),
		NotAfter:    now.Add(serverValidity),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if tmpl.NotAfter.After(is.caCert.NotAfter) {
		tmpl.NotAfter = is.caCert.NotAfter
	}
	for _, n := range is.names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	if tmpl.SerialNumber, err = serial(); err != nil {
		return nil, err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, is.caCert, &key.PublicKey, is.ca)
	if err != nil {
		return nil, fmt.Errorf("issue server certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	is.cert = &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
	return is.cert, nil
}

func loadOrCreateCA(st store.Store, now time.Time) (crypto.Signer, *x509.Certificate, error) {
	ctx := context.Background()
	certKey, keyKey := CADir+"/ca.crt", CADir+"/ca.key"
	certPEM, certErr := st.Get(ctx, certKey)
	keyPEM, keyErr := st.Get(ctx, keyKey)
	if certErr == nil && keyErr == nil {
		return parseCA(certKey, certPEM, keyKey, keyPEM)
	}
	for _, err := range []error{certErr, keyErr} {
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return nil, nil, err
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	sn, err := serial()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: "gitmesh control-plane CA"},
		NotBefore:             now.Add(-5 * time.Minute),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	// The key first: a certificate without its key is not taken as a CA.
	// On a store shared by replicas, the CA of the first to store one.
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	storedKey, storedCert, err := store.CreatePair(ctx, st, keyKey, keyPEM, certKey, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	if err != nil {
		return nil, nil, err
	}
	if string(storedKey) != string(keyPEM) {
		return parseCA(certKey, storedCert, keyKey, storedKey)
	}
	return key, cert, nil
}

// parseCA reads the CA pair stored under certKey and keyKey.
func parseCA(certKey string, certPEM []byte, keyKey string, keyPEM []byte) (crypto.Signer, *x509.Certificate, error) {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("%s and %s: %w", certKey, keyKey, err)
	}
	signer, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, nil, fmt.Errorf("%s: not a signing key", keyKey)
	}
	return signer, pair.Leaf, nil
}

func serial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}
