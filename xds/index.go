package xds

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"sync"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/types/known/anypb"

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
	// locals are the static cluster of each service port an inbound names,
	// and the tcp_proxy filter reaching it: every proxy with an inbound on
	// the port holds the same values.
	locals map[uint32]*localPort
	// shared holds every value proxies share (resources, and typed configs
	// packed in an Any) that the Index made: a Checker validates each once
	// per build and remembers no other. Immutable once built; RBAC filters
	// made during translation are in their meshIndex's rbacShared.
	shared map[any]bool
	// moved are, per mesh, the services whose endpoints alone changed
	// from the Index this one was made from: they keep every shared value
	// but their ClusterLoadAssignment, made anew (see Builder.patched).
	moved map[string]map[string]bool
}

// localPort is what the inbounds of one service port share.
type localPort struct {
	cluster   shared
	tcpFilter *listenerv3.Filter // tcp_proxy to the cluster
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
	// mtps are the mesh's MeshTrafficPermissions, in the Set's order; an
	// inbound any of them selects follows them instead of the legacy rules.
	mtps []*schema.MeshTrafficPermission
	// downstreamTLS is the transport socket of every inbound listener of
	// the mesh; nil without mTLS. grpcDownstreamTLS is the same for gRPC
	// server listeners.
	downstreamTLS, grpcDownstreamTLS *corev3.TransportSocket
	// rbac memoises, by the positions of the rules an inbound matches, the
	// RBAC rules and HTTP filter of every inbound matching the same rules;
	// rbacShared registers the filters' typed configs as shared.
	rbac       *sync.Map // string -> *rbacFilters
	rbacShared *sync.Map // the rules, filters and typed configs of rbac -> true
	// locals is the Index's.
	locals map[uint32]*localPort
	// routing is the mesh's route policies and what they make; confs its
	// conf policies.
	routing routeIndex
	confs   confIndex
}

// rbacFilters are the RBAC rules of a set of permission rules (with the
// shadow rules of MeshTrafficPermission's AllowWithShadowDeny, logged and not
// enforced), and the HTTP RBAC filter enforcing them.
type rbacFilters struct {
	rules, shadow *rbacv3.RBAC
	http          *hcmv3.HttpFilter
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
	// HTTP: outbounds to it then use an HTTP connection manager. grpc is
	// true when all of them speak gRPC; h2 when, in addition, a route or a
	// policy that configures calls names the service: Envoy then routes its
	// calls over HTTP/2 (without either, it proxies them as TCP and its
	// clusters stay as they were).
	http, grpc, h2 bool
	providers      []*schema.Dataplane // with an inbound of the service
	consumers      []*schema.Dataplane // with an outbound to the service
	cluster        shared
	endpoint       shared // the ClusterLoadAssignment
	route          shared // set when http
	// outboundFilter is the network filter of every outbound listener to
	// the service: tcp_proxy, or an HTTP connection manager using route.
	outboundFilter *listenerv3.Filter
	// What a proxyless gRPC client of the service holds, all named like the
	// service: its API listener, route configuration and cluster (the
	// endpoints are the Envoy ones). Set when the service has consumers.
	grpcListener, grpcRoute, grpcCluster shared
	// values are every value above, for the Index's shared set.
	values []any
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
	idx := &Index{set: set, meshes: make(map[string]*meshIndex, len(set.Meshes)), locals: map[uint32]*localPort{},
		shared: map[any]bool{routerFilter: true, routerFilter.GetTypedConfig(): true}}
	for _, m := range set.Meshes {
		mi, err := newMeshIndex(set, m, nil)
		if err != nil {
			return nil, err
		}
		mi.locals = idx.locals
		idx.meshes[m.Name] = mi
		for _, ts := range []*corev3.TransportSocket{mi.downstreamTLS, mi.grpcDownstreamTLS} {
			if ts != nil {
				idx.shared[ts] = true
				idx.shared[ts.GetTypedConfig()] = true
			}
		}
	}
	var buf []byte
	for _, dp := range set.Dataplanes {
		mi := idx.meshes[dp.Mesh]
		if mi == nil {
			return nil, fmt.Errorf("index dataplane %s: mesh %q does not exist", dp.NodeID(), dp.Mesh)
		}
		mi.indexDataplane(dp)
		for _, in := range dp.Inbound {
			if idx.locals[in.ServicePort] != nil {
				continue
			}
			var err error
			if buf, err = idx.addLocal(in.ServicePort, prev.local(in.ServicePort), buf); err != nil {
				return nil, fmt.Errorf("index dataplane %s: %w", dp.NodeID(), err)
			}
		}
	}
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
			var old *service
			if before != nil {
				old = before.services[s.name]
			}
			var err error
			if buf, err = idx.settleService(m, s, old, buf); err != nil {
				return nil, err
			}
		}
	}
	return idx, nil
}

