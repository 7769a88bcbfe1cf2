package xds

// MeshHTTPRoute and MeshTCPRoute. The route policies that select a calling
// proxy and name one of its outbound services change what the proxy holds
// for that service: its route configuration (HTTP routes with matches,
// filters and weighted clusters), its outbound filter (a weighted
// tcp_proxy) and the clusters its backends need, a subset of a service
// being a cluster of its own named SubsetClusterName. Every proxy that the
// same policies select for the same service holds the same values, made
// once per Index.

import (
	"encoding/binary"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/gitmesh/gitmesh/schema"
)

// SubsetClusterName names the cluster of the instances of service that
// have tags: <service>{k=v,...}, keys sorted, e.g. reviews{version=v1}.
// A backend that is the whole service uses the service's own cluster.
func SubsetClusterName(service string, tags map[string]string) string {
	if len(tags) == 0 {
		return service
	}
	keys := slices.Sorted(maps.Keys(tags))
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + tags[k]
	}
	return service + "{" + strings.Join(parts, ",") + "}"
}

// routeIndex is what a mesh's route policies need during translation.
type routeIndex struct {
	https []*schema.MeshHTTPRoute
	tcps  []*schema.MeshTCPRoute
	// httpFor and tcpFor are, per service, the positions in https and tcps
	// of the policies with a to[] item for it, ascending; backendOf the
	// services a backend or mirror names.
	httpFor, tcpFor map[string][]int32
	backendOf       map[string]bool
	// memo holds, by service and the positions of the policies that select
	// a proxy for it, the routed values of every such proxy; backends the
	// clusters of each backend by cluster name; shared registers every
	// value of both (and their typed configs) as shared.
	memo, backends, shared *sync.Map
}

func newRouteIndex(set *schema.Set, mesh string) routeIndex {
	ri := routeIndex{https: set.MeshHTTPRoutesIn(mesh), tcps: set.MeshTCPRoutesIn(mesh),
		memo: new(sync.Map), backends: new(sync.Map), shared: new(sync.Map)}
	if ri.none() {
		return ri
	}
	ri.httpFor, ri.tcpFor, ri.backendOf = map[string][]int32{}, map[string][]int32{}, map[string]bool{}
	for pos, p := range ri.https {
		for _, svc := range p.Services() {
			ri.httpFor[svc] = append(ri.httpFor[svc], int32(pos))
		}
		for _, svc := range p.Backends() {
			ri.backendOf[svc] = true
		}
	}
	for pos, p := range ri.tcps {
		for _, svc := range p.Services() {
			ri.tcpFor[svc] = append(ri.tcpFor[svc], int32(pos))
		}
		for _, svc := range p.Backends() {
			ri.backendOf[svc] = true
		}
	}
	return ri
}

// names reports whether a route policy of the mesh names service, as a
// destination or a backend.
func (ri *routeIndex) names(service string) bool {
	return len(ri.httpFor[service]) > 0 || len(ri.tcpFor[service]) > 0 || ri.backendOf[service]
}

// none reports whether the mesh has no route policy.
func (ri *routeIndex) none() bool { return len(ri.https) == 0 && len(ri.tcps) == 0 }

// routed is what the route policies make of one service for the proxies
// they select: per flavour, what replaces the service's shared values.
type routed struct {
	table       *schema.RouteTable
	envoy, grpc flavorRoutes
}

// flavorRoutes are one flavour's routed values. route is nil when no HTTP
// route applies (the shared one stays); filter is the Envoy outbound filter
// when a MeshTCPRoute decides (nil otherwise). clusters are the clusters
// the routes and filter name, with their endpoints.
type flavorRoutes struct {
	route       *shared
	filter      *listenerv3.Filter
	listener    *shared // a gRPC client listener of its own; nil for the service's
	clusters    []*backendCluster
	unsupported []string
}

