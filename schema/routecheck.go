package schema

import (
	"fmt"
	"strings"
)

// routeChecker warns where a MeshHTTPRoute or MeshTCPRoute does less than
// it says: on services nobody provides, on subsets no inbound has, on data
// planes that cannot take a part of it.
type routeChecker struct {
	set            *Set
	protocols      map[string]map[string]string // mesh -> service -> protocol of its inbounds ("" mixed)
	warnAt         func(*entry, string, Code, string, string)
	unknownService func(*entry, string, string, string)
}

// serviceProtocols are, per mesh, the protocol every inbound of a service
// has ("mixed" when they differ), for the set's dataplanes.
func serviceProtocols(set *Set) map[string]map[string]string {
	out := map[string]map[string]string{}
	for _, dp := range set.Dataplanes {
		m := out[dp.Mesh]
		if m == nil {
			m = map[string]string{}
			out[dp.Mesh] = m
		}
		for _, in := range dp.Inbound {
			p, seen := m[in.Service()]
			switch {
			case !seen:
				m[in.Service()] = in.Protocol()
			case p != in.Protocol():
				m[in.Service()] = "mixed"
			}
		}
	}
	return out
}

// backend checks one backendRef (or mirror) of a route.
func (c *routeChecker) backend(e *entry, b BackendRef, what string) {
	if b.Name == "" {
		return
	}
	protocols := c.protocols[e.mesh]
	if _, ok := protocols[b.Name]; !ok {
		c.unknownService(e, b.Pointer+"/name", b.Name, what)
		return
	}
	if b.Kind != KindMeshServiceSubset || len(b.Tags) == 0 {
		return
	}
	sel := b.Selector()
	for _, dp := range c.set.DataplanesIn(e.mesh) {
		for _, in := range dp.Inbound {
			if sel.Matches(in.Tags) {
				return
			}
		}
	}
	c.warnAt(e, b.Pointer+"/tags", CodeNoEffect,
		fmt.Sprintf("%s matches no inbound of service %q: the requests sent to it fail", TargetRef{Kind: b.Kind, Name: b.Name, Tags: b.Tags}, b.Name),
		"check the tags against the service's Dataplanes")
}

// clients are the names of the dataplanes labelled with flavor that the
// policy selects and that call service.
func (c *routeChecker) clients(meta PolicyMeta, service, flavor string) []string {
	var out []string
	for _, dp := range c.set.DataplanesIn(meta.Mesh) {
		if dp.Labels[FlavorLabel] != flavor || !meta.TargetRef.SelectsClient(dp) {
			continue
		}
		for _, o := range dp.Outbound {
			if o.Service == service {
				out = append(out, dp.Name)
				break
			}
		}
	}
	return out
}

func listNames(names []string) string {
	more := ""
	if len(names) > 5 {
		more = fmt.Sprintf(" and %d more", len(names)-5)
		names = names[:5]
	}
	return strings.Join(names, ", ") + more
}

func (c *routeChecker) httpRoute(e *entry) {
	p := e.hr
	protocols := c.protocols[e.mesh]
	c.serviceRef(e, p.TargetRef)
	for _, to := range p.To {
		svc := to.TargetRef.Name
		if svc == "" {
			continue
		}
		proto, known := protocols[svc]
		if !known {
			c.unknownService(e, to.TargetRef.Pointer+"/name", svc, "to targetRef")
		}
		if known && proto != ProtocolHTTP && proto != ProtocolGRPC {
			if envoy := c.clients(p.PolicyMeta, svc, "envoy"); len(envoy) > 0 {
				c.warnAt(e, to.Pointer, CodeUnsupportedByFlavor,
					fmt.Sprintf("service %q speaks %s, neither http nor grpc: Envoy proxies reach it over TCP and ignore this MeshHTTPRoute; dataplanes %s are labelled %s: envoy",
						svc, proto, listNames(envoy), FlavorLabel),
					"tag the service's inbounds `protocol: http`, or route its connections with a MeshTCPRoute; proxyless gRPC clients apply the route")
			}
		}
		c.shadowed(e, to)
		var grpc []string
		grpcKnown := false
		for _, r := range to.Rules {
			weight := uint64(0)
			for _, b := range r.BackendRefs {
				c.backend(e, b, "backendRef")
				weight += uint64(b.Weight)
			}
			if r.HasBackendRefs && len(r.BackendRefs) > 0 && weight == 0 {
				c.warnAt(e, r.Pointer+"/default/backendRefs", CodeNoEffect,
					"every backend has weight 0: the rule's routes are left out, as in Kuma, and its requests go to the next route that matches",
					"give a backend a weight above 0, or remove the rule")
			}
			for _, f := range r.Filters {
				if f.Mirror != nil {
					c.backend(e, f.Mirror.BackendRef, "requestMirror backendRef")
				}
				if !grpcKnown {
					grpc, grpcKnown = c.clients(p.PolicyMeta, svc, "grpc"), true
				}
				if len(grpc) > 0 {
					c.warnAt(e, f.Pointer+"/type", CodeUnsupportedByFlavor,
						fmt.Sprintf("proxyless gRPC %s: dataplanes %s are labelled %s: grpc", GRPCDrops(f.Type), listNames(grpc), FlavorLabel),
						"only Envoy applies this filter")
				}
			}
		}
	}
}