// addLocal makes lc (made anew when nil) the local cluster of port, and
// registers its values as shared.
func (idx *Index) addLocal(port uint32, lc *localPort, buf []byte) ([]byte, error) {
	if lc == nil {
		var err error
		if lc, buf, err = newLocalPort(port, buf); err != nil {
			return buf, err
		}
	}
	idx.locals[port] = lc
	idx.shared[lc.cluster.res] = true
	idx.shared[lc.tcpFilter] = true
	idx.shared[lc.tcpFilter.GetTypedConfig()] = true
	return buf, nil
}

// local is prev's local cluster of port; nil when prev is nil or has none.
func (prev *Index) local(port uint32) *localPort {
	if prev == nil {
		return nil
	}
	return prev.locals[port]
}

func newLocalPort(port uint32, buf []byte) (*localPort, []byte, error) {
	lc := &localPort{}
	var err error
	if buf, err = lc.cluster.set(localCluster(port), buf); err != nil {
		return nil, buf, err
	}
	name := LocalClusterName(port)
	lc.tcpFilter, err = tcpProxy(statPrefix(name), name)
	return lc, buf, err
}

// isShared reports whether x, a resource or a typed config of a proxy of
// mesh, is a value the proxies of the Index share.
func (idx *Index) isShared(mesh string, x any) bool {
	if idx == nil {
		return false
	}
	// Only values of these types are ever shared: a type switch is cheaper
	// than the lookups, for the many values of other types a check meets.
	switch x.(type) {
	case *anypb.Any, *hcmv3.HttpFilter, *rbacv3.RBAC:
		if idx.shared[x] {
			return true
		}
		if mi := idx.meshes[mesh]; mi != nil {
			if _, ok := mi.rbacShared.Load(x); ok {
				return true
			}
			return mi.routedShared(x)
		}
		return false
	case *clusterv3.Cluster, *endpointv3.ClusterLoadAssignment, *routev3.RouteConfiguration, *listenerv3.Listener,
		*listenerv3.Filter, *corev3.TransportSocket:
		if idx.shared[x] {
			return true
		}
		if mi := idx.meshes[mesh]; mi != nil {
			return mi.routedShared(x)
		}
	}
	return false
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
	out := &Index{set: set, meshes: make(map[string]*meshIndex, len(idx.meshes)), locals: idx.locals, shared: idx.shared}
	for _, m := range set.Meshes {
		mi, err := newMeshIndex(set, m, idx.meshes[m.Name])
		if err != nil {
			return nil, err
		}
		mi.locals = idx.locals
		out.meshes[m.Name] = mi
	}
	return out, nil
}

