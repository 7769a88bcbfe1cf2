package plane

import (
	"encoding/json"
	"strings"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/gitmesh/gitmesh/xds"
	grpcxds "google.golang.org/grpc/xds"
)

// gRPC-Go's own xDS client, dialling the name of one of an Envoy proxy's
// inbound listeners, rejects it: a listener without an api_listener is read
// as a server-side one, and gRPC takes its certificates from certificate
// providers, not SDS. The plane hears of the NACK like any other. (An
// outbound listener of HTTP would not do: it parses as a server-side
// listener, so gRPC ACKs it and reports the missing api_listener to the
// channel alone.)
func TestGRPCClientNACK(t *testing.T) {
	t.Parallel()
	f := newFixtureWith(t, rollingBack(true))
	f.apply(t, commitA, policiesA(t))
	const node = "default.web-01"
	var name string
	for _, r := range f.last.Proxy(node, xds.FlavorEnvoy).Resources[resource.ListenerType] {
		if l := r.(*listenerv3.Listener); strings.HasPrefix(l.GetName(), "inbound:") {
			name = l.GetName()
		}
	}
	if name == "" {
		t.Fatalf("%s has no inbound listener", node)
	}

	bootstrap, err := json.Marshal(map[string]any{
		"xds_servers": []any{map[string]any{
			"server_uri":      f.addr,
			"channel_creds":   []any{map[string]any{"type": "insecure"}},
			"server_features": []string{"xds_v3"},
		}},
		"node": map[string]any{"id": node, "metadata": map[string]any{"gitmesh.io/flavor": "envoy"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	resolver, err := grpcxds.NewXDSResolverWithConfigForTesting(bootstrap)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient("xds:///"+name, grpc.WithResolvers(resolver), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	cc.Connect() // starts the resolver, which subscribes to the listener

	r := next(t, f.nacks, "NACK from the gRPC client")
	if r.Node != node || r.Type != resource.ListenerType || r.Commit != commitA || r.RevertedTo != "" {
		t.Errorf("rejection %+v, want %s's listener at commit A, not rolled back (nothing accepted)", r, node)
	}
	if !strings.Contains(r.Error, name) {
		t.Errorf("error detail %q, want it to name listener %q", r.Error, name)
	}
	if st, _ := f.server.StatusOf(node); typeStatusOf(st, resource.ListenerType).LastNACK == nil {
		t.Errorf("server status of %s shows no NACK", node)
	}
}
