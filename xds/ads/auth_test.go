package ads

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/gitmesh/gitmesh/xds/servertls"
	"github.com/gitmesh/gitmesh/xds/token"
)

// startSecured serves a Server with tokens from stateDir and TLS from the
// control-plane CA there, logging to log (nil: nowhere); it returns the
// server and its address.
func startSecured(t *testing.T, stateDir string, log *slog.Logger) (*Server, string) {
	t.Helper()
	v, err := token.NewVerifier(stateDir, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg, _, err := servertls.Auto(stateDir, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{Authenticate: v.Authenticate, TLS: cfg, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, lis) }()
	t.Cleanup(func() { cancel(); <-done })
	return s, lis.Addr().String()
}

func issue(t *testing.T, stateDir, mesh, name string, iat time.Time, ttl time.Duration) (string, string) {
	t.Helper()
	key, err := token.LoadOrCreateKey(stateDir)
	if err != nil {
		t.Fatal(err)
	}
	id, err := token.NewID()
	if err != nil {
		t.Fatal(err)
	}
	tok, err := token.Issue(key, token.Claims{Mesh: mesh, Name: name, IssuedAt: iat.Unix(), Expires: iat.Add(ttl).Unix(), ID: id})
	if err != nil {
		t.Fatal(err)
	}
	return tok, id
}

func dialTLS(t *testing.T, addr, stateDir string) *grpc.ClientConn {
	t.Helper()
	cfg, err := servertls.ClientConfig(stateDir + "/" + servertls.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// firstAnswer opens an ADS stream as node with the token (none when ""),
// subscribes to clusters and returns the first response or error.
func firstAnswer(t *testing.T, conn *grpc.ClientConn, tok, node string) (*discoverygrpc.DiscoveryResponse, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	t.Cleanup(cancel)
	if tok != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
	}
	st, err := discoverygrpc.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		return nil, err
	}
	// A stream refused at once fails Send with io.EOF; Recv has the status.
	_ = st.Send(&discoverygrpc.DiscoveryRequest{Node: &corev3.Node{Id: node, UserAgentName: "envoy"}, TypeUrl: resource.ClusterType})
	return st.Recv()
}

func TestTokensDecideWhoReceivesWhat(t *testing.T) {
	dir := t.TempDir()
	s, addr := startSecured(t, dir, nil)
	publish(t, s, commit1, nil, basicProxy(t, "demo.web-1"), basicProxy(t, "demo.web-2", "other"))
	conn := dialTLS(t, addr, dir)
	now := time.Now()

	web1, _ := issue(t, dir, "demo", "web-1", now, time.Hour)
	resp, err := firstAnswer(t, conn, web1, "demo.web-1")
	if err != nil {
		t.Fatalf("valid token: %v", err)
	}
	if got := names(t, resp); len(got) != 1 || got[0] != "backend" {
		t.Errorf("clusters %v, want [backend]", got)
	}

	cases := []struct {
		name, tok, node string
		code            codes.Code
		msg             string
	}{
		{"no token", "", "demo.web-1", codes.Unauthenticated, "no dataplane token"},
		{"another dataplane's token", web1, "demo.web-2", codes.PermissionDenied, `node "demo.web-2" is not the node "demo.web-1"`},
		{"expired", func() string { tok, _ := issue(t, dir, "demo", "web-2", now.Add(-2*time.Hour), time.Hour); return tok }(),
			"demo.web-2", codes.Unauthenticated, "token expired"},
		{"forged", func() string { tok, _ := issue(t, t.TempDir(), "demo", "web-2", now, time.Hour); return tok }(),
			"demo.web-2", codes.Unauthenticated, "signature does not verify"},
		{"garbage", "not-a-token", "demo.web-2", codes.Unauthenticated, "malformed token"},
	}
	for _, c := range cases {
		_, err := firstAnswer(t, conn, c.tok, c.node)
		if status.Code(err) != c.code || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: %v, want %s with %q", c.name, err, c.code, c.msg)
		}
		if c.tok != "" && strings.Contains(err.Error(), c.tok) {
			t.Errorf("%s: the error shows the token", c.name)
		}
	}

	// A revoked token is refused from the next stream on.
	web2, id2 := issue(t, dir, "demo", "web-2", now, time.Hour)
	if _, err := firstAnswer(t, conn, web2, "demo.web-2"); err != nil {
		t.Fatalf("before revocation: %v", err)
	}
	if err := token.Revoke(dir, id2); err != nil {
		t.Fatal(err)
	}
	if _, err := firstAnswer(t, conn, web2, "demo.web-2"); status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "token revoked") {
		t.Errorf("revoked: %v, want Unauthenticated, token revoked", err)
	}
	if _, err := firstAnswer(t, conn, web1, "demo.web-1"); err != nil {
		t.Errorf("another token after a revocation: %v", err)
	}

	// A later request on the stream may not switch nodes.
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+web1)
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	st, err := discoverygrpc.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&discoverygrpc.DeltaDiscoveryRequest{Node: &corev3.Node{Id: "demo.web-1", UserAgentName: "envoy"}, TypeUrl: resource.ClusterType}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); err != nil {
		t.Fatalf("delta: %v", err)
	}
	if err := st.Send(&discoverygrpc.DeltaDiscoveryRequest{Node: &corev3.Node{Id: "demo.web-2"}, TypeUrl: resource.EndpointType}); err != nil {
		t.Fatal(err)
	}
	for {
		if _, err = st.Recv(); err != nil {
			break
		}
	}
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("switching nodes: %v, want PermissionDenied", err)
	}
}

