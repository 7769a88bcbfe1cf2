package xds

import (
	"errors"
	"fmt"
	"slices"
	"sort"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"

	"github.com/gitmesh/gitmesh/schema"
)

// Index is what translating one dataplane needs to know about the rest of
// its Set: the endpoints and protocol of every service, the traffic
// permissions by destination, and the resources every proxy of a mesh
// shares (a service's cluster, endpoints and route), built and hashed once.
//
// Build one Index per Set with NewIndex; it is immutable afterwards and safe
// for concurrent use by TranslateProxy and Affected.
type Index struct {
	set    *schema.Set
	meshes map[string]*meshIndex
}

// meshIndex is the part of an Index about one mesh.
type meshIndex struct {
	mesh       *schema.Mesh
	dataplanes []*schema.Dataplane // sorted by name
	services   map[string]*service
	rules      []*rule // every permission rule, in (permission, rule) order
	// byPermission maps a permission name to its rules' positions in rules.
	byPermission map[string][]int32
	// byDestination maps a service to the rules with a destination selector
	// pinned to it; anyDestination lists the rules with a destination
	// selector that is not ('*' or no service tag). Rules are positions in
	// rules, ascending.
	byDestination  map[string][]int32
	anyDestination []int32
	// downstreamTLS is the transport socket of every inbound listener of
	// the mesh; nil without mTLS.
	downstreamTLS *corev3.TransportSocket
}

// rule is one rule of a TrafficPermission, with its RBAC policy built once.
type rule struct {
	name         string // RBAC policy name
	destinations []schema.Selector
	policy       *rbacv3.Policy // shared by every RBAC filter that uses it
}

// service is one service of a mesh: its endpoints, the dataplanes that
// provide and consume it, and the Envoy resources every consumer shares.
type service struct {
	name      string
	endpoints []endpoint // sorted by address then port, distinct
	// http is true when the service has inbounds and all of them speak
	// HTTP: outbounds to it then use an HTTP connection manager.
	http      bool
	providers []*schema.Dataplane // with an inbound of the service
	consumers []*schema.Dataplane // with an outbound to the service
	cluster   shared
	endpoint  shared // the ClusterLoadAssignment
	route     shared // set when http
	// outboundFilter is the network filter of every outbound listener to
	// the service: tcp_proxy, or an HTTP connection manager using route.
	outboundFilter *listenerv3.Filter
}

// endpoint is one address of a service: an inbound's address and
// dataplane port.
type endpoint struct {
	address string
	port    uint32
}

// shared is a resource every proxy of a mesh that needs it holds, with its
// digest computed once.
type shared struct {
	res    types.Resource
	digest [32]byte
}

// NewIndex indexes set for translation. It fails when set is inconsistent
// in a way the loader should have caught (a dataplane of an undeclared
// mesh) or when a resource cannot be encoded.
func NewIndex(set *schema.Set) (*Index, error) { return NewIndexFrom(set, nil) }

// NewIndexFrom is NewIndex reusing what it can of prev, the Index of an
// earlier Set (nil for none): a service of the same Mesh value whose
// endpoints and protocol did not change keeps prev's shared resources, the
// very same values, so they are neither built nor hashed again and a proxy
// translated from either Index shares them. prev is not modified.
func NewIndexFrom(set *schema.Set, prev *Index) (*Index, error) {
	idx := &Index{set: set, meshes: make(map[string]*meshIndex, len(set.Meshes))}
	for _, m := range set.Meshes {
		mi, err := newMeshIndex(set, m, nil)
		if err != nil {
			return nil, err
		}
		idx.meshes[m.Name] = mi
	}
	for _, dp := range set.Dataplanes {
		mi := idx.meshes[dp.Mesh]
		if mi == nil {
			return nil, fmt.Errorf("index dataplane %s: mesh %q does not exist", dp.NodeID(), dp.Mesh)
		}
		mi.indexDataplane(dp)
	}
	var buf []byte
	for _, m := range set.Meshes {
		mi := idx.meshes[m.Name]
		var before *meshIndex
		if prev != nil {
			if pm := prev.meshes[m.Name]; pm != nil && pm.mesh == m {
				before = pm
			}
		}
		for _, s := range mi.services {
			s.settle()
			if before != nil {
				if old := before.services[s.name]; old != nil && old.http == s.http && slices.Equal(old.endpoints, s.endpoints) {
					s.reuse(old)
					continue
				}
			}
			var err error
			if buf, err = s.build(m, buf); err != nil {
				return nil, fmt.Errorf("index mesh %s service %s: %w", m.Name, s.name, err)
			}
		}
	}
	return idx, nil
}

