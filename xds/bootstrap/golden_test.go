package bootstrap

import (
	"path/filepath"
	"testing"

	"github.com/gitmesh/gitmesh/internal/golden"
	"github.com/gitmesh/gitmesh/schema"
	"github.com/gitmesh/gitmesh/xds"
)

// Paths and a token as a caller would pass them; neither function opens
// or parses them.
const (
	testCAFile    = "/etc/gitmesh/control-plane-ca.pem"
	testTokenFile = "/etc/gitmesh/dp.token"
	testToken     = "header.claims.signature"
)

var (
	web     = schema.NodeID{Mesh: "demo", Name: "web-1"}
	reviews = schema.NodeID{Mesh: "demo", Name: "reviews-v1"}
)

// TestGoldenBootstraps compares each bootstrap with its file under
// testdata/, the Envoy ones as the YAML `gitmesh bootstrap` prints;
// go test ./xds/bootstrap -update rewrites them.
func TestGoldenBootstraps(t *testing.T) {
	envoy := func(c Config) func(*testing.T) []byte {
		return func(t *testing.T) []byte {
			b, err := Envoy(c)
			if err != nil {
				t.Fatal(err)
			}
			out, err := xds.MarshalMessage(b, xds.FormatYAML)
			if err != nil {
				t.Fatal(err)
			}
			return out
		}
	}
	grpc := func(c Config) func(*testing.T) []byte {
		return func(t *testing.T) []byte {
			out, err := GRPC(c)
			if err != nil {
				t.Fatal(err)
			}
			return out
		}
	}
	for _, tc := range []struct {
		file  string
		build func(*testing.T) []byte
	}{
		{"envoy-ip.yaml", envoy(Config{Node: web, XDSAddress: "10.0.0.5:5678", AdminAddress: "127.0.0.1:9901"})},
		{"envoy-dns.yaml", envoy(Config{Node: web, XDSAddress: "gitmesh.example:5678", AdminAddress: "127.0.0.1:19000"})},
		{"envoy-ip-tls-token.yaml", envoy(Config{Node: web, XDSAddress: "10.0.0.5:5678", AdminAddress: "127.0.0.1:9901",
			Token: testToken, TokenFile: testTokenFile, CAFile: testCAFile})},
		{"envoy-dns-tls-token.yaml", envoy(Config{Node: web, XDSAddress: "gitmesh.example:5678", AdminAddress: "127.0.0.1:9901",
			Token: testToken, TokenFile: testTokenFile, CAFile: testCAFile})},
		{"grpc.json", grpc(Config{Node: reviews, XDSAddress: "10.0.0.5:5678", CertDir: "/var/run/gitmesh/demo/reviews-v1"})},
		{"grpc-tls-token.json", grpc(Config{Node: reviews, XDSAddress: "10.0.0.5:5678", CertDir: "/etc/certs",
			Token: testToken, TokenFile: testTokenFile, CAFile: testCAFile})},
	} {
		t.Run(tc.file, func(t *testing.T) {
			got := tc.build(t)
			golden.Check(t, filepath.Join("testdata", tc.file), got)
			if again := tc.build(t); string(again) != string(got) {
				t.Error("output differs between two builds")
			}
		})
	}
}
