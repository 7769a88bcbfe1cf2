package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/gitmesh/gitmesh/internal/logtest"
	"github.com/gitmesh/gitmesh/reconcile"
	"github.com/gitmesh/gitmesh/reconcile/gittest"
	"github.com/gitmesh/gitmesh/schema"
	"github.com/gitmesh/gitmesh/xds"
	"github.com/gitmesh/gitmesh/xds/ads"
	"github.com/gitmesh/gitmesh/xds/ca"
)

// certsWait bounds every wait of these tests.
const certsWait = 15 * time.Second

// certsServed is a running gitmesh serve on a local repository.
type certsServed struct {
	*served
	repo, stateDir string
}

// serveCerts commits files to a new repository and serves it (with
// certificates valid for validity, the test default when zero) until the
// first commit is published.
func serveCerts(t *testing.T, files map[string]string, validity time.Duration) certsServed {
	t.Helper()
	work := gittest.Init(t)
	gittest.Commit(t, work, "Policies", files)
	state := t.TempDir()
	s := startServe(t, serveOptions{repo: work, path: "policies", stateDir: state, certValidity: validity})
	s.waitStatus(t, "a published commit", func(st reconcile.Status) bool { return st.Ready })
	return certsServed{s, work, state}
}

func (s certsServed) xdsAddr() string { return s.app.xdsLis.Addr().String() }

// certDir is what a certificate directory holds, checked.
type certDir struct {
	cert, key, ca []byte
	leaf          *x509.Certificate
}

// readCertDir reads dir's files and checks them as gRPC would use them: the
// key matches the certificate, which verifies against ca.pem; the modes are
// 0600 for the key and 0644 for the others.
func readCertDir(dir string) (certDir, error) {
	var d certDir
	for _, f := range []struct {
		name string
		to   *[]byte
		perm os.FileMode
	}{{xds.CertFileName, &d.cert, 0o644}, {xds.KeyFileName, &d.key, 0o600}, {xds.CAFileName, &d.ca, 0o644}} {
		p := filepath.Join(dir, f.name)
		fi, err := os.Stat(p)
		if err != nil {
			return d, err
		}
		if got := fi.Mode().Perm(); got != f.perm {
			return d, fmt.Errorf("%s: mode %o, want %o", f.name, got, f.perm)
		}
		if *f.to, err = os.ReadFile(p); err != nil {
			return d, err
		}
	}
	pair, err := tls.X509KeyPair(d.cert, d.key)
	if err != nil {
		return d, fmt.Errorf("key and certificate: %w", err)
	}
	if d.leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
		return d, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(d.ca) {
		return d, errors.New("ca.pem holds no certificate")
	}
	if _, err := d.leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return d, fmt.Errorf("cert.pem does not verify against ca.pem: %w", err)
	}
	return d, nil
}

