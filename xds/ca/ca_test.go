package ca

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"github.com/gitmesh/gitmesh/schema"
	"github.com/gitmesh/gitmesh/xds"
)

var builtin = schema.CA{Kind: schema.CABuiltin}

// fakeClock is a settable clock.
type fakeClock struct{ t time.Time }

func (c *fakeClock) Now() time.Time { return c.t }

func newClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
}

func TestBuiltinCreatedPersistedAndReused(t *testing.T) {
	state := t.TempDir()
	a := &Authority{StateDir: state}
	ca1, err := a.MeshCA("demo", builtin)
	if err != nil {
		t.Fatal(err)
	}
	if !ca1.Cert.IsCA || ca1.Kind != schema.CABuiltin {
		t.Fatalf("not a builtin CA: IsCA=%v kind=%q", ca1.Cert.IsCA, ca1.Kind)
	}
	if _, ok := ca1.Cert.PublicKey.(*ecdsa.PublicKey); !ok || ca1.Cert.PublicKey.(*ecdsa.PublicKey).Curve != elliptic.P256() {
		t.Fatalf("CA key is %T, want ECDSA P-256", ca1.Cert.PublicKey)
	}
	if got := ca1.Cert.URIs; len(got) != 1 || got[0].String() != "spiffe://demo" {
		t.Errorf("CA URI SANs = %v, want [spiffe://demo]", got)
	}

	for path, want := range map[string]os.FileMode{
		filepath.Join(state, "ca"):                   0o700,
		filepath.Join(state, "ca", "demo"):           0o700,
		filepath.Join(state, "ca", "demo", "ca.key"): 0o600,
	} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s: mode %o, want %o", filepath.Base(path), got, want)
		}
	}
	entries, err := os.ReadDir(filepath.Join(state, "ca", "demo"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if strings.Join(names, ",") != "ca.crt,ca.key" {
		t.Errorf("state dir holds %v, want ca.crt and ca.key only (no temporary files)", names)
	}

	// The same Authority returns the cached CA; a new one over the same
	// directory (a restart) reads the same CA back.
	again, err := a.MeshCA("demo", builtin)
	if err != nil || again != ca1 {
		t.Fatalf("second MeshCA on the same Authority: %v, same=%v", err, again == ca1)
	}
	ca2, err := (&Authority{StateDir: state}).MeshCA("demo", builtin)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ca1.Cert.Raw, ca2.Cert.Raw) {
		t.Fatal("restarted Authority created a new CA instead of reusing the stored one")
	}
	// A certificate issued after the restart verifies against the first CA.
	c, err := (&Authority{StateDir: state}).Issue("demo.web-1", "demo", builtin, []string{"spiffe://demo/web"})
	if err != nil {
		t.Fatal(err)
	}
	verify(t, c, ca1.Cert)

	other, err := a.MeshCA("other", builtin)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(other.Cert.Raw, ca1.Cert.Raw) {
		t.Fatal("two meshes share a CA")
	}
}

