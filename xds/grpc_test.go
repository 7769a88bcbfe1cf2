package xds_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	xdscreds "google.golang.org/grpc/credentials/xds"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	grpcxds "google.golang.org/grpc/xds"

	"github.com/gitmesh/gitmesh/schema"
	"github.com/gitmesh/gitmesh/schema/schematest"
	"github.com/gitmesh/gitmesh/xds"
	"github.com/gitmesh/gitmesh/xds/ads"
	"github.com/gitmesh/gitmesh/xds/adstest"
	"github.com/gitmesh/gitmesh/xds/ca"
)

// What the golden files show, asserted as properties: names, sharing,
// secrets, determinism.
func TestGRPCTranslate(t *testing.T) {
	t.Parallel()
	set := schematest.Load(t, os.DirFS(filepath.Join("testdata/grpc", "bookinfo", "policies")))
	idx, err := xds.NewIndex(set)
	if err != nil {
		t.Fatal(err)
	}
	dataplane := func(name string) *schema.Dataplane {
		for _, dp := range set.Dataplanes {
			if dp.Name == name {
				return dp
			}
		}
		t.Fatalf("no dataplane %s", name)
		return nil
	}
	page, err := xds.TranslateProxy(idx, dataplane("productpage-v1"), xds.Options{Flavor: xds.FlavorGRPC})
	if err != nil {
		t.Fatal(err)
	}
	if err := xds.Check(page); err != nil {
		t.Fatal(err)
	}
	if page.Flavor != xds.FlavorGRPC || !page.MTLS || !slices.Equal(page.Identities, []string{"spiffe://bookinfo/productpage"}) {
		t.Errorf("flavour %q, mTLS %v, identities %v", page.Flavor, page.MTLS, page.Identities)
	}
	// The plane issues the certificate and serves it over SDS, for the
	// agent that writes the files gRPC's certificate provider reads.
	if got := page.SecretNames(); !slices.Equal(got, []string{xds.SecretIdentity, xds.SecretMeshCA}) {
		t.Errorf("secret names %v", got)
	}
	want := map[resource.Type][]string{
		resource.ListenerType: {"details", "grpc/server?xds.resource.listening_address=10.0.0.1:9080", "reviews"},
		resource.RouteType:    {"details", "reviews"},
		resource.ClusterType:  {"details", "reviews"},
		resource.EndpointType: {"details", "reviews"},
	}
	for typ, names := range want {
		if got := resourceNames(page.Resources[typ]); !slices.Equal(got, names) {
			t.Errorf("%s: %v, want %v", typ, got, names)
		}
		if page.TypeHashes[typ] == "" {
			t.Errorf("%s: no type hash", typ)
		}
	}

	// reviews-v2 listens on IPv6.
	v2, err := xds.TranslateProxy(idx, dataplane("reviews-v2"), xds.Options{Flavor: xds.FlavorGRPC})
	if err != nil {
		t.Fatal(err)
	}
	if got := resourceNames(v2.Resources[resource.ListenerType]); !slices.Contains(got, "grpc/server?xds.resource.listening_address=[fd00::4]:9083") {
		t.Errorf("reviews-v2 listeners %v", got)
	}
	if got := xds.GRPCServerListenerName("fd00::4", 9083); got != fmt.Sprintf(xds.GRPCServerListenerTemplate, "[fd00::4]:9083") {
		t.Errorf("GRPCServerListenerName = %q", got)
	}

	// The endpoints are those of the Envoy flavour, the very same value.
	envoy, err := xds.TranslateProxy(idx, dataplane("productpage-v1"), xds.Options{})
	if err != nil {
		t.Fatal(err)
	}
	grpcCLA := page.Resources[resource.EndpointType][1].(*endpointv3.ClusterLoadAssignment)
	if envoyCLA := envoy.Resources[resource.EndpointType][1]; envoyCLA != grpcCLA {
		t.Errorf("reviews endpoints: the gRPC and Envoy flavours hold different values")
	}
	if n := len(grpcCLA.GetEndpoints()[0].GetLbEndpoints()); n != 2 || grpcCLA.GetEndpoints()[0].GetLoadBalancingWeight().GetValue() == 0 {
		t.Errorf("reviews endpoints: %d in a locality of weight %d, want 2 in a weighted one", n, grpcCLA.GetEndpoints()[0].GetLoadBalancingWeight().GetValue())
	}
	if page.Hash == envoy.Hash {
		t.Error("the gRPC and Envoy flavours have the same hash")
	}

	// Same input, byte-identical output, from a fresh Index.
	again, err := xds.Translate(set, xds.Options{Flavor: xds.FlavorGRPC})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range again {
		if p.NodeID != page.NodeID {
			continue
		}
		a, err := xds.MarshalProxy(page, xds.FormatJSON)
		if err != nil {
			t.Fatal(err)
		}
		b, err := xds.MarshalProxy(p, xds.FormatJSON)
		if err != nil {
			t.Fatal(err)
		}
		if p.Hash != page.Hash || !bytes.Equal(a, b) {
			t.Errorf("translations differ:\n%s", cmp.Diff(string(a), string(b)))
		}
	}
}