// waitCertDir polls dir until its files pass readCertDir and cond.
func waitCertDir(t *testing.T, dir, what string, cond func(certDir) error) certDir {
	t.Helper()
	deadline := time.Now().Add(certsWait)
	for {
		d, err := readCertDir(dir)
		if err == nil {
			err = cond(d)
		}
		if err == nil {
			return d
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s in %s: %v", what, dir, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func anyCert(certDir) error { return nil }

// uriSANs lists the URI SANs of c.
func uriSANs(c *x509.Certificate) []string {
	out := make([]string, len(c.URIs))
	for i, u := range c.URIs {
		out[i] = u.String()
	}
	return out
}

// nextSecond sleeps until the next whole second.
func nextSecond() {
	now := time.Now()
	time.Sleep(now.Truncate(time.Second).Add(time.Second).Sub(now))
}

// agent is a long-running gitmesh certs.
type agent struct {
	logs   *logtest.Buffer
	cancel context.CancelFunc
	done   chan int
}

// startAgent runs gitmesh certs with args until stop or the end of the test.
func startAgent(t *testing.T, args ...string) *agent {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	a := &agent{logs: &logtest.Buffer{}, cancel: cancel, done: make(chan int, 1)}
	go func() { a.done <- run(ctx, append([]string{"certs"}, args...), &logtest.Buffer{}, a.logs) }()
	t.Cleanup(func() {
		a.stop(t)
		if t.Failed() {
			t.Logf("agent log:\n%s", a.logs.String())
		}
	})
	return a
}

// stop cancels the agent and returns its exit code.
func (a *agent) stop(t *testing.T) int {
	t.Helper()
	a.cancel()
	select {
	case code := <-a.done:
		a.done <- code // for a second stop
		return code
	case <-time.After(certsWait):
		t.Fatal("the agent did not stop")
		return -1
	}
}

func secretStatus(t *testing.T, s certsServed, node string) ads.TypeStatus {
	t.Helper()
	st, _ := s.app.server.StatusOf(node)
	for _, ts := range st.Types {
		if ts.TypeURL == resource.SecretType {
			return ts
		}
	}
	return ads.TypeStatus{}
}

// TestCertsOnce writes a dataplane's files from a real control plane and
// exits; run again, it finds them up to date. The flags also come from the
// environment.
func TestCertsOnce(t *testing.T) {
	s := serveCerts(t, policyFiles(t), 0)
	dir := filepath.Join(t.TempDir(), "run", "default", "web-01")
	code, _, stderr := gitmesh(t, "certs", "--dataplane", "default/web-01", "--xds-address", s.xdsAddr(),
		"--dir", dir, "--once", "--timeout", certsWait.String())
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	d, err := readCertDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := uriSANs(d.leaf); !slices.Equal(got, []string{"spiffe://default/web"}) {
		t.Errorf("URI SANs %v, want [spiffe://default/web]", got)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("created directory mode %o, want 700", fi.Mode().Perm())
	}
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if strings.Join(names, " ") != "ca.pem cert.pem key.pem" {
		t.Errorf("directory holds %v, want the three files alone", names)
	}

	// The ACK reached the control plane before the agent exited.
	ts := secretStatus(t, s, "default.web-01")
	if ts.Published == "" || ts.Acked != ts.Published {
		t.Errorf("secret status %+v: want the published version ACKed", ts)
	}
	for _, want := range []string{"wrote the certificate", "spiffe://default/web", "version=" + ts.Published,
		"not_after=" + d.leaf.NotAfter.UTC().Format(time.RFC3339)} {
		if !strings.Contains(stderr, want) {
			t.Errorf("log lacks %q:\n%s", want, stderr)
		}
	}
	keyBlock, _ := pem.Decode(d.key)
	if strings.Contains(stderr, "PRIVATE KEY") || bytes.Contains([]byte(stderr), keyBlock.Bytes[:16]) {
		t.Error("the log holds the private key")
	}

	t.Setenv(envName("dataplane"), "default/web-01")
	t.Setenv(envName("xds-address"), s.xdsAddr())
	t.Setenv(envName("dir"), dir)
	code, _, stderr = gitmesh(t, "certs", "--once")
	if code != 0 || !strings.Contains(stderr, "certificate files are up to date") {
		t.Fatalf("second run: exit %d: %s", code, stderr)
	}
	again, err := readCertDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again.cert, d.cert) || !bytes.Equal(again.key, d.key) || !bytes.Equal(again.ca, d.ca) {
		t.Error("the files changed although the certificate did not")
	}
}

// TestCertsAgentFollowsRenewal: a running agent rewrites the files when the
// control plane renews the certificate.
func TestCertsAgentFollowsRenewal(t *testing.T) {
	// A certificate this short-lived is renewed by every Renew.
	const validity = 20 * time.Second
	s := serveCerts(t, policyFiles(t), validity)
	dir := filepath.Join(t.TempDir(), "certs")
	const node = "default.backend-01"
	a := startAgent(t, "--dataplane", "default/backend-01", "--xds-address", s.xdsAddr(), "--dir", dir)
	first := waitCertDir(t, dir, "the first certificate", anyCert)

	// Let the first pushes settle, and renew in a later second than they
	// issued (x509 times have whole seconds), so that the renewed
	// certificate ends later.
	waitSecret(t, s, node, "the first ACK", func(ts ads.TypeStatus) bool { return ts.Acked != "" && ts.Acked == ts.Published })
	nextSecond()
	before, err := readCertDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), certsWait)
	defer cancel()
	if _, err := s.app.plane.Renew(ctx); err != nil {
		t.Fatal(err)
	}
	version := secretStatus(t, s, node).Published
	renewed := waitCertDir(t, dir, "the renewed certificate", func(d certDir) error {
		if !d.leaf.NotAfter.After(before.leaf.NotAfter) {
			return fmt.Errorf("certificate ends %v, not after %v", d.leaf.NotAfter, before.leaf.NotAfter)
		}
		return nil
	})
	waitSecret(t, s, node, "the ACK of the renewal", func(ts ads.TypeStatus) bool { return ts.Acked == version })
	if !strings.Contains(a.logs.String(), "version="+version) {
		t.Errorf("the write of version %s is not logged:\n%s", version, a.logs.String())
	}
	if renewed.leaf.SerialNumber.Cmp(before.leaf.SerialNumber) == 0 || bytes.Equal(renewed.key, before.key) {
		t.Error("the renewed certificate has the old serial number or key")
	}
	if !bytes.Equal(renewed.ca, first.ca) {
		t.Error("ca.pem changed with a renewal")
	}
	if got := uriSANs(renewed.leaf); !slices.Equal(got, []string{"spiffe://default/backend"}) {
		t.Errorf("URI SANs %v", got)
	}
	if n := strings.Count(a.logs.String(), "wrote the certificate"); n < 2 {
		t.Errorf("%d writes logged, want at least 2", n)
	}
	if code := a.stop(t); code != 0 {
		t.Errorf("stopped agent: exit %d", code)
	}
}

