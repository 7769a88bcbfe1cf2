package schema

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
)

// The Kuma 2.x policies whose items carry a `default` conf that merges:
// MeshTimeout, MeshRetry, MeshCircuitBreaker and the others of their
// family. Each is one ConfKind (its own file holds its rules and typed
// conf); they share the shape
//
//	spec:
//	  targetRef: {...}             # the proxies the policy configures
//	  to:    [{targetRef, default}] # per destination (outbound)
//	  from:  [{targetRef, default}] # per source (inbound)
//	  rules: [{matches?, default}]  # inbound, Kuma 2.9+
//	  default: {...}               # MeshTrace, MeshMetric: the proxy itself
//
// and Kuma's merge: the items that apply are ordered by the specificity of
// their policy's top-level targetRef, then of their own targetRef, then by
// policy name (the smaller name last), and their confs are merged as JSON
// merge patches (RFC 7386: objects field by field, lists and scalars
// replaced), the last winning.

// ConfPosition is where an item of a conf policy sits.
type ConfPosition string

// The positions of a conf policy's items.
const (
	PosTo      ConfPosition = "to"
	PosFrom    ConfPosition = "from"
	PosRules   ConfPosition = "rules"
	PosDefault ConfPosition = "default"
)

// confKind describes one kind of conf policy.
type confKind struct {
	typ    string
	plural string // its REST collection: meshtimeouts, ...
	schema string // its schema file
	top    targetRefRules
	// to and from are the kinds allowed there; nil when the position is
	// not allowed. rules says whether rules[] is; topDefault whether the
	// policy has a spec.default instead of items.
	to, from   *targetRefRules
	rules      bool
	topDefault bool
	// check validates one default at ptr, where pos is its item's position
	// and top the policy's top-level targetRef: the rules its schema cannot
	// state.
	check func(d *decoder, ptr string, conf map[string]any, pos ConfPosition, top TargetRef)
	// grpcDrops names what proxyless gRPC cannot apply of a conf at pos;
	// nil when it applies all of it.
	grpcDrops func(conf map[string]any, pos ConfPosition) []string
	// warn lists what of a conf has no effect in gitmesh (a no-effect
	// warning each, at the conf's field).
	warn func(conf map[string]any) []confWarning
	// defaultRequired says that an item without `default` is checked as
	// one with an empty default (Kuma reads it as an empty conf, which its
	// rules then refuse).
	defaultRequired bool
	// checkSpec, when set, checks the rules of the whole spec (raw, as
	// written) that its items alone cannot state.
	checkSpec func(d *decoder, spec map[string]any, p *ConfPolicy)
	// warnPolicy, when set, adds the kind's warnings about a policy of the
	// set as a whole.
	warnPolicy func(c *routeChecker, e *entry)
}

// confWarning is a no-effect warning on a field of a conf.
type confWarning struct{ field, message, hint string }

// confKinds are the conf policy kinds by type; each kind's file registers
// itself.
var confKinds = map[string]*confKind{}

func registerConfKind(k *confKind) {
	confKinds[k.typ] = k
	schemaFileOf[k.typ] = k.schema
	resourceTypes = append(resourceTypes, k.typ)
	sort.Strings(resourceTypes)
}

// ConfKinds lists the types of the conf policies, sorted.
func ConfKinds() []string { return slices.Sorted(maps.Keys(confKinds)) }

// ConfPlural is the REST collection of a conf policy type ("" for another
// type).
func ConfPlural(typ string) string {
	if k := confKinds[typ]; k != nil {
		return k.plural
	}
	return ""
}

// IsConfKind reports whether typ is a conf policy type.
func IsConfKind(typ string) bool { return confKinds[typ] != nil }

// ConfPolicy is a validated conf policy.
type ConfPolicy struct {
	PolicyMeta
	Type string
	// To, From and Rules are its items in their order; Default its
	// spec.default (MeshTrace, MeshMetric), nil otherwise.
	To, From, Rules []ConfItem
	Default         map[string]any
	// DefaultPointer and DefaultLine say where Default is written.
	DefaultPointer string
	DefaultLine    int
}

// ConfItem is one to[], from[] or rules[] item.
type ConfItem struct {
	// TargetRef is the item's (the implicit kind Mesh for a rules[] item).
	TargetRef TargetRef
	// Matches are a rules[] item's client matches; none matches every
	// client.
	Matches []SpiffeMatch
	Default map[string]any
	Pointer string
	Line    int
}

