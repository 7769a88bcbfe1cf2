package xds

// The conf policies (MeshTimeout, ...) in translation. What a to[] item
// configures is of two kinds: what belongs to a destination service's
// cluster (connect timeout, ...), which a proxy holds once per service
// whichever outbound or route reaches it; and what belongs to the calls of
// one outbound (request timeouts, ...), which joins its routed values.
// Both are made once per Index for every proxy the same policies select.

import (
	"encoding/binary"
	"fmt"
	"sync"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"google.golang.org/protobuf/proto"

	"github.com/gitmesh/gitmesh/schema"
)

// confIndex is a mesh's conf policies by type.
type confIndex struct {
	byType map[string][]*schema.ConfPolicy
	// clusters memoises cluster variants by name, flavour and the policies
	// that make them; faults the faults gRPC clients of each service run.
	clusters, faults *sync.Map
}

func newConfIndex(set *schema.Set, mesh string) confIndex {
	ci := confIndex{clusters: new(sync.Map), faults: new(sync.Map)}
	for _, typ := range schema.ConfKinds() {
		if ps := set.PoliciesOfType(typ, mesh); len(ps) > 0 {
			if ci.byType == nil {
				ci.byType = map[string][]*schema.ConfPolicy{}
			}
			ci.byType[typ] = ps
		}
	}
	return ci
}

func (ci *confIndex) none() bool { return len(ci.byType) == 0 }

// names reports whether a conf policy that configures calls (an outbound
// type), or one whose item needs HTTP/2 (a gRPC health check), has a to[]
// item for service, or for every service. Envoy then speaks HTTP/2 to a
// gRPC service, as Kuma does: its routes and retries apply, and a gRPC
// health check, which Envoy runs only on an HTTP/2 cluster.
func (ci *confIndex) names(service string) bool {
	for _, a := range appliers {
		if a.outbound == nil && a.h2 == nil {
			continue
		}
		for _, p := range ci.byType[a.typ] {
			for _, it := range p.To {
				if (it.TargetRef.Kind == schema.KindMesh || (it.TargetRef.Kind == schema.KindMeshService && it.TargetRef.Name == service)) &&
					(a.outbound != nil || a.h2(it.Default)) {
					return true
				}
			}
		}
	}
	return false
}

// toKey appends to key, for each of types, the positions of its policies
// that select dp and have a to[] item for service (or every service).
func (ci *confIndex) toKey(key []byte, dp *schema.Dataplane, service string, types ...string) ([]byte, bool) {
	found := false
	for _, typ := range types {
		key = append(key, 0xfe)
		for pos, p := range ci.byType[typ] {
			if !p.TargetRef.SelectsClient(dp) {
				continue
			}
			for _, it := range p.To {
				if it.TargetRef.Kind == schema.KindMesh || (it.TargetRef.Kind == schema.KindMeshService && it.TargetRef.Name == service) {
					key, found = binary.BigEndian.AppendUint32(key, uint32(pos)), true
					break
				}
			}
		}
	}
	return key, found
}

// cluster is c, the cluster of backend bc (service's, a subset or the
// whole) for flavour, as the conf policies that select dp for service
// make it; c itself when none does.
func (mi *meshIndex) cluster(dp *schema.Dataplane, service string, c *shared, flavor Flavor, http bool) (*shared, []string, error) {
	ci := &mi.confs
	if ci.none() {
		return c, nil, nil
	}
	key := append(make([]byte, 0, 64), c.res.(*clusterv3.Cluster).GetName()...)
	key = append(append(append(key, 0), flavor...), 0)
	key, found := ci.toKey(key, dp, service, clusterKinds...)
	if !found {
		return c, nil, nil
	}
	type variant struct {
		c     *shared
		notes []string
	}
	if v, ok := ci.clusters.Load(string(key)); ok {
		return v.(*variant).c, v.(*variant).notes, nil
	}
	e := &clusterEdit{cluster: proto.Clone(c.res.(*clusterv3.Cluster)).(*clusterv3.Cluster), flavor: flavor, http: http}
	if s := mi.services[service]; s != nil {
		e.grpc = s.grpc && (s.h2 || flavor == FlavorGRPC)
	}
	for _, a := range appliers {
		if a.cluster == nil {
			continue
		}
		if conf := schema.ToConf(ci.byType[a.typ], dp, service); !conf.Empty() {
			if err := a.cluster(e, conf); err != nil {
				return nil, nil, fmt.Errorf("%s: %w", a.typ, err)
			}
		}
	}
	cl, notes := e.cluster, e.notes
	v := &variant{c: &shared{}, notes: notes}
	if _, err := v.c.set(cl, nil); err != nil {
		return nil, nil, err
	}
	mi.routing.shared.Store(cl, true)
	if ts := cl.GetTransportSocket(); ts != nil {
		mi.routing.shared.Store(ts.GetTypedConfig(), true)
	}
	for _, a := range cl.GetTypedExtensionProtocolOptions() {
		mi.routing.shared.Store(a, true)
	}
	got, _ := ci.clusters.LoadOrStore(string(key), v)
	return got.(*variant).c, got.(*variant).notes, nil
}

// addCluster adds a backend's cluster and endpoints for flavour, as the
// conf policies that select dp make the cluster.
func (rs *resourceSet) addCluster(mi *meshIndex, dp *schema.Dataplane, service, name string, c, endpoints *shared, flavor Flavor, http bool) error {
	v, notes, err := mi.cluster(dp, service, c, flavor, http)
	if err != nil {
		return err
	}
	if err := rs.addShared(clusterIdx, name, v); err != nil {
		return err
	}
	rs.unsupported = addNotes(rs.unsupported, notes...)
	return rs.addShared(endpointIdx, name, endpoints)
}