// backendCluster is the cluster of a backend and its endpoints, per
// flavour (the endpoints are the same).
type backendCluster struct {
	name, service string
	envoy, grpc   *shared
	endpoints     *shared
	// http and h2 say that every inbound of the backend's service speaks
	// HTTP, or gRPC (the Envoy cluster then speaks HTTP/2).
	http, h2 bool
}

// routesFor is what the route policies decide for dp's calls to s; nil
// when none selects dp for s.
func (mi *meshIndex) routesFor(dp *schema.Dataplane, s *service) (*routed, error) {
	ri, ci := &mi.routing, &mi.confs
	if ri.none() && ci.none() {
		return nil, nil
	}
	key := append(make([]byte, 0, 64), s.name...)
	key = append(key, 0)
	found := false
	for _, pos := range ri.httpFor[s.name] {
		if ri.https[pos].TargetRef.SelectsClient(dp) {
			key, found = binary.BigEndian.AppendUint32(key, uint32(pos)), true
		}
	}
	key = append(key, 0xff)
	for _, pos := range ri.tcpFor[s.name] {
		if ri.tcps[pos].TargetRef.SelectsClient(dp) {
			key, found = binary.BigEndian.AppendUint32(key, uint32(pos)), true
		}
	}
	confFound := false
	if !ci.none() {
		key, confFound = ci.toKey(key, dp, s.name, outboundKinds...)
		if cf, err := mi.clientFaults(s); err != nil {
			return nil, err
		} else if cf != nil {
			confFound = true // the same for every client: s is in the key
		}
	}
	if !found && !confFound {
		return nil, nil
	}
	if v, ok := ri.memo.Load(string(key)); ok {
		return v.(*routed), nil
	}
	table := &schema.RouteTable{Service: s.name}
	if found {
		hs, ts := schema.SelectingClient(ri.https, ri.tcps, dp, s.name)
		table = schema.MergeRoutes(s.name, hs, ts)
	}
	r, err := mi.buildRouted(s, table, ci.outbound(dp, s.name))
	if err != nil {
		return nil, fmt.Errorf("routes of service %s: %w", s.name, err)
	}
	v, _ := ri.memo.LoadOrStore(string(key), r)
	return v.(*routed), nil
}

// RoutesOf is what the route policies decide for the calls dp makes to
// service, as translation reads it; nil when none applies.
func (idx *Index) RoutesOf(dp *schema.Dataplane, service string) *schema.RouteTable {
	mi := idx.meshes[dp.Mesh]
	if mi == nil || mi.routing.none() {
		return nil
	}
	hs, ts := schema.SelectingClient(mi.routing.https, mi.routing.tcps, dp, service)
	if len(hs) == 0 && len(ts) == 0 {
		return nil
	}
	return schema.MergeRoutes(service, hs, ts)
}

// buildRouted makes the routed values of table for both flavours.
func (mi *meshIndex) buildRouted(s *service, table *schema.RouteTable, oc outboundConf) (*routed, error) {
	r := &routed{table: table}
	for _, f := range []Flavor{FlavorEnvoy, FlavorGRPC} {
		fr, err := mi.flavorRoutes(s, table, f, oc)
		if err != nil {
			return nil, err
		}
		if f == FlavorEnvoy {
			r.envoy = fr
		} else {
			r.grpc = fr
		}
	}
	return r, nil
}

