package plane

import (
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/gitmesh/gitmesh/internal/logtest"
	"github.com/gitmesh/gitmesh/schema"
	"github.com/gitmesh/gitmesh/xds"
	"github.com/gitmesh/gitmesh/xds/ads"
	"github.com/gitmesh/gitmesh/xds/adstest"
)

const webNode = "default.web-01"

// grpcClient is an ADS client that presents itself as gRPC-Go does and
// asks for the client resources of service by name.
func grpcClient(service string) adstest.Options {
	return adstest.Options{UserAgent: "gRPC Go", Names: map[string][]string{
		resource.ListenerType: {service}, resource.RouteType: {service},
		resource.ClusterType: {service}, resource.EndpointType: {service},
	}}
}

// listeners are the listeners c accepted last.
func listeners(t *testing.T, c *adstest.Client) []*listenerv3.Listener {
	t.Helper()
	var out []*listenerv3.Listener
	for _, a := range c.Resources(resource.ListenerType) {
		l := &listenerv3.Listener{}
		if err := a.UnmarshalTo(l); err != nil {
			t.Fatal(err)
		}
		out = append(out, l)
	}
	return out
}

// A node is served nothing until one of its streams connects; it is then
// served the proxy of the flavour that stream says it runs (here gRPC), of
// the served commit, and its client gets the gRPC resources it asked for by
// name.
func TestNodeServedTheFlavourItRuns(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	setA := policiesA(t)
	f.apply(t, commitA, setA)
	if px := f.translation(webNode); px != nil {
		t.Fatalf("%s served %q before it connected, want nothing", webNode, px.Flavor)
	}

	web := f.dialWith(t, webNode, grpcClient("backend"))
	grpcWeb := f.last.Proxy(webNode, xds.FlavorGRPC)
	f.waitServed(t, webNode, grpcWeb)
	f.waitCommit(t, web, commitA)
	ls := listeners(t, web)
	if len(ls) != 1 || ls[0].GetName() != "backend" || ls[0].GetApiListener() == nil {
		t.Fatalf("gRPC client holds listeners %v, want the API listener backend", ls)
	}
	st := f.waitStatus(t, webNode, ads.ProxyStatus.InSync)
	if st.Flavor != xds.FlavorGRPC || st.Hash != grpcWeb.Hash || st.Commit != commitA {
		t.Errorf("status flavour %q hash %.12s commit %.4s, want the gRPC proxy at commit A", st.Flavor, st.Hash, st.Commit)
	}

	// An Envoy node beside it keeps Envoy's resources.
	backend := f.dial(t, backendNode)
	f.waitCommit(t, backend, commitA)
	var names []string
	for _, l := range listeners(t, backend) {
		names = append(names, l.GetName())
		if l.GetApiListener() != nil {
			t.Errorf("Envoy node got the API listener %s", l.GetName())
		}
	}
	if !slices.Contains(names, "outbound:127.0.0.1:20002") || f.translation(backendNode).Flavor != xds.FlavorEnvoy {
		t.Errorf("Envoy node holds listeners %v, want outbound:127.0.0.1:20002 among them", names)
	}

	// The next commits serve web-01 its gRPC proxy at once. Commit B does
	// not reach it: it gets no push.
	if res := f.apply(t, commitB, policiesB(t)); slices.Contains(res.Changed, webNode) {
		t.Errorf("commit B changed %v; want the two backends", res.Changed)
	}
	if px := f.translation(webNode); px.Flavor != xds.FlavorGRPC || px.Hash != grpcWeb.Hash {
		t.Errorf("%s served %q %.12s at commit B", webNode, px.Flavor, px.Hash)
	}
	// Going back to A serves it A's gRPC proxy, not the Envoy one A was
	// first served with.
	f.apply(t, commitA, policiesA(t))
	if px := f.translation(webNode); px.Flavor != xds.FlavorGRPC || px.Hash != grpcWeb.Hash {
		t.Errorf("%s served %q %.12s back at A, want the gRPC proxy", webNode, px.Flavor, px.Hash)
	}
}

// waitServed waits until the plane serves node px.
func (f *fixture) waitServed(t *testing.T, node string, px *xds.Proxy) {
	t.Helper()
	f.waitStatus(t, node, func(st ads.ProxyStatus) bool {
		return f.translation(node) == px && st.Hash == px.Hash
	})
}

