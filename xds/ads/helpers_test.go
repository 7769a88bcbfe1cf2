package ads

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/gitmesh/gitmesh/xds"
)

// Test commits: 40 hex digits, as git gives them.
const (
	commit1 = "1111111111111111111111111111111111111111"
	commit2 = "2222222222222222222222222222222222222222"
	commit3 = "3333333333333333333333333333333333333333"
	commit4 = "4444444444444444444444444444444444444444"
)

// wait bounds every wait in these tests.
const wait = 5 * time.Second

// startServer serves a new Server on 127.0.0.1 until the test ends.
func startServer(t *testing.T) (*Server, *grpc.ClientConn) {
	t.Helper()
	return startWith(t, Config{}, nil)
}

// startWith is startServer with cfg, and setup (when not nil) called on the
// Server before it serves.
func startWith(t *testing.T, cfg Config, setup func(*Server)) (*Server, *grpc.ClientConn) {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if setup != nil {
		setup(s)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, lis) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(wait):
			t.Error("Serve did not return after its context ended")
		}
	})
	return s, conn
}

// sotwStream is an ADS stream or a separate xDS service's stream.
type sotwStream interface {
	Send(*discoverygrpc.DiscoveryRequest) error
	Recv() (*discoverygrpc.DiscoveryResponse, error)
}

// client is a raw state-of-the-world xDS client for one node.
type client struct {
	t     *testing.T
	node  string
	st    sotwStream
	resps chan *discoverygrpc.DiscoveryResponse
	count atomic.Int64 // responses received
	// as is the node message sent with every request; nil sends the node id
	// with user agent "envoy".
	as *corev3.Node
	// close ends the stream and waits for its receiver (again: no-op).
	close func()
}

func newClient(t *testing.T, node string, open func(context.Context) (sotwStream, error)) *client {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	st, err := open(ctx)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	c := &client{t: t, node: node, st: st, resps: make(chan *discoverygrpc.DiscoveryResponse, 64)}
	done := receive(st, c.resps, &c.count)
	c.close = func() { cancel(); <-done }
	t.Cleanup(c.close)
	return c
}

// receive reads st until it fails (its context is cancelled), counting every
// response and keeping those out has room for: a storm is counted, not kept,
// and the loop never blocks. The returned channel closes when it stops.
func receive[T any](st interface{ Recv() (T, error) }, out chan<- T, count *atomic.Int64) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			r, err := st.Recv()
			if err != nil {
				return
			}
			count.Add(1)
			select {
			case out <- r:
			default:
			}
		}
	}()
	return done
}

func adsClient(t *testing.T, conn *grpc.ClientConn, node string) *client {
	return newClient(t, node, func(ctx context.Context) (sotwStream, error) {
		return discoverygrpc.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	})
}

func (c *client) send(req *discoverygrpc.DiscoveryRequest) {
	c.t.Helper()
	req.Node = c.as
	if req.Node == nil {
		req.Node = &corev3.Node{Id: c.node, UserAgentName: "envoy"}
	}
	if err := c.st.Send(req); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

func (c *client) subscribe(typeURL string, names ...string) {
	c.send(&discoverygrpc.DiscoveryRequest{TypeUrl: typeURL, ResourceNames: names})
}

func (c *client) recv() *discoverygrpc.DiscoveryResponse {
	c.t.Helper()
	select {
	case r := <-c.resps:
		return r
	case <-time.After(wait):
		c.t.Fatalf("%s: no response within %v", c.node, wait)
		return nil
	}
}

func (c *client) ack(r *discoverygrpc.DiscoveryResponse, names ...string) {
	c.send(&discoverygrpc.DiscoveryRequest{TypeUrl: r.GetTypeUrl(), VersionInfo: r.GetVersionInfo(),
		ResponseNonce: r.GetNonce(), ResourceNames: names})
}

func (c *client) nack(r *discoverygrpc.DiscoveryResponse, lastGood, msg string, names ...string) {
	c.send(&discoverygrpc.DiscoveryRequest{TypeUrl: r.GetTypeUrl(), VersionInfo: lastGood,
		ResponseNonce: r.GetNonce(), ResourceNames: names,
		ErrorDetail: &statuspb.Status{Code: 3, Message: msg}})
}

// responsesWithin counts the responses that arrive within d.
func (c *client) responsesWithin(d time.Duration) int64 {
	before := c.count.Load()
	time.Sleep(d)
	return c.count.Load() - before
}

// names of the resources in a response.
func names(t *testing.T, r *discoverygrpc.DiscoveryResponse) []string {
	t.Helper()
	var out []string
	for _, a := range r.GetResources() {
		m, err := a.UnmarshalNew()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, cachev3.GetResourceName(m))
	}
	slices.Sort(out)
	return out
}

