package schema

import (
	"encoding/json"
	"fmt"
	"reflect"
	"regexp"
	"sort"
	"strconv"
)

// FieldChange is one difference between two versions of a value: at Path,
// Old became New. Old is nil for a key or list element that was added, New
// for one that was removed.
type FieldChange struct {
	// Path names the field as a person reads it in YAML: object keys joined
	// with ".", list elements as [i] (the index on the side that has the
	// element, the new side when both do), a key that is not a plain word
	// as ["key"]. "" is the value itself.
	Path string `json:"path"`
	Old  any    `json:"old,omitempty"`
	New  any    `json:"new,omitempty"`
}

// FieldChanges compares two values structurally and returns their
// differences, in a deterministic order: object keys sorted, list elements
// in order. a and b are trees of map[string]any, []any and scalars, as
// encoding/json decodes into an any; anything else is compared whole with
// reflect.DeepEqual.
//
// Lists of equal length are compared element by element. Otherwise the
// elements both sides have unchanged are matched first, so removing the
// first of three elements is one removal, not three changes.
func FieldChanges(a, b any) []FieldChange {
	var out []FieldChange
	diffValue(&out, "", a, b)
	return out
}

// ResourceChanges compares the resource k of prev with that of next, field
// by field, in Kuma's 0.4 form (the one the read API serves) whichever form
// each file uses: a Dataplane's inbounds are networking.inbound[i] with port,
// servicePort and tags; a TrafficPermission of one rule has top-level
// sources and destinations. Type, mesh, name and where the resource is
// declared are not fields. A resource only one side has is one change at
// the path "".
func ResourceChanges(prev, next *Set, k Key) []FieldChange {
	return FieldChanges(specOf(prev, k), specOf(next, k))
}

func diffValue(out *[]FieldChange, path string, a, b any) {
	if ma, ok := a.(map[string]any); ok {
		if mb, ok := b.(map[string]any); ok {
			diffMap(out, path, ma, mb)
			return
		}
	}
	if la, ok := a.([]any); ok {
		if lb, ok := b.([]any); ok {
			diffList(out, path, la, lb)
			return
		}
	}
	if !reflect.DeepEqual(a, b) {
		*out = append(*out, FieldChange{Path: path, Old: a, New: b})
	}
}

func diffMap(out *[]FieldChange, path string, a, b map[string]any) {
	keys := make([]string, 0, len(a)+len(b))
	for k := range a {
		keys = append(keys, k)
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		diffValue(out, keyPath(path, k), a[k], b[k])
	}
}

// maxMatchCells bounds the matching of lists of different lengths; longer
// lists are compared element by element.
const maxMatchCells = 1 << 20

func diffList(out *[]FieldChange, path string, a, b []any) {
	if len(a) == len(b) || len(a)*len(b) > maxMatchCells {
		for i := range max(len(a), len(b)) {
			diffValue(out, indexPath(path, i), at(a, i), at(b, i))
		}
		return
	}
	i, j := 0, 0
	for _, m := range commonElements(a, b) {
		diffGap(out, path, a, b, i, m[0], j, m[1])
		i, j = m[0]+1, m[1]+1
	}
	diffGap(out, path, a, b, i, len(a), j, len(b))
}

// diffGap compares a[i0:i1] with b[j0:j1], elements with no equal on the
// other side: pairs by position are changes, the rest added or removed.
func diffGap(out *[]FieldChange, path string, a, b []any, i0, i1, j0, j1 int) {
	for i0 < i1 && j0 < j1 {
		diffValue(out, indexPath(path, j0), a[i0], b[j0])
		i0++
		j0++
	}
	for ; i0 < i1; i0++ {
		*out = append(*out, FieldChange{Path: indexPath(path, i0), Old: a[i0]})
	}
	for ; j0 < j1; j0++ {
		*out = append(*out, FieldChange{Path: indexPath(path, j0), New: b[j0]})
	}
}

