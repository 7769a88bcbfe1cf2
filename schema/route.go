package schema

import (
	"encoding/json"
	"fmt"
	"net"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// The Kuma 2.x route policies. The top-level targetRef selects the proxies
// that call (the clients); each to[] item names a destination service and
// says where its requests (MeshHTTPRoute) or connections (MeshTCPRoute) go.
const (
	TypeMeshHTTPRoute = "MeshHTTPRoute"
	TypeMeshTCPRoute  = "MeshTCPRoute"
)

// MeshHTTPRoute is a validated Kuma 2.x MeshHTTPRoute.
type MeshHTTPRoute struct {
	PolicyMeta
	To []HTTPRouteTo
}

// HTTPRouteTo is one to[] item: the rules for the requests to one service.
type HTTPRouteTo struct {
	TargetRef TargetRef
	Rules     []HTTPRouteRule
	Pointer   string
}

// HTTPRouteRule is one rules[] item: what its matches select, and the
// `default` applied to it. Filters and BackendRefs are nil when the rule
// does not set them (a merge keeps what another policy set).
type HTTPRouteRule struct {
	Matches     []HTTPMatch
	Filters     []HTTPFilter
	BackendRefs []BackendRef
	// HasFilters and HasBackendRefs say whether the rule sets them (an
	// empty list included).
	HasFilters, HasBackendRefs bool
	Pointer                    string
	// Line is the rule's line in its file.
	Line int
}

// PathMatchType is how a match compares the request path.
type PathMatchType string

// The path match types of a MeshHTTPRoute.
const (
	PathExact      PathMatchType = "Exact"
	PathPrefix     PathMatchType = "PathPrefix"
	PathRegularExp PathMatchType = "RegularExpression"
)

// HTTPMatch is one item of a rule's matches: every field it sets must
// match (a match with none matches every request).
type HTTPMatch struct {
	Path        *PathMatch    `json:"path,omitempty"`
	Method      string        `json:"method,omitempty"`
	Headers     []HeaderMatch `json:"headers,omitempty"`
	QueryParams []QueryMatch  `json:"queryParams,omitempty"`
}

// PathMatch matches the request path.
type PathMatch struct {
	Type  PathMatchType `json:"type"`
	Value string        `json:"value"`
}

// HeaderMatch matches a request header: Type is Exact (the default),
// Present, RegularExpression, Absent or Prefix.
type HeaderMatch struct {
	Type  string `json:"type"`
	Name  string `json:"name"`
	Value string `json:"value,omitempty"`
}

// QueryMatch matches a query parameter: Type is Exact or
// RegularExpression.
type QueryMatch struct {
	Type  string `json:"type"`
	Name  string `json:"name"`
	Value string `json:"value"`
}

// String is the match as a person reads it, e.g. `PathPrefix /api, GET,
// header x-user=jason`.
func (m HTTPMatch) String() string {
	var parts []string
	if m.Path != nil {
		parts = append(parts, string(m.Path.Type)+" "+m.Path.Value)
	}
	if m.Method != "" {
		parts = append(parts, m.Method)
	}
	for _, h := range m.Headers {
		switch h.Type {
		case "Present", "Absent":
			parts = append(parts, fmt.Sprintf("header %s %s", h.Name, strings.ToLower(h.Type)))
		case "Exact":
			parts = append(parts, fmt.Sprintf("header %s=%s", h.Name, h.Value))
		default:
			parts = append(parts, fmt.Sprintf("header %s %s %s", h.Name, h.Type, h.Value))
		}
	}
	for _, q := range m.QueryParams {
		if q.Type == "Exact" {
			parts = append(parts, fmt.Sprintf("query %s=%s", q.Name, q.Value))
		} else {
			parts = append(parts, fmt.Sprintf("query %s %s %s", q.Name, q.Type, q.Value))
		}
	}
	if len(parts) == 0 {
		return "any request"
	}
	return strings.Join(parts, ", ")
}

// The filter types of a MeshHTTPRoute.
const (
	FilterRequestHeaderModifier  = "RequestHeaderModifier"
	FilterResponseHeaderModifier = "ResponseHeaderModifier"
	FilterRequestRedirect        = "RequestRedirect"
	FilterURLRewrite             = "URLRewrite"
	FilterRequestMirror          = "RequestMirror"
)

// HTTPFilter is one filter of a rule; the field its Type names is set.
type HTTPFilter struct {
	Type           string
	RequestHeader  *HeaderModifier
	ResponseHeader *HeaderModifier
	Redirect       *Redirect
	Rewrite        *URLRewrite
	Mirror         *Mirror
	Pointer        string
}

// HeaderModifier sets, adds and removes headers.
type HeaderModifier struct {
	Set, Add []HeaderValue
	Remove   []string
}

// HeaderValue is a header's name and value.
type HeaderValue struct{ Name, Value string }

// Redirect answers with a redirect; empty fields keep the request's.
type Redirect struct {
	Scheme, Hostname string
	Path             *PathRewrite
	Port             uint32
	StatusCode       int // 302 when not set, as in Kuma
}

// PathRewrite replaces the whole path or the prefix a PathPrefix match
// matched.
type PathRewrite struct {
	Type               string // ReplaceFullPath or ReplacePrefixMatch
	ReplaceFullPath    string
	ReplacePrefixMatch string
}

// URLRewrite rewrites the host and path before forwarding.
type URLRewrite struct {
	Hostname string
	Path     *PathRewrite
}

// Mirror copies a share of the requests to another backend, whose answers
// are ignored.
type Mirror struct {
	// Percentage of requests mirrored, in [0, 100]; 100 when not set.
	Percentage float64
	BackendRef BackendRef
}

// BackendRef is a weighted destination: a service (MeshService) or the
// instances of a service with some tags (MeshServiceSubset).
type BackendRef struct {
	Kind    TargetKind
	Name    string
	Tags    map[string]string
	Weight  uint32 // 1 when not set, as in Kuma; 0 sends nothing
	Pointer string
}

// Selector is the tags of the inbounds the backend reaches.
func (b BackendRef) Selector() Selector {
	return TargetRef{Kind: b.Kind, Name: b.Name, Tags: b.Tags}.Selector()
}

// String is the backend as Kuma's docs write it, with its weight.
func (b BackendRef) String() string {
	return TargetRef{Kind: b.Kind, Name: b.Name, Tags: b.Tags}.String() + " weight " + strconv.FormatUint(uint64(b.Weight), 10)
}

// MeshTCPRoute is a validated Kuma 2.x MeshTCPRoute.
type MeshTCPRoute struct {
	PolicyMeta
	To []TCPRouteTo
}

// TCPRouteTo is one to[] item: where the connections to one service go.
// Kuma reads the first rule only; with none, the service itself.
type TCPRouteTo struct {
	TargetRef   TargetRef
	BackendRefs []BackendRef
	// Rule is the pointer of the rule that applies; "" with no rules.
	// Ignored are the pointers of the rules after it.
	Rule    string
	Ignored []string
	Pointer string
	// Line is the line of Rule (of the to[] item without rules).
	Line int
}

var (
	routeTopRules = targetRefRules{kinds: []TargetKind{KindMesh, KindMeshSubset, KindMeshService, KindMeshServiceSubset, KindDataplane}}
	routeToRules  = targetRefRules{kinds: []TargetKind{KindMeshService}}
	backendRules  = targetRefRules{kinds: []TargetKind{KindMeshService, KindMeshServiceSubset}}
	// dnsLabel is one label of an RFC 1123 subdomain.
	dnsLabel = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
)

// unsupportedKinds are Kuma kinds gitmesh has no resource for.
var unsupportedKinds = map[string]string{
	"MeshExternalService":  "gitmesh has no MeshExternalService: declare the destination's Dataplanes and use kind MeshService",
	"MeshMultiZoneService": "gitmesh serves one zone: use kind MeshService",
	"MeshGateway":          "gitmesh has no gateways: select the proxies with Mesh, MeshSubset, MeshService, MeshServiceSubset or Dataplane",
}

// routeRef decodes a targetRef of a route position, refusing Kuma's kinds
// gitmesh has no resource for with their own message.
func (d *decoder) routeRef(ptr string, m map[string]any, rules targetRefRules) TargetRef {
	if hint, ok := unsupportedKinds[str(m, "kind")]; ok && m != nil {
		d.add(ptr+"/kind", CodeUnsupported, hint, "targetRef kind %s is not supported by gitmesh", str(m, "kind"))
		return TargetRef{Kind: TargetKind(str(m, "kind")), Pointer: ptr}
	}
	return d.targetRef(ptr, m, rules)
}

// backendRefs decodes a list of backendRefs.
func (d *decoder) backendRefs(ptr string, list []any) []BackendRef {
	out := make([]BackendRef, 0, len(list))
	for i, raw := range list {
		m, _ := raw.(map[string]any)
		out = append(out, d.backendRef(fmt.Sprintf("%s/%d", ptr, i), m))
	}
	return out
}

func (d *decoder) backendRef(ptr string, m map[string]any) BackendRef {
	t := d.routeRef(ptr, m, backendRules)
	b := BackendRef{Kind: t.Kind, Name: t.Name, Tags: t.Tags, Weight: 1, Pointer: ptr}
	if _, ok := m["weight"]; ok {
		b.Weight = uint32Of(m, "weight") // the schema bounds it
	}
	if _, ok := m["port"]; ok {
		d.add(ptr+"/port", CodeUnsupported, "remove it: a backend is a service's inbounds, whatever their ports",
			"backendRef `port` applies to Kuma's MeshService resources only, which gitmesh has not")
	}
	if b.Kind == KindMeshServiceSubset && len(b.Tags) == 0 && m["tags"] == nil {
		d.add(ptr, CodeInvalidTargetRef, "add `tags: {version: v1}`, or use kind MeshService", "a MeshServiceSubset backend needs `tags`")
	}
	return b
}

func decodeMeshHTTPRoute(m map[string]any) (*MeshHTTPRoute, []issue) {
	d := &decoder{}
	r := &MeshHTTPRoute{PolicyMeta: d.policyMeta(m, routeTopRules)}
	spec := mapOf(m, "spec")
	for i, raw := range listOf(spec, "to") {
		tm, _ := raw.(map[string]any)
		ptr := fmt.Sprintf("/spec/to/%d", i)
		to := HTTPRouteTo{Pointer: ptr, TargetRef: d.routeRef(ptr+"/targetRef", mapOf(tm, "targetRef"), routeToRules)}
		if _, ok := tm["hostnames"]; ok {
			d.add(ptr+"/hostnames", CodeInvalidValue, "remove it: hostnames apply to routes of a MeshGateway",
				"`hostnames` must not be defined")
		}
		for j, rraw := range listOf(tm, "rules") {
			rm, _ := rraw.(map[string]any)
			to.Rules = append(to.Rules, d.httpRule(fmt.Sprintf("%s/rules/%d", ptr, j), rm))
		}
		r.To = append(r.To, to)
	}
	return r, d.issues
}

func (d *decoder) httpRule(ptr string, m map[string]any) HTTPRouteRule {
	rule := HTTPRouteRule{Pointer: ptr}
	for i, raw := range listOf(m, "matches") {
		mm, _ := raw.(map[string]any)
		rule.Matches = append(rule.Matches, d.httpMatch(fmt.Sprintf("%s/matches/%d", ptr, i), mm))
	}
	def := mapOf(m, "default")
	if _, ok := def["backendRefs"]; ok {
		rule.HasBackendRefs = true
		rule.BackendRefs = d.backendRefs(ptr+"/default/backendRefs", listOf(def, "backendRefs"))
	}
	if _, ok := def["filters"]; ok {
		rule.HasFilters = true
		rule.Filters = []HTTPFilter{}
		for i, raw := range listOf(def, "filters") {
			fm, _ := raw.(map[string]any)
			rule.Filters = append(rule.Filters, d.httpFilter(fmt.Sprintf("%s/default/filters/%d", ptr, i), fm, rule.Matches))
		}
	}
	return rule
}

func (d *decoder) regex(ptr, re string) {
	if _, err := regexp.Compile(re); err != nil {
		d.add(ptr, CodeInvalidValue, "write an RE2 regular expression (Envoy and gRPC both use RE2)", "%q is not a valid regular expression: %v", re, err)
	}
}

func (d *decoder) httpMatch(ptr string, m map[string]any) HTTPMatch {
	var out HTTPMatch
	if pm := mapOf(m, "path"); pm != nil {
		p := &PathMatch{Type: PathMatchType(str(pm, "type")), Value: str(pm, "value")}
		out.Path = p
		vptr := ptr + "/path/value"
		switch p.Type {
		case PathRegularExp:
			d.regex(vptr, p.Value)
		case PathPrefix:
			if p.Value == "/" {
				break
			}
			if strings.HasSuffix(p.Value, "/") {
				d.add(vptr, CodeInvalidValue, fmt.Sprintf("write %q", strings.TrimRight(p.Value, "/")),
					"%q does not need a trailing slash because only a `/`-separated prefix or an entire path is matched", p.Value)
			}
			if !strings.HasPrefix(p.Value, "/") {
				d.add(vptr, CodeInvalidValue, "start the path with /", "%q must be an absolute path", p.Value)
			}
		case PathExact:
			if !strings.HasPrefix(p.Value, "/") {
				d.add(vptr, CodeInvalidValue, "start the path with /", "%q must be an absolute path", p.Value)
			}
		}
	}
	out.Method = str(m, "method")
	for i, raw := range listOf(m, "headers") {
		hm, _ := raw.(map[string]any)
		hptr := fmt.Sprintf("%s/headers/%d", ptr, i)
		h := HeaderMatch{Type: str(hm, "type"), Name: str(hm, "name"), Value: str(hm, "value")}
		if h.Type == "" {
			h.Type = "Exact"
		}
		_, hasValue := hm["value"]
		switch h.Type {
		case "Present", "Absent":
			if hasValue && h.Value != "" {
				d.add(hptr+"/value", CodeInvalidValue, "remove `value`: a "+h.Type+" match looks at the name only", "`value` must not be defined")
			}
		case "RegularExpression":
			d.regex(hptr+"/value", h.Value)
		}
		for _, prev := range out.Headers {
			if prev.Name == h.Name {
				d.add(hptr+"/name", CodeInvalidValue, "match each header once", "header %q is matched twice; only the first is used", h.Name)
			}
		}
		out.Headers = append(out.Headers, h)
	}
	seen := map[string]bool{}
	for i, raw := range listOf(m, "queryParams") {
		qm, _ := raw.(map[string]any)
		qptr := fmt.Sprintf("%s/queryParams/%d", ptr, i)
		q := QueryMatch{Type: str(qm, "type"), Name: str(qm, "name"), Value: str(qm, "value")}
		if seen[q.Name] {
			d.add(qptr+"/name", CodeInvalidValue, "match each query parameter once", "multiple entries for name %s", q.Name)
		}
		seen[q.Name] = true
		if q.Type == "RegularExpression" {
			d.regex(qptr+"/value", q.Value)
		}
		out.QueryParams = append(out.QueryParams, q)
	}
	return out
}

func (d *decoder) httpFilter(ptr string, m map[string]any, matches []HTTPMatch) HTTPFilter {
	f := HTTPFilter{Type: str(m, "type"), Pointer: ptr}
	need := func(field string) map[string]any {
		v := mapOf(m, field)
		if v == nil {
			d.add(ptr, CodeMissingField, fmt.Sprintf("add `%s`", field), "filter of type %s needs `%s`", f.Type, field)
		}
		return v
	}
	onlyPrefixes := func(p *PathRewrite, field string) {
		if p == nil || p.Type != "ReplacePrefixMatch" {
			return
		}
		for _, mt := range matches {
			if mt.Path == nil || mt.Path.Type != PathPrefix {
				d.add(ptr+"/"+field+"/path/replacePrefixMatch", CodeInvalidValue,
					"match every request of the rule with `path: {type: PathPrefix}`, or use ReplaceFullPath",
					"replacePrefixMatch can only appear if all matches match a path prefix")
				return
			}
		}
	}
	switch f.Type {
	case FilterRequestHeaderModifier:
		if v := need("requestHeaderModifier"); v != nil {
			f.RequestHeader = d.headerModifier(ptr+"/requestHeaderModifier", v)
		}
	case FilterResponseHeaderModifier:
		if v := need("responseHeaderModifier"); v != nil {
			f.ResponseHeader = d.headerModifier(ptr+"/responseHeaderModifier", v)
		}
	case FilterRequestRedirect:
		if v := need("requestRedirect"); v != nil {
			r := &Redirect{Scheme: str(v, "scheme"), Hostname: str(v, "hostname"), Port: uint32Of(v, "port"), StatusCode: 302,
				Path: d.pathRewrite(ptr+"/requestRedirect/path", mapOf(v, "path"))}
			if c := uint32Of(v, "statusCode"); c != 0 {
				r.StatusCode = int(c)
			}
			d.hostname(ptr+"/requestRedirect/hostname", r.Hostname)
			onlyPrefixes(r.Path, "requestRedirect")
			f.Redirect = r
		}
	case FilterURLRewrite:
		if v := need("urlRewrite"); v != nil {
			r := &URLRewrite{Hostname: str(v, "hostname"), Path: d.pathRewrite(ptr+"/urlRewrite/path", mapOf(v, "path"))}
			d.hostname(ptr+"/urlRewrite/hostname", r.Hostname)
			onlyPrefixes(r.Path, "urlRewrite")
			if b, _ := v["hostToBackendHostname"].(bool); b {
				d.add(ptr+"/urlRewrite/hostToBackendHostname", CodeInvalidValue, "remove it, or set `hostname`",
					"hostToBackendHostname can only be set with MeshGateway")
			}
			f.Rewrite = r
		}
	case FilterRequestMirror:
		if v := need("requestMirror"); v != nil {
			mr := &Mirror{Percentage: 100, BackendRef: d.backendRef(ptr+"/requestMirror/backendRef", mapOf(v, "backendRef"))}
			switch p := v["percentage"].(type) {
			case int64:
				mr.Percentage = float64(p)
			case float64:
				mr.Percentage = p
			case string:
				if x, err := strconv.ParseFloat(p, 64); err != nil || x < 0 || x > 100 {
					d.add(ptr+"/requestMirror/percentage", CodeOutOfRange, "write a percentage from 0 to 100, e.g. \"12.5\"", "percentage %q is not in [0, 100]", p)
				} else {
					mr.Percentage = x
				}
			}
			f.Mirror = mr
		}
	}
	return f
}

func (d *decoder) pathRewrite(ptr string, m map[string]any) *PathRewrite {
	if m == nil {
		return nil
	}
	p := &PathRewrite{Type: str(m, "type"), ReplaceFullPath: str(m, "replaceFullPath"), ReplacePrefixMatch: str(m, "replacePrefixMatch")}
	field := map[string]string{"ReplaceFullPath": "replaceFullPath", "ReplacePrefixMatch": "replacePrefixMatch"}[p.Type]
	if _, ok := m[field]; field != "" && !ok {
		d.add(ptr, CodeMissingField, fmt.Sprintf("add `%s`", field), "a path rewrite of type %s needs `%s`", p.Type, field)
	}
	return p
}

func (d *decoder) hostname(ptr, h string) {
	if h == "" {
		return
	}
	if net.ParseIP(h) != nil {
		d.add(ptr, CodeInvalidValue, "write a host name", "%q cannot be an IP address", h)
		return
	}
	for _, l := range strings.Split(h, ".") {
		if len(l) > 63 || !dnsLabel.MatchString(l) {
			d.add(ptr, CodeInvalidValue, "write a lower-case RFC 1123 host name", "%q is not a valid host name", h)
			return
		}
	}
}

func (d *decoder) headerModifier(ptr string, m map[string]any) *HeaderModifier {
	hm := &HeaderModifier{}
	_, hasSet := m["set"]
	_, hasAdd := m["add"]
	_, hasRemove := m["remove"]
	if !hasSet && !hasAdd && !hasRemove {
		d.add(ptr, CodeMissingField, "add `set`, `add` or `remove`", "must have at least one defined: set, add, remove")
		return hm
	}
	seen := map[string]bool{}
	once := func(p, name string) {
		if seen[name] {
			d.add(p, CodeInvalidValue, "one action per header: set, add or remove it once", "duplicate header name %q", name)
		}
		seen[name] = true
	}
	for _, list := range []struct {
		field string
		dst   *[]HeaderValue
	}{{"set", &hm.Set}, {"add", &hm.Add}} {
		for i, raw := range listOf(m, list.field) {
			kv, _ := raw.(map[string]any)
			v := HeaderValue{Name: str(kv, "name"), Value: str(kv, "value")}
			once(fmt.Sprintf("%s/%s/%d/name", ptr, list.field, i), v.Name)
			*list.dst = append(*list.dst, v)
		}
	}
	for i, raw := range listOf(m, "remove") {
		name, _ := raw.(string)
		once(fmt.Sprintf("%s/remove/%d", ptr, i), name)
		hm.Remove = append(hm.Remove, name)
	}
	return hm
}

func decodeMeshTCPRoute(m map[string]any) (*MeshTCPRoute, []issue) {
	d := &decoder{}
	r := &MeshTCPRoute{PolicyMeta: d.policyMeta(m, routeTopRules)}
	spec := mapOf(m, "spec")
	for i, raw := range listOf(spec, "to") {
		tm, _ := raw.(map[string]any)
		ptr := fmt.Sprintf("/spec/to/%d", i)
		to := TCPRouteTo{Pointer: ptr, TargetRef: d.routeRef(ptr+"/targetRef", mapOf(tm, "targetRef"), routeToRules)}
		for j, rraw := range listOf(tm, "rules") {
			rm, _ := rraw.(map[string]any)
			rptr := fmt.Sprintf("%s/rules/%d/default/backendRefs", ptr, j)
			list := listOf(mapOf(rm, "default"), "backendRefs")
			if len(list) == 0 {
				d.add(rptr, CodeMissingField, "add `backendRefs: [{kind: MeshService, name: SERVICE}]`", "`backendRefs` must be defined")
			}
			refs := d.backendRefs(rptr, list)
			if j == 0 {
				to.BackendRefs, to.Rule = refs, fmt.Sprintf("%s/rules/0", ptr)
			} else {
				to.Ignored = append(to.Ignored, fmt.Sprintf("%s/rules/%d", ptr, j))
			}
		}
		if to.Rule == "" && to.TargetRef.Name != "" {
			to.BackendRefs = []BackendRef{{Kind: KindMeshService, Name: to.TargetRef.Name, Weight: 1, Pointer: ptr + "/targetRef"}}
		}
		r.To = append(r.To, to)
	}
	return r, d.issues
}

// clearPositions forgets where p is written (on a copy: the lists are
// copied before their lines are cleared).
func (p *MeshHTTPRoute) clearPositions() {
	p.Origin = Origin{}
	p.To = slices.Clone(p.To)
	for i := range p.To {
		p.To[i].Rules = slices.Clone(p.To[i].Rules)
		for j := range p.To[i].Rules {
			p.To[i].Rules[j].Line = 0
		}
	}
}

func (p *MeshTCPRoute) clearPositions() {
	p.Origin = Origin{}
	p.To = slices.Clone(p.To)
	for i := range p.To {
		p.To[i].Line = 0
	}
}

// MeshHTTPRoutesIn returns the MeshHTTPRoutes of a mesh, sorted by name.
// The slice shares the Set's storage.
func (s *Set) MeshHTTPRoutesIn(mesh string) []*MeshHTTPRoute {
	ps := s.MeshHTTPRoutes
	lo := sort.Search(len(ps), func(i int) bool { return ps[i].Mesh >= mesh })
	hi := sort.Search(len(ps), func(i int) bool { return ps[i].Mesh > mesh })
	return ps[lo:hi]
}

// MeshTCPRoutesIn returns the MeshTCPRoutes of a mesh, sorted by name.
func (s *Set) MeshTCPRoutesIn(mesh string) []*MeshTCPRoute {
	ps := s.MeshTCPRoutes
	lo := sort.Search(len(ps), func(i int) bool { return ps[i].Mesh >= mesh })
	hi := sort.Search(len(ps), func(i int) bool { return ps[i].Mesh > mesh })
	return ps[lo:hi]
}

// MeshHTTPRoute returns the policy mesh/name, or nil.
func (s *Set) MeshHTTPRoute(mesh, name string) *MeshHTTPRoute {
	ps := s.MeshHTTPRoutesIn(mesh)
	i := sort.Search(len(ps), func(i int) bool { return ps[i].Name >= name })
	if i < len(ps) && ps[i].Name == name {
		return ps[i]
	}
	return nil
}

// MeshTCPRoute returns the policy mesh/name, or nil.
func (s *Set) MeshTCPRoute(mesh, name string) *MeshTCPRoute {
	ps := s.MeshTCPRoutesIn(mesh)
	i := sort.Search(len(ps), func(i int) bool { return ps[i].Name >= name })
	if i < len(ps) && ps[i].Name == name {
		return ps[i]
	}
	return nil
}

// SelectsClient reports whether a top-level targetRef of an outbound
// policy (a route) selects dp as the proxy that calls: kind Mesh every
// proxy, Dataplane by name or labels, the service kinds a proxy with a
// matching inbound.
func (t TargetRef) SelectsClient(dp *Dataplane) bool {
	switch t.Kind {
	case KindMesh:
		return true
	case KindDataplane:
		return t.namesDataplane(dp)
	}
	return t.SelectsDataplane(dp)
}

// RouteTable is what the route policies decide for the calls a proxy makes
// to one service: the HTTP routes of the MeshHTTPRoutes that select the
// proxy and name the service, or else the backends of the MeshTCPRoutes
// that do. Empty when none applies: the service is reached as it is.
type RouteTable struct {
	Service string
	// HTTP are the routes in the order they are matched, the catch-all
	// route last; nil when no MeshHTTPRoute applies.
	HTTP []Route
	// HTTPPolicies and TCPPolicies are the policies that select the proxy
	// for the service, in merge order.
	HTTPPolicies []*MeshHTTPRoute
	TCPPolicies  []*MeshTCPRoute
	// TCP is the backends of the deciding MeshTCPRoute (the last in merge
	// order); TCPBy is that policy, TCPRule its rule's pointer and TCPLine
	// its line.
	TCP     []BackendRef
	TCPBy   *MeshTCPRoute
	TCPRule string
	TCPLine int
}

// Routed reports whether a route policy applies.
func (t *RouteTable) Routed() bool { return t != nil && (t.HTTP != nil || t.TCPBy != nil) }

// Route is one HTTP route: one match of a merged rule, with what the rule
// does. By and Rule name the policy and the rule (its pointer) that set
// the route's backends; both are empty for the catch-all route gitmesh
// adds, as Kuma does, when no rule matches every request.
type Route struct {
	Match    HTTPMatch
	Filters  []HTTPFilter
	Backends []BackendRef
	By       *MeshHTTPRoute
	Rule     string
	Line     int // of Rule
}

// Name is the route's name in Envoy and gRPC resources:
// <policy>/to/<i>/rules/<j> of its rule, "default" for the catch-all
// route gitmesh adds.
func (r Route) Name() string {
	if r.By == nil {
		return "default"
	}
	return r.By.Name + strings.TrimPrefix(r.Rule, "/spec")
}

// SelectingClient returns the MeshHTTPRoutes and MeshTCPRoutes of a mesh
// that select dp and have a to[] item for service, in merge order.
func SelectingClient(https []*MeshHTTPRoute, tcps []*MeshTCPRoute, dp *Dataplane, service string) ([]*MeshHTTPRoute, []*MeshTCPRoute) {
	var hs []*MeshHTTPRoute
	for _, p := range https {
		if p.names(service) && p.TargetRef.SelectsClient(dp) {
			hs = append(hs, p)
		}
	}
	var ts []*MeshTCPRoute
	for _, p := range tcps {
		if p.names(service) && p.TargetRef.SelectsClient(dp) {
			ts = append(ts, p)
		}
	}
	slices.SortStableFunc(hs, func(a, b *MeshHTTPRoute) int { return ComparePolicies(&a.PolicyMeta, &b.PolicyMeta) })
	slices.SortStableFunc(ts, func(a, b *MeshTCPRoute) int { return ComparePolicies(&a.PolicyMeta, &b.PolicyMeta) })
	return hs, ts
}

func (p *MeshHTTPRoute) names(service string) bool {
	for _, to := range p.To {
		if to.TargetRef.Kind == KindMeshService && to.TargetRef.Name == service {
			return true
		}
	}
	return false
}

func (p *MeshTCPRoute) names(service string) bool {
	for _, to := range p.To {
		if to.TargetRef.Kind == KindMeshService && to.TargetRef.Name == service {
			return true
		}
	}
	return false
}

// Services are the services the policy has to[] items for.
func (p *MeshHTTPRoute) Services() []string {
	var out []string
	for _, to := range p.To {
		if to.TargetRef.Kind == KindMeshService && !slices.Contains(out, to.TargetRef.Name) {
			out = append(out, to.TargetRef.Name)
		}
	}
	return out
}

// Services are the services the policy has to[] items for.
func (p *MeshTCPRoute) Services() []string {
	var out []string
	for _, to := range p.To {
		if to.TargetRef.Kind == KindMeshService && !slices.Contains(out, to.TargetRef.Name) {
			out = append(out, to.TargetRef.Name)
		}
	}
	return out
}

// Backends are the services the policy's backends and mirrors reach.
func (p *MeshHTTPRoute) Backends() []string {
	var out []string
	add := func(b BackendRef) {
		if b.Name != "" && !slices.Contains(out, b.Name) {
			out = append(out, b.Name)
		}
	}
	for _, to := range p.To {
		for _, r := range to.Rules {
			for _, b := range r.BackendRefs {
				add(b)
			}
			for _, f := range r.Filters {
				if f.Mirror != nil {
					add(f.Mirror.BackendRef)
				}
			}
		}
	}
	return out
}

// Backends are the services the policy's backends reach.
func (p *MeshTCPRoute) Backends() []string {
	var out []string
	for _, to := range p.To {
		for _, b := range to.BackendRefs {
			if b.Name != "" && !slices.Contains(out, b.Name) {
				out = append(out, b.Name)
			}
		}
	}
	return out
}

// MergeRoutes merges the policies SelectingClient returned for service, as
// Kuma 2.14 does:
//
//   - MeshHTTPRoute rules are keyed by their matches: a rule whose matches
//     equal an earlier policy's replaces the filters and backendRefs it
//     sets; the more specific policy's rules come first, each policy's in
//     its order; then the routes (one per match) are sorted by Kuma's
//     precedence: an Exact path before a prefix, a longer prefix or
//     expression before a shorter one, then a method, then more headers,
//     then more query parameters; a catch-all route (PathPrefix /) to the
//     service itself is added when no rule has one, and a rule without
//     backendRefs goes to the service itself.
//   - Of the MeshTCPRoutes, the last in merge order decides (its first
//     rule, as in Kuma).
func MergeRoutes(service string, https []*MeshHTTPRoute, tcps []*MeshTCPRoute) *RouteTable {
	t := &RouteTable{Service: service, HTTPPolicies: https, TCPPolicies: tcps}
	for _, p := range tcps {
		for _, to := range p.To {
			if to.TargetRef.Name == service {
				t.TCP, t.TCPBy, t.TCPRule, t.TCPLine = to.BackendRefs, p, to.Rule, to.Line
			}
		}
	}
	if len(https) == 0 {
		return t
	}
	type merged struct {
		key      string
		rule     HTTPRouteRule
		by       *MeshHTTPRoute
		backends *MeshHTTPRoute // who set BackendRefs
		bRule    string
		bLine    int
	}
	var order []*merged // most specific policy first
	byKey := map[string]*merged{}
	for i := len(https) - 1; i >= 0; i-- {
		p := https[i]
		for _, to := range p.To {
			if to.TargetRef.Name != service {
				continue
			}
			for _, r := range to.Rules {
				k := matchesKey(r.Matches)
				if m := byKey[k]; m != nil {
					// A less specific policy: it fills what the winner left unset.
					if !m.rule.HasFilters && r.HasFilters {
						m.rule.Filters, m.rule.HasFilters = r.Filters, true
					}
					if !m.rule.HasBackendRefs && r.HasBackendRefs {
						m.rule.BackendRefs, m.rule.HasBackendRefs, m.backends, m.bRule, m.bLine = r.BackendRefs, true, p, r.Pointer, r.Line
					}
					continue
				}
				m := &merged{key: k, rule: r, by: p, backends: p, bRule: r.Pointer, bLine: r.Line}
				byKey[k] = m
				order = append(order, m)
			}
		}
	}
	self := []BackendRef{{Kind: KindMeshService, Name: service, Weight: 1}}
	var routes []Route
	for _, m := range order {
		backends := m.rule.BackendRefs
		by, rule, line := m.backends, m.bRule, m.bLine
		if !m.rule.HasBackendRefs {
			backends, by, rule, line = self, m.by, m.rule.Pointer, m.rule.Line
		}
		for _, match := range m.rule.Matches {
			routes = append(routes, Route{Match: match, Filters: m.rule.Filters, Backends: backends, By: by, Rule: rule, Line: line})
		}
	}
	slices.SortStableFunc(routes, func(a, b Route) int { return CompareMatches(a.Match, b.Match) })
	catchAll := false
	for i := range routes {
		m := routes[i].Match
		if m.Path != nil && m.Path.Type == PathPrefix && m.Path.Value == "/" && m.Method == "" && len(m.Headers) == 0 && len(m.QueryParams) == 0 {
			catchAll = true
		}
		if m.Path == nil {
			routes[i].Match.Path = &PathMatch{Type: PathPrefix, Value: "/"}
		}
	}
	if !catchAll {
		routes = append(routes, Route{Match: HTTPMatch{Path: &PathMatch{Type: PathPrefix, Value: "/"}}, Backends: self})
	}
	t.HTTP = routes
	return t
}

// matchesKey identifies a rule by its matches, as Kuma's merge does.
func matchesKey(ms []HTTPMatch) string {
	b, _ := json.Marshal(ms)
	return string(b)
}

// CompareMatches orders two matches by Kuma's (Gateway API's) precedence,
// the one that wins first.
func CompareMatches(a, b HTTPMatch) int {
	if c := comparePaths(a.Path, b.Path); c != 0 {
		return c
	}
	switch {
	case a.Method != "" && b.Method == "":
		return -1
	case a.Method == "" && b.Method != "":
		return 1
	}
	if c := len(b.Headers) - len(a.Headers); c != 0 {
		return c
	}
	return len(b.QueryParams) - len(a.QueryParams)
}

func comparePaths(a, b *PathMatch) int {
	switch {
	case a != nil && b == nil:
		return -1
	case a == nil && b != nil:
		return 1
	case a == nil:
		return 0
	}
	rank := map[PathMatchType]int{PathExact: 0, PathPrefix: 1, PathRegularExp: 2}
	if a.Type != b.Type {
		return rank[a.Type] - rank[b.Type]
	}
	if a.Type == PathExact {
		return 0
	}
	return len(b.Value) - len(a.Value)
}