func (mi *meshIndex) flavorRoutes(s *service, table *schema.RouteTable, flavor Flavor, oc outboundConf) (flavorRoutes, error) {
	var fr flavorRoutes
	out := fmt.Sprintf("outbound %s", s.name)
	self := []schema.BackendRef{{Kind: schema.KindMeshService, Name: s.name, Weight: 1}}
	tcpSelf := false
	if !table.Routed() {
		// No route, but conf policies: the service itself, with them.
		t := *table
		if flavor == FlavorGRPC || s.http || s.h2 {
			t.HTTP = []schema.Route{{Match: schema.HTTPMatch{Path: &schema.PathMatch{Type: schema.PathPrefix, Value: "/"}}, Backends: self}}
		} else {
			t.TCP, tcpSelf = self, true
		}
		table = &t
	}
	edit := &outboundEdit{flavor: flavor, out: out, service: s}
	var clusters []*backendCluster
	keep := func(bc *backendCluster) {
		if !slices.Contains(clusters, bc) {
			clusters = append(clusters, bc)
		}
	}
	cluster := func(b schema.BackendRef) (*backendCluster, error) {
		bc, err := mi.backendCluster(b.Name, b.Tags)
		if err == nil {
			keep(bc)
		}
		return bc, err
	}
	// weights are the backends with a weight, as clusters: Envoy sends
	// HTTP only to services that speak it (as Kuma), gRPC to any.
	weights := func(refs []schema.BackendRef, http bool) ([]*routev3.WeightedCluster_ClusterWeight, error) {
		var ws []*routev3.WeightedCluster_ClusterWeight
		for _, b := range refs {
			if b.Weight == 0 {
				continue
			}
			bc, err := mi.backendCluster(b.Name, b.Tags)
			if err != nil {
				return nil, err
			}
			if http && flavor == FlavorEnvoy && !bc.http && !bc.h2 {
				fr.unsupported = append(fr.unsupported, fmt.Sprintf("%s: backend %s speaks neither HTTP nor gRPC and is left out of the route, as in Kuma", out, b))
				continue
			}
			keep(bc)
			ws = append(ws, &routev3.WeightedCluster_ClusterWeight{Name: bc.name, Weight: wrapperspb.UInt32(b.Weight)})
		}
		return ws, nil
	}
	httpApplies := table.HTTP != nil && (flavor == FlavorGRPC || s.http || s.grpc)
	switch {
	case httpApplies:
		var routes []*routev3.Route
		for _, rt := range table.HTTP {
			ws, err := weights(rt.Backends, true)
			if err != nil {
				return fr, err
			}
			er, notes, err := mi.route(rt, ws, flavor, cluster)
			if err != nil {
				return fr, err
			}
			for _, n := range notes {
				fr.unsupported = append(fr.unsupported, fmt.Sprintf("%s: route %s (%s): %s", out, rt.Name(), rt.Match, n))
			}
			if er != nil {
				if a := er.GetRoute(); a != nil {
					edit.actions = append(edit.actions, a)
				}
				routes = append(routes, er)
			}
		}
		name := OutboundRouteName(s.name)
		if flavor == FlavorGRPC {
			name = s.name
		} else if !s.http || len(oc) > 0 {
			// A gRPC service, which Envoy otherwise proxies as TCP (HTTP/2
			// negotiated, as gRPC speaks it), or the conf policies' fields.
			edit.hcm = hcmConfig(statPrefix(s.name), name, nil)
		}
		if err := edit.apply(oc); err != nil {
			return fr, err
		}
		if flavor == FlavorGRPC {
			cf, err := mi.clientFaults(s)
			if err != nil {
				return fr, err
			}
			if cf != nil {
				edit.grpcFilters = append(edit.grpcFilters, cf.filters...)
				edit.notes = append(edit.notes, cf.notes...)
			}
		}
		fr.unsupported = append(fr.unsupported, edit.notes...)
		if edit.hcm != nil {
			f, err := networkFilter(wellknown.HTTPConnectionManager, edit.hcm)
			if err != nil {
				return fr, err
			}
			fr.filter = f
		}
		if len(edit.grpcFilters) > 0 {
			l, err := grpcClientListenerWith(s.name, edit.grpcFilters)
			if err != nil {
				return fr, err
			}
			fr.listener = &shared{}
			if _, err := fr.listener.set(l, nil); err != nil {
				return fr, err
			}
		}
		fr.route = &shared{}
		if _, err := fr.route.set(&routev3.RouteConfiguration{Name: name, VirtualHosts: []*routev3.VirtualHost{{
			Name: s.name, Domains: []string{"*"}, Routes: routes,
		}}}, nil); err != nil {
			return fr, err
		}
	case table.TCPBy != nil || tcpSelf:
		ws, err := weights(table.TCP, false)
		if err != nil {
			return fr, err
		}
		if flavor == FlavorGRPC {
			// gRPC has no TCP: the same split, per call.
			var routes []*routev3.Route
			if len(ws) > 0 {
				action := routeAction(ws)
				edit.actions = append(edit.actions, action)
				routes = []*routev3.Route{{Name: table.TCPBy.Name + strings.TrimPrefix(table.TCPRule, "/spec"),
					Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
					Action: &routev3.Route_Route{Route: action}}}
			}
			if err := edit.apply(oc); err != nil {
				return fr, err
			}
			fr.unsupported = append(fr.unsupported, edit.notes...)
			fr.route = &shared{}
			if _, err := fr.route.set(&routev3.RouteConfiguration{Name: s.name, VirtualHosts: []*routev3.VirtualHost{{
				Name: s.name, Domains: []string{"*"}, Routes: routes,
			}}}, nil); err != nil {
				return fr, err
			}
			break
		}
		tp := &tcpproxyv3.TcpProxy{StatPrefix: statPrefix(s.name)}
		edit.tcp = tp
		if err := edit.apply(oc); err != nil {
			return fr, err
		}
		fr.unsupported = append(fr.unsupported, edit.notes...)
		switch len(ws) {
		case 0:
			// Nothing to send to: the connections are refused.
			tp.ClusterSpecifier = &tcpproxyv3.TcpProxy_Cluster{Cluster: s.name}
			if _, err := cluster(schema.BackendRef{Name: s.name}); err != nil {
				return fr, err
			}
			if table.TCPBy != nil {
				fr.unsupported = append(fr.unsupported, fmt.Sprintf("%s: MeshTCPRoute %s has no backend with a weight: the service itself is reached", out, table.TCPBy.Name))
			}
		case 1:
			tp.ClusterSpecifier = &tcpproxyv3.TcpProxy_Cluster{Cluster: ws[0].GetName()}
		default:
			wc := &tcpproxyv3.TcpProxy_WeightedCluster{}
			for _, w := range ws {
				wc.Clusters = append(wc.Clusters, &tcpproxyv3.TcpProxy_WeightedCluster_ClusterWeight{Name: w.GetName(), Weight: w.GetWeight().GetValue()})
			}
			tp.ClusterSpecifier = &tcpproxyv3.TcpProxy_WeightedClusters{WeightedClusters: wc}
		}
		f, err := networkFilter(wellknown.TCPProxy, tp)
		if err != nil {
			return fr, err
		}
		fr.filter = f
	default:
		// An HTTP route on Envoy for a service that speaks TCP.
		fr.unsupported = append(fr.unsupported, fmt.Sprintf(
			"%s: service %s speaks neither HTTP nor gRPC: Envoy proxies it as TCP and ignores MeshHTTPRoute %s", out, s.name, table.HTTPPolicies[len(table.HTTPPolicies)-1].Name))
		return fr, nil
	}
	sort.SliceStable(clusters, func(i, j int) bool { return clusters[i].name < clusters[j].name })
	fr.clusters = clusters
	mi.registerRouted(&fr, flavor)
	return fr, nil
}

