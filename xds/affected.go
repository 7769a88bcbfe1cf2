package xds

import (
	"maps"
	"slices"
	"sort"

	"github.com/gitmesh/gitmesh/schema"
)

// Ref names a resource of a mesh: a dataplane, a service or a traffic
// permission.
type Ref struct {
	Mesh string
	Name string
}

// Change lists what differs between two Sets, as the caller's diff found it.
type Change struct {
	// Meshes whose Mesh resource was added, removed or edited: every
	// dataplane of such a mesh is affected.
	Meshes []string
	// Dataplanes added, removed or edited. Each is affected itself, and so
	// is every consumer of a service it provides (endpoints, protocol).
	Dataplanes []Ref
	// Services whose endpoints or protocol changed for another reason.
	Services []Ref
	// Permissions added, removed or edited: every dataplane with an inbound
	// a rule's destinations match is affected.
	Permissions []Ref
	// MeshPermissions are MeshTrafficPermissions added, removed or edited:
	// every dataplane with an inbound the policy's targetRef selects is
	// affected.
	MeshPermissions []Ref
	// HTTPRoutes and TCPRoutes are MeshHTTPRoutes and MeshTCPRoutes added,
	// removed or edited: every dataplane the policy's targetRef selects
	// that calls one of its services is affected.
	HTTPRoutes, TCPRoutes []Ref
	// Policies are conf policies (MeshTimeout, ...) added, removed or
	// edited: every dataplane the policy's targetRef selects is affected.
	Policies []schema.Key
}

// Affected returns the node ids, sorted and distinct, of the dataplanes of
// idx's Set whose translation may differ because of c. It sees only idx's
// Set: a permission that was narrowed or removed matches its former
// destinations only in the previous Set's Index, so callers ask both, as
// AffectedBetween does.
func (idx *Index) Affected(c Change) []string { return idx.affected(c, nil) }

// affected is Affected, leaving out the consumers of the services of skip
// (per mesh) that only a dataplane's change reaches.
func (idx *Index) affected(c Change, skip map[string]map[string]bool) []string {
	seen := make(map[*schema.Dataplane]bool)
	add := func(dp *schema.Dataplane) { seen[dp] = true }
	for _, m := range c.Meshes {
		if mi := idx.meshes[m]; mi != nil {
			for _, dp := range mi.dataplanes {
				add(dp)
			}
		}
	}
	for _, r := range c.Dataplanes {
		mi := idx.meshes[r.Mesh]
		if mi == nil {
			continue
		}
		dp := idx.set.Dataplane(r.Mesh, r.Name)
		if dp == nil {
			continue
		}
		add(dp)
		for _, in := range dp.Inbound {
			if skip[r.Mesh][in.Service()] {
				continue
			}
			if s := mi.services[in.Service()]; s != nil {
				for _, consumer := range s.consumers {
					add(consumer)
				}
			}
			mi.backendUsers(in.Service(), add)
		}
	}
	for _, r := range c.Services {
		if mi := idx.meshes[r.Mesh]; mi != nil {
			if s := mi.services[r.Name]; s != nil {
				for _, consumer := range s.consumers {
					add(consumer)
				}
			}
			mi.backendUsers(r.Name, add)
		}
	}
	for _, r := range c.HTTPRoutes {
		if mi := idx.meshes[r.Mesh]; mi != nil {
			if p := idx.set.MeshHTTPRoute(r.Mesh, r.Name); p != nil {
				mi.routeClients(p.TargetRef, p.Services(), add)
				mi.h2Users(slices.Concat(p.Services(), p.Backends()), add)
			}
		}
	}
	for _, r := range c.TCPRoutes {
		if mi := idx.meshes[r.Mesh]; mi != nil {
			if p := idx.set.MeshTCPRoute(r.Mesh, r.Name); p != nil {
				mi.routeClients(p.TargetRef, p.Services(), add)
				mi.h2Users(slices.Concat(p.Services(), p.Backends()), add)
			}
		}
	}
	for _, r := range c.Permissions {
		if mi := idx.meshes[r.Mesh]; mi != nil {
			for _, pos := range mi.byPermission[r.Name] {
				mi.destinationsOf(mi.rules[pos], add)
			}
		}
	}
	for _, r := range c.MeshPermissions {
		mi := idx.meshes[r.Mesh]
		p := idx.set.MeshTrafficPermission(r.Mesh, r.Name)
		if mi == nil || p == nil {
			continue
		}
		for _, dp := range mi.dataplanes {
			if p.TargetRef.SelectsDataplane(dp) {
				add(dp)
			}
		}
	}
	for _, k := range c.Policies {
		mi := idx.meshes[k.Mesh]
		p := idx.set.Policy(k.Type, k.Mesh, k.Name)
		if mi == nil || p == nil {
			continue
		}
		for _, dp := range mi.dataplanes {
			if !p.TargetRef.SelectsClient(dp) {
				continue
			}
			add(dp)
			if len(p.From)+len(p.Rules) == 0 {
				continue
			}
			// What the inbounds of a service get, their gRPC callers may
			// run (MeshFaultInjection).
			for _, in := range dp.Inbound {
				if s := mi.services[in.Service()]; s != nil {
					for _, c := range s.consumers {
						add(c)
					}
				}
			}
		}
		// Whether it names a gRPC service decides whether Envoy routes that
		// service's calls over HTTP/2, in every proxy that calls it.
		var named []string
		for _, it := range p.To {
			switch it.TargetRef.Kind {
			case schema.KindMesh:
				named = slices.Collect(maps.Keys(mi.services))
			case schema.KindMeshService:
				named = append(named, it.TargetRef.Name)
			}
		}
		mi.h2Users(named, add)
	}
	ids := make([]string, 0, len(seen))
	for dp := range seen {
		ids = append(ids, dp.NodeID().String())
	}
	sort.Strings(ids)
	return ids
}

