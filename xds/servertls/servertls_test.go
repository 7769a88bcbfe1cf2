package servertls

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// TestAuto: the CA survives a restart, the server certificate names
// 127.0.0.1, localhost and the extra SANs, verifies against the CA file
// clients get, and is renewed when a third of its life is left.
func TestAuto(t *testing.T) {
	dir := t.TempDir()
	now := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	cfg, caPath, err := Auto(dir, []string{"cp.example.internal", "10.0.0.5"}, clock)
	if err != nil {
		t.Fatal(err)
	}
	if caPath != filepath.Join(dir, CAFile) {
		t.Errorf("CA path %s", caPath)
	}
	if st, err := os.Stat(filepath.Join(dir, CADir, "ca.key")); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("CA key: %v, mode %v", err, st.Mode())
	}
	leaf := serverLeaf(t, cfg)
	if !slices.Contains(leaf.DNSNames, "localhost") || !slices.Contains(leaf.DNSNames, "cp.example.internal") ||
		len(leaf.IPAddresses) != 2 || !leaf.IPAddresses[0].Equal([]byte{127, 0, 0, 1}) {
		t.Errorf("SANs %v %v", leaf.DNSNames, leaf.IPAddresses)
	}
	client, err := ClientConfig(caPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"cp.example.internal", "127.0.0.1", "10.0.0.5"} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: client.RootCAs, DNSName: name, CurrentTime: now}); err != nil {
			t.Errorf("verify for %s: %v", name, err)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: client.RootCAs, DNSName: "other.example", CurrentTime: now}); err == nil {
		t.Error("the certificate verified for a name it does not carry")
	}

	// Kept until a third of its life is left, then renewed.
	now = now.Add(serverValidity / 2)
	if again := serverLeaf(t, cfg); again.SerialNumber.Cmp(leaf.SerialNumber) != 0 {
		t.Error("renewed with half of its life left")
	}
	now = now.Add(serverValidity / 3)
	renewed := serverLeaf(t, cfg)
	if renewed.SerialNumber.Cmp(leaf.SerialNumber) == 0 || !renewed.NotAfter.After(leaf.NotAfter) {
		t.Error("not renewed with less than a third of its life left")
	}

	// A restart keeps the CA: clients keep trusting the same file.
	ca1, _ := os.ReadFile(caPath)
	if _, _, err := Auto(dir, nil, clock); err != nil {
		t.Fatal(err)
	}
	if ca2, _ := os.ReadFile(caPath); string(ca1) != string(ca2) {
		t.Error("a restart made a new control-plane CA")
	}
}

func serverLeaf(t *testing.T, cfg *tls.Config) *x509.Certificate {
	t.Helper()
	c, err := cfg.GetCertificate(&tls.ClientHelloInfo{})
	if err != nil {
		t.Fatal(err)
	}
	return c.Leaf
}

func TestClientConfigRefusesAFileWithoutCertificates(t *testing.T) {
	f := filepath.Join(t.TempDir(), "empty.pem")
	if err := os.WriteFile(f, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ClientConfig(f); err == nil {
		t.Error("ClientConfig accepted a file without certificates")
	}
	if _, err := Files(f, f); err == nil {
		t.Error("Files accepted a file without a certificate")
	}
}