// routedShared reports whether x is a value the route policies made.
func (mi *meshIndex) routedShared(x any) bool {
	if mi.routing.none() && mi.confs.none() {
		return false
	}
	_, ok := mi.routing.shared.Load(x)
	return ok
}

// registerRouted records fr's values as shared by the proxies of the Index.
func (mi *meshIndex) registerRouted(fr *flavorRoutes, flavor Flavor) {
	reg := mi.routing.shared
	if fr.route != nil {
		reg.Store(fr.route.res, true)
	}
	if fr.filter != nil {
		reg.Store(fr.filter, true)
		reg.Store(fr.filter.GetTypedConfig(), true)
	}
	if fr.listener != nil {
		l := fr.listener.res.(*listenerv3.Listener)
		reg.Store(l, true)
		reg.Store(l.GetApiListener().GetApiListener(), true)
	}
	for _, bc := range fr.clusters {
		c := bc.envoy
		if flavor == FlavorGRPC {
			c = bc.grpc
		}
		reg.Store(c.res, true)
		reg.Store(bc.endpoints.res, true)
	}
}

// routeAction sends to one cluster, or splits by weight.
func routeAction(ws []*routev3.WeightedCluster_ClusterWeight) *routev3.RouteAction {
	if len(ws) == 1 {
		return &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: ws[0].GetName()}}
	}
	return &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_WeightedClusters{
		WeightedClusters: &routev3.WeightedCluster{Clusters: ws}}}
}

