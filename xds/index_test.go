package xds

import (
	"slices"
	"testing"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"

	"github.com/gitmesh/gitmesh/schema"
)

// TestNewIndexFromReusesUnchangedServices: an Index built from the previous
// one translates every proxy exactly as a fresh Index does, and shares the
// previous resources of the services whose endpoints did not change.
func TestNewIndexFromReusesUnchangedServices(t *testing.T) {
	set := benchSet()
	prev, err := NewIndex(set)
	if err != nil {
		t.Fatal(err)
	}
	// Move one dataplane: its service's endpoints change, no other's.
	next := &schema.Set{Meshes: set.Meshes, TrafficPermissions: set.TrafficPermissions,
		Dataplanes: slices.Clone(set.Dataplanes)}
	moved := *next.Dataplanes[5]
	moved.Address = "10.200.0.5"
	moved.Inbound = []schema.Inbound{moved.Inbound[0]}
	moved.Inbound[0].Address = moved.Address
	next.Dataplanes[5] = &moved
	movedService := moved.Inbound[0].Service()

	fresh, err := NewIndex(next)
	if err != nil {
		t.Fatal(err)
	}
	reused, err := NewIndexFrom(next, prev)
	if err != nil {
		t.Fatal(err)
	}
	for _, dp := range next.Dataplanes[:200] {
		a, err := TranslateProxy(fresh, dp, Options{})
		if err != nil {
			t.Fatal(err)
		}
		b, err := TranslateProxy(reused, dp, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if a.Hash != b.Hash {
			t.Fatalf("%s: hash %s from a fresh index, %s from a reused one", dp.NodeID().String(), a.Hash, b.Hash)
		}
	}
	mi, pmi := reused.meshes["bench"], prev.meshes["bench"]
	for name, s := range mi.services {
		same := s.endpoint.res == pmi.services[name].endpoint.res
		if name == movedService && same {
			t.Errorf("service %s: endpoints moved but the old ClusterLoadAssignment was reused", name)
		}
		if name != movedService && !same {
			t.Errorf("service %s: unchanged but built again", name)
		}
	}
	if got := mi.services[movedService].endpoint.res; got == nil || !containsEndpoint(got, "10.200.0.5") {
		t.Errorf("the moved service's endpoints lack the new address")
	}
	// Another Mesh value (mTLS switched off) builds everything again.
	noTLS := &schema.Set{Meshes: []*schema.Mesh{{Name: "bench"}}, Dataplanes: next.Dataplanes}
	other, err := NewIndexFrom(noTLS, prev)
	if err != nil {
		t.Fatal(err)
	}
	for name, s := range other.meshes["bench"].services {
		if s.cluster.res == pmi.services[name].cluster.res {
			t.Fatalf("service %s kept a cluster built for another mesh", name)
		}
	}
}

func containsEndpoint(r any, address string) bool {
	for _, le := range r.(*endpointv3.ClusterLoadAssignment).GetEndpoints() {
		for _, ep := range le.GetLbEndpoints() {
			if ep.GetEndpoint().GetAddress().GetSocketAddress().GetAddress() == address {
				return true
			}
		}
	}
	return false
}
