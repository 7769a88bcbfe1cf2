package bootstrap

import (
	"slices"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"github.com/gitmesh/gitmesh/schema"
)

// TestEnvoyBootstrap: the node, the admin interface, ADS from the xDS
// cluster over HTTP/2, and neither TLS nor a token unless asked for.
func TestEnvoyBootstrap(t *testing.T) {
	b, err := Envoy(Config{Node: web, XDSAddress: "10.0.0.5:5678", AdminAddress: "127.0.0.1:9901"})
	if err != nil {
		t.Fatal(err)
	}
	if n := b.GetNode(); n.GetId() != "demo.web-1" || n.GetCluster() != "demo" ||
		n.GetMetadata().GetFields()["gitmesh.io/flavor"].GetStringValue() != "envoy" {
		t.Errorf("node %v", n)
	}
	if a := b.GetAdmin().GetAddress().GetSocketAddress(); a.GetAddress() != "127.0.0.1" || a.GetPortValue() != 9901 {
		t.Errorf("admin address %v", a)
	}
	dr := b.GetDynamicResources()
	svc := dr.GetAdsConfig().GetGrpcServices()
	if len(svc) != 1 || svc[0].GetEnvoyGrpc().GetClusterName() != XDSCluster || len(svc[0].GetInitialMetadata()) != 0 ||
		dr.GetLdsConfig().GetAds() == nil || dr.GetCdsConfig().GetAds() == nil {
		t.Errorf("dynamic resources %v", dr)
	}
	clusters := b.GetStaticResources().GetClusters()
	if len(clusters) != 1 || clusters[0].GetName() != XDSCluster || clusters[0].GetType() != clusterv3.Cluster_STATIC {
		t.Fatalf("static clusters %v", clusters)
	}
	ep := clusters[0].GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
	if ep.GetAddress() != "10.0.0.5" || ep.GetPortValue() != 5678 {
		t.Errorf("xDS endpoint %v", ep)
	}
	if _, ok := clusters[0].GetTypedExtensionProtocolOptions()[http2OptionsKey]; !ok {
		t.Error("the xDS cluster does not speak HTTP/2")
	}
	if clusters[0].GetTransportSocket() != nil {
		t.Error("TLS without a CA file")
	}

	b, err = Envoy(Config{Node: web, XDSAddress: "gitmesh.example:5678", AdminAddress: "[::1]:9901"})
	if err != nil {
		t.Fatal(err)
	}
	if typ := b.GetStaticResources().GetClusters()[0].GetType(); typ != clusterv3.Cluster_STRICT_DNS {
		t.Errorf("a host name: cluster type %v, want STRICT_DNS", typ)
	}
}

// TestEnvoyBootstrapTLSAndToken: with a CA file the xDS cluster speaks TLS
// (h2 by ALPN), checks the server's IP or name and sends SNI for a name;
// the token goes into the ADS stream's initial metadata.
func TestEnvoyBootstrapTLSAndToken(t *testing.T) {
	for _, tc := range []struct {
		host    string
		sanType tlsv3.SubjectAltNameMatcher_SanType
		sni     string
	}{
		{"10.0.0.5", tlsv3.SubjectAltNameMatcher_IP_ADDRESS, ""},
		{"gitmesh.example", tlsv3.SubjectAltNameMatcher_DNS, "gitmesh.example"},
	} {
		b, err := Envoy(Config{Node: web, XDSAddress: tc.host + ":5678", AdminAddress: "127.0.0.1:9901",
			Token: testToken, CAFile: testCAFile})
		if err != nil {
			t.Fatal(err)
		}
		md := b.GetDynamicResources().GetAdsConfig().GetGrpcServices()[0].GetInitialMetadata()
		if len(md) != 1 || md[0].GetKey() != "authorization" || md[0].GetValue() != "Bearer "+testToken {
			t.Errorf("%s: initial metadata %v", tc.host, md)
		}
		ts := b.GetStaticResources().GetClusters()[0].GetTransportSocket()
		utc := &tlsv3.UpstreamTlsContext{}
		if ts.GetName() != "envoy.transport_sockets.tls" || ts.GetTypedConfig().UnmarshalTo(utc) != nil {
			t.Fatalf("%s: transport socket %v", tc.host, ts)
		}
		if err := utc.ValidateAll(); err != nil {
			t.Error(err)
		}
		vc := utc.GetCommonTlsContext().GetValidationContext()
		san := vc.GetMatchTypedSubjectAltNames()
		if vc.GetTrustedCa().GetFilename() != testCAFile || len(san) != 1 || san[0].GetMatcher().GetExact() != tc.host ||
			san[0].GetSanType() != tc.sanType || utc.GetSni() != tc.sni ||
			!slices.Equal(utc.GetCommonTlsContext().GetAlpnProtocols(), []string{"h2"}) {
			t.Errorf("%s: TLS context %v", tc.host, utc)
		}
	}
}

func TestEnvoyBootstrapConfigErrors(t *testing.T) {
	ok := Config{Node: web, XDSAddress: "10.0.0.5:5678", AdminAddress: "127.0.0.1:9901"}
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"no node", func(c *Config) { c.Node = schema.NodeID{} }, "no node"},
		{"no port", func(c *Config) { c.XDSAddress = "10.0.0.5" }, "xDS address"},
		{"port 0", func(c *Config) { c.XDSAddress = "h:0" }, "port must be 1 to 65535"},
		{"no admin address", func(c *Config) { c.AdminAddress = "" }, "admin address"},
		{"admin on the network", func(c *Config) { c.AdminAddress = "0.0.0.0:9901" }, "not a loopback IP address"},
		{"admin by name", func(c *Config) { c.AdminAddress = "localhost:9901" }, "not a loopback IP address"},
	} {
		c := ok
		tc.edit(&c)
		if _, err := Envoy(c); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.want)
		}
	}
}