// A flavour change is a new translation, not a rollback: a node that
// accepted its Envoy translation and then rejects its gRPC one is not put
// back on Envoy's. Once it accepts a commit whole as gRPC, a NACK of the
// next one puts it back on that gRPC translation.
func TestNACKRollbackStaysWithinTheFlavour(t *testing.T) {
	t.Parallel()
	f := newFixtureWith(t, rollingBack(true))
	envoy, _ := acceptA(t, f, adstest.Options{})
	envoyA := f.translation(backendNode)
	if envoyA.Flavor != xds.FlavorEnvoy {
		t.Fatalf("%s translated for %q, want envoy", backendNode, envoyA.Flavor)
	}
	f.waitAccepted(t, backendNode, envoyA)
	envoy.Close()

	// The node comes back as gRPC and rejects every listener.
	rejectAll := adstest.Options{UserAgent: "gRPC Go", Reject: func(resp *discoverygrpc.DiscoveryResponse) error {
		if resp.GetTypeUrl() == resource.ListenerType && resp.GetVersionInfo() != "" {
			return errors.New("no listener is good")
		}
		return nil
	}}
	bad := f.dialWith(t, backendNode, rejectAll)
	grpcA := f.last.Proxy(backendNode, xds.FlavorGRPC)
	f.waitServed(t, backendNode, grpcA)
	for {
		r := next(t, f.nacks, "rejection")
		if r.Version != listenerVersion(commitA, grpcA) {
			continue // of the Envoy listener sent before: stale
		}
		if r.Commit != commitA || r.RevertedTo != "" || r.RevertError != "" {
			t.Fatalf("rejection %+v, want commit A's gRPC listener, not put back on Envoy's", r)
		}
		break
	}
	if st, _ := f.server.StatusOf(backendNode); st.Hash != grpcA.Hash {
		t.Errorf("served %.12s after the NACK, want the gRPC translation %.12s", st.Hash, grpcA.Hash)
	}
	bad.Close()

	// As gRPC, it accepts A whole, then rejects B: back to A's gRPC
	// translation.
	good := f.dialWith(t, backendNode, adstest.Options{UserAgent: "gRPC Go", Reject: rejectListenersOf(commitB).Reject})
	f.waitCommit(t, good, commitA)
	f.waitStatus(t, backendNode, ads.ProxyStatus.InSync)
	f.waitAccepted(t, backendNode, grpcA)
	f.apply(t, commitB, policiesB(t))
	grpcB := f.translation(backendNode)
	for {
		r := next(t, f.nacks, "rejection of B")
		if r.Commit != commitB {
			continue
		}
		if r.Version != listenerVersion(commitB, grpcB) || r.RevertedTo != commitA {
			t.Fatalf("rejection %+v, want commit B's gRPC listener, put back on A", r)
		}
		break
	}
	st := f.waitStatus(t, backendNode, func(st ads.ProxyStatus) bool { return st.Hash == grpcA.Hash && st.InSync() })
	if st.Commit != commitA || st.Flavor != xds.FlavorGRPC {
		t.Errorf("status %+v, want A's gRPC translation", st)
	}
}

// waitAccepted waits until the plane records px as what node accepted.
func (f *fixture) waitAccepted(t *testing.T, node string, px *xds.Proxy) {
	t.Helper()
	f.waitStatus(t, node, func(ads.ProxyStatus) bool {
		f.plane.noteAccepted(node)
		f.plane.mu.Lock()
		defer f.plane.mu.Unlock()
		return f.plane.accepted[node].proxy == px
	})
}

// Flavour changes the subscription never delivered (here: made before Run
// subscribed) are found by Run's periodic look at the server's count. The
// node is first served as Envoy, then comes back as gRPC.
func TestLostFlavourChangesAreMadeUp(t *testing.T) {
	t.Parallel()
	f, run := newIdleFixture(t, nil)
	f.apply(t, commitA, policiesA(t))
	envoy := f.dial(t, webNode)
	f.waitCommit(t, envoy, commitA)
	envoy.Close()
	web := f.dialWith(t, webNode, grpcClient("backend"))
	f.waitStatus(t, webNode, func(st ads.ProxyStatus) bool { return st.Flavor == xds.FlavorGRPC })
	if px := f.translation(webNode); px.Flavor != xds.FlavorEnvoy {
		t.Fatalf("served %q without Run", px.Flavor)
	}
	run()
	f.waitServed(t, webNode, f.last.Proxy(webNode, xds.FlavorGRPC))
	f.waitCommit(t, web, commitA)
	if ls := listeners(t, web); len(ls) != 1 || ls[0].GetApiListener() == nil {
		t.Errorf("listeners %v, want the API listener", ls)
	}
}

// A node that runs a flavour its dataplane is not translated for keeps the
// proxy it has, and the plane says so.
func TestFlavourNotTranslated(t *testing.T) {
	t.Parallel()
	var logs logtest.Buffer
	f := newFixtureWith(t, func(cfg *Config) { cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil)) })
	f.builder = xds.NewBuilder(xds.BuilderOptions{Flavors: func(*schema.Dataplane) []xds.Flavor { return []xds.Flavor{xds.FlavorEnvoy} }})
	f.apply(t, commitA, policiesA(t))
	envoyWeb := f.last.Proxy(webNode, xds.FlavorEnvoy)
	f.dialWith(t, webNode, grpcClient("backend"))
	f.waitStatus(t, webNode, func(st ads.ProxyStatus) bool { return st.Flavor == xds.FlavorGRPC })
	deadline := time.Now().Add(wait)
	for !strings.Contains(logs.String(), "node runs a flavour its dataplane is not translated for") {
		if time.Now().After(deadline) {
			t.Fatalf("no log line about %s; logs:\n%s", webNode, logs.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if px := f.translation(webNode); px != envoyWeb {
		t.Error("the node is not served the flavour its dataplane is translated for")
	}
	if res := f.apply(t, commitB, policiesB(t)); slices.Contains(res.Changed, webNode) {
		t.Error("the next commit changed the node's proxy")
	}
}

func TestNewRejectsAnUnknownDefaultFlavour(t *testing.T) {
	server, err := ads.New(ads.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{Server: server, DefaultFlavor: "istio"}); err == nil || !strings.Contains(err.Error(), `unknown default flavour "istio"`) {
		t.Errorf("New: %v", err)
	}
	p, err := New(Config{Server: server})
	if err != nil {
		t.Fatal(err)
	}
	if f := p.flavorOf("default.never-seen"); f != xds.FlavorEnvoy {
		t.Errorf("default flavour %q, want envoy", f)
	}
}
