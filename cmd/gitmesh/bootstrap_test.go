package main

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
)

// parseEnvoyBootstrap reads YAML back into the bootstrap proto, strictly.
func parseEnvoyBootstrap(t *testing.T, out string) *bootstrapv3.Bootstrap {
	t.Helper()
	var doc any
	if err := yaml.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("output is not YAML: %v\n%s", err, out)
	}
	js, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	b := &bootstrapv3.Bootstrap{}
	if err := protojson.Unmarshal(js, b); err != nil {
		t.Fatalf("output is not an Envoy bootstrap: %v\n%s", err, out)
	}
	if err := b.ValidateAll(); err != nil {
		t.Fatalf("bootstrap does not validate: %v", err)
	}
	return b
}

func TestBootstrapEnvoy(t *testing.T) {
	code, out, errs := gitmesh(t, "bootstrap", "--dataplane", "demo/web-1", "--xds-address", "10.0.0.5:5678")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errs)
	}
	b := parseEnvoyBootstrap(t, out)
	if got := b.GetNode(); got.GetId() != "demo.web-1" || got.GetCluster() != "demo" {
		t.Errorf("node %v", got)
	}
	if got := b.GetNode().GetMetadata().GetFields()["gitmesh.io/flavor"].GetStringValue(); got != "envoy" {
		t.Errorf("flavor metadata %q", got)
	}
	admin := b.GetAdmin().GetAddress().GetSocketAddress()
	if admin.GetAddress() != "127.0.0.1" || admin.GetPortValue() != 9901 {
		t.Errorf("admin address %v", admin)
	}
	dr := b.GetDynamicResources()
	if dr.GetAdsConfig().GetGrpcServices()[0].GetEnvoyGrpc().GetClusterName() != "gitmesh_xds" ||
		dr.GetLdsConfig().GetAds() == nil || dr.GetCdsConfig().GetAds() == nil {
		t.Errorf("dynamic resources %v", dr)
	}
	clusters := b.GetStaticResources().GetClusters()
	if len(clusters) != 1 || clusters[0].GetName() != "gitmesh_xds" || clusters[0].GetType() != clusterv3.Cluster_STATIC {
		t.Fatalf("static clusters %v", clusters)
	}
	ep := clusters[0].GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
	if ep.GetAddress() != "10.0.0.5" || ep.GetPortValue() != 5678 {
		t.Errorf("xds endpoint %v", ep)
	}
	if _, ok := clusters[0].GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]; !ok {
		t.Error("xds cluster does not speak HTTP/2")
	}
	if !strings.Contains(out, "dynamic_resources:\n") || strings.HasPrefix(out, "{") || strings.Contains(out, "\"node\"") {
		t.Errorf("want block YAML with proto field names, got:\n%s", out)
	}

	// A host name is resolved by DNS; the output is deterministic.
	code, out2, errs := gitmesh(t, "bootstrap", "--dataplane", "demo/web-1", "--xds-address", "gitmesh.example:5678", "--admin-address", "127.0.0.1:19000")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errs)
	}
	b = parseEnvoyBootstrap(t, out2)
	if b.GetStaticResources().GetClusters()[0].GetType() != clusterv3.Cluster_STRICT_DNS {
		t.Error("host name: want STRICT_DNS")
	}
	if _, again, _ := gitmesh(t, "bootstrap", "--dataplane", "demo/web-1", "--xds-address", "10.0.0.5:5678"); again != out {
		t.Error("output differs between runs")
	}
}

func TestBootstrapGRPC(t *testing.T) {
	code, out, errs := gitmesh(t, "bootstrap", "--grpc", "--dataplane", "demo/reviews-v1", "--xds-address", "10.0.0.5:5678")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	var want map[string]any
	if err := json.Unmarshal([]byte(`{
  "xds_servers": [{"server_uri": "10.0.0.5:5678", "channel_creds": [{"type": "insecure"}], "server_features": ["xds_v3"]}],
  "node": {"id": "demo.reviews-v1", "cluster": "demo", "metadata": {"gitmesh.io/flavor": "grpc"}},
  "server_listener_resource_name_template": "grpc/server?xds.resource.listening_address=%s",
  "certificate_providers": {"gitmesh": {"plugin_name": "file_watcher", "config": {
    "certificate_file": "/var/run/gitmesh/demo/reviews-v1/cert.pem",
    "private_key_file": "/var/run/gitmesh/demo/reviews-v1/key.pem",
    "ca_certificate_file": "/var/run/gitmesh/demo/reviews-v1/ca.pem",
    "refresh_interval": "600s"}}}
}`), &want); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("gRPC bootstrap:\n%s", out)
	}

	code, out, errs = gitmesh(t, "bootstrap", "--grpc", "--dataplane", "demo/reviews-v1", "--xds-address", "10.0.0.5:5678", "--cert-dir", "/etc/certs")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errs)
	}
	if !strings.Contains(out, `"certificate_file": "/etc/certs/cert.pem"`) {
		t.Errorf("--cert-dir ignored:\n%s", out)
	}
}

func TestBootstrapUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--dataplane", "demo", "--xds-address", "h:1"}, "not MESH/NAME"},
		{[]string{"--dataplane", "Demo/web", "--xds-address", "h:1"}, `mesh "Demo"`},
		{[]string{"--dataplane", "demo/Web.1", "--xds-address", "h:1"}, `name "Web.1"`},
		{[]string{"--dataplane", "demo/web", "--xds-address", "h"}, "--xds-address"},
		{[]string{"--dataplane", "demo/web", "--xds-address", "h:70000"}, "port must be 1 to 65535"},
		{[]string{"--dataplane", "demo/web", "--xds-address", "h:1", "--admin-address", "0.0.0.0:9901"}, "not a loopback"},
		{[]string{"--dataplane", "demo/web", "--xds-address", "h:1", "--cert-dir", "/x"}, "--grpc only"},
		{[]string{"--xds-address", "h:1"}, "dataplane"},
	} {
		code, out, errs := gitmesh(t, append([]string{"bootstrap"}, tc.args...)...)
		if code != exitUsage || out != "" || !strings.Contains(errs, tc.want) {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit %d and %q", tc.args, code, out, errs, exitUsage, tc.want)
		}
	}
}
