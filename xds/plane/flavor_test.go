package plane

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/gitmesh/gitmesh/schema"
	"github.com/gitmesh/gitmesh/xds"
	"github.com/gitmesh/gitmesh/xds/ads"
	"github.com/gitmesh/gitmesh/xds/adstest"
)

const webNode = "default.web-01"

// requireGRPCTranslation skips the test while xds translates no gRPC
// flavour (xds.ErrUnsupportedFlavor for FlavorGRPC); any other failure to
// translate the bundled policies for gRPC fails it.
func requireGRPCTranslation(t *testing.T) {
	t.Helper()
	_, err := xds.Translate(policiesA(t), xds.Options{Flavor: xds.FlavorGRPC})
	if errors.Is(err, xds.ErrUnsupportedFlavor) {
		t.Skipf("xds does not translate the gRPC flavour yet: %v", err)
	}
	if err != nil {
		t.Fatalf("gRPC translation of the bundled policies: %v", err)
	}
}

// withFlavors collects what Run reports through OnFlavor into ch.
func withFlavors(ch chan FlavorChange, more func(*Config)) func(*Config) {
	return func(cfg *Config) {
		cfg.OnFlavor = func(c FlavorChange) { ch <- c }
		if more != nil {
			more(cfg)
		}
	}
}

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