func TestPlaintextRefusedWhenTLSIsOn(t *testing.T) {
	dir := t.TempDir()
	_, addr := startSecured(t, dir, nil)
	tok, _ := issue(t, dir, "demo", "web-1", time.Now(), time.Hour)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := firstAnswer(t, conn, tok, "demo.web-1"); status.Code(err) != codes.Unavailable {
		t.Errorf("plaintext: %v, want Unavailable", err)
	}
}

// Every refused call gives one warn line with the reason, the caller's
// address and the node the request names when known; the log never holds
// a token.
func TestRefusedCallsAreLogged(t *testing.T) {
	dir := t.TempDir()
	logs := newLogRecords()
	s, addr := startSecured(t, dir, slog.New(logs))
	publish(t, s, commit1, nil, basicProxy(t, "demo.web-1"), basicProxy(t, "demo.web-2"))
	conn := dialTLS(t, addr, dir)
	now := time.Now()
	web1, _ := issue(t, dir, "demo", "web-1", now, time.Hour)
	forged, _ := issue(t, t.TempDir(), "demo", "web-2", now, time.Hour)
	expired, _ := issue(t, dir, "demo", "web-2", now.Add(-2*time.Hour), time.Hour)
	const garbage = "not-a-token-but-a-secret"
	tokens := []string{web1, forged, expired, garbage}

	fetch := func(tok, node string) error {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
		_, err := clusterservice.NewClusterDiscoveryServiceClient(conn).FetchClusters(ctx,
			&discoverygrpc.DiscoveryRequest{Node: &corev3.Node{Id: node}, TypeUrl: resource.ClusterType})
		return err
	}
	stream := func(tok, node string) error { _, err := firstAnswer(t, conn, tok, node); return err }
	for i, c := range []struct {
		name      string
		call      func(tok, node string) error
		tok, node string
		code      codes.Code
		reason    string
		wantNode  string // the node attribute, "" for none
	}{
		{"no token", stream, "", "demo.web-1", codes.Unauthenticated, "no dataplane token", ""},
		{"garbage", stream, garbage, "demo.web-2", codes.Unauthenticated, "malformed token", ""},
		{"forged", stream, forged, "demo.web-2", codes.Unauthenticated, "signature does not verify", ""},
		{"expired", stream, expired, "demo.web-2", codes.Unauthenticated, "token expired", ""},
		{"another node's stream", stream, web1, "demo.web-2", codes.PermissionDenied, `node "demo.web-2" is not the node "demo.web-1"`, "demo.web-2"},
		{"another node's fetch", fetch, web1, "demo.web-2", codes.PermissionDenied, `node "demo.web-2" is not the node "demo.web-1"`, "demo.web-2"},
		{"garbage fetch", fetch, garbage, "demo.web-2", codes.Unauthenticated, "malformed token", "demo.web-2"},
	} {
		if err := c.call(c.tok, c.node); status.Code(err) != c.code {
			t.Fatalf("%s: %v, want %s", c.name, err, c.code)
		}
		// The refusal is logged before the client hears of it.
		lines := logs.lines(slog.LevelWarn, "xds call refused")
		if len(lines) != i+1 {
			t.Fatalf("%s: %d refusal lines in all, want %d", c.name, len(lines), i+1)
		}
		l := lines[i]
		if l.attrs["code"] != c.code.String() || !strings.Contains(l.attrs["reason"], c.reason) ||
			!strings.HasPrefix(l.attrs["peer"], "127.0.0.1:") || l.attrs["node"] != c.wantNode || l.attrs["method"] == "" {
			t.Errorf("%s: logged %v, want code %s, reason %q, a peer address, node %q", c.name, l.attrs, c.code, c.reason, c.wantNode)
		}
		if c.code == codes.PermissionDenied && l.attrs["allowed"] != "demo.web-1" {
			t.Errorf("%s: logged %v, want the node the token allows", c.name, l.attrs)
		}
	}

	// A served stream logs no refusal.
	if _, err := firstAnswer(t, conn, web1, "demo.web-1"); err != nil {
		t.Fatal(err)
	}
	text := logs.text()
	for _, tok := range tokens {
		if strings.Contains(text, tok) {
			t.Errorf("the log holds a token:\n%s", text)
		}
		// Nor any of its three parts (header, claims, signature).
		for _, part := range strings.Split(tok, ".") {
			if len(part) >= 8 && strings.Contains(text, part) {
				t.Errorf("the log holds part %q of a token", part)
			}
		}
	}
	if strings.Contains(text, "Bearer ey") || strings.Contains(text, "Bearer "+garbage) {
		t.Errorf("the log holds an authorization header:\n%s", text)
	}
	if n := len(logs.lines(slog.LevelWarn, "xds call refused")); n != 7 {
		t.Errorf("%d refusal lines, want 7", n)
	}
}
