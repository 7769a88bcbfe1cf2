package xds

import (
	"maps"
	"slices"
	"strings"
	"testing"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
)

// withEndpoints is p with its endpoints replaced, its hashes and digests
// otherwise kept, as a translation that moved an instance would give.
func withEndpoints(p *Proxy, eps []types.Resource) *Proxy {
	q := *p
	q.Resources = maps.Clone(p.Resources)
	q.Resources[resource.EndpointType] = eps
	q.digests = maps.Clone(p.digests)
	return &q
}

// TestCheckerRemembersStructure: a proxy whose listeners, clusters and
// routes passed before is checked by its endpoints alone, and still fails
// on a bad one.
func TestCheckerRemembersStructure(t *testing.T) {
	ps, err := Translate(literalSet(), Options{Flavor: FlavorEnvoy})
	if err != nil {
		t.Fatal(err)
	}
	p := ps[0]
	k := NewChecker()
	if err := k.Check(p); err != nil {
		t.Fatal(err)
	}
	if len(k.passed) != 1 {
		t.Fatalf("%d structures remembered, want 1", len(k.passed))
	}
	eps := p.Resources[resource.EndpointType]
	if len(eps) == 0 {
		t.Fatal("the proxy has no endpoints")
	}

	// Moved endpoints: same structure, passes.
	moved := slices.Clone(eps)
	cla := proto.Clone(eps[0]).(*endpointv3.ClusterLoadAssignment)
	cla.Endpoints[0].LbEndpoints[0].GetEndpoint().GetAddress().GetSocketAddress().Address = "fd00::9"
	moved[0] = cla
	if err := k.Check(withEndpoints(p, moved)); err != nil {
		t.Errorf("moved endpoints: %v", err)
	}

	// Invalid endpoints with the same structure are still caught, with the
	// whole check's message.
	bad := slices.Clone(eps)
	broken := proto.Clone(eps[0]).(*endpointv3.ClusterLoadAssignment)
	broken.Endpoints[0].LbEndpoints[0].GetEndpoint().GetAddress().GetSocketAddress().PortSpecifier = nil
	bad[0] = broken
	err = k.Check(withEndpoints(p, bad))
	if err == nil || !strings.Contains(err.Error(), "proxy v6.a") {
		t.Errorf("broken endpoints passed the remembered structure: %v", err)
	}

	// Another structure is checked in full: an endpoints resource nothing
	// references.
	extra := append(slices.Clone(eps), &endpointv3.ClusterLoadAssignment{ClusterName: "orphan"})
	if err := k.Check(withEndpoints(p, extra)); err == nil || !strings.Contains(err.Error(), "referenced by nothing") {
		t.Errorf("an orphan endpoints resource: %v", err)
	}
}