// WithDataplanes is the Index of set, a Set that differs from idx's in the
// dataplanes diff names alone (added, edited or removed; its meshes and
// permissions are idx's very values): idx's, with the services those
// dataplanes provide or call, before and after, indexed again, each reusing
// what it can as NewIndexFrom does. It fails when set differs in more.
func (idx *Index) WithDataplanes(set *schema.Set, diff schema.SetDiff) (*Index, error) {
	if !slices.Equal(idx.set.Meshes, set.Meshes) || !slices.Equal(idx.set.TrafficPermissions, set.TrafficPermissions) ||
		!slices.Equal(idx.set.MeshTrafficPermissions, set.MeshTrafficPermissions) {
		return nil, errors.New("index: the set differs in more than its dataplanes")
	}
	out := &Index{set: set, meshes: make(map[string]*meshIndex, len(idx.meshes)), locals: maps.Clone(idx.locals),
		shared: maps.Clone(idx.shared)}
	touched := map[string]map[string]bool{} // mesh -> services to index again
	for _, k := range slices.Concat(diff.Added, diff.Changed, diff.Removed) {
		if k.Type != schema.TypeDataplane {
			return nil, errors.New("index: the set differs in more than its dataplanes")
		}
		if idx.meshes[k.Mesh] == nil {
			return nil, fmt.Errorf("index dataplane %s.%s: mesh %q does not exist", k.Mesh, k.Name, k.Mesh)
		}
		if touched[k.Mesh] == nil {
			touched[k.Mesh] = map[string]bool{}
		}
		for _, dp := range []*schema.Dataplane{idx.set.Dataplane(k.Mesh, k.Name), set.Dataplane(k.Mesh, k.Name)} {
			if dp == nil {
				continue
			}
			for _, in := range dp.Inbound {
				touched[k.Mesh][in.Service()] = true
			}
			for _, o := range dp.Outbound {
				touched[k.Mesh][o.Service] = true
			}
		}
	}
	var buf []byte
	for _, m := range set.Meshes {
		pmi := idx.meshes[m.Name]
		mi := &meshIndex{mesh: m, dataplanes: set.DataplanesIn(m.Name), services: pmi.services, rules: pmi.rules,
			byPermission: pmi.byPermission, byDestination: pmi.byDestination, anyDestination: pmi.anyDestination, mtps: pmi.mtps,
			downstreamTLS: pmi.downstreamTLS, grpcDownstreamTLS: pmi.grpcDownstreamTLS,
			rbac: pmi.rbac, rbacShared: pmi.rbacShared, locals: out.locals, routing: newRouteIndex(set, m.Name),
			confs: newConfIndex(set, m.Name)}
		out.meshes[m.Name] = mi
		names := touched[m.Name]
		if len(names) == 0 {
			continue
		}
		mi.services = maps.Clone(pmi.services)
		// The providers and consumers of the touched services, from the
		// dataplanes of the mesh (sorted by name, as indexDataplane wants).
		fresh := make(map[string]*service, len(names))
		for name := range names {
			fresh[name] = &service{name: name}
			delete(mi.services, name)
		}
		for _, dp := range mi.dataplanes {
			if !callsOrProvides(dp, names) {
				continue
			}
			for _, in := range dp.Inbound {
				if s := fresh[in.Service()]; s != nil {
					if n := len(s.providers); n == 0 || s.providers[n-1] != dp {
						s.providers = append(s.providers, dp)
					}
					s.endpoints = append(s.endpoints, endpoint{address: in.Address, port: in.Port})
				}
				if out.locals[in.ServicePort] == nil {
					var err error
					if buf, err = out.addLocal(in.ServicePort, nil, buf); err != nil {
						return nil, fmt.Errorf("index dataplane %s: %w", dp.NodeID(), err)
					}
				}
			}
			for _, o := range dp.Outbound {
				if s := fresh[o.Service]; s != nil {
					if n := len(s.consumers); n == 0 || s.consumers[n-1] != dp {
						s.consumers = append(s.consumers, dp)
					}
				}
			}
		}
		for name, s := range fresh {
			old := pmi.services[name]
			if old != nil {
				for _, v := range old.values {
					delete(out.shared, v)
				}
			}
			if len(s.providers) == 0 && len(s.consumers) == 0 {
				continue // no dataplane names it any more
			}
			s.settle()
			var err error
			if buf, err = out.settleService(m, s, old, buf); err != nil {
				return nil, err
			}
			mi.services[name] = s
		}
	}
	return out, nil
}

// callsOrProvides reports whether dp has an inbound or an outbound of one
// of the services names.
func callsOrProvides(dp *schema.Dataplane, names map[string]bool) bool {
	for _, in := range dp.Inbound {
		if names[in.Service()] {
			return true
		}
	}
	for _, o := range dp.Outbound {
		if names[o.Service] {
			return true
		}
	}
	return false
}

