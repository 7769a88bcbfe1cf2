package ca

import (
	"crypto/x509"
	"fmt"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"
)

// TestIssuedTo: the info of the certificate held for a node is that of the
// last one issued, renewed included, and there is none for a node never
// issued one or forgotten.
func TestIssuedTo(t *testing.T) {
	clock := newClock()
	a := &Authority{StateDir: t.TempDir(), Now: clock.Now, Validity: 3 * time.Hour}
	if _, ok := a.IssuedTo("demo.web-1"); ok {
		t.Fatal("info of a certificate never issued")
	}
	ids := []string{"spiffe://demo/web", "spiffe://demo/web-admin"}
	c, err := a.Issue("demo.web-1", "demo", builtin, ids)
	if err != nil {
		t.Fatal(err)
	}
	info, ok := a.IssuedTo("demo.web-1")
	if !ok {
		t.Fatal("no info of the certificate issued")
	}
	want := CertificateInfo{NodeID: "demo.web-1", SANs: ids, Serial: fmt.Sprintf("%X", c.Cert.SerialNumber),
		NotBefore: clock.t.Add(-backdate), NotAfter: clock.t.Add(3 * time.Hour), Version: c.Version}
	if !sameInfo(info, want) {
		t.Errorf("info = %+v, want %+v", info, want)
	}
	if strings.ContainsAny(info.Serial, "abcdef:") || info.Serial == "" {
		t.Errorf("serial %q, want upper-case hex", info.Serial)
	}
	if _, ok := a.IssuedTo("demo.web-2"); ok {
		t.Error("info for another node")
	}

	// Renewed (less than a third of its life left): the new one's.
	clock.t = clock.t.Add(2*time.Hour + time.Minute)
	c2, err := a.Issue("demo.web-1", "demo", builtin, ids)
	if err != nil {
		t.Fatal(err)
	}
	if c2 == c {
		t.Fatal("not renewed")
	}
	if info, _ := a.IssuedTo("demo.web-1"); info.Version != c2.Version || !info.NotAfter.Equal(c2.Cert.NotAfter) || info.Serial == want.Serial {
		t.Errorf("after renewal: %+v, want the renewed certificate's (version %s)", info, c2.Version)
	}

	// Taken back from the state directory by a restarted Authority.
	if err := a.Flush(); err != nil {
		t.Fatal(err)
	}
	b := &Authority{StateDir: a.StateDir, Now: clock.Now, Validity: 3 * time.Hour}
	if _, ok := b.IssuedTo("demo.web-1"); ok {
		t.Error("info before the node's secrets were asked for")
	}
	if _, err := b.Issue("demo.web-1", "demo", builtin, ids); err != nil {
		t.Fatal(err)
	}
	if info, _ := b.IssuedTo("demo.web-1"); info.Version != c2.Version {
		t.Errorf("after a restart: version %s, want the kept certificate's %s", info.Version, c2.Version)
	}

	a.Forget("demo.web-1")
	if _, ok := a.IssuedTo("demo.web-1"); ok {
		t.Error("info of a forgotten node's certificate")
	}
}

// TestInfoOfOtherSANs: DNS names, e-mail addresses and IP addresses follow
// the URIs.
func TestInfoOfOtherSANs(t *testing.T) {
	u, _ := url.Parse("spiffe://demo/web")
	c := &Certificate{NodeID: "demo.web-1", Cert: &x509.Certificate{URIs: []*url.URL{u}, DNSNames: []string{"web.demo.svc"},
		EmailAddresses: []string{"ops@example.com"}, IPAddresses: []net.IP{net.ParseIP("10.0.0.1")}}}
	got := infoOf(c)
	if strings.Join(got.SANs, " ") != "spiffe://demo/web web.demo.svc ops@example.com 10.0.0.1" || got.Serial != "" {
		t.Errorf("info = %+v", got)
	}
}

func sameInfo(a, b CertificateInfo) bool {
	return a.NodeID == b.NodeID && strings.Join(a.SANs, " ") == strings.Join(b.SANs, " ") && a.Serial == b.Serial &&
		a.NotBefore.Equal(b.NotBefore) && a.NotAfter.Equal(b.NotAfter) && a.Version == b.Version
}