// shadowed warns on each match in a to[] item that also has a catch-all
// rule (PathPrefix /) that Kuma's order puts after it: a match without a
// path (sorted after every match with one) and a RegularExpression path
// (sorted after every prefix). The catch-all route comes first and such a
// match never applies.
func (c *routeChecker) shadowed(e *entry, to HTTPRouteTo) {
	catchAll := ""
	for _, r := range to.Rules {
		for k, m := range r.Matches {
			if m.Path != nil && m.Path.Type == PathPrefix && m.Path.Value == "/" && m.Method == "" && len(m.Headers) == 0 && len(m.QueryParams) == 0 {
				catchAll = fmt.Sprintf("%s/matches/%d", r.Pointer, k)
			}
		}
	}
	if catchAll == "" {
		return
	}
	for _, r := range to.Rules {
		for k, m := range r.Matches {
			ptr := fmt.Sprintf("%s/matches/%d", r.Pointer, k)
			switch {
			case m.Path == nil:
				c.warnAt(e, ptr, CodeNoEffect,
					fmt.Sprintf("this match never applies: Kuma orders matches without a path after those with one, so the catch-all rule at %s comes first", catchAll),
					"add `path: {type: PathPrefix, value: /}` to this match: of two equal paths, the one with more headers wins")
			case m.Path.Type == PathRegularExp:
				c.warnAt(e, ptr+"/path", CodeNoEffect,
					fmt.Sprintf("this match never applies: Kuma orders RegularExpression paths after every PathPrefix, so the catch-all rule at %s comes first", catchAll),
					"match a prefix or an exact path instead: Kuma tries an expression only where no prefix matches")
			}
		}
	}
}

// GRPCDrops says what a proxyless gRPC client does with a filter of type
// typ, which it cannot apply.
func GRPCDrops(typ string) string {
	if typ == FilterRequestRedirect {
		return "fails the calls a RequestRedirect matches (UNAVAILABLE): gRPC follows no redirects"
	}
	return "ignores " + typ + " filters"
}

func (c *routeChecker) tcpRoute(e *entry) {
	p := e.tr
	c.serviceRef(e, p.TargetRef)
	for _, to := range p.To {
		if svc := to.TargetRef.Name; svc != "" {
			if _, ok := c.protocols[e.mesh][svc]; !ok {
				c.unknownService(e, to.TargetRef.Pointer+"/name", svc, "to targetRef")
			}
		}
		for _, ptr := range to.Ignored {
			c.warnAt(e, ptr, CodeNoEffect, "only the first rule of a MeshTCPRoute to[] item applies, as in Kuma",
				"keep one rule per to[] item")
		}
		if to.Rule == "" {
			continue
		}
		for _, b := range to.BackendRefs {
			c.backend(e, b, "backendRef")
		}
	}
}

// serviceRef warns on a top-level targetRef naming a service nobody
// provides.
func (c *routeChecker) serviceRef(e *entry, t TargetRef) {
	if (t.Kind == KindMeshService || t.Kind == KindMeshServiceSubset) && t.Name != "" {
		if _, ok := c.protocols[e.mesh][t.Name]; !ok {
			c.unknownService(e, t.Pointer+"/name", t.Name, "targetRef")
		}
	}
}
