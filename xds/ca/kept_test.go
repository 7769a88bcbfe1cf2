package ca

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func ids(node string) []string {
	return []string{"spiffe://demo/" + strings.TrimPrefix(node, "demo.")}
}

func issue(t testing.TB, a *Authority, node string) *Certificate {
	t.Helper()
	c, err := a.Issue(node, "demo", builtin, ids(node))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func issuedPath(state string) string { return filepath.Join(state, "ca", "demo", issuedFile) }

func TestRestartReusesIssuedCertificates(t *testing.T) {
	state, clock := t.TempDir(), newClock()
	a := &Authority{StateDir: state, Now: clock.Now}
	nodes := []string{"demo.web-1", "demo.web-2", "demo.db-1"}
	first := map[string]*Certificate{}
	for _, n := range nodes {
		first[n] = issue(t, a, n)
	}
	if _, err := os.Stat(issuedPath(state)); !os.IsNotExist(err) {
		t.Fatalf("issued certificates written before Flush: %v", err)
	}
	if err := a.Flush(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(issuedPath(state))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("%s: mode %o, want 600", issuedFile, fi.Mode().Perm())
	}

	// A restart: a new Authority over the same state directory.
	clock.t = clock.t.Add(time.Hour)
	b := &Authority{StateDir: state, Now: clock.Now}
	for _, n := range nodes {
		c := issue(t, b, n)
		if c.Version != first[n].Version || !bytes.Equal(c.KeyPEM, first[n].KeyPEM) || !bytes.Equal(c.CertPEM, first[n].CertPEM) {
			t.Errorf("%s: the restarted authority issued a new certificate (version %s, was %s)", n, c.Version, first[n].Version)
		}
		verify(t, c, mustCA(t, b).Cert)
		if !slicesEqual(c.Identities, ids(n)) {
			t.Errorf("%s: identities %v, want %v", n, c.Identities, ids(n))
		}
	}
	// Nothing new issued: Flush writes nothing.
	before, _ := os.ReadFile(issuedPath(state))
	if err := b.Flush(); err != nil {
		t.Fatal(err)
	}
	if after, _ := os.ReadFile(issuedPath(state)); !bytes.Equal(before, after) {
		t.Error("Flush rewrote the file with nothing issued")
	}

	// Past the renewal time a restart issues anew, and keeps that one.
	clock.t = first[nodes[0]].Cert.NotAfter.Add(-time.Hour)
	c := &Authority{StateDir: state, Now: clock.Now}
	renewed := issue(t, c, nodes[0])
	if renewed.Version == first[nodes[0]].Version {
		t.Fatal("a certificate past its renewal time was reused")
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	d := &Authority{StateDir: state, Now: clock.Now}
	if got := issue(t, d, nodes[0]); got.Version != renewed.Version {
		t.Errorf("the renewed certificate was not kept: version %s, want %s", got.Version, renewed.Version)
	}
}

func TestKeptCertificateNeedsItsIdentitiesAndCA(t *testing.T) {
	state, clock := t.TempDir(), newClock()
	a := &Authority{StateDir: state, Now: clock.Now}
	old := issue(t, a, "demo.web-1")
	if err := a.Flush(); err != nil {
		t.Fatal(err)
	}

	// Other identities: a new certificate.
	b := &Authority{StateDir: state, Now: clock.Now}
	other, err := b.Issue("demo.web-1", "demo", builtin, []string{"spiffe://demo/api"})
	if err != nil {
		t.Fatal(err)
	}
	if other.Version == old.Version {
		t.Error("a kept certificate was served for other identities")
	}

	// Another CA (the builtin CA removed and created again): a new one.
	for _, f := range []string{caCertFile, caKeyFile} {
		if err := os.Remove(filepath.Join(state, "ca", "demo", f)); err != nil {
			t.Fatal(err)
		}
	}
	c := &Authority{StateDir: state, Now: clock.Now}
	fresh := issue(t, c, "demo.web-1")
	if fresh.Version == old.Version {
		t.Fatal("a certificate of the old CA was served")
	}
	verify(t, fresh, mustCA(t, c).Cert)
}

func TestForgottenCertificateIsNotKept(t *testing.T) {
	state, clock := t.TempDir(), newClock()
	a := &Authority{StateDir: state, Now: clock.Now}
	gone, stays := issue(t, a, "demo.gone"), issue(t, a, "demo.stays")
	if err := a.Flush(); err != nil {
		t.Fatal(err)
	}
	a.Forget("demo.gone")
	if err := a.Flush(); err != nil {
		t.Fatal(err)
	}
	b := &Authority{StateDir: state, Now: clock.Now}
	if got := issue(t, b, "demo.gone"); got.Version == gone.Version {
		t.Error("a forgotten node got its old certificate back after a restart")
	}
	if got := issue(t, b, "demo.stays"); got.Version != stays.Version {
		t.Error("forgetting one node lost another's certificate")
	}
}

func TestTornIssuedFileKeepsWhatIsWhole(t *testing.T) {
	state, clock := t.TempDir(), newClock()
	a := &Authority{StateDir: state, Now: clock.Now}
	whole := issue(t, a, "demo.web-1")
	if err := a.Flush(); err != nil {
		t.Fatal(err)
	}
	// A crash in the middle of an append.
	f, err := os.OpenFile(issuedPath(state), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("-----BEGIN CERTIFICATE-----\nNode: demo.web-2\nCA: x\n\nMIIB"); err != nil {
		t.Fatal(err)
	}
	f.Close()

	b := &Authority{StateDir: state, Now: clock.Now}
	if got := issue(t, b, "demo.web-1"); got.Version != whole.Version {
		t.Fatal("a torn last record lost the whole one before it")
	}
	web2 := issue(t, b, "demo.web-2")
	if err := b.Flush(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(issuedPath(state))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(data, []byte("MIIB\n")) || bytes.Count(data, []byte("BEGIN CERTIFICATE")) != 2 {
		t.Fatalf("the torn record was not rewritten away:\n%s", data)
	}
	c := &Authority{StateDir: state, Now: clock.Now}
	if got := issue(t, c, "demo.web-2"); got.Version != web2.Version {
		t.Error("the certificate issued after the torn record was not kept")
	}
	if got := issue(t, c, "demo.web-1"); got.Version != whole.Version {
		t.Error("the rewrite lost a certificate")
	}
}

func TestIssuedFileStaysSmall(t *testing.T) {
	state, clock := t.TempDir(), newClock()
	a := &Authority{StateDir: state, Now: clock.Now, Validity: 3 * time.Hour}
	var last *Certificate
	for range 200 {
		last = issue(t, a, "demo.web-1")
		if err := a.Flush(); err != nil {
			t.Fatal(err)
		}
		clock.t = clock.t.Add(2*time.Hour + time.Minute) // past renewal each time
	}
	data, err := os.ReadFile(issuedPath(state))
	if err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(data, []byte("BEGIN CERTIFICATE")); n > 2*1+compactSlack+1 {
		t.Errorf("%d certificate records kept for one node after 200 renewals: the file is never compacted", n)
	}
	clock.t = last.Cert.NotBefore.Add(time.Hour)
	b := &Authority{StateDir: state, Now: clock.Now, Validity: 3 * time.Hour}
	if got := issue(t, b, "demo.web-1"); got.Version != last.Version {
		t.Error("compaction lost the live certificate")
	}
}

func TestIssueSignsOncePerNode(t *testing.T) {
	a := &Authority{StateDir: t.TempDir(), Now: newClock().Now}
	var wg sync.WaitGroup
	got := make([]*Certificate, 16)
	for i := range got {
		wg.Go(func() {
			node := fmt.Sprintf("demo.web-%d", i%4)
			c, err := a.Issue(node, "demo", builtin, ids(node))
			if err != nil {
				t.Error(err)
				return
			}
			got[i] = c
		})
	}
	wg.Wait()
	for i, c := range got {
		if c == nil {
			continue
		}
		if want := got[i%4]; c.Version != want.Version {
			t.Errorf("node %d was issued two certificates at once: %s and %s", i%4, c.Version, want.Version)
		}
	}
}

func TestIssuedFileIsNotFollowedThroughASymlink(t *testing.T) {
	state, clock := t.TempDir(), newClock()
	a := &Authority{StateDir: state, Now: clock.Now}
	issue(t, a, "demo.web-1") // creates the CA directory
	outside := filepath.Join(t.TempDir(), "elsewhere")
	if err := os.WriteFile(outside, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, issuedPath(state)); err != nil {
		t.Fatal(err)
	}
	if err := a.Flush(); err == nil {
		t.Error("Flush appended through a symlink")
	}
	if data, _ := os.ReadFile(outside); len(data) != 0 {
		t.Fatal("a private key was written through a symlink")
	}
	b := &Authority{StateDir: state, Now: clock.Now}
	issue(t, b, "demo.web-1")
	if err := b.Flush(); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(issuedPath(state)); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("the symlink was not replaced by the file: %v %v", fi, err)
	}
	if data, _ := os.ReadFile(outside); len(data) != 0 {
		t.Fatal("a private key was written through a symlink")
	}
}

func mustCA(t testing.TB, a *Authority) *CA {
	t.Helper()
	ca, err := a.MeshCA("demo", builtin)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func slicesEqual(a, b []string) bool { return strings.Join(a, "\x00") == strings.Join(b, "\x00") }

// BenchmarkIssue signs certificates for new nodes on every core.
func BenchmarkIssue(b *testing.B) {
	a := &Authority{StateDir: b.TempDir()}
	mustCA(b, a)
	var n sync.Mutex
	i := 0
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			n.Lock()
			i++
			node := fmt.Sprintf("demo.web-%d", i)
			n.Unlock()
			issue(b, a, node)
		}
	})
}

// BenchmarkReload is a restart: 8,000 certificates kept in the state
// directory served again, on every core.
func BenchmarkReload(b *testing.B) {
	const nodes = 8000
	state := b.TempDir()
	a := &Authority{StateDir: state}
	for i := range nodes {
		issue(b, a, fmt.Sprintf("demo.web-%d", i))
	}
	if err := a.Flush(); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		r := &Authority{StateDir: state}
		var wg sync.WaitGroup
		for w := range 2 {
			wg.Go(func() {
				for i := w; i < nodes; i += 2 {
					issue(b, r, fmt.Sprintf("demo.web-%d", i))
				}
			})
		}
		wg.Wait()
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*nodes), "µs/node")
}