// waitStatus polls Status until cond holds for node.
func waitStatus(t *testing.T, s *Server, node string, cond func(ProxyStatus) bool) ProxyStatus {
	t.Helper()
	deadline := time.Now().Add(wait)
	var last ProxyStatus
	for time.Now().Before(deadline) {
		for _, ps := range s.Status() {
			if ps.NodeID == node {
				last = ps
				if cond(ps) {
					return ps
				}
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("status of %s did not reach the expected state; last: %+v", node, last)
	return last
}

func typeStatus(ps ProxyStatus, typeURL string) TypeStatus {
	for _, ts := range ps.Types {
		if ts.TypeURL == typeURL {
			return ts
		}
	}
	return TypeStatus{TypeURL: typeURL}
}

// nextEvent returns the next event of the subscription.
func nextEvent(t *testing.T, events <-chan Event) Event {
	t.Helper()
	select {
	case e := <-events:
		return e
	case <-time.After(wait):
		t.Fatal("no event")
		return Event{}
	}
}

// logRecords is a slog.Handler that keeps every record, at every level.
type logRecords struct {
	mu    *sync.Mutex
	recs  *[]slog.Record
	attrs []slog.Attr
}

func newLogRecords() *logRecords { return &logRecords{mu: &sync.Mutex{}, recs: &[]slog.Record{}} }

func (h *logRecords) Enabled(context.Context, slog.Level) bool { return true }

func (h *logRecords) Handle(_ context.Context, r slog.Record) error {
	r = r.Clone()
	r.AddAttrs(h.attrs...)
	h.mu.Lock()
	defer h.mu.Unlock()
	*h.recs = append(*h.recs, r)
	return nil
}

func (h *logRecords) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append(slices.Clone(h.attrs), as...)
	return &c
}

func (h *logRecords) WithGroup(string) slog.Handler { return h }

// logLine is a record's level, message and attributes as text.
type logLine struct {
	level slog.Level
	msg   string
	attrs map[string]string
}

// lines returns the records at level or above whose message is msg (any
// message when "").
func (h *logRecords) lines(level slog.Level, msg string) []logLine {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []logLine
	for _, r := range *h.recs {
		if r.Level < level || (msg != "" && r.Message != msg) {
			continue
		}
		l := logLine{level: r.Level, msg: r.Message, attrs: map[string]string{}}
		r.Attrs(func(a slog.Attr) bool {
			l.attrs[a.Key] = a.Value.String()
			return true
		})
		out = append(out, l)
	}
	return out
}

// text is every record, attributes included, as one string.
func (h *logRecords) text() string {
	var b strings.Builder
	for _, l := range h.lines(slog.LevelDebug, "") {
		fmt.Fprintf(&b, "%s %s %v\n", l.level, l.msg, l.attrs)
	}
	return b.String()
}

// --- resources ---

func adsSource() *corev3.ConfigSource {
	return &corev3.ConfigSource{ResourceApiVersion: corev3.ApiVersion_V3,
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}
}

func edsCluster(name string) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 name,
		ConnectTimeout:       durationpb.New(time.Second),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsSource()},
	}
}

// mtlsCluster is an EDS cluster presenting the proxy's identity over SDS.
func mtlsCluster(t *testing.T, name string) *clusterv3.Cluster {
	c := edsCluster(name)
	tlsCtx := &tlsv3.UpstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: xds.SecretIdentity, SdsConfig: adsSource()}},
		ValidationContextType: &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{
			ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: xds.SecretMeshCA, SdsConfig: adsSource()}},
	}}
	c.TransportSocket = &corev3.TransportSocket{Name: "envoy.transport_sockets.tls",
		ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(t, tlsCtx)}}
	return c
}

func cla(name string, port uint32) *endpointv3.ClusterLoadAssignment {
	return &endpointv3.ClusterLoadAssignment{
		ClusterName: name,
		Endpoints: []*endpointv3.LocalityLbEndpoints{{
			LbEndpoints: []*endpointv3.LbEndpoint{{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{
				Endpoint: &endpointv3.Endpoint{Address: socket("127.0.0.1", port)}}}},
		}},
	}
}

func tcpListener(t *testing.T, name string, port uint32, cluster string) *listenerv3.Listener {
	tp := &tcpproxyv3.TcpProxy{StatPrefix: name,
		ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: cluster}}
	return &listenerv3.Listener{
		Name:    name,
		Address: socket("127.0.0.1", port),
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
			Name:       "envoy.filters.network.tcp_proxy",
			ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(t, tp)},
		}}}},
	}
}

func socket(ip string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}}
}

func mustAny(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// newProxy groups resources by type and hashes them as the translator does.
func newProxy(t *testing.T, node string, rs ...types.Resource) *xds.Proxy {
	t.Helper()
	mesh, name, _ := strings.Cut(node, ".")
	p := &xds.Proxy{NodeID: node, Mesh: mesh, Dataplane: name, Flavor: xds.FlavorEnvoy,
		Resources: map[resource.Type][]types.Resource{}}
	h := sha256.New()
	for _, r := range rs {
		typ := "type.googleapis.com/" + string(r.ProtoReflect().Descriptor().FullName())
		p.Resources[typ] = append(p.Resources[typ], r)
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		h.Write([]byte(typ))
		h.Write(b)
	}
	p.Hash = hex.EncodeToString(h.Sum(nil))
	return p
}

// basicProxy is a listener to an EDS cluster and its endpoints, plus more
// EDS clusters.
func basicProxy(t *testing.T, node string, clusters ...string) *xds.Proxy {
	rs := []types.Resource{tcpListener(t, "outbound:127.0.0.1:10001", 10001, "backend"),
		edsCluster("backend"), cla("backend", 8080)}
	for i, c := range clusters {
		rs = append(rs, edsCluster(c), cla(c, uint32(9000+i)))
	}
	return newProxy(t, node, rs...)
}

func versionOf(commit string, p *xds.Proxy) string { return commit[:12] + "-" + p.Hash[:12] }

// forGRPC marks p as translated for proxyless gRPC and returns it.
func forGRPC(p *xds.Proxy) *xds.Proxy {
	p.Flavor = xds.FlavorGRPC
	return p
}
