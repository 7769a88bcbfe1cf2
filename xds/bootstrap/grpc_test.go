package bootstrap

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestGRPCBootstrapTLSAndToken: a CA file makes the channel TLS, and a
// token file becomes jwt_token_file call credentials; without them the
// channel is plaintext and carries no call credentials.
func TestGRPCBootstrapTLSAndToken(t *testing.T) {
	type server struct {
		ChannelCreds []struct {
			Type   string            `json:"type"`
			Config map[string]string `json:"config"`
		} `json:"channel_creds"`
		CallCreds []struct {
			Type   string            `json:"type"`
			Config map[string]string `json:"config"`
		} `json:"call_creds"`
	}
	parse := func(c Config) server {
		t.Helper()
		out, err := GRPC(c)
		if err != nil {
			t.Fatal(err)
		}
		var b struct {
			XDSServers []server `json:"xds_servers"`
		}
		if err := json.Unmarshal(out, &b); err != nil || len(b.XDSServers) != 1 {
			t.Fatalf("xds_servers of %s: %v", out, err)
		}
		return b.XDSServers[0]
	}
	plain := parse(Config{Node: reviews, XDSAddress: "10.0.0.5:5678", CertDir: "/etc/certs"})
	if len(plain.ChannelCreds) != 1 || plain.ChannelCreds[0].Type != "insecure" || plain.CallCreds != nil {
		t.Errorf("without a CA or token file: %+v", plain)
	}
	s := parse(Config{Node: reviews, XDSAddress: "10.0.0.5:5678", CertDir: "/etc/certs", TokenFile: testTokenFile, CAFile: testCAFile})
	if len(s.ChannelCreds) != 1 || s.ChannelCreds[0].Type != "tls" || s.ChannelCreds[0].Config["ca_certificate_file"] != testCAFile {
		t.Errorf("channel credentials %+v", s.ChannelCreds)
	}
	if len(s.CallCreds) != 1 || s.CallCreds[0].Type != "jwt_token_file" || s.CallCreds[0].Config["jwt_token_file"] != testTokenFile {
		t.Errorf("call credentials %+v", s.CallCreds)
	}
}

func TestGRPCBootstrapConfigErrors(t *testing.T) {
	ok := Config{Node: reviews, XDSAddress: "10.0.0.5:5678", CertDir: "/etc/certs"}
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"no node", func(c *Config) { c.Node.Name = "" }, "no node"},
		{"no port", func(c *Config) { c.XDSAddress = "10.0.0.5" }, "xDS address"},
		{"no certificate directory", func(c *Config) { c.CertDir = "" }, "no certificate directory"},
		{"token over plaintext", func(c *Config) { c.TokenFile = testTokenFile }, "needs a CA file"},
	} {
		c := ok
		tc.edit(&c)
		if _, err := GRPC(c); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.want)
		}
	}
}