// A node is translated for Envoy until one of its streams says it runs
// gRPC; then it alone is translated again, at the served commit, and its
// client gets the gRPC resources it asked for by name.
func TestNodeServedTheFlavourItRuns(t *testing.T) {
	t.Parallel()
	requireGRPCTranslation(t)
	flavors := make(chan FlavorChange, 16)
	f := newFixtureWith(t, withFlavors(flavors, nil))
	setA := policiesA(t)
	f.apply(t, commitA, nil, setA)
	envoyWeb := f.translation(webNode)
	if envoyWeb.Flavor != xds.FlavorEnvoy {
		t.Fatalf("%s translated for %q before it connected, want the default, envoy", webNode, envoyWeb.Flavor)
	}

	web := f.dialWith(t, webNode, grpcClient("backend"))
	if c := next(t, flavors, "flavour change"); c != (FlavorChange{Commit: commitA, Node: webNode, From: xds.FlavorEnvoy, To: xds.FlavorGRPC}) {
		t.Fatalf("flavour change %+v, want %s from envoy to grpc at commit A", c, webNode)
	}
	grpcWeb := f.translation(webNode)
	if grpcWeb.Flavor != xds.FlavorGRPC || grpcWeb.Hash == envoyWeb.Hash {
		t.Fatalf("%s now translated for %q", webNode, grpcWeb.Flavor)
	}
	f.waitCommit(t, web, commitA)
	ls := listeners(t, web)
	if len(ls) != 1 || ls[0].GetName() != "backend" || ls[0].GetApiListener() == nil {
		t.Fatalf("gRPC client holds listeners %v, want the API listener backend", ls)
	}
	st := f.waitStatus(t, webNode, ads.ProxyStatus.InSync)
	if st.Flavor != xds.FlavorGRPC || st.Hash != grpcWeb.Hash || st.Commit != commitA {
		t.Errorf("status flavour %q hash %.12s commit %.4s, want the gRPC translation at commit A", st.Flavor, st.Hash, st.Commit)
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

	// The next commits translate web-01 for gRPC at once. Commit B does not
	// reach it: it keeps its translation and gets no push.
	setB := policiesB(t)
	if res := f.apply(t, commitB, setA, setB); slices.Contains(res.Changed, webNode) || res.Affected != 2 {
		t.Errorf("commit B changed %v, affected %d; want the two backends", res.Changed, res.Affected)
	}
	if px := f.translation(webNode); px != grpcWeb {
		t.Errorf("%s translated again by commit B", webNode)
	}
	select {
	case c := <-flavors:
		t.Errorf("unexpected flavour change %+v", c)
	default:
	}
}

// A generation kept for going back (a rollback to the previous commit) was
// translated for the flavours of its time: a node whose flavour changed
// since is translated again, and the others are reused.
func TestGoingBackTranslatesNodesWhoseFlavourChanged(t *testing.T) {
	t.Parallel()
	requireGRPCTranslation(t)
	flavors := make(chan FlavorChange, 16)
	f := newFixtureWith(t, withFlavors(flavors, nil))
	setA, setB := policiesA(t), policiesB(t)
	f.apply(t, commitA, nil, setA)
	f.apply(t, commitB, setA, setB)
	web := f.dialWith(t, webNode, grpcClient("backend"))
	if c := next(t, flavors, "flavour change"); c.Commit != commitB || c.To != xds.FlavorGRPC || c.Err != nil {
		t.Fatalf("flavour change %+v, want grpc at commit B", c)
	}
	f.waitCommit(t, web, commitB)

	res := f.apply(t, commitA, setB, policiesA(t))
	if res.Affected != 1 {
		t.Errorf("going back to A translated %d proxies, want web-01 alone", res.Affected)
	}
	idx, err := xds.NewIndex(setA)
	if err != nil {
		t.Fatal(err)
	}
	want, err := xds.TranslateProxy(idx, setA.Dataplane("default", "web-01"), xds.Options{Flavor: xds.FlavorGRPC})
	if err != nil {
		t.Fatal(err)
	}
	if got := f.translation(webNode); got.Flavor != xds.FlavorGRPC || got.Hash != want.Hash {
		t.Errorf("%s served a %q translation %.12s at A, want the gRPC one %.12s", webNode, got.Flavor, got.Hash, want.Hash)
	}
	if got := f.translation(backendNode); got.Flavor != xds.FlavorEnvoy {
		t.Errorf("%s served %q", backendNode, got.Flavor)
	}
}

// A flavour change is a new translation, not a rollback: a node that
// accepted its Envoy translation and then rejects its gRPC one is not put
// back on Envoy's. Once it accepts a commit whole as gRPC, a NACK of the
// next one puts it back on that gRPC translation.
func TestNACKRollbackStaysWithinTheFlavour(t *testing.T) {
	t.Parallel()
	requireGRPCTranslation(t)
	var a answers
	flavors := make(chan FlavorChange, 16)
	f := newFixtureWith(t, withFlavors(flavors, a.withAnswers(true)))
	envoy, setA, _ := acceptA(t, f, adstest.Options{})
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
	if c := next(t, flavors, "flavour change"); c.Node != backendNode || c.To != xds.FlavorGRPC || c.Err != nil {
		t.Fatalf("flavour change %+v", c)
	}
	grpcA := f.translation(backendNode)
	for {
		r := next(t, a.nacks, "rejection")
		if r.Version != listenerVersion(commitA, grpcA) {
			continue // of the Envoy listener sent before: stale
		}
		if r.Commit != commitA || r.RevertedTo != "" || r.RevertErr != nil {
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
	f.apply(t, commitB, setA, policiesB(t))
	grpcB := f.translation(backendNode)
	for {
		r := next(t, a.nacks, "rejection of B")
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
		f.plane.served.Lock()
		defer f.plane.served.Unlock()
		return f.plane.accepted[node].proxy == px
	})
}

// Flavour changes the subscription never delivered (here: made before Run
// subscribed) are found by Run's periodic look at the server's count.
func TestLostFlavourChangesAreMadeUp(t *testing.T) {
	t.Parallel()
	requireGRPCTranslation(t)
	flavors := make(chan FlavorChange, 16)
	f, run := newIdleFixture(t, withFlavors(flavors, nil))
	f.apply(t, commitA, nil, policiesA(t))
	web := f.dialWith(t, webNode, grpcClient("backend"))
	f.waitStatus(t, webNode, func(st ads.ProxyStatus) bool { return st.Flavor == xds.FlavorGRPC })
	if px := f.translation(webNode); px.Flavor != xds.FlavorEnvoy {
		t.Fatalf("translated for %q without Run", px.Flavor)
	}
	run()
	if c := next(t, flavors, "flavour change"); c != (FlavorChange{Commit: commitA, Node: webNode, From: xds.FlavorEnvoy, To: xds.FlavorGRPC}) {
		t.Fatalf("flavour change %+v", c)
	}
	f.waitCommit(t, web, commitA)
	if ls := listeners(t, web); len(ls) != 1 || ls[0].GetApiListener() == nil {
		t.Errorf("listeners %v, want the API listener", ls)
	}
}

// A node that cannot be translated for its flavour keeps its translation,
// and Run says why; the next Apply fails on it, all or nothing, naming it.
func TestFlavourTranslationFailure(t *testing.T) {
	t.Parallel()
	flavors := make(chan FlavorChange, 16)
	refuse := func(cfg *Config) {
		cfg.translate = func(idx *xds.Index, dp *schema.Dataplane, opts xds.Options) (*xds.Proxy, error) {
			if opts.Flavor == xds.FlavorGRPC {
				return nil, errors.New("translate " + dp.NodeID().String() + ": pretend gRPC is out of reach")
			}
			return xds.TranslateProxy(idx, dp, opts)
		}
	}
	f := newFixtureWith(t, withFlavors(flavors, refuse))
	setA := policiesA(t)
	f.apply(t, commitA, nil, setA)
	envoyWeb := f.translation(webNode)
	f.dialWith(t, webNode, grpcClient("backend"))
	c := next(t, flavors, "flavour change")
	if c.Node != webNode || c.From != xds.FlavorEnvoy || c.To != xds.FlavorGRPC || c.Err == nil ||
		!strings.Contains(c.Err.Error(), "pretend gRPC is out of reach") {
		t.Fatalf("flavour change %+v, want the failure to translate %s for gRPC", c, webNode)
	}
	if px := f.translation(webNode); px != envoyWeb {
		t.Error("translation replaced after a failure")
	}
	if st, _ := f.server.StatusOf(webNode); st.Hash != envoyWeb.Hash {
		t.Error("served translation changed after a failure")
	}
	_, err := f.plane.Apply(context.Background(), commitB, policiesB(t), schema.DiffSets(setA, policiesB(t)))
	if err == nil || !strings.Contains(err.Error(), webNode) {
		t.Fatalf("apply: %v, want the failure naming %s", err, webNode)
	}
	if commit, _ := f.plane.Served(); commit != commitA {
		t.Errorf("served %.4s after a failed apply, want A", commit)
	}
}

func TestNewRejectsAnUnknownDefaultFlavour(t *testing.T) {
	server, err := ads.New(ads.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{Server: server, Options: xds.Options{Flavor: "istio"}}); err == nil || !strings.Contains(err.Error(), `unknown default flavour "istio"`) {
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
