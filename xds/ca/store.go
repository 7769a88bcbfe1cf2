package ca

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"

	"net/url"
	"os"
	"path/filepath"

	"github.com/gitmesh/gitmesh/schema"
	"github.com/gitmesh/gitmesh/store"
)

// File names of a builtin CA inside <state>/ca/<mesh>.
const (
	caCertFile = "ca.crt"
	caKeyFile  = "ca.key"
)

func builtinDir(stateDir, mesh string) string {
	return filepath.Join(stateDir, "ca", mesh)
}

// caStore is where builtin CAs are kept: Store, else the state directory.
func (a *Authority) caStore() store.Store {
	if a.Store != nil {
		return a.Store
	}
	return store.Dir{Path: a.StateDir}
}

// loadOrCreateBuiltin reads the builtin CA of mesh from the store (the
// state directory by default), creating it when absent. The key is written
// before the certificate, so a key without a certificate is a creation that
// never finished (nothing can have been issued from it) and is replaced; a
// certificate without its key is an error.
func (a *Authority) loadOrCreateBuiltin(mesh string) (*CA, error) {
	st, ctx := a.caStore(), context.Background()
	certKey, keyKey := "ca/"+mesh+"/"+caCertFile, "ca/"+mesh+"/"+caKeyFile
	certName, keyName := certKey, keyKey
	if d, ok := st.(store.Dir); ok {
		dir := builtinDir(d.Path, mesh)
		certName, keyName = filepath.Join(dir, caCertFile), filepath.Join(dir, caKeyFile)
	}
	certPEM, certErr := st.Get(ctx, certKey)
	switch {
	case certErr == nil:
		keyPEM, err := st.Get(ctx, keyKey)
		if err != nil {
			return nil, fmt.Errorf("mesh %s: builtin CA: read key: %w", mesh, err)
		}
		ca, err := parsePair(mesh, schema.CABuiltin, certPEM, keyPEM, certName, keyName)
		if err != nil {
			return nil, fmt.Errorf("mesh %s: builtin CA: %w", mesh, err)
		}
		return ca, nil
	case !errors.Is(certErr, store.ErrNotFound):
		return nil, fmt.Errorf("mesh %s: builtin CA: %w", mesh, certErr)
	}
	ca, certPEM, keyPEM, err := a.generate(mesh)
	if err != nil {
		return nil, fmt.Errorf("mesh %s: create builtin CA: %w", mesh, err)
	}
	// On a store shared by replicas, the CA of the first to store one.
	storedKey, storedCert, err := store.CreatePair(ctx, st, keyKey, keyPEM, certKey, certPEM)
	if err != nil {
		return nil, fmt.Errorf("mesh %s: create builtin CA: %w", mesh, err)
	}
	if string(storedKey) != string(keyPEM) {
		if ca, err = parsePair(mesh, schema.CABuiltin, storedCert, storedKey, certName, keyName); err != nil {
			return nil, fmt.Errorf("mesh %s: builtin CA: %w", mesh, err)
		}
	}
	return ca, nil
}

// generate creates a self-signed ECDSA P-256 CA for mesh.
func (a *Authority) generate(mesh string) (ca *CA, certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, err
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, nil, nil, err
	}
	now := a.now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"gitmesh"}, CommonName: "gitmesh CA of mesh " + mesh},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(a.caValidity()),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		URIs:                  []*url.URL{{Scheme: "spiffe", Host: mesh}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, nil, err
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	ca, err = newCA(mesh, schema.CABuiltin, cert, certPEM, key)
	return ca, certPEM, keyPEM, err
}

// loadProvided reads a provided CA from the control-plane host.
func loadProvided(mesh, certFile, keyFile string) (*CA, error) {
	ca, err := loadPair(mesh, schema.CAProvided, certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("mesh %s: provided CA: %w", mesh, err)
	}
	return ca, nil
}

// loadPair reads a PEM CA certificate and its PEM private key.
func loadPair(mesh string, kind schema.CAKind, certFile, keyFile string) (*CA, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("read certificate: %w", err)
	}
	if _, _, err := parseCertPEM(certPEM); err != nil {
		return nil, fmt.Errorf("certificate %s: %w", certFile, err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("read key: %w", err)
	}
	return parsePair(mesh, kind, certPEM, keyPEM, certFile, keyFile)
}

// parsePair parses a PEM CA certificate and its PEM private key, naming
// them certName and keyName in errors.
func parsePair(mesh string, kind schema.CAKind, certPEM, keyPEM []byte, certName, keyName string) (*CA, error) {
	cert, certBlock, err := parseCertPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("certificate %s: %w", certName, err)
	}
	signer, err := parseKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("key %s: %w", keyName, err)
	}
	ca, err := newCA(mesh, kind, cert, pem.EncodeToMemory(certBlock), signer)
	if err != nil {
		return nil, fmt.Errorf("%s and %s: %w", certName, keyName, err)
	}
	return ca, nil
}

// parseCertPEM returns the first CERTIFICATE block of data.
func parseCertPEM(data []byte) (*x509.Certificate, *pem.Block, error) {
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return nil, nil, errors.New("no PEM CERTIFICATE block")
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, nil, fmt.Errorf("parse certificate: %w", err)
		}
		return cert, b, nil
	}
}

// parseKeyPEM accepts PKCS#8, SEC 1 (EC) and PKCS#1 (RSA) private keys.
func parseKeyPEM(data []byte) (crypto.Signer, error) {
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return nil, errors.New("no PEM private key block")
		}
		var key any
		var err error
		switch b.Type {
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(b.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(b.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(b.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("parse %s: %w", b.Type, err)
		}
		signer, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("unsupported private key type %T", key)
		}
		return signer, nil
	}
}