// route is the Envoy or gRPC route of rt, sending to ws; nil when the
// route can never match on the flavour (a gRPC call is a POST without a
// query string) or has nowhere to send to. notes say what the flavour
// drops.
func (mi *meshIndex) route(rt schema.Route, ws []*routev3.WeightedCluster_ClusterWeight, flavor Flavor,
	cluster func(schema.BackendRef) (*backendCluster, error)) (*routev3.Route, []string, error) {
	grpc := flavor == FlavorGRPC
	var notes []string
	m := rt.Match
	match := &routev3.RouteMatch{}
	full := func(re string) string {
		if grpc {
			return "^(?:" + re + ")$" // gRPC matches expressions anywhere, Envoy whole
		}
		return re
	}
	switch p := m.Path; {
	case p == nil || (p.Type == schema.PathPrefix && p.Value == "/"):
		match.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: "/"}
	case p.Type == schema.PathExact:
		match.PathSpecifier = &routev3.RouteMatch_Path{Path: p.Value}
	case p.Type == schema.PathPrefix && grpc:
		// gRPC has no path_separated_prefix (it NACKs the configuration).
		match.PathSpecifier = &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{
			Regex: "^" + regexp.QuoteMeta(p.Value) + "(/.*)?$"}}
	case p.Type == schema.PathPrefix:
		match.PathSpecifier = &routev3.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: p.Value}
	default:
		match.PathSpecifier = &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: full(p.Value)}}
	}
	if m.Method != "" {
		switch {
		case grpc && m.Method != "POST":
			return nil, nil, nil // never matches a gRPC call
		case !grpc:
			match.Headers = append(match.Headers, &routev3.HeaderMatcher{Name: ":method",
				HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
					MatchPattern: &matcherv3.StringMatcher_Exact{Exact: m.Method}}}})
		}
	}
	seen := map[string]bool{}
	for _, h := range m.Headers {
		if seen[h.Name] {
			continue
		}
		seen[h.Name] = true
		hm := headerMatcher(h, grpc)
		match.Headers = append(match.Headers, hm)
	}
	if len(m.QueryParams) > 0 {
		if grpc {
			return nil, nil, nil // a gRPC call has no query string
		}
		for _, q := range m.QueryParams {
			sm := &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: q.Value}}
			if q.Type == "RegularExpression" {
				sm = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: q.Value}}}
			}
			match.QueryParameters = append(match.QueryParameters, &routev3.QueryParameterMatcher{Name: q.Name,
				QueryParameterMatchSpecifier: &routev3.QueryParameterMatcher_StringMatch{StringMatch: sm}})
		}
	}
	r := &routev3.Route{Name: rt.Name(), Match: match}
	var redirect *schema.Redirect
	var rewrite *schema.URLRewrite
	var mirrors []*schema.Mirror
	for _, f := range rt.Filters {
		if grpc {
			notes = append(notes, "proxyless gRPC "+schema.GRPCDrops(f.Type))
			if f.Redirect != nil {
				redirect = f.Redirect
			}
			continue
		}
		switch {
		case f.RequestHeader != nil:
			r.RequestHeadersToAdd = append(r.RequestHeadersToAdd, headerOptions(f.RequestHeader)...)
			r.RequestHeadersToRemove = append(r.RequestHeadersToRemove, f.RequestHeader.Remove...)
		case f.ResponseHeader != nil:
			r.ResponseHeadersToAdd = append(r.ResponseHeadersToAdd, headerOptions(f.ResponseHeader)...)
			r.ResponseHeadersToRemove = append(r.ResponseHeadersToRemove, f.ResponseHeader.Remove...)
		case f.Redirect != nil:
			redirect = f.Redirect
		case f.Rewrite != nil:
			rewrite = f.Rewrite
		case f.Mirror != nil:
			mirrors = append(mirrors, f.Mirror)
		}
	}
	if redirect != nil {
		r.Action = &routev3.Route_Redirect{Redirect: redirectAction(redirect)}
		return r, notes, nil
	}
	if len(ws) == 0 {
		return nil, notes, nil // nowhere to send to: left out, as in Kuma
	}
	action := routeAction(ws)
	if rewrite != nil {
		if rewrite.Hostname != "" {
			action.HostRewriteSpecifier = &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: rewrite.Hostname}
		}
		if p := rewrite.Path; p != nil {
			if p.Type == "ReplaceFullPath" {
				action.RegexRewrite = &matcherv3.RegexMatchAndSubstitute{Pattern: &matcherv3.RegexMatcher{Regex: ".*"}, Substitution: p.ReplaceFullPath}
			} else {
				action.PrefixRewrite = p.ReplacePrefixMatch
			}
		}
	}
	for _, mr := range mirrors {
		bc, err := cluster(mr.BackendRef)
		if err != nil {
			return nil, nil, err
		}
		action.RequestMirrorPolicies = append(action.RequestMirrorPolicies, &routev3.RouteAction_RequestMirrorPolicy{
			Cluster: bc.name,
			RuntimeFraction: &corev3.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{
				Numerator: uint32(mr.Percentage*10000 + 0.5), Denominator: typev3.FractionalPercent_MILLION}},
		})
	}
	r.Action = &routev3.Route_Route{Route: action}
	return r, notes, nil
}