func resourceNames(rs []types.Resource) []string {
	names := make([]string, len(rs))
	for i, r := range rs {
		names[i] = cache.GetResourceName(r)
	}
	return names
}

// Check knows where each flavour takes its certificates from: it rejects
// SDS in a gRPC proxy (gRPC would NACK it), certificate providers in an
// Envoy proxy, and certificate providers without mTLS.
func TestGRPCCheckTLS(t *testing.T) {
	t.Parallel()
	set := schematest.Load(t, os.DirFS(filepath.Join("testdata/grpc", "bookinfo", "policies")))
	proxies, err := xds.Translate(set, xds.Options{})
	if err != nil {
		t.Fatal(err)
	}
	envoy := proxies[0]
	asGRPC := *envoy
	asGRPC.Flavor = xds.FlavorGRPC
	if err := xds.Check(&asGRPC); err == nil || !strings.Contains(err.Error(), "certificate provider") {
		t.Errorf("Envoy resources (SDS) in a gRPC proxy: %v", err)
	}
	grpcProxies, err := xds.Translate(set, xds.Options{Flavor: xds.FlavorGRPC})
	if err != nil {
		t.Fatal(err)
	}
	g := grpcProxies[0]
	asEnvoy := *g
	asEnvoy.Flavor = xds.FlavorEnvoy
	if err := xds.Check(&asEnvoy); err == nil || !strings.Contains(err.Error(), "certificate provider") {
		t.Errorf("gRPC resources (certificate providers) in an Envoy proxy: %v", err)
	}
	plain := *g
	plain.MTLS = false
	if err := xds.Check(&plain); err == nil || !strings.Contains(err.Error(), "without mTLS") {
		t.Errorf("certificate providers without mTLS: %v", err)
	}
}

// A mesh served over a real ADS server to gRPC-Go's own xDS server and
// client: the decisive test of the gRPC flavour. Without mTLS, permissions
// have no effect and any client gets through.
func TestGRPCDataPlane(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	lis := listen(t)
	// The only permission lets nobody in: it is not enforced without mTLS.
	d := newDataPlane(ctx, t, fmt.Sprintf(`
type: Dataplane
mesh: default
name: backend-1
networking:
  address: 127.0.0.1
  inbound:
    - port: %d
      tags:
        service: backend
        protocol: grpc
---
type: Dataplane
mesh: default
name: web-1
networking:
  address: 127.0.0.1
  inbound:
    - port: 1
      tags:
        service: web
  outbound:
    - port: 10001
      service: backend
    - port: 10002
      service: search
---
type: TrafficPermission
mesh: default
name: nobody-to-backend
sources:
  - match:
      service: nobody
destinations:
  - match:
      service: backend
`, port(lis)))
	d.serve(ctx, "default.backend-1", lis)
	web := d.dial("default.web-1", "backend")
	d.waitFor(ctx, web, codes.OK)
	// No dataplane provides search: its endpoints are empty, which gRPC
	// accepts, and calls fail.
	search := d.dial("default.web-1", "search")
	d.waitFor(ctx, search, codes.Unavailable)
	d.noNACKs(ctx)
}