func decodeConfPolicy(k *confKind, m map[string]any) (*ConfPolicy, []issue) {
	d := &decoder{}
	spec := mapOf(m, "spec")
	to, from, rules := listOf(spec, "to"), listOf(spec, "from"), listOf(spec, "rules")
	top := k.top
	top.inbound = len(from) > 0 || len(rules) > 0
	p := &ConfPolicy{Type: k.typ, PolicyMeta: d.policyMeta(m, top)}
	if k.topDefault {
		p.Default, p.DefaultPointer = mapOf(spec, "default"), "/spec/default"
		if p.Default != nil {
			k.check(d, p.DefaultPointer, p.Default, PosDefault, p.TargetRef)
		}
		return p, d.issues
	}
	switch {
	case len(rules) > 0 && (len(to) > 0 || len(from) > 0) && k.to != nil && k.from != nil:
		d.add("/spec/rules", CodeMixedForms, "keep either `rules` or `to`/`from`", "fields 'to' and 'from' must be empty when 'rules' is defined")
	case len(rules) > 0 && len(from) > 0:
		d.add("/spec/rules", CodeMixedForms, "keep either `rules` or `from`", "field 'from' must be empty when 'rules' is defined")
	case len(to)+len(from)+len(rules) == 0 && spec != nil:
		var fields []string
		for _, f := range []struct {
			name string
			ok   bool
		}{{"to", k.to != nil}, {"from", k.from != nil}, {"rules", k.rules}} {
			if f.ok {
				fields = append(fields, "`"+f.name+"`")
			}
		}
		d.add("/spec", CodeMissingRules, "add "+strings.Join(fields, " or "), "at least one of %s has to be defined", strings.Join(fields, ", "))
	}
	items := func(pos ConfPosition, list []any, rules *targetRefRules) []ConfItem {
		var out []ConfItem
		for i, raw := range list {
			im, _ := raw.(map[string]any)
			ptr := fmt.Sprintf("/spec/%s/%d", pos, i)
			it := ConfItem{Pointer: ptr, TargetRef: TargetRef{Kind: KindMesh}}
			if rules == nil && pos != PosRules {
				d.add(ptr, CodeInvalidValue, fmt.Sprintf("%s has no `%s`", k.typ, pos), "`%s` must not be defined", pos)
				continue
			}
			if pos == PosRules {
				it.Matches = d.spiffeMatches(ptr+"/matches", listOf(im, "matches"))
			} else if tr := mapOf(im, "targetRef"); tr != nil {
				it.TargetRef = d.routeRef(ptr+"/targetRef", tr, *rules)
			}
			it.Default = mapOf(im, "default")
			if it.Default != nil {
				k.check(d, ptr+"/default", it.Default, pos, p.TargetRef)
			} else if k.defaultRequired {
				k.check(d, ptr+"/default", map[string]any{}, pos, p.TargetRef)
			}
			out = append(out, it)
		}
		return out
	}
	p.To = items(PosTo, to, k.to)
	p.From = items(PosFrom, from, k.from)
	if k.rules {
		p.Rules = items(PosRules, rules, nil)
	} else if len(rules) > 0 {
		d.add("/spec/rules", CodeInvalidValue, k.typ+" has no `rules`", "`rules` must not be defined")
	}
	if k.checkSpec != nil && spec != nil {
		k.checkSpec(d, spec, p)
	}
	return p, d.issues
}

// PoliciesOfType returns the conf policies of type typ in mesh, sorted by
// name. The slice shares the Set's storage.
func (s *Set) PoliciesOfType(typ, mesh string) []*ConfPolicy {
	ps := s.Policies
	less := func(p *ConfPolicy) bool { return p.Type > typ || (p.Type == typ && p.Mesh >= mesh) }
	lo := sort.Search(len(ps), func(i int) bool { return less(ps[i]) })
	hi := sort.Search(len(ps), func(i int) bool { return ps[i].Type > typ || (ps[i].Type == typ && ps[i].Mesh > mesh) })
	return ps[lo:hi]
}

// Policy returns the conf policy typ/mesh/name, or nil.
func (s *Set) Policy(typ, mesh, name string) *ConfPolicy {
	ps := s.PoliciesOfType(typ, mesh)
	i := sort.Search(len(ps), func(i int) bool { return ps[i].Name >= name })
	if i < len(ps) && ps[i].Name == name {
		return ps[i]
	}
	return nil
}

// Conf is the merged conf of the items that apply to one outbound, inbound
// or proxy, and those items in merge order.
type Conf struct {
	Values map[string]any
	From   []ConfSource
}

