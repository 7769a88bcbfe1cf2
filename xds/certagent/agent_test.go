package certagent

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/gitmesh/gitmesh/internal/logtest"
	"github.com/gitmesh/gitmesh/schema"
	"github.com/gitmesh/gitmesh/xds"
	"github.com/gitmesh/gitmesh/xds/ads"
	"github.com/gitmesh/gitmesh/xds/adstest"
	"github.com/gitmesh/gitmesh/xds/ca"
)

// wait bounds every wait of these tests.
const wait = 15 * time.Second

var node = schema.NodeID{Mesh: "default", Name: "web-01"}

// startXDS serves a real ADS server on 127.0.0.1 until the test ends, and
// returns its address.
func startXDS(t *testing.T) (*ads.Server, string) {
	t.Helper()
	return adstest.Serve(t, ads.Config{})
}

// publish serves node as a gRPC proxy without resources, in a mesh with
// mTLS (its secrets come from a new mesh CA) or without.
func publish(t *testing.T, s *ads.Server, mtls bool) *ca.Certificate {
	t.Helper()
	p := &xds.Proxy{NodeID: node.String(), Mesh: node.Mesh, Dataplane: node.Name, Flavor: xds.FlavorGRPC,
		Resources: map[resource.Type][]types.Resource{}, MTLS: mtls, Hash: strings.Repeat("ab", 32)}
	var c *ca.Certificate
	if mtls {
		p.Identities = []string{"spiffe://default/web"}
		c = issued(t, node.Mesh, time.Hour)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	_, err := s.Publish(ctx, strings.Repeat("c", 40), []*xds.Proxy{p}, func(*xds.Proxy) ([]types.Resource, string, error) {
		return ca.SecretsOf(c), c.Version, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// run runs a Once agent of node for c until it returns, and returns its log.
func run(t *testing.T, ctx context.Context, c Config) (logs string, err error) {
	t.Helper()
	var buf logtest.Buffer
	c.Node, c.Once, c.Logger = node, true, slog.New(slog.NewTextHandler(&buf, nil))
	if c.Timeout == 0 {
		c.Timeout = wait
	}
	a, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	err = a.Run(ctx)
	return buf.String(), err
}

// TestCertAgentOnce: a Once run writes the node's certificate, ACKs it
// before it returns, and finds the files up to date the next time.
func TestCertAgentOnce(t *testing.T) {
	s, addr := startXDS(t)
	c := publish(t, s, true)
	dir := filepath.Join(t.TempDir(), "certs")
	logs, err := run(t, context.Background(), Config{XDSAddress: addr, Dir: dir})
	if err != nil {
		t.Fatalf("%v\n%s", err, logs)
	}
	checkFiles(t, dir, &material{cert: c.CertPEM, key: c.KeyPEM, ca: c.CAPEM})
	st, _ := s.StatusOf(node.String())
	i := slices.IndexFunc(st.Types, func(ts ads.TypeStatus) bool { return ts.TypeURL == resource.SecretType })
	if i < 0 || st.Types[i].Acked != c.Version {
		t.Errorf("secret status %+v, want version %s ACKed", st.Types, c.Version)
	}
	if !strings.Contains(logs, "wrote the certificate") || !strings.Contains(logs, "sans=spiffe://default/web") {
		t.Errorf("log:\n%s", logs)
	}
	if logs, err := run(t, context.Background(), Config{XDSAddress: addr, Dir: dir}); err != nil ||
		!strings.Contains(logs, "certificate files are up to date") {
		t.Errorf("second run: %v\n%s", err, logs)
	}
}

// TestCertAgentOnceErrors: each way a Once run fails has its kind and says
// why, and leaves no directory behind.
func TestCertAgentOnceErrors(t *testing.T) {
	withMTLS, mtlsAddr := startXDS(t)
	publish(t, withMTLS, true)
	withoutMTLS, plainAddr := startXDS(t)
	publish(t, withoutMTLS, false)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := lis.Addr().String()
	lis.Close() // an address where nothing listens
	blocked := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(blocked, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()

	for _, tc := range []struct {
		name    string
		ctx     context.Context
		c       Config
		kind    error
		want    string
		noWrite bool
	}{
		{"no mTLS", context.Background(), Config{XDSAddress: plainAddr}, ErrNoCertificate,
			"mesh default has no mTLS: no certificate to write", true},
		{"no control plane", context.Background(), Config{XDSAddress: closed, Timeout: time.Second}, ErrNoCertificate,
			"cannot get it from the xDS server at " + closed, true},
		{"stopped", cancelled, Config{XDSAddress: closed}, ErrNoCertificate, "stopped before a certificate was written", true},
		{"bad address", context.Background(), Config{XDSAddress: "a\x01:1"}, ErrAddress, "invalid control character", true},
		{"cannot write", context.Background(), Config{XDSAddress: mtlsAddr, Dir: filepath.Join(blocked, "certs")}, ErrWrite,
			"write certificate files (the old ones are kept)", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.c.Dir == "" {
				tc.c.Dir = filepath.Join(t.TempDir(), "certs")
			}
			logs, err := run(t, tc.ctx, tc.c)
			if !errors.Is(err, tc.kind) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %v saying %q\n%s", err, tc.kind, tc.want, logs)
			}
			if strings.HasPrefix(err.Error(), tc.kind.Error()+":") {
				t.Errorf("the kind is part of the message %q", err)
			}
			if _, err := os.Stat(tc.c.Dir); tc.noWrite && !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the directory was made: %v", err)
			}
		})
	}
}

// TestCertAgentStops: an agent that is not Once returns nil when told to
// stop, certificate or not.
func TestCertAgentStops(t *testing.T) {
	a, err := New(Config{Node: node, XDSAddress: "127.0.0.1:1", Dir: t.TempDir(), Timeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := a.Run(ctx); err != nil {
		t.Errorf("Run: %v", err)
	}
}

// The agent's node is a gRPC node of the dataplane, asking for the two
// secrets by name.
func TestCertAgentNode(t *testing.T) {
	a, err := New(Config{Node: node, XDSAddress: "127.0.0.1:5678", Dir: t.TempDir(), Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if a.node.GetId() != "default.web-01" || a.node.GetCluster() != "default" || a.node.GetUserAgentName() != "gitmesh-certs" ||
		a.node.GetMetadata().GetFields()[xds.FlavorMetadataKey].GetStringValue() != "grpc" {
		t.Errorf("node %v", a.node)
	}
	req := a.request("v1", "n1", errors.New("bad"))
	want := []string{xds.SecretIdentity, xds.SecretMeshCA}
	if req.GetTypeUrl() != resource.SecretType || !slices.Equal(req.GetResourceNames(), want) ||
		req.GetErrorDetail().GetMessage() != "bad" || req.GetVersionInfo() != "v1" || req.GetResponseNonce() != "n1" {
		t.Errorf("NACK %v", req)
	}
	if req.GetNode() != nil {
		t.Error("a request other than the first carries the node")
	}
}

func TestNewCertAgentChecksConfig(t *testing.T) {
	ok := Config{Node: node, XDSAddress: "127.0.0.1:5678", Dir: "/tmp/x", Timeout: time.Second}
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"no node", func(c *Config) { c.Node = schema.NodeID{} }, "no node"},
		{"no address", func(c *Config) { c.XDSAddress = "" }, "no xDS address"},
		{"no directory", func(c *Config) { c.Dir = "" }, "no directory"},
		{"no timeout", func(c *Config) { c.Timeout = 0 }, "not positive"},
	} {
		c := ok
		tc.edit(&c)
		if _, err := New(c); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.want)
		}
	}
}