// settleService makes the shared values of s, a settled service of mesh m
// (old, when not nil, the same service in the Index idx is made from):
// old's when nothing they depend on changed, old's but the endpoints when
// only those did (recorded in moved), built anew otherwise; and registers
// them as shared.
func (idx *Index) settleService(m *schema.Mesh, s, old *service, buf []byte) ([]byte, error) {
	var err error
	// The same shape: what every shared value but the endpoints depends on.
	if mi := idx.meshes[m.Name]; mi != nil {
		s.h2 = s.grpc && (mi.routing.names(s.name) || mi.confs.names(s.name))
	}
	sameShape := old != nil && old.http == s.http && old.grpc == s.grpc && old.h2 == s.h2 && (len(old.consumers) > 0) == (len(s.consumers) > 0)
	switch {
	case sameShape && slices.Equal(old.endpoints, s.endpoints):
		s.reuse(old)
	case sameShape:
		if buf, err = s.reuseButEndpoints(old, buf); err != nil {
			return buf, fmt.Errorf("index mesh %s service %s: %w", m.Name, s.name, err)
		}
		if mi := idx.meshes[m.Name]; mi != nil && !mi.routing.none() {
			// Routes make subsets of services, with endpoints of their own
			// that a patch would not replace: the consumers are translated.
			break
		}
		if idx.moved == nil {
			idx.moved = map[string]map[string]bool{}
		}
		if idx.moved[m.Name] == nil {
			idx.moved[m.Name] = map[string]bool{}
		}
		idx.moved[m.Name][s.name] = true
	default:
		if buf, err = s.build(m, buf); err != nil {
			return buf, fmt.Errorf("index mesh %s service %s: %w", m.Name, s.name, err)
		}
	}
	for _, v := range s.values {
		idx.shared[v] = true
	}
	return buf, nil
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
		rbac:          new(sync.Map),
		rbacShared:    new(sync.Map),
		routing:       newRouteIndex(set, m.Name),
		confs:         newConfIndex(set, m.Name),
	}
	if from != nil {
		mi.services, mi.downstreamTLS, mi.grpcDownstreamTLS = from.services, from.downstreamTLS, from.grpcDownstreamTLS
	} else if m.MTLS.Enabled {
		ts, err := downstreamTLS()
		if err != nil {
			return nil, fmt.Errorf("index mesh %s: %w", m.Name, err)
		}
		mi.downstreamTLS = ts
		if mi.grpcDownstreamTLS, err = grpcDownstreamTLS(); err != nil {
			return nil, fmt.Errorf("index mesh %s: %w", m.Name, err)
		}
	}
	if m.MTLS.Enabled {
		mi.indexPermissions(set.PermissionsIn(m.Name))
		mi.mtps = set.MeshTrafficPermissionsIn(m.Name)
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
	s.settleEndpoints()
	s.http, s.grpc = len(s.providers) > 0, len(s.providers) > 0
	for _, dp := range s.providers {
		for _, in := range dp.Inbound {
			if in.Service() != s.name {
				continue
			}
			s.http = s.http && in.Protocol() == schema.ProtocolHTTP
			s.grpc = s.grpc && in.Protocol() == schema.ProtocolGRPC
		}
	}
}

// settleEndpoints sorts and dedupes a service's endpoints.
func (s *service) settleEndpoints() {
	slices.SortFunc(s.endpoints, func(a, b endpoint) int {
		return cmp.Or(cmp.Compare(a.address, b.address), cmp.Compare(a.port, b.port))
	})
	eps := s.endpoints[:0]
	for i, e := range s.endpoints {
		if i == 0 || e != s.endpoints[i-1] {
			eps = append(eps, e)
		}
	}
	s.endpoints = eps
}

// reuse takes the shared resources of old, the same service with the same
// endpoints and protocol in the same mesh.
func (s *service) reuse(old *service) {
	s.cluster, s.endpoint, s.route, s.outboundFilter = old.cluster, old.endpoint, old.route, old.outboundFilter
	s.grpcListener, s.grpcRoute, s.grpcCluster, s.values = old.grpcListener, old.grpcRoute, old.grpcCluster, old.values
}