// With mTLS, every connection is authenticated by certificates from the
// mesh CA, read from files by gRPC's file_watcher provider, and the server
// enforces TrafficPermission by the caller's SPIFFE id.
func TestGRPCDataPlaneMTLS(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	lis := listen(t)
	d := newDataPlane(ctx, t, secureMesh(port(lis))+`
---
type: TrafficPermission
mesh: secure
name: web-to-backend
sources:
  - match:
      service: web
destinations:
  - match:
      service: backend
`)
	d.serve(ctx, "secure.backend-1", lis)
	web := d.dial("secure.web-1", "backend")
	batch := d.dial("secure.batch-1", "backend")
	d.waitFor(ctx, web, codes.OK)
	d.waitFor(ctx, batch, codes.PermissionDenied)
	d.noNACKs(ctx)

	// A client that does not present a certificate is not let in at all.
	plain, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
	defer rcancel()
	if _, err := healthpb.NewHealthClient(plain).Check(rctx, &healthpb.HealthCheckRequest{}); status.Code(err) != codes.Unavailable {
		t.Errorf("plaintext client: %v, want Unavailable", err)
	}
}

// secureMesh is a mesh with mTLS where web-1 and batch-1 call backend-1, a
// gRPC server on port.
func secureMesh(port int) string {
	return fmt.Sprintf(`
type: Mesh
name: secure
mtls:
  enabled: true
  ca:
    builtin: {}
---
type: Dataplane
mesh: secure
name: backend-1
networking:
  address: 127.0.0.1
  inbound:
    - port: %d
      tags:
        service: backend
        protocol: grpc
---
type: Dataplane
mesh: secure
name: web-1
networking:
  address: 127.0.0.1
  inbound:
    - port: 1
      tags:
        service: web
  outbound:
    - port: 10001
      service: backend
---
type: Dataplane
mesh: secure
name: batch-1
networking:
  address: 127.0.0.1
  inbound:
    - port: 2
      tags:
        service: batch
  outbound:
    - port: 10001
      service: backend
`, port)
}

// MeshTrafficPermission decides on the inbounds it selects, in place of the
// legacy TrafficPermissions: the more specific policy allows web, the
// mesh-wide one denies everyone else, and the legacy permission that allows
// batch no longer applies to backend.
func TestGRPCDataPlaneMeshTrafficPermission(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	lis := listen(t)
	d := newDataPlane(ctx, t, secureMesh(port(lis))+`
---
type: TrafficPermission
mesh: secure
name: batch-to-backend
sources:
  - match:
      service: batch
destinations:
  - match:
      service: backend
---
type: MeshTrafficPermission
mesh: secure
name: deny-all
spec:
  from:
    - targetRef: {kind: Mesh}
      default: {action: Deny}
---
type: MeshTrafficPermission
mesh: secure
name: backend
spec:
  targetRef: {kind: MeshService, name: backend}
  from:
    - targetRef: {kind: MeshService, name: web}
      default: {action: AllowWithShadowDeny}
`)
	d.serve(ctx, "secure.backend-1", lis)
	web := d.dial("secure.web-1", "backend")
	batch := d.dial("secure.batch-1", "backend")
	d.waitFor(ctx, web, codes.OK)
	d.waitFor(ctx, batch, codes.PermissionDenied)
	d.noNACKs(ctx)
	// gRPC has no shadow rules: the proxy says what it drops.
	if got := d.proxies["secure.backend-1"].Unsupported; len(got) != 1 || !strings.Contains(got[0], "AllowWithShadowDeny") {
		t.Errorf("backend-1 unsupported = %q, want the shadow deny named", got)
	}
	if got := d.proxies["secure.web-1"].Unsupported; len(got) != 0 {
		t.Errorf("web-1 unsupported = %q, want none", got)
	}
}

