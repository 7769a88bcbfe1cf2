package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"github.com/gitmesh/gitmesh/xds/servertls"
	"github.com/gitmesh/gitmesh/xds/token"
)

// tokenAndCA issues a token for mesh/name and makes a control-plane CA,
// and returns their files.
func tokenAndCA(t *testing.T, mesh, name string) (tok, tokenFile, caFile string) {
	t.Helper()
	state := t.TempDir()
	key, err := token.LoadOrCreateKey(state)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tok, err = token.Issue(key, token.Claims{Mesh: mesh, Name: name, IssuedAt: now.Unix(), Expires: now.Add(time.Hour).Unix(), ID: "id-1"})
	if err != nil {
		t.Fatal(err)
	}
	tokenFile = filepath.Join(state, "dp.token")
	if err := os.WriteFile(tokenFile, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, caFile, err = servertls.Auto(state, nil, nil); err != nil {
		t.Fatal(err)
	}
	return tok, tokenFile, caFile
}

func TestBootstrapEnvoyCarriesTokenAndCA(t *testing.T) {
	tok, tokenFile, caFile := tokenAndCA(t, "demo", "web-1")
	for _, host := range []string{"10.0.0.5", "gitmesh.example"} {
		code, out, errs := gitmesh(t, "bootstrap", "--dataplane", "demo/web-1", "--xds-address", host+":5678",
			"--token-file", tokenFile, "--ca-file", caFile)
		if code != exitOK {
			t.Fatalf("exit %d: %s", code, errs)
		}
		b := parseEnvoyBootstrap(t, out) // ValidateAll included
		md := b.GetDynamicResources().GetAdsConfig().GetGrpcServices()[0].GetInitialMetadata()
		if len(md) != 1 || md[0].GetKey() != "authorization" || md[0].GetValue() != "Bearer "+tok {
			t.Errorf("initial metadata %v", md)
		}
		ts := b.GetStaticResources().GetClusters()[0].GetTransportSocket()
		utc := &tlsv3.UpstreamTlsContext{}
		if ts.GetName() != "envoy.transport_sockets.tls" || ts.GetTypedConfig().UnmarshalTo(utc) != nil {
			t.Fatalf("transport socket %v", ts)
		}
		if err := utc.ValidateAll(); err != nil {
			t.Error(err)
		}
		vc := utc.GetCommonTlsContext().GetValidationContext()
		san := vc.GetMatchTypedSubjectAltNames()
		if vc.GetTrustedCa().GetFilename() != caFile || len(san) != 1 || san[0].GetMatcher().GetExact() != host ||
			!reflect.DeepEqual(utc.GetCommonTlsContext().GetAlpnProtocols(), []string{"h2"}) {
			t.Errorf("%s: TLS context %v", host, utc)
		}
		wantType := tlsv3.SubjectAltNameMatcher_IP_ADDRESS
		if host == "gitmesh.example" {
			wantType = tlsv3.SubjectAltNameMatcher_DNS
			if utc.GetSni() != host {
				t.Errorf("SNI %q", utc.GetSni())
			}
		}
		if san[0].GetSanType() != wantType {
			t.Errorf("%s: SAN type %v", host, san[0].GetSanType())
		}
	}
}

func TestBootstrapGRPCCarriesTokenFileAndCA(t *testing.T) {
	_, tokenFile, caFile := tokenAndCA(t, "demo", "reviews-v1")
	code, out, errs := gitmesh(t, "bootstrap", "--grpc", "--dataplane", "demo/reviews-v1", "--xds-address", "10.0.0.5:5678",
		"--token-file", tokenFile, "--ca-file", caFile)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var got struct {
		XDSServers []map[string]any `json:"xds_servers"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatal(err)
	}
	var want map[string]any
	if err := json.Unmarshal([]byte(`{"server_uri": "10.0.0.5:5678",
  "channel_creds": [{"type": "tls", "config": {"ca_certificate_file": "`+caFile+`"}}],
  "call_creds": [{"type": "jwt_token_file", "config": {"jwt_token_file": "`+tokenFile+`"}}],
  "server_features": ["xds_v3"]}`), &want); err != nil {
		t.Fatal(err)
	}
	if len(got.XDSServers) != 1 || !reflect.DeepEqual(got.XDSServers[0], want) {
		t.Errorf("xds_servers:\n%s", out)
	}
}

func TestBootstrapTokenUsageErrors(t *testing.T) {
	_, tokenFile, caFile := tokenAndCA(t, "demo", "web-1")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--dataplane", "demo/web-2", "--xds-address", "h:1", "--token-file", tokenFile}, "the token is for demo/web-1"},
		{[]string{"--dataplane", "demo/web-1", "--xds-address", "h:1", "--token-file", caFile}, "malformed token"},
		{[]string{"--dataplane", "demo/web-1", "--xds-address", "h:1", "--ca-file", tokenFile}, "no PEM certificate"},
		{[]string{"--grpc", "--dataplane", "demo/web-1", "--xds-address", "h:1", "--token-file", tokenFile}, "needs --ca-file"},
	} {
		code, out, errs := gitmesh(t, append([]string{"bootstrap"}, tc.args...)...)
		if code != exitUsage || out != "" || !strings.Contains(errs, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want %q", tc.args, code, errs, tc.want)
		}
	}
}