// headerMatcher matches a header as h says; for gRPC, expressions are
// anchored (gRPC matches them anywhere, Envoy whole).
func headerMatcher(h schema.HeaderMatch, grpc bool) *routev3.HeaderMatcher {
	hm := &routev3.HeaderMatcher{Name: h.Name}
	str := func(p *matcherv3.StringMatcher) {
		hm.HeaderMatchSpecifier = &routev3.HeaderMatcher_StringMatch{StringMatch: p}
	}
	switch h.Type {
	case "Present":
		hm.HeaderMatchSpecifier = &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}
	case "Absent":
		hm.HeaderMatchSpecifier = &routev3.HeaderMatcher_PresentMatch{PresentMatch: false}
	case "RegularExpression":
		re := h.Value
		if grpc {
			re = "^(?:" + re + ")$"
		}
		str(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: re}}})
	case "Prefix":
		if h.Value == "" {
			hm.HeaderMatchSpecifier = &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}
		} else {
			str(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: h.Value}})
		}
	default:
		str(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: h.Value}})
	}
	return hm
}

// headerOptions are a modifier's set (overwriting) and add (appending)
// headers.
func headerOptions(hm *schema.HeaderModifier) []*corev3.HeaderValueOption {
	var out []*corev3.HeaderValueOption
	for _, h := range hm.Set {
		out = append(out, &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: h.Name, Value: h.Value},
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD})
	}
	for _, h := range hm.Add {
		out = append(out, &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: h.Name, Value: h.Value},
			AppendAction: corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD})
	}
	return out
}

var redirectCodes = map[int]routev3.RedirectAction_RedirectResponseCode{
	301: routev3.RedirectAction_MOVED_PERMANENTLY,
	302: routev3.RedirectAction_FOUND,
	303: routev3.RedirectAction_SEE_OTHER,
	307: routev3.RedirectAction_TEMPORARY_REDIRECT,
	308: routev3.RedirectAction_PERMANENT_REDIRECT,
}