// ConfSource is an item that took part in a merge.
type ConfSource struct {
	Policy *ConfPolicy
	Item   string // the item's pointer
	Line   int
}

// Empty reports whether no item applies.
func (c Conf) Empty() bool { return len(c.From) == 0 }

// Decode decodes the merged conf into v, a pointer to a kind's typed conf.
func (c Conf) Decode(v any) error {
	b, err := json.Marshal(c.Values)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

type confEntry struct {
	p    *ConfPolicy
	item *ConfItem
}

func mergeEntries(es []confEntry) Conf {
	sortConfEntries(es)
	out := Conf{}
	for _, e := range es {
		out.Values = MergePatch(out.Values, e.item.Default)
		out.From = append(out.From, ConfSource{Policy: e.p, Item: e.item.Pointer, Line: e.item.Line})
	}
	return out
}

// sortConfEntries puts es in merge order: the least specific first.
func sortConfEntries(es []confEntry) {
	slices.SortStableFunc(es, func(a, b confEntry) int {
		pa, pb := a.p.PolicyMeta, b.p.PolicyMeta
		pa.Name, pb.Name = "", ""
		if c := ComparePolicies(&pa, &pb); c != 0 {
			return c
		}
		if c := CompareKinds(a.item.TargetRef.Kind, b.item.TargetRef.Kind); c != 0 {
			return c
		}
		return strings.Compare(b.p.Name, a.p.Name)
	})
}

// ToConf merges the to[] items of the policies (a mesh's, of one type)
// that select dp as a client and name service (or every service, kind
// Mesh).
func ToConf(policies []*ConfPolicy, dp *Dataplane, service string) Conf {
	var es []confEntry
	for _, p := range policies {
		if !p.TargetRef.SelectsClient(dp) {
			continue
		}
		for i := range p.To {
			it := &p.To[i]
			if it.TargetRef.Kind == KindMesh || (it.TargetRef.Kind == KindMeshService && it.TargetRef.Name == service) {
				es = append(es, confEntry{p, it})
			}
		}
	}
	return mergeEntries(es)
}

// FromConf merges, for inbound i of dp, the items of the policies (a
// mesh's, of one type) that select the inbound and apply to every client:
// from[] items of kind Mesh and rules[] items without matches. Items for
// some clients only are left out: an inbound's listener is one for all of
// them (FromItems lists them, for kinds whose items fire on their own).
func FromConf(policies []*ConfPolicy, dp *Dataplane, i int) Conf {
	return mergeEntries(inboundEntries(policies, dp, i, false))
}

// inboundEntries are, for inbound i of dp, the from[] items of kind Mesh
// and the rules[] items (with matches too, when withMatches) of the
// policies that select the inbound.
func inboundEntries(policies []*ConfPolicy, dp *Dataplane, i int, withMatches bool) []confEntry {
	var es []confEntry
	for _, p := range policies {
		if !p.TargetRef.SelectsInbound(dp, i) {
			continue
		}
		for j := range p.From {
			if p.From[j].TargetRef.Kind == KindMesh {
				es = append(es, confEntry{p, &p.From[j]})
			}
		}
		for j := range p.Rules {
			if withMatches || len(p.Rules[j].Matches) == 0 {
				es = append(es, confEntry{p, &p.Rules[j]})
			}
		}
	}
	return es
}

// FromItem is one item that applies to an inbound, with its policy.
type FromItem struct {
	Policy *ConfPolicy
	Item   *ConfItem
	// Match is the one client match of the item this entry stands for
	// (an item with several matches gives one entry per match); nil for
	// an item that applies to every client.
	Match *SpiffeMatch
}

// FromItems lists, for inbound i of dp, the from[] items of kind Mesh and
// the rules[] items of the policies that select the inbound, each on its
// own (not merged), for a kind whose items fire independently
// (MeshAccessLog logs to every item's backends). They are in Kuma's
// order: by policy as a merge orders them, then the items with an Exact
// client match first, then those with a Prefix match, then those for
// every client.
func FromItems(policies []*ConfPolicy, dp *Dataplane, i int) []FromItem {
	es := inboundEntries(policies, dp, i, true)
	sortConfEntries(es)
	var out []FromItem
	for _, e := range es {
		if len(e.item.Matches) == 0 {
			out = append(out, FromItem{Policy: e.p, Item: e.item})
		}
		for k := range e.item.Matches {
			out = append(out, FromItem{Policy: e.p, Item: e.item, Match: &e.item.Matches[k]})
		}
	}
	score := func(it FromItem) int {
		switch {
		case it.Match == nil:
			return 2
		case it.Match.Prefix:
			return 1
		}
		return 0
	}
	slices.SortStableFunc(out, func(a, b FromItem) int { return score(a) - score(b) })
	return out
}

// ProxyConf merges the spec.default of the policies (a mesh's, of one
// type) that select dp.
func ProxyConf(policies []*ConfPolicy, dp *Dataplane) Conf {
	var es []confEntry
	for _, p := range policies {
		if p.Default != nil && p.TargetRef.SelectsClient(dp) {
			es = append(es, confEntry{p, &ConfItem{TargetRef: TargetRef{Kind: KindMesh}, Default: p.Default, Pointer: p.DefaultPointer, Line: p.DefaultLine}})
		}
	}
	return mergeEntries(es)
}

// MergePatch applies patch to target as a JSON merge patch (RFC 7386) and
// returns the result; neither argument is modified.
func MergePatch(target, patch map[string]any) map[string]any {
	out := maps.Clone(target)
	if out == nil {
		out = map[string]any{}
	}
	for k, v := range patch {
		switch pv := v.(type) {
		case nil:
			delete(out, k)
		case map[string]any:
			tv, _ := out[k].(map[string]any)
			out[k] = MergePatch(tv, pv)
		default:
			out[k] = v
		}
	}
	return out
}

// dedupeConf dedupes each type's entries with dedupe (which sorts them by
// mesh and name) and returns them all sorted by (type, mesh, name).
func dedupeConf(es []*entry, dedupe func([]*entry, func(*entry) string) []*entry) []*entry {
	byType := map[string][]*entry{}
	for _, e := range es {
		byType[e.typ] = append(byType[e.typ], e)
	}
	var out []*entry
	for _, typ := range slices.Sorted(maps.Keys(byType)) {
		out = append(out, dedupe(byType[typ], func(e *entry) string { return fmt.Sprintf("%s %q in mesh %q", e.typ, e.name, e.mesh) })...)
	}
	return out
}

// confPolicy warns where a conf policy names services nobody provides, and
// where proxyless gRPC would drop part of it for dataplanes labelled
// gitmesh.io/flavor: grpc.
func (c *routeChecker) confPolicy(e *entry) {
	p := e.conf
	c.serviceRef(e, p.TargetRef)
	for _, list := range [][]ConfItem{p.To, p.From} {
		for _, it := range list {
			c.serviceRef(e, it.TargetRef)
		}
	}
	k := confKinds[p.Type]
	if k == nil {
		return
	}
	if k.warn != nil {
		for _, list := range [][]ConfItem{p.To, p.From, p.Rules} {
			for _, it := range list {
				for _, w := range k.warn(it.Default) {
					c.warnAt(e, it.Pointer+"/default/"+w.field, CodeNoEffect, w.message, w.hint)
				}
			}
		}
	}
	if k.warnPolicy != nil {
		k.warnPolicy(c, e)
	}
	if k.grpcDrops == nil {
		return
	}
	var grpc []string
	known := false
	check := func(ptr string, conf map[string]any, pos ConfPosition) {
		drops := k.grpcDrops(conf, pos)
		if len(drops) == 0 {
			return
		}
		if !known {
			for _, dp := range c.set.DataplanesIn(p.Mesh) {
				if dp.Labels[FlavorLabel] == "grpc" && p.TargetRef.SelectsClient(dp) {
					grpc = append(grpc, dp.Name)
				}
			}
			known = true
		}
		if len(grpc) > 0 {
			c.warnAt(e, ptr, CodeUnsupportedByFlavor,
				fmt.Sprintf("proxyless gRPC ignores %s of this %s: dataplanes %s are labelled %s: grpc", strings.Join(drops, ", "), p.Type, listNames(grpc), FlavorLabel),
				"only Envoy applies them; the README's support matrix says what each data plane takes")
		}
	}
	for _, l := range []struct {
		items []ConfItem
		pos   ConfPosition
	}{{p.To, PosTo}, {p.From, PosFrom}, {p.Rules, PosRules}} {
		for _, it := range l.items {
			check(it.Pointer+"/default", it.Default, l.pos)
		}
	}
	if p.Default != nil {
		check(p.DefaultPointer, p.Default, PosDefault)
	}
}

// clearPositions forgets where p is written (on copies of its lists).
func (p *ConfPolicy) clearPositions() {
	p.Origin, p.DefaultLine = Origin{}, 0
	for _, l := range []*[]ConfItem{&p.To, &p.From, &p.Rules} {
		*l = slices.Clone(*l)
		for i := range *l {
			(*l)[i].Line = 0
		}
	}
}