// reuseButEndpoints takes the shared resources of old, the same service
// with the same protocol and consumers in the same mesh, but other
// endpoints: only its ClusterLoadAssignment depends on them, and is made
// anew.
func (s *service) reuseButEndpoints(old *service, buf []byte) ([]byte, error) {
	s.reuse(old)
	var ep shared
	buf, err := ep.set(loadAssignment(s.name, s.endpoints), buf)
	if err != nil {
		return buf, err
	}
	s.endpoint = ep
	s.values = slices.Clone(old.values)
	for i, v := range s.values {
		if v == old.endpoint.res {
			s.values[i] = ep.res
		}
	}
	return buf, nil
}

// build builds the resources the consumers of a settled service share.
func (s *service) build(m *schema.Mesh, buf []byte) ([]byte, error) {
	c, err := edsCluster(m, s.name, FlavorEnvoy, s.h2)
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
	if err != nil {
		return buf, err
	}
	s.values = []any{s.cluster.res, s.endpoint.res, s.outboundFilter, s.outboundFilter.GetTypedConfig()}
	if ts := c.GetTransportSocket(); ts != nil {
		s.values = append(s.values, ts.GetTypedConfig())
	}
	if s.http {
		s.values = append(s.values, s.route.res)
	}
	if len(s.consumers) == 0 {
		return buf, nil
	}
	l, err := grpcClientListener(s.name)
	if err != nil {
		return buf, err
	}
	gc, err := edsCluster(m, s.name, FlavorGRPC, false)
	if err != nil {
		return buf, err
	}
	if buf, err = s.grpcListener.set(l, buf); err != nil {
		return buf, err
	}
	if buf, err = s.grpcRoute.set(routeConfig(s.name, s.name, s.name), buf); err != nil {
		return buf, err
	}
	if buf, err = s.grpcCluster.set(gc, buf); err != nil {
		return buf, err
	}
	s.values = append(s.values, l, l.GetApiListener().GetApiListener(), s.grpcRoute.res, gc)
	if ts := gc.GetTransportSocket(); ts != nil {
		s.values = append(s.values, ts.GetTypedConfig())
	}
	return buf, nil
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

// rbacFor is the RBAC of inbound i of dp: the merged MeshTrafficPermissions
// that select it, or else the rules of the legacy permissions matching its
// tags, and the HTTP filter enforcing them; the same values for every
// inbound selected by the same policies or matching the same rules.
func (mi *meshIndex) rbacFor(dp *schema.Dataplane, i int) (*rbacFilters, error) {
	var positions []int32
	var key []byte
	var selecting []*schema.MeshTrafficPermission
	if len(mi.mtps) > 0 {
		key = append(key, 'm') // never a legacy key, whose length is a multiple of 4
		for pos, p := range mi.mtps {
			if p.TargetRef.SelectsInbound(dp, i) {
				selecting = append(selecting, p)
				key = binary.BigEndian.AppendUint32(key, uint32(pos))
			}
		}
	}
	if len(selecting) == 0 {
		positions = mi.matchingRules(dp.Inbound[i].Tags)
		key = make([]byte, 0, 4*len(positions))
		for _, p := range positions {
			key = binary.BigEndian.AppendUint32(key, uint32(p))
		}
	}
	if v, ok := mi.rbac.Load(string(key)); ok {
		return v.(*rbacFilters), nil
	}
	var rules, shadow *rbacv3.RBAC
	if len(selecting) > 0 {
		schema.SortPermissions(selecting)
		rules, shadow = meshPermissionRBAC(mi.mesh.Name, schema.MergePermissions(selecting))
	} else {
		rules = mi.rbacRules(positions)
	}
	http, err := httpRBAC(rules, shadow)
	if err != nil {
		return nil, err
	}
	// Registered before it can be found: a Checker that finds the filter
	// knows it is shared.
	mi.rbacShared.Store(rules, true)
	if shadow != nil {
		mi.rbacShared.Store(shadow, true)
	}
	mi.rbacShared.Store(http, true)
	mi.rbacShared.Store(http.GetTypedConfig(), true)
	v, _ := mi.rbac.LoadOrStore(string(key), &rbacFilters{rules: rules, shadow: shadow, http: http})
	return v.(*rbacFilters), nil
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