func redirectAction(rd *schema.Redirect) *routev3.RedirectAction {
	a := &routev3.RedirectAction{HostRedirect: rd.Hostname, PortRedirect: rd.Port, ResponseCode: redirectCodes[rd.StatusCode]}
	if rd.Scheme != "" {
		a.SchemeRewriteSpecifier = &routev3.RedirectAction_SchemeRedirect{SchemeRedirect: rd.Scheme}
	}
	if p := rd.Path; p != nil {
		if p.Type == "ReplaceFullPath" {
			a.PathRewriteSpecifier = &routev3.RedirectAction_PathRedirect{PathRedirect: p.ReplaceFullPath}
		} else {
			a.PathRewriteSpecifier = &routev3.RedirectAction_PrefixRewrite{PrefixRewrite: p.ReplacePrefixMatch}
		}
	}
	return a
}

// backendCluster is the cluster of the instances of service with tags
// (all of them when tags is empty), for both flavours: the service's own
// shared values where the Index has them, made once per Index otherwise.
func (mi *meshIndex) backendCluster(service string, tags map[string]string) (*backendCluster, error) {
	name := SubsetClusterName(service, tags)
	if v, ok := mi.routing.backends.Load(name); ok {
		return v.(*backendCluster), nil
	}
	s := mi.services[service]
	bc := &backendCluster{name: name, service: service}
	if s != nil {
		bc.http, bc.h2 = s.http, s.grpc
	}
	var eps []endpoint
	if s != nil {
		sel := schema.Selector(tags)
		for _, dp := range s.providers {
			for _, in := range dp.Inbound {
				if in.Service() == service && sel.Matches(in.Tags) {
					eps = append(eps, endpoint{address: in.Address, port: in.Port})
				}
			}
		}
		eps = sortedEndpoints(eps)
	}
	if s != nil && len(tags) == 0 && s.cluster.res != nil {
		bc.envoy, bc.endpoints = &s.cluster, &s.endpoint
	} else {
		c, err := edsClusterNamed(mi.mesh, name, service, FlavorEnvoy, bc.h2)
		if err != nil {
			return nil, err
		}
		bc.envoy, bc.endpoints = &shared{}, &shared{}
		if _, err := bc.envoy.set(c, nil); err != nil {
			return nil, err
		}
		if _, err := bc.endpoints.set(loadAssignment(name, eps), nil); err != nil {
			return nil, err
		}
	}
	if s != nil && len(tags) == 0 && s.grpcCluster.res != nil {
		bc.grpc = &s.grpcCluster
	} else {
		c, err := edsClusterNamed(mi.mesh, name, service, FlavorGRPC, false)
		if err != nil {
			return nil, err
		}
		bc.grpc = &shared{}
		if _, err := bc.grpc.set(c, nil); err != nil {
			return nil, err
		}
	}
	for _, c := range []*shared{bc.envoy, bc.grpc} {
		if ts := c.res.(interface {
			GetTransportSocket() *corev3.TransportSocket
		}).GetTransportSocket(); ts != nil {
			mi.routing.shared.Store(ts.GetTypedConfig(), true)
		}
	}
	v, _ := mi.routing.backends.LoadOrStore(name, bc)
	return v.(*backendCluster), nil
}

// sortedEndpoints sorts eps by address then port and drops duplicates.
func sortedEndpoints(eps []endpoint) []endpoint {
	s := &service{endpoints: eps}
	s.settleEndpoints()
	return s.endpoints
}

// addRouted adds the routed clusters and endpoints of one flavour, for dp.
func (rs *resourceSet) addRouted(mi *meshIndex, dp *schema.Dataplane, fr *flavorRoutes, flavor Flavor) error {
	for _, bc := range fr.clusters {
		c := bc.envoy
		if flavor == FlavorGRPC {
			c = bc.grpc
		}
		if err := rs.addCluster(mi, dp, bc.service, bc.name, c, bc.endpoints, flavor, bc.http); err != nil {
			return err
		}
	}
	for _, u := range fr.unsupported {
		if !slices.Contains(rs.unsupported, u) {
			rs.unsupported = append(rs.unsupported, u)
		}
	}
	return nil
}