// WithPermissions returns an Index for set, a Set that differs from idx's
// only in its traffic permissions: it must hold the very same Mesh and
// Dataplane values, in the same order, or WithPermissions fails. The new
// Index shares idx's services and their resources and indexes only the
// permissions again, which is what makes re-translating the proxies one
// changed permission affects cheap. idx is not modified.
func (idx *Index) WithPermissions(set *schema.Set) (*Index, error) {
	if !slices.Equal(idx.set.Meshes, set.Meshes) || !slices.Equal(idx.set.Dataplanes, set.Dataplanes) {
		return nil, errors.New("index: the set differs in more than its traffic permissions")
	}
	out := &Index{set: set, meshes: make(map[string]*meshIndex, len(idx.meshes))}
	for _, m := range set.Meshes {
		mi, err := newMeshIndex(set, m, idx.meshes[m.Name])
		if err != nil {
			return nil, err
		}
		out.meshes[m.Name] = mi
	}
	return out, nil
}

// newMeshIndex indexes the permissions of mesh m; its services are those of
// from, or empty (for indexDataplane to fill) when from is nil.
func newMeshIndex(set *schema.Set, m *schema.Mesh, from *meshIndex) (*meshIndex, error) {
	mi := &meshIndex{
		mesh:          m,
		dataplanes:    set.DataplanesIn(m.Name),
		services:      make(map[string]*service),
		byPermission:  make(map[string][]int32),
		byDestination: make(map[string][]int32),
	}
	if from != nil {
		mi.services, mi.downstreamTLS = from.services, from.downstreamTLS
	} else if m.MTLS.Enabled {
		ts, err := downstreamTLS()
		if err != nil {
			return nil, fmt.Errorf("index mesh %s: %w", m.Name, err)
		}
		mi.downstreamTLS = ts
	}
	if m.MTLS.Enabled {
		mi.indexPermissions(set.PermissionsIn(m.Name))
	}
	return mi, nil
}

// Set is the Set the Index was built from.
func (idx *Index) Set() *schema.Set { return idx.set }

func (mi *meshIndex) service(name string) *service {
	s := mi.services[name]
	if s == nil {
		s = &service{name: name}
		mi.services[name] = s
	}
	return s
}

// indexDataplane records dp's inbounds as endpoints of their services and
// its outbounds as consumers. Dataplanes arrive sorted by name, so the
// providers and consumers lists are sorted too.
func (mi *meshIndex) indexDataplane(dp *schema.Dataplane) {
	for _, in := range dp.Inbound {
		s := mi.service(in.Service())
		if n := len(s.providers); n == 0 || s.providers[n-1] != dp {
			s.providers = append(s.providers, dp)
		}
		s.endpoints = append(s.endpoints, endpoint{address: in.Address, port: in.Port})
	}
	for _, out := range dp.Outbound {
		s := mi.service(out.Service)
		if n := len(s.consumers); n == 0 || s.consumers[n-1] != dp {
			s.consumers = append(s.consumers, dp)
		}
	}
}