// TestCertsAgentReconnects: the agent outlives a restart of the control
// plane, and the restarted one serves it the certificate it holds: the
// issued certificates are kept in the state directory, so a restart
// rotates none.
func TestCertsAgentReconnects(t *testing.T) {
	s := serveCerts(t, policyFiles(t), 0)
	addr := s.xdsAddr()
	dir := filepath.Join(t.TempDir(), "certs")
	a := startAgent(t, "--dataplane", "default/redis-01", "--xds-address", addr, "--dir", dir)
	first := waitCertDir(t, dir, "the first certificate", anyCert)
	s.stop()
	issued, err := os.Stat(filepath.Join(s.stateDir, "ca", "default", "issued.pem"))
	if err != nil {
		t.Fatalf("the issued certificate is not kept in the state directory: %v", err)
	}
	if issued.Mode().Perm() != 0o600 {
		t.Errorf("issued.pem: mode %o, want 600", issued.Mode().Perm())
	}

	// The same state (so the same mesh CA) on the same address.
	again := startServe(t, serveOptions{repo: s.repo, path: "policies", stateDir: s.stateDir, xdsAddress: addr})
	again.waitStatus(t, "the published commit served again", func(st reconcile.Status) bool { return st.Ready })
	// It publishes the node the certificate it holds: the same secrets
	// version, so the agent, which asks with that version, is sent nothing
	// and keeps its files.
	deadline := time.Now().Add(certsWait)
	for {
		st, _ := again.app.server.StatusOf("default.redis-01")
		sec := typeStatus(st, resource.SecretType)
		if st.Streams > 0 && sec.Published != "" {
			if want := agentVersion(t, a); sec.Published != want {
				t.Fatalf("the restarted control plane publishes secrets version %s, the agent holds %s: the certificate was rotated", sec.Published, want)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the agent did not reconnect to the restarted control plane: %+v\n%s", st, a.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	second, err := readCertDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(second.cert, first.cert) || !bytes.Equal(second.key, first.key) || !bytes.Equal(second.ca, first.ca) {
		t.Errorf("the restart rotated the certificate: serial %s, was %s", second.leaf.SerialNumber, first.leaf.SerialNumber)
	}
	if !strings.Contains(a.logs.String(), "reconnecting") {
		t.Errorf("no reconnection logged:\n%s", a.logs.String())
	}
}

// typeStatus is st's status of type typ (zero when it has none).
func typeStatus(st ads.ProxyStatus, typ string) ads.TypeStatus {
	for _, ts := range st.Types {
		if ts.TypeURL == typ {
			return ts
		}
	}
	return ads.TypeStatus{}
}

// agentVersion is the secrets version the agent last wrote, from its log.
func agentVersion(t *testing.T, a *agent) string {
	t.Helper()
	logs := a.logs.String()
	i := strings.LastIndex(logs, "msg=\"wrote the certificate\"")
	if i < 0 {
		t.Fatalf("the agent wrote no certificate:\n%s", logs)
	}
	line, _, _ := strings.Cut(logs[i:], "\n")
	_, v, ok := strings.Cut(line, " version=")
	if !ok {
		t.Fatalf("no version in %q", line)
	}
	return strings.Fields(v)[0]
}

// TestCertsAgentRejectsBadCertificate: a certificate whose key does not
// match is NACKed with the reason and the files stay; the next good one is
// taken.
func TestCertsAgentRejectsBadCertificate(t *testing.T) {
	s := serveCerts(t, policyFiles(t), 0)
	const node = "default.web-01"
	dir := filepath.Join(t.TempDir(), "certs")
	a := startAgent(t, "--dataplane", "default/web-01", "--xds-address", s.xdsAddr(), "--dir", dir)
	good := waitCertDir(t, dir, "the first certificate", anyCert)

	// Serve the node a certificate with another certificate's key.
	other := &ca.Authority{StateDir: t.TempDir()}
	c1, err := other.Issue("default.web-01", "default", schema.CA{Kind: schema.CABuiltin}, []string{"spiffe://default/web"})
	if err != nil {
		t.Fatal(err)
	}
	c2, err := other.Issue("default.web-02", "default", schema.CA{Kind: schema.CABuiltin}, []string{"spiffe://default/web"})
	if err != nil {
		t.Fatal(err)
	}
	bad := ca.SecretsOf(c1)
	bad[0].(*tlsv3.Secret).GetTlsCertificate().PrivateKey = &corev3.DataSource{
		Specifier: &corev3.DataSource_InlineBytes{InlineBytes: c2.KeyPEM}}
	commit, tr := s.app.plane.Served()
	// The agent says it runs gRPC: it is served that flavour.
	px := tr.Proxy(node, xds.FlavorGRPC)
	ctx, cancel := context.WithTimeout(context.Background(), certsWait)
	defer cancel()
	_, err = s.app.server.PublishProxy(ctx, commit, px, func(*xds.Proxy) ([]types.Resource, string, error) {
		return bad, "bad-1", nil
	})
	if err != nil {
		t.Fatal(err)
	}
	waitSecret(t, s, node, "the NACK", func(ts ads.TypeStatus) bool { return ts.LastNACK != nil })
	if ts := secretStatus(t, s, node); ts.LastNACK.Version != "bad-1" || !strings.Contains(ts.LastNACK.Error, "private key does not match") {
		t.Errorf("NACK %+v, want of bad-1 saying the key does not match", ts.LastNACK)
	}
	kept, err := readCertDir(dir)
	if err != nil || !bytes.Equal(kept.cert, good.cert) || !bytes.Equal(kept.key, good.key) {
		t.Fatalf("the files changed after a rejected certificate (%v)", err)
	}

	// Publishing the served commit again gives the node its real secrets,
	// which the files hold already.
	if _, err := s.app.plane.Renew(ctx); err != nil {
		t.Fatal(err)
	}
	waitSecret(t, s, node, "the ACK of the real secrets", func(ts ads.TypeStatus) bool {
		return ts.Published != "bad-1" && ts.Acked == ts.Published && ts.AckedAt.After(ts.LastNACK.At)
	})
	if !strings.Contains(a.logs.String(), "certificate files are up to date") {
		t.Errorf("no up-to-date line:\n%s", a.logs.String())
	}
	kept, err = readCertDir(dir)
	if err != nil || !bytes.Equal(kept.cert, good.cert) {
		t.Fatalf("the files changed (%v)", err)
	}
}

func waitSecret(t *testing.T, s certsServed, node, what string, cond func(ads.TypeStatus) bool) {
	t.Helper()
	deadline := time.Now().Add(certsWait)
	for !cond(secretStatus(t, s, node)) {
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s; secret status %+v", what, secretStatus(t, s, node))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestCertsOnceWithoutCertificate: without mTLS, for an unknown dataplane,
// or without a control plane, --once fails with a message that says why,
// and writes nothing.
func TestCertsOnceWithoutCertificate(t *testing.T) {
	files := policyFiles(t)
	files["policies/meshes/default.yaml"] = "type: Mesh\nname: default\n"
	s := serveCerts(t, files, 0)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := lis.Addr().String()
	lis.Close() // an address where nothing listens

	for _, tc := range []struct {
		name, dataplane, addr, want string
	}{
		{"no mTLS", "default/web-01", s.xdsAddr(), "mesh default has no mTLS: no certificate to write"},
		{"unknown dataplane", "default/nope", s.xdsAddr(), "serves no dataplane default/nope"},
		{"no control plane", "default/web-01", closed, "cannot get it from the xDS server at " + closed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := filepath.Join(t.TempDir(), "certs")
			code, _, stderr := gitmesh(t, "certs", "--dataplane", tc.dataplane, "--xds-address", tc.addr,
				"--dir", dir, "--once", "--timeout", "2s")
			if code != exitFailed || !strings.Contains(stderr, tc.want) {
				t.Errorf("exit %d, want %d with %q:\n%s", code, exitFailed, tc.want, stderr)
			}
			if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the directory was made: %v", err)
			}
		})
	}
}

func TestCertsUsage(t *testing.T) {
	for _, args := range [][]string{
		{"certs"},
		{"certs", "--dataplane", "web-01"},
		{"certs", "--dataplane", "default/web-01", "--xds-address", "nowhere"},
		{"certs", "--dataplane", "default/web-01", "--timeout", "0s"},
		{"certs", "--dataplane", "default/web-01", "--log-format", "xml"},
	} {
		if code, _, stderr := gitmesh(t, args...); code != exitUsage {
			t.Errorf("%q: exit %d, want %d: %s", args, code, exitUsage, stderr)
		}
	}
}

// The flags become the agent's config; the directory defaults to the one
// `gitmesh bootstrap --grpc` names.
func TestCertsConfig(t *testing.T) {
	c, err := certsConfig(certsOptions{dataplane: "default/web-01", xdsAddress: "127.0.0.1:5678", timeout: time.Second,
		logFormat: "text", logLevel: "info"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if c.Node != (schema.NodeID{Mesh: "default", Name: "web-01"}) || c.XDSAddress != "127.0.0.1:5678" ||
		c.Timeout != time.Second || c.Once || c.TLS != nil || c.Token != "" || c.Logger == nil {
		t.Errorf("config %+v", c)
	}
	if c.Dir != filepath.Join(defaultCertDirRoot, "default", "web-01") {
		t.Errorf("default directory %s", c.Dir)
	}
}