// commonElements returns the index pairs of a longest common subsequence of
// equal elements of a and b, in order.
func commonElements(a, b []any) [][2]int {
	// lcs[i][j] is the length of the longest common subsequence of a[i:]
	// and b[j:].
	lcs := make([][]int, len(a)+1)
	for i := range lcs {
		lcs[i] = make([]int, len(b)+1)
	}
	for i := len(a) - 1; i >= 0; i-- {
		for j := len(b) - 1; j >= 0; j-- {
			if reflect.DeepEqual(a[i], b[j]) {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var pairs [][2]int
	for i, j := 0, 0; i < len(a) && j < len(b); {
		switch {
		case reflect.DeepEqual(a[i], b[j]):
			pairs = append(pairs, [2]int{i, j})
			i++
			j++
		case lcs[i+1][j] >= lcs[i][j+1]:
			i++
		default:
			j++
		}
	}
	return pairs
}

func at(l []any, i int) any {
	if i < len(l) {
		return l[i]
	}
	return nil
}

var plainKey = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_-]*$`)

func keyPath(path, key string) string {
	if !plainKey.MatchString(key) {
		return path + "[" + strconv.Quote(key) + "]"
	}
	if path == "" {
		return key
	}
	return path + "." + key
}

func indexPath(path string, i int) string { return fmt.Sprintf("%s[%d]", path, i) }

// specOf is the resource k of set in Kuma's 0.4 form without type, mesh and
// name, as a tree FieldChanges reads; nil when set has no such resource.
func specOf(set *Set, k Key) any {
	if set == nil {
		return nil
	}
	switch k.Type {
	case TypeMesh:
		if m := set.Mesh(k.Name); m != nil {
			return meshSpec(m)
		}
	case TypeDataplane:
		if dp := set.Dataplane(k.Mesh, k.Name); dp != nil {
			return dataplaneSpec(dp)
		}
	case TypeMeshTrafficPermission:
		if p := set.MeshTrafficPermission(k.Mesh, k.Name); p != nil {
			return meshTrafficPermissionSpec(p)
		}
	case TypeMeshHTTPRoute:
		if p := set.MeshHTTPRoute(k.Mesh, k.Name); p != nil {
			return meshHTTPRouteSpec(p)
		}
	case TypeMeshTCPRoute:
		if p := set.MeshTCPRoute(k.Mesh, k.Name); p != nil {
			return meshTCPRouteSpec(p)
		}
	case TypeTrafficPermission:
		for _, tp := range set.PermissionsIn(k.Mesh) {
			if tp.Name == k.Name {
				return permissionSpec(tp)
			}
		}
	default:
		if p := set.Policy(k.Type, k.Mesh, k.Name); p != nil {
			return confPolicySpec(p)
		}
	}
	return nil
}

// obj is a JSON object of kv (key, value, key, value...) without the
// values that are empty strings or nil: fields the resource leaves out.
func obj(kv ...any) map[string]any {
	m := make(map[string]any, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		switch v := kv[i+1].(type) {
		case nil:
		case string:
			if v != "" {
				m[kv[i].(string)] = v
			}
		case map[string]any:
			if v != nil {
				m[kv[i].(string)] = v
			}
		case []any:
			if v != nil {
				m[kv[i].(string)] = v
			}
		default:
			m[kv[i].(string)] = v
		}
	}
	return m
}

func meshSpec(m *Mesh) any {
	ca := obj("builtin", map[string]any{})
	if p := m.MTLS.CA.Provided; m.MTLS.CA.Kind == CAProvided && p != nil {
		ca = obj("provided", obj("cert", obj("file", p.CertFile), "key", obj("file", p.KeyFile)))
	}
	return obj("labels", stringMap(m.Labels),
		"mtls", obj("enabled", m.MTLS.Enabled, "ca", ca, "backend", m.MTLS.Backend),
		"logging", loggingSpec(m.Logging),
		"tracing", tracingSpec(m.Tracing),
		"metrics", metricsSpec(m.Metrics))
}

func loggingSpec(lg *Logging) map[string]any {
	if lg == nil {
		return nil
	}
	backends := []any{}
	for _, b := range lg.Backends {
		var file, tcp map[string]any
		if b.FilePath != "" {
			file = obj("path", b.FilePath)
		}
		if b.TCPAddress != "" {
			tcp = obj("address", b.TCPAddress)
		}
		backends = append(backends, obj("name", b.Name, "format", b.Format, "file", file, "tcp", tcp))
	}
	return obj("defaultBackend", lg.DefaultBackend, "backends", backends)
}

func tracingSpec(tr *Tracing) map[string]any {
	if tr == nil {
		return nil
	}
	backends := []any{}
	for _, b := range tr.Backends {
		var sampling, traceID128 any
		if b.Sampling != nil {
			sampling = *b.Sampling
		}
		if b.Zipkin.TraceID128Bit {
			traceID128 = true
		}
		if dd := b.Datadog; dd != nil {
			backends = append(backends, obj("name", b.Name, "sampling", sampling,
				"datadog", obj("address", dd.Address, "port", int(dd.Port), "splitService", dd.SplitService)))
			continue
		}
		zipkin := obj("url", b.Zipkin.URL, "apiVersion", b.Zipkin.APIVersion, "traceId128bit", traceID128)
		backends = append(backends, obj("name", b.Name, "sampling", sampling, "zipkin", zipkin))
	}
	return obj("defaultBackend", tr.DefaultBackend, "backends", backends)
}

func metricsSpec(mx *Metrics) map[string]any {
	if mx == nil {
		return nil
	}
	var prom map[string]any
	if p := mx.Prometheus; p != nil {
		var tags map[string]any
		if len(p.Tags) > 0 {
			tags = tagsSpec(p.Tags)
		}
		prom = obj("port", p.Port, "path", p.Path, "tags", tags)
	}
	return obj("prometheus", prom)
}

// defaultOutboundAddress is where an outbound listens unless it says.
const defaultOutboundAddress = "127.0.0.1"

// dataplaneSpec writes networking.address, and an inbound's address only
// where it differs from that: moving a dataplane is one change. A legacy
// dataplane has no networking.address and takes its first inbound's.
func dataplaneSpec(dp *Dataplane) any {
	address := dp.Address
	if address == "" && len(dp.Inbound) > 0 {
		address = dp.Inbound[0].Address
	}
	inbound := make([]any, 0, len(dp.Inbound))
	for _, in := range dp.Inbound {
		own := ""
		if in.Address != address {
			own = in.Address
		}
		inbound = append(inbound, obj("port", in.Port, "servicePort", in.ServicePort, "address", own, "tags", tagsSpec(in.Tags)))
	}
	var outbound []any
	for _, o := range dp.Outbound {
		own := ""
		if o.Address != defaultOutboundAddress {
			own = o.Address
		}
		outbound = append(outbound, obj("port", o.Port, "address", own, "service", o.Service))
	}
	return obj("labels", stringMap(dp.Labels), "networking", obj("address", address, "inbound", inbound, "outbound", outbound))
}

func permissionSpec(tp *TrafficPermission) any {
	if len(tp.Rules) == 1 {
		return ruleSpec(tp.Rules[0])
	}
	rules := make([]any, 0, len(tp.Rules))
	for _, r := range tp.Rules {
		rules = append(rules, ruleSpec(r))
	}
	return obj("labels", stringMap(tp.Labels), "rules", rules)
}

func ruleSpec(r PermissionRule) map[string]any {
	return obj("sources", selectorsSpec(r.Sources), "destinations", selectorsSpec(r.Destinations))
}

func selectorsSpec(ss []Selector) []any {
	out := make([]any, 0, len(ss))
	for _, s := range ss {
		out = append(out, obj("match", tagsSpec(s)))
	}
	return out
}

func tagsSpec(tags map[string]string) map[string]any {
	out := make(map[string]any, len(tags))
	for k, v := range tags {
		out[k] = v
	}
	return out
}

func stringMap(m map[string]string) map[string]any {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func targetRefSpec(t TargetRef) map[string]any {
	return obj("kind", string(t.Kind), "name", t.Name, "tags", stringMap(t.Tags), "labels", stringMap(t.Labels), "sectionName", t.SectionName)
}

func meshTrafficPermissionSpec(p *MeshTrafficPermission) any {
	var from, rules []any
	for _, f := range p.From {
		from = append(from, obj("targetRef", targetRefSpec(f.TargetRef), "default", obj("action", string(f.Action))))
	}
	matches := func(ms []SpiffeMatch) []any {
		var out []any
		for _, m := range ms {
			typ := "Exact"
			if m.Prefix {
				typ = "Prefix"
			}
			out = append(out, obj("spiffeID", obj("type", typ, "value", m.Value)))
		}
		return out
	}
	for _, r := range p.Rules {
		rules = append(rules, obj("default", obj("allow", matches(r.Allow), "deny", matches(r.Deny),
			"allowWithShadowDeny", matches(r.AllowWithShadowDeny))))
	}
	return obj("labels", stringMap(p.Labels), "spec", obj("targetRef", targetRefSpec(p.TargetRef), "from", from, "rules", rules))
}

func backendRefsSpec(bs []BackendRef) []any {
	out := make([]any, 0, len(bs))
	for _, b := range bs {
		out = append(out, obj("kind", string(b.Kind), "name", b.Name, "tags", stringMap(b.Tags), "weight", fmt.Sprint(b.Weight)))
	}
	return out
}

// jsonTree is v as encoding/json sees it: maps, lists and scalars.
func jsonTree(v any) any {
	b, err := json.Marshal(v)
	if err != nil {
		return nil
	}
	var out any
	if json.Unmarshal(b, &out) != nil {
		return nil
	}
	return out
}

func headerModifierSpec(hm *HeaderModifier) any {
	if hm == nil {
		return nil
	}
	kv := func(hs []HeaderValue) []any {
		var out []any
		for _, h := range hs {
			out = append(out, obj("name", h.Name, "value", h.Value))
		}
		return out
	}
	var remove []any
	for _, r := range hm.Remove {
		remove = append(remove, r)
	}
	return obj("set", kv(hm.Set), "add", kv(hm.Add), "remove", remove)
}

func pathRewriteSpec(p *PathRewrite) any {
	if p == nil {
		return nil
	}
	return obj("type", p.Type, "replaceFullPath", p.ReplaceFullPath, "replacePrefixMatch", p.ReplacePrefixMatch)
}

func filterSpec(f HTTPFilter) any {
	out := obj("type", f.Type, "requestHeaderModifier", headerModifierSpec(f.RequestHeader),
		"responseHeaderModifier", headerModifierSpec(f.ResponseHeader))
	if r := f.Redirect; r != nil {
		port := ""
		if r.Port != 0 {
			port = fmt.Sprint(r.Port)
		}
		out["requestRedirect"] = obj("scheme", r.Scheme, "hostname", r.Hostname, "path", pathRewriteSpec(r.Path), "port", port,
			"statusCode", fmt.Sprint(r.StatusCode))
	}
	if r := f.Rewrite; r != nil {
		out["urlRewrite"] = obj("hostname", r.Hostname, "path", pathRewriteSpec(r.Path))
	}
	if m := f.Mirror; m != nil {
		out["requestMirror"] = obj("percentage", fmt.Sprint(m.Percentage), "backendRef", backendRefsSpec([]BackendRef{m.BackendRef})[0])
	}
	return out
}

func meshHTTPRouteSpec(p *MeshHTTPRoute) any {
	var to []any
	for _, t := range p.To {
		var rules []any
		for _, r := range t.Rules {
			var filters []any
			for _, f := range r.Filters {
				filters = append(filters, filterSpec(f))
			}
			def := obj("filters", filters)
			if r.HasBackendRefs {
				def["backendRefs"] = backendRefsSpec(r.BackendRefs)
			}
			rules = append(rules, obj("matches", jsonTree(r.Matches), "default", def))
		}
		to = append(to, obj("targetRef", targetRefSpec(t.TargetRef), "rules", rules))
	}
	return obj("labels", stringMap(p.Labels), "spec", obj("targetRef", targetRefSpec(p.TargetRef), "to", to))
}

func meshTCPRouteSpec(p *MeshTCPRoute) any {
	var to []any
	for _, t := range p.To {
		to = append(to, obj("targetRef", targetRefSpec(t.TargetRef), "rules", []any{obj("default", obj("backendRefs", backendRefsSpec(t.BackendRefs)))}))
	}
	return obj("labels", stringMap(p.Labels), "spec", obj("targetRef", targetRefSpec(p.TargetRef), "to", to))
}

// confPolicySpec is a conf policy as written: its confs are JSON already.
func confPolicySpec(p *ConfPolicy) any {
	items := func(list []ConfItem, pos ConfPosition) []any {
		var out []any
		for _, it := range list {
			o := obj("default", jsonTree(it.Default))
			if pos == PosRules {
				var ms []any
				for _, m := range it.Matches {
					typ := "Exact"
					if m.Prefix {
						typ = "Prefix"
					}
					ms = append(ms, obj("spiffeID", obj("type", typ, "value", m.Value)))
				}
				if ms != nil {
					o["matches"] = ms
				}
			} else {
				o["targetRef"] = targetRefSpec(it.TargetRef)
			}
			out = append(out, o)
		}
		return out
	}
	spec := obj("targetRef", targetRefSpec(p.TargetRef), "to", items(p.To, PosTo), "from", items(p.From, PosFrom),
		"rules", items(p.Rules, PosRules))
	if p.Default != nil {
		spec["default"] = jsonTree(p.Default)
	}
	return obj("labels", stringMap(p.Labels), "spec", spec)
}