func TestBuiltinUnfinishedCreationIsReplaced(t *testing.T) {
	state := t.TempDir()
	dir := filepath.Join(state, "ca", "demo")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	// A key without a certificate: creation stopped half-way.
	if err := os.WriteFile(filepath.Join(dir, "ca.key"), []byte("partial"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := (&Authority{StateDir: state}).MeshCA("demo", builtin); err != nil {
		t.Fatalf("unfinished CA not replaced: %v", err)
	}
	// A certificate without its key is an error, never silently replaced.
	if err := os.Remove(filepath.Join(dir, "ca.key")); err != nil {
		t.Fatal(err)
	}
	_, err := (&Authority{StateDir: state}).MeshCA("demo", builtin)
	if err == nil || !strings.Contains(err.Error(), "read key") {
		t.Fatalf("missing key: err = %v, want a read key error", err)
	}
}

func TestBuiltinNeedsStateDirAndValidMesh(t *testing.T) {
	if _, err := (&Authority{}).MeshCA("demo", builtin); err == nil {
		t.Error("builtin CA without a state directory: no error")
	}
	if _, err := (&Authority{StateDir: t.TempDir()}).MeshCA("../x", builtin); err == nil {
		t.Error("mesh name with a path: no error")
	}
}

func TestProvidedCA(t *testing.T) {
	dir := t.TempDir()
	caCert, caKey := writeCA(t, dir, "ca", true)
	_, otherKey := writeCA(t, dir, "other", true)
	leafCert, leafKey := writeCA(t, dir, "leaf", false)
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not pem"), 0o600); err != nil {
		t.Fatal(err)
	}

	a := &Authority{}
	spec := schema.CA{Kind: schema.CAProvided, Provided: &schema.ProvidedCA{CertFile: caCert, KeyFile: caKey}}
	got, err := a.MeshCA("demo", spec)
	if err != nil {
		t.Fatal(err)
	}
	if got.Kind != schema.CAProvided {
		t.Errorf("kind = %q", got.Kind)
	}
	c, err := a.Issue("demo.web-1", "demo", spec, []string{"spiffe://demo/web"})
	if err != nil {
		t.Fatal(err)
	}
	verify(t, c, got.Cert)

	for _, tc := range []struct {
		name, cert, key, want string
	}{
		{"missing cert", filepath.Join(dir, "nope.pem"), caKey, "read certificate"},
		{"missing key", caCert, filepath.Join(dir, "nope.key"), "read key"},
		{"garbage cert", garbage, caKey, "no PEM CERTIFICATE block"},
		{"garbage key", caCert, garbage, "no PEM private key block"},
		{"mismatched key", caCert, otherKey, "does not match"},
		{"not a CA", leafCert, leafKey, "not a CA"},
		{"no files", "", "", "needs a certificate file and a key file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := schema.CA{Kind: schema.CAProvided, Provided: &schema.ProvidedCA{CertFile: tc.cert, KeyFile: tc.key}}
			_, err := (&Authority{}).MeshCA("demo", spec)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
			if !strings.Contains(err.Error(), "mesh demo") {
				t.Errorf("err = %v, want it to name the mesh", err)
			}
		})
	}
}

func TestIssuedCertificate(t *testing.T) {
	clock := newClock()
	a := &Authority{StateDir: t.TempDir(), Now: clock.Now}
	ids := []string{"spiffe://demo/api", "spiffe://demo/web"}
	c, err := a.Issue("demo.web-1", "demo", builtin, ids)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := a.MeshCA("demo", builtin)
	if err != nil {
		t.Fatal(err)
	}
	verify(t, c, ca.Cert)

	var uris []string
	for _, u := range c.Cert.URIs {
		uris = append(uris, u.String())
	}
	if strings.Join(uris, " ") != strings.Join(ids, " ") {
		t.Errorf("URI SANs = %v, want %v", uris, ids)
	}
	if pub, ok := c.Cert.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
		t.Errorf("leaf key is %T, want ECDSA P-256", c.Cert.PublicKey)
	}
	if c.Cert.IsCA {
		t.Error("leaf is a CA")
	}
	if c.Cert.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		t.Error("leaf lacks digitalSignature key usage")
	}
	if got := c.Cert.NotAfter.Sub(clock.t); got != DefaultValidity {
		t.Errorf("validity from now = %v, want %v", got, DefaultValidity)
	}
	if !c.Cert.NotBefore.Before(clock.t) {
		t.Error("NotBefore not backdated")
	}
	// The key matches the certificate.
	block, _ := pem.Decode(c.KeyPEM)
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if !key.(*ecdsa.PrivateKey).PublicKey.Equal(c.Cert.PublicKey) {
		t.Error("KeyPEM does not match the certificate")
	}

	short := &Authority{StateDir: t.TempDir(), Now: clock.Now, Validity: time.Hour}
	c2, err := short.Issue("demo.web-1", "demo", builtin, ids)
	if err != nil {
		t.Fatal(err)
	}
	if got := c2.Cert.NotAfter.Sub(clock.t); got != time.Hour {
		t.Errorf("configured validity: got %v, want 1h", got)
	}

	for _, bad := range [][]string{nil, {"http://demo/web"}, {"spiffe:///web"}} {
		if _, err := a.Issue("demo.web-1", "demo", builtin, bad); err == nil {
			t.Errorf("identities %q: no error", bad)
		}
	}
}