// dataPlane is one translated mesh published by a real ADS server on
// 127.0.0.1, with what gRPC applications of the mesh need to reach it.
type dataPlane struct {
	t         *testing.T
	server    *ads.Server
	xdsAddr   string
	proxies   map[string]*xds.Proxy
	meshes    map[string]*schema.Mesh
	authority *ca.Authority
	certDir   string
}

// newDataPlane loads policies (one YAML file), translates them for gRPC and
// publishes them.
func newDataPlane(ctx context.Context, t *testing.T, policies string) *dataPlane {
	t.Helper()
	set := schematest.Load(t, fstest.MapFS{"policies.yaml": {Data: []byte(policies)}})
	proxies, err := xds.Translate(set, xds.Options{Flavor: xds.FlavorGRPC})
	if err != nil {
		t.Fatal(err)
	}
	server, xdsAddr := adstest.Serve(t, ads.Config{})
	d := &dataPlane{
		t: t, server: server, xdsAddr: xdsAddr,
		proxies: make(map[string]*xds.Proxy), meshes: make(map[string]*schema.Mesh),
		authority: &ca.Authority{StateDir: t.TempDir()}, certDir: t.TempDir(),
	}
	for _, p := range proxies {
		d.proxies[p.NodeID] = p
	}
	for _, m := range set.Meshes {
		d.meshes[m.Name] = m
	}
	if _, err := server.Publish(ctx, "0123456789abcdef", proxies, d.secrets); err != nil {
		t.Fatal(err)
	}
	return d
}

// secrets are the SDS secrets of p, from the plane's authority.
func (d *dataPlane) secrets(p *xds.Proxy) ([]types.Resource, string, error) {
	return d.authority.Secrets(p, d.meshes[p.Mesh].MTLS.CA)
}

// bootstrap is the gRPC xDS bootstrap of a node, as gitmesh generates it,
// with certificate files written from the certificate the plane issued
// (and serves over SDS) when its mesh has mTLS.
func (d *dataPlane) bootstrap(node string) []byte {
	d.t.Helper()
	p := d.proxies[node]
	if p == nil {
		d.t.Fatalf("no proxy %s", node)
	}
	dir := filepath.Join(d.certDir, node)
	if p.MTLS {
		c, err := d.authority.Issue(p.NodeID, p.Mesh, d.meshes[p.Mesh].MTLS.CA, p.Identities)
		if err != nil {
			d.t.Fatal(err)
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			d.t.Fatal(err)
		}
		for name, b := range map[string][]byte{"cert.pem": c.CertPEM, "key.pem": c.KeyPEM, "ca.pem": c.CAPEM} {
			if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
				d.t.Fatal(err)
			}
		}
	}
	b, err := json.Marshal(map[string]any{
		"xds_servers": []any{map[string]any{
			"server_uri":      d.xdsAddr,
			"channel_creds":   []any{map[string]any{"type": "insecure"}},
			"server_features": []string{"xds_v3"},
		}},
		"node": map[string]any{
			"id":       node,
			"cluster":  p.Mesh,
			"metadata": map[string]any{"gitmesh.io/flavor": "grpc"},
		},
		"server_listener_resource_name_template": xds.GRPCServerListenerTemplate,
		"certificate_providers": map[string]any{xds.CertProviderInstance: map[string]any{
			"plugin_name": "file_watcher",
			"config": map[string]any{
				"certificate_file":    filepath.Join(dir, "cert.pem"),
				"private_key_file":    filepath.Join(dir, "key.pem"),
				"ca_certificate_file": filepath.Join(dir, "ca.pem"),
				"refresh_interval":    "600s",
			},
		}},
	})
	if err != nil {
		d.t.Fatal(err)
	}
	return b
}

// serve runs gRPC-Go's xDS server for node on lis, serving the health
// service, and waits until it serves: it has accepted its listener.
func (d *dataPlane) serve(ctx context.Context, node string, lis net.Listener) {
	d.t.Helper()
	d.serveWith(ctx, node, lis, health.NewServer())
}