// destinationsOf calls add for each dataplane with an inbound that one of
// the rule's destination selectors matches.
func (mi *meshIndex) destinationsOf(r *rule, add func(*schema.Dataplane)) {
	for _, d := range r.destinations {
		candidates := mi.dataplanes
		if svc, ok := d[schema.TagService]; ok && svc != "*" {
			s := mi.services[svc]
			if s == nil {
				continue
			}
			candidates = s.providers
		}
		for _, dp := range candidates {
			for _, in := range dp.Inbound {
				if d.Matches(in.Tags) {
					add(dp)
					break
				}
			}
		}
	}
}

// AffectedBetween is the union of prev.Affected(c) and next.Affected(c):
// the proxies to re-translate (those of next) or drop (those only in prev)
// when the Set changes from prev's to next's. prev may be nil for the first
// Set.
func AffectedBetween(prev, next *Index, c Change) []string {
	return affectedBetween(prev, next, c, nil)
}

// affectedBetween is AffectedBetween, leaving out the consumers of the
// services of skip that only a dataplane's change reaches.
func affectedBetween(prev, next *Index, c Change, skip map[string]map[string]bool) []string {
	ids := next.affected(c, skip)
	if prev == nil {
		return ids
	}
	ids = append(ids, prev.affected(c, skip)...)
	sort.Strings(ids)
	out := ids[:0]
	for i, id := range ids {
		if i == 0 || id != ids[i-1] {
			out = append(out, id)
		}
	}
	return out
}

// ChangeOf turns a resource diff into the Change that Affected reads.
func ChangeOf(d schema.SetDiff) Change {
	var c Change
	for _, list := range [][]schema.Key{d.Added, d.Changed, d.Removed} {
		for _, k := range list {
			switch k.Type {
			case schema.TypeMesh:
				c.Meshes = append(c.Meshes, k.Name)
			case schema.TypeDataplane:
				c.Dataplanes = append(c.Dataplanes, Ref{Mesh: k.Mesh, Name: k.Name})
			case schema.TypeTrafficPermission:
				c.Permissions = append(c.Permissions, Ref{Mesh: k.Mesh, Name: k.Name})
			case schema.TypeMeshTrafficPermission:
				c.MeshPermissions = append(c.MeshPermissions, Ref{Mesh: k.Mesh, Name: k.Name})
			case schema.TypeMeshHTTPRoute:
				c.HTTPRoutes = append(c.HTTPRoutes, Ref{Mesh: k.Mesh, Name: k.Name})
			case schema.TypeMeshTCPRoute:
				c.TCPRoutes = append(c.TCPRoutes, Ref{Mesh: k.Mesh, Name: k.Name})
			default:
				if schema.IsConfKind(k.Type) {
					c.Policies = append(c.Policies, k)
				}
			}
		}
	}
	return c
}

// routeClients calls add for each dataplane that t selects as a client and
// that calls one of services.
func (mi *meshIndex) routeClients(t schema.TargetRef, services []string, add func(*schema.Dataplane)) {
	for _, name := range services {
		s := mi.services[name]
		if s == nil {
			continue
		}
		for _, dp := range s.consumers {
			if t.SelectsClient(dp) {
				add(dp)
			}
		}
	}
}

// backendUsers calls add for each dataplane a route policy may send to
// service as a backend (or mirror) of another service: they hold its
// clusters and endpoints without being its consumers.
func (mi *meshIndex) backendUsers(service string, add func(*schema.Dataplane)) {
	for _, p := range mi.routing.https {
		if slices.Contains(p.Backends(), service) {
			mi.routeClients(p.TargetRef, p.Services(), add)
		}
	}
	for _, p := range mi.routing.tcps {
		if slices.Contains(p.Backends(), service) {
			mi.routeClients(p.TargetRef, p.Services(), add)
		}
	}
}

// h2Users calls add for each dataplane holding the cluster of one of the
// gRPC services: whether a route names such a service decides whether its
// Envoy cluster speaks HTTP/2, in every proxy that holds it.
func (mi *meshIndex) h2Users(services []string, add func(*schema.Dataplane)) {
	for _, name := range services {
		s := mi.services[name]
		if s == nil || !s.grpc {
			continue
		}
		for _, dp := range s.consumers {
			add(dp)
		}
		mi.backendUsers(name, add)
	}
}