func TestRenewalBoundary(t *testing.T) {
	clock := newClock()
	a := &Authority{StateDir: t.TempDir(), Now: clock.Now}
	ids := []string{"spiffe://demo/web"}
	first, err := a.Issue("demo.web-1", "demo", builtin, ids)
	if err != nil {
		t.Fatal(err)
	}
	life := first.Cert.NotAfter.Sub(first.Cert.NotBefore)
	boundary := first.Cert.NotAfter.Add(-life / 3)

	clock.t = boundary // exactly a third left: still good
	same, err := a.Issue("demo.web-1", "demo", builtin, ids)
	if err != nil {
		t.Fatal(err)
	}
	if same.Version != first.Version {
		t.Fatal("renewed at the boundary, want the same certificate")
	}
	clock.t = boundary.Add(time.Second)
	renewed, err := a.Issue("demo.web-1", "demo", builtin, ids)
	if err != nil {
		t.Fatal(err)
	}
	if renewed.Version == first.Version || renewed.Cert.SerialNumber.Cmp(first.Cert.SerialNumber) == 0 {
		t.Fatal("not renewed after the boundary")
	}
	if !renewed.Cert.NotAfter.Equal(clock.t.Add(DefaultValidity)) {
		t.Errorf("renewed NotAfter = %v", renewed.Cert.NotAfter)
	}

	// New identities mean a new certificate at once.
	more, err := a.Issue("demo.web-1", "demo", builtin, []string{"spiffe://demo/api", "spiffe://demo/web"})
	if err != nil {
		t.Fatal(err)
	}
	if more.Version == renewed.Version {
		t.Fatal("identities changed but the certificate did not")
	}
}

func TestSecrets(t *testing.T) {
	clock := newClock()
	a := &Authority{StateDir: t.TempDir(), Now: clock.Now}
	p := &xds.Proxy{NodeID: "demo.web-1", Mesh: "demo", Dataplane: "web-1",
		Identities: []string{"spiffe://demo/web"}, Hash: "abc"}
	secrets, version, err := a.Secrets(p, builtin)
	if err != nil {
		t.Fatal(err)
	}
	if len(secrets) != 2 {
		t.Fatalf("got %d secrets, want 2", len(secrets))
	}
	id, ca := secrets[0].(*tlsv3.Secret), secrets[1].(*tlsv3.Secret)
	if id.GetName() != xds.SecretIdentity || ca.GetName() != xds.SecretMeshCA {
		t.Fatalf("secret names %q, %q", id.GetName(), ca.GetName())
	}
	for _, s := range []*tlsv3.Secret{id, ca} {
		if err := s.ValidateAll(); err != nil {
			t.Errorf("%s: %v", s.GetName(), err)
		}
	}
	c, err := a.Issue(p.NodeID, p.Mesh, builtin, p.Identities)
	if err != nil {
		t.Fatal(err)
	}
	if version != c.Version {
		t.Errorf("secret version %q, certificate version %q", version, c.Version)
	}
	if !bytes.Equal(id.GetTlsCertificate().GetCertificateChain().GetInlineBytes(), c.CertPEM) ||
		!bytes.Equal(id.GetTlsCertificate().GetPrivateKey().GetInlineBytes(), c.KeyPEM) ||
		!bytes.Equal(ca.GetValidationContext().GetTrustedCa().GetInlineBytes(), c.CAPEM) {
		t.Error("secrets do not carry the issued material")
	}

	// Same material, same version; renewal changes the version.
	if _, v, _ := a.Secrets(p, builtin); v != version {
		t.Errorf("version changed without renewal: %q -> %q", version, v)
	}
	clock.t = clock.t.Add(20 * time.Hour)
	if _, v, _ := a.Secrets(p, builtin); v == version {
		t.Error("version unchanged after renewal")
	}

	plain := &xds.Proxy{NodeID: "default.web-1", Mesh: "default"}
	if s, v, err := a.Secrets(plain, schema.CA{}); err != nil || s != nil || v != "" {
		t.Errorf("proxy without mTLS: %v, %q, %v", s, v, err)
	}
}

// verify checks c chains to root for both client and server authentication.
func verify(t *testing.T, c *Certificate, root *x509.Certificate) {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AddCert(root)
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		_, err := c.Cert.Verify(x509.VerifyOptions{
			Roots:       roots,
			KeyUsages:   []x509.ExtKeyUsage{usage},
			CurrentTime: c.Cert.NotBefore.Add(time.Minute),
		})
		if err != nil {
			t.Errorf("verify for usage %v: %v", usage, err)
		}
	}
	if !bytes.Equal(c.CAPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: root.Raw})) {
		t.Error("CAPEM is not the CA certificate")
	}
}

// writeCA writes a self-signed certificate (a CA when isCA) and its SEC 1
// key to dir and returns their paths.
func writeCA(t *testing.T, dir, name string, isCA bool) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(7),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(365 * 24 * time.Hour),
		IsCA:                  isCA,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}