// serveWith is serve with h as the health service.
func (d *dataPlane) serveWith(ctx context.Context, node string, lis net.Listener, h healthpb.HealthServer) {
	d.t.Helper()
	creds, err := xdscreds.NewServerCredentials(xdscreds.ServerOptions{FallbackCreds: insecure.NewCredentials()})
	if err != nil {
		d.t.Fatal(err)
	}
	modes := make(chan grpcxds.ServingModeChangeArgs, 16)
	gs, err := grpcxds.NewGRPCServer(
		grpc.Creds(creds),
		grpcxds.BootstrapContentsForTesting(d.bootstrap(node)),
		grpcxds.ServingModeCallback(func(_ net.Addr, args grpcxds.ServingModeChangeArgs) {
			select {
			case modes <- args:
			default:
			}
		}),
	)
	if err != nil {
		d.t.Fatal(err)
	}
	healthpb.RegisterHealthServer(gs, h)
	served := make(chan error, 1)
	go func() { served <- gs.Serve(lis) }()
	d.t.Cleanup(func() {
		gs.Stop()
		if err := <-served; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			d.t.Errorf("%s: serve: %v", node, err)
		}
	})
	var last error
	for {
		select {
		case m := <-modes:
			if m.Mode == connectivity.ServingModeServing {
				return
			}
			last = m.Err
		case <-ctx.Done():
			st, _ := d.server.StatusOf(node)
			d.t.Fatalf("%s: not serving (last error: %v; xds status %+v)", node, last, st)
		}
	}
}

// dial connects node's gRPC xDS client to xds:///<service>.
func (d *dataPlane) dial(node, service string) *grpc.ClientConn {
	d.t.Helper()
	r, err := grpcxds.NewXDSResolverWithConfigForTesting(d.bootstrap(node))
	if err != nil {
		d.t.Fatal(err)
	}
	creds, err := xdscreds.NewClientCredentials(xdscreds.ClientOptions{FallbackCreds: insecure.NewCredentials()})
	if err != nil {
		d.t.Fatal(err)
	}
	cc, err := grpc.NewClient("xds:///"+service, grpc.WithResolvers(r), grpc.WithTransportCredentials(creds))
	if err != nil {
		d.t.Fatal(err)
	}
	d.t.Cleanup(func() { cc.Close() })
	return cc
}

// waitFor calls the health service through cc until the call ends with
// code want: an ACK does not mean the client has switched yet.
func (d *dataPlane) waitFor(ctx context.Context, cc *grpc.ClientConn, want codes.Code) {
	d.t.Helper()
	client := healthpb.NewHealthClient(cc)
	var err error
	for {
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err = client.Check(rctx, &healthpb.HealthCheckRequest{})
		cancel()
		if status.Code(err) == want {
			return
		}
		select {
		case <-ctx.Done():
			d.t.Fatalf("call through %s: %v, want code %s", cc.CanonicalTarget(), err, want)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// noNACKs waits until every node has answered what it was sent, then
// fails the test if any node rejected anything.
func (d *dataPlane) noNACKs(ctx context.Context) {
	d.t.Helper()
	for {
		answered := true
		statuses := d.server.Status()
		for _, st := range statuses {
			for _, typ := range st.Types {
				if typ.Sent != "" && typ.Acked != typ.Sent && typ.LastNACK == nil {
					answered = false
				}
			}
		}
		if answered {
			for _, st := range statuses {
				for _, typ := range st.Types {
					if typ.LastNACK != nil {
						d.t.Errorf("%s NACKed %s: %s", st.NodeID, typ.TypeURL, typ.LastNACK.Error)
					}
				}
			}
			return
		}
		select {
		case <-ctx.Done():
			d.t.Fatalf("nodes did not answer what they were sent: %+v", statuses)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	return lis
}

func port(lis net.Listener) int { return lis.Addr().(*net.TCPAddr).Port }
