package xds

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/gitmesh/gitmesh/schema"
	"github.com/gitmesh/gitmesh/schema/schematest"
)

// literalSet is a small Set built without the loader: one mesh with mTLS
// and an IPv6 dataplane.
func literalSet() *schema.Set {
	return &schema.Set{
		Meshes: []*schema.Mesh{{Name: "v6", MTLS: schema.MTLS{Enabled: true}}},
		Dataplanes: []*schema.Dataplane{{
			Mesh: "v6", Name: "a",
			Inbound: []schema.Inbound{
				{Address: "fd00::1", Port: 8080, ServicePort: 80, Tags: map[string]string{"service": "a"}},
				{Address: "fd00::1", Port: 8081, ServicePort: 80, Tags: map[string]string{"service": "a2", "protocol": "grpc"}},
			},
			Outbound: []schema.Outbound{{Address: "::1", Port: 9000, Service: "a"}},
		}},
	}
}

func TestTranslateLiteralSet(t *testing.T) {
	ps, err := Translate(literalSet(), Options{Flavor: FlavorEnvoy})
	if err != nil {
		t.Fatal(err)
	}
	p := ps[0]
	if err := Check(p); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range p.Resources[resource.ListenerType] {
		names = append(names, r.(*listenerv3.Listener).GetName())
	}
	if got, want := strings.Join(names, " "), "inbound:[fd00::1]:8080 inbound:[fd00::1]:8081 outbound:[::1]:9000"; got != want {
		t.Errorf("listeners = %s, want %s", got, want)
	}
	// Two inbounds on one service port share the local cluster.
	if n := len(p.Resources[resource.ClusterType]); n != 2 {
		t.Errorf("%d clusters, want localhost:80 and a", n)
	}
	if got, want := strings.Join(p.Identities, " "), "spiffe://v6/a spiffe://v6/a2"; got != want {
		t.Errorf("identities = %s, want %s", got, want)
	}
}

func TestTranslateErrors(t *testing.T) {
	set := literalSet()
	if _, err := Translate(set, Options{Flavor: "istio"}); !errors.Is(err, ErrUnsupportedFlavor) || !strings.Contains(err.Error(), `translate v6.a: unknown flavour "istio"`) {
		t.Errorf("unknown flavour: err = %v", err)
	}
	orphan := *set
	orphan.Meshes = nil
	if _, err := Translate(&orphan, Options{}); err == nil || !strings.Contains(err.Error(), `dataplane v6.a: mesh "v6" does not exist`) {
		t.Errorf("undeclared mesh: err = %v", err)
	}
	clash := literalSet()
	clash.Dataplanes[0].Outbound = append(clash.Dataplanes[0].Outbound, schema.Outbound{Address: "::1", Port: 9000, Service: "a2"})
	if _, err := Translate(clash, Options{}); err == nil || !strings.Contains(err.Error(), `two listener resources named "outbound:[::1]:9000"`) {
		t.Errorf("listener clash: err = %v", err)
	}
}

func TestWithPermissions(t *testing.T) {
	set := literalSet()
	idx, err := NewIndex(set)
	if err != nil {
		t.Fatal(err)
	}
	next := *set
	next.TrafficPermissions = []*schema.TrafficPermission{{
		Mesh: "v6", Name: "all",
		Rules: []schema.PermissionRule{{
			Sources:      []schema.Selector{{"service": "*"}},
			Destinations: []schema.Selector{{"service": "a"}},
		}},
	}}
	nextIdx, err := idx.WithPermissions(&next)
	if err != nil {
		t.Fatal(err)
	}
	full, err := NewIndex(&next)
	if err != nil {
		t.Fatal(err)
	}
	a, err := TranslateProxy(nextIdx, next.Dataplanes[0], Options{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := TranslateProxy(full, next.Dataplanes[0], Options{})
	if err != nil {
		t.Fatal(err)
	}
	if a.Hash != b.Hash {
		t.Error("WithPermissions and NewIndex translate differently")
	}
	before, err := TranslateProxy(idx, set.Dataplanes[0], Options{})
	if err != nil {
		t.Fatal(err)
	}
	if before.Hash == a.Hash {
		t.Error("a new permission did not change the proxy")
	}
	if got := AffectedBetween(idx, nextIdx, Change{Permissions: []Ref{{"v6", "all"}}}); len(got) != 1 || got[0] != "v6.a" {
		t.Errorf("AffectedBetween = %v", got)
	}
	other := literalSet()
	if _, err := idx.WithPermissions(other); err == nil {
		t.Error("WithPermissions accepted a Set with other dataplanes")
	}
}

// TestTranslateProxyConcurrently shares one Index between goroutines, as
// the xDS server does; run with -race.
func TestTranslateProxyConcurrently(t *testing.T) {
	set := schematest.Load(t, os.DirFS(filepath.Join("testdata", "mtls-permissions", policiesDir)))
	idx, err := NewIndex(set)
	if err != nil {
		t.Fatal(err)
	}
	want := hashes(t, set)
	var wg sync.WaitGroup
	errs := make(chan error, 4*len(set.Dataplanes))
	for range 4 {
		for _, dp := range set.Dataplanes {
			wg.Go(func() {
				p, err := TranslateProxy(idx, dp, Options{})
				if err == nil && p.Hash != want[p.NodeID] {
					err = fmt.Errorf("%s: hash %s, want %s", p.NodeID, p.Hash, want[p.NodeID])
				}
				if err == nil {
					err = Check(p)
				}
				errs <- err
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}