// settle sorts and dedupes a service's endpoints and settles its protocol.
func (s *service) settle() {
	sort.Slice(s.endpoints, func(i, j int) bool {
		a, b := s.endpoints[i], s.endpoints[j]
		if a.address != b.address {
			return a.address < b.address
		}
		return a.port < b.port
	})
	eps := s.endpoints[:0]
	for i, e := range s.endpoints {
		if i == 0 || e != s.endpoints[i-1] {
			eps = append(eps, e)
		}
	}
	s.endpoints = eps
	s.http = len(s.providers) > 0
	for _, dp := range s.providers {
		for _, in := range dp.Inbound {
			if in.Service() == s.name && in.Protocol() != schema.ProtocolHTTP {
				s.http = false
			}
		}
	}
}

// reuse takes the shared resources of old, the same service with the same
// endpoints and protocol in the same mesh.
func (s *service) reuse(old *service) {
	s.cluster, s.endpoint, s.route, s.outboundFilter = old.cluster, old.endpoint, old.route, old.outboundFilter
}

// build builds the resources the consumers of a settled service share.
func (s *service) build(m *schema.Mesh, buf []byte) ([]byte, error) {
	c, err := edsCluster(m, s.name, FlavorEnvoy)
	if err != nil {
		return buf, err
	}
	if buf, err = s.cluster.set(c, buf); err != nil {
		return buf, err
	}
	if buf, err = s.endpoint.set(loadAssignment(s.name, s.endpoints), buf); err != nil {
		return buf, err
	}
	if s.http {
		route := OutboundRouteName(s.name)
		if buf, err = s.route.set(routeConfig(route, s.name, s.name), buf); err != nil {
			return buf, err
		}
		s.outboundFilter, err = httpConnectionManager(statPrefix(s.name), route, nil)
	} else {
		s.outboundFilter, err = tcpProxy(statPrefix(s.name), s.name)
	}
	return buf, err
}

func (sh *shared) set(r types.Resource, buf []byte) ([]byte, error) {
	d, buf, err := digest(r, buf)
	if err != nil {
		return buf, err
	}
	sh.res, sh.digest = r, d
	return buf, nil
}

// indexPermissions flattens the mesh's permissions into rules and indexes
// them by destination service.
func (mi *meshIndex) indexPermissions(perms []*schema.TrafficPermission) {
	for _, tp := range perms {
		for i, pr := range tp.Rules {
			pos := int32(len(mi.rules))
			mi.rules = append(mi.rules, &rule{
				name:         policyName(tp, i),
				destinations: pr.Destinations,
				policy:       rbacPolicy(mi.mesh.Name, pr.Sources),
			})
			mi.byPermission[tp.Name] = append(mi.byPermission[tp.Name], pos)
			pinned := map[string]bool{}
			for _, d := range pr.Destinations {
				svc, ok := d[schema.TagService]
				if !ok || svc == "*" {
					mi.anyDestination = appendOnce(mi.anyDestination, pos)
					continue
				}
				if !pinned[svc] {
					pinned[svc] = true
					mi.byDestination[svc] = append(mi.byDestination[svc], pos)
				}
			}
		}
	}
}

// appendOnce appends pos unless it is already the last element; positions
// arrive in ascending order.
func appendOnce(list []int32, pos int32) []int32 {
	if n := len(list); n > 0 && list[n-1] == pos {
		return list
	}
	return append(list, pos)
}

// matchingRules returns the positions, ascending and distinct, of the rules
// with a destination selector matching tags.
func (mi *meshIndex) matchingRules(tags map[string]string) []int32 {
	var out []int32
	check := func(list []int32) {
		for _, pos := range list {
			for _, d := range mi.rules[pos].destinations {
				if d.Matches(tags) {
					out = append(out, pos)
					break
				}
			}
		}
	}
	check(mi.byDestination[tags[schema.TagService]])
	check(mi.anyDestination)
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	dedup := out[:0]
	for i, pos := range out {
		if i == 0 || pos != out[i-1] {
			dedup = append(dedup, pos)
		}
	}
	return dedup
}
