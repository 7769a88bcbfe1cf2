package schema

import (
	"fmt"
	"maps"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strings"
)

// TypeMeshTrafficPermission is Kuma 2.x's permission policy.
const TypeMeshTrafficPermission = "MeshTrafficPermission"

// Action is what a MeshTrafficPermission does with the clients it names.
type Action string

// The actions of a MeshTrafficPermission.
const (
	ActionAllow               Action = "Allow"
	ActionDeny                Action = "Deny"
	ActionAllowWithShadowDeny Action = "AllowWithShadowDeny"
)

// Allows reports whether the action lets a request through.
func (a Action) Allows() bool { return a == ActionAllow || a == ActionAllowWithShadowDeny }

// MeshTrafficPermission is a validated Kuma 2.x MeshTrafficPermission: its
// top-level targetRef selects inbounds; either From (clients selected by
// targetRef, each with an action) or Rules (clients matched by SPIFFE id)
// says who may reach them.
type MeshTrafficPermission struct {
	PolicyMeta
	From  []PermissionFrom
	Rules []PermissionRules
}

// PermissionFrom is one from[] item.
type PermissionFrom struct {
	TargetRef TargetRef
	Action    Action
	Pointer   string
}

// PermissionRules is the `default` of one rules[] item.
type PermissionRules struct {
	Allow, Deny, AllowWithShadowDeny []SpiffeMatch
	Pointer                          string
}

// SpiffeMatch matches a client's SPIFFE id exactly or by prefix.
type SpiffeMatch struct {
	Prefix  bool
	Value   string
	Pointer string
}

// String is the match as Kuma writes it, e.g. Exact spiffe://default/web.
func (m SpiffeMatch) String() string {
	if m.Prefix {
		return "Prefix " + m.Value
	}
	return "Exact " + m.Value
}

var (
	mtpTopRules  = targetRefRules{kinds: []TargetKind{KindMesh, KindMeshSubset, KindMeshService, KindMeshServiceSubset, KindDataplane}, inbound: true}
	mtpFromRules = targetRefRules{kinds: []TargetKind{KindMesh, KindMeshSubset, KindMeshService, KindMeshServiceSubset}}
	trustDomain  = regexp.MustCompile(`^[a-z0-9._-]+$`)
	spiffePath   = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)
)

func decodeMeshTrafficPermission(m map[string]any) (*MeshTrafficPermission, []issue) {
	d := &decoder{}
	p := &MeshTrafficPermission{PolicyMeta: d.policyMeta(m, mtpTopRules)}
	spec := mapOf(m, "spec")
	from, rules := listOf(spec, "from"), listOf(spec, "rules")
	switch {
	case len(from) > 0 && len(rules) > 0:
		d.add("/spec/rules", CodeMixedForms, "keep either `from` (clients by targetRef) or `rules` (clients by SPIFFE id)",
			"field `from` must be empty when `rules` is defined")
	case len(from) == 0 && len(rules) == 0 && spec != nil:
		d.add("/spec", CodeMissingRules, "add `from: [{targetRef: {kind: Mesh}, default: {action: Allow}}]`, or `rules`",
			"at least one of `from` or `rules` has to be defined")
	}
	for i, raw := range from {
		fm, _ := raw.(map[string]any)
		ptr := fmt.Sprintf("/spec/from/%d", i)
		f := PermissionFrom{Pointer: ptr, Action: Action(str(mapOf(fm, "default"), "action"))}
		if tr := mapOf(fm, "targetRef"); tr != nil {
			f.TargetRef = d.targetRef(ptr+"/targetRef", tr, mtpFromRules)
		}
		p.From = append(p.From, f)
	}
	for i, raw := range rules {
		rm, _ := raw.(map[string]any)
		ptr := fmt.Sprintf("/spec/rules/%d/default", i)
		def := mapOf(rm, "default")
		r := PermissionRules{Pointer: ptr,
			Allow:               d.spiffeMatches(ptr+"/allow", listOf(def, "allow")),
			Deny:                d.spiffeMatches(ptr+"/deny", listOf(def, "deny")),
			AllowWithShadowDeny: d.spiffeMatches(ptr+"/allowWithShadowDeny", listOf(def, "allowWithShadowDeny")),
		}
		if def != nil && len(r.Allow)+len(r.Deny)+len(r.AllowWithShadowDeny) == 0 {
			d.add(ptr, CodeMissingRules, "add `allow`, `deny` or `allowWithShadowDeny`, each a list of `spiffeID: {type: Exact|Prefix, value: ...}`",
				"at least one of `allow`, `allowWithShadowDeny`, `deny` has to be defined")
		}
		p.Rules = append(p.Rules, r)
	}
	return p, d.issues
}

// spiffeMatches decodes a list of matches; an SNI match is refused: gitmesh
// identifies clients by their certificate's SPIFFE id only.
func (d *decoder) spiffeMatches(ptr string, list []any) []SpiffeMatch {
	var out []SpiffeMatch
	for i, raw := range list {
		mm, _ := raw.(map[string]any)
		mptr := fmt.Sprintf("%s/%d", ptr, i)
		if _, ok := mm["sni"]; ok {
			d.add(mptr+"/sni", CodeUnsupported, "match clients by `spiffeID`: gitmesh certificates identify a client by its SPIFFE id",
				"SNI matches are not supported by gitmesh")
			continue
		}
		sm := mapOf(mm, "spiffeID")
		if sm == nil {
			if mm != nil {
				d.add(mptr, CodeMissingField, "add `spiffeID: {type: Exact, value: spiffe://MESH/SERVICE}`", "the match has no `spiffeID`")
			}
			continue
		}
		m := SpiffeMatch{Prefix: str(sm, "type") == "Prefix", Value: str(sm, "value"), Pointer: mptr + "/spiffeID"}
		if m.Value != "" {
			if err := checkSpiffeID(m.Value); err != nil {
				d.add(mptr+"/spiffeID/value", CodeInvalidValue, "write spiffe://TRUST-DOMAIN/PATH; gitmesh issues spiffe://MESH/SERVICE",
					"%q must be a valid SPIFFE id: %v", m.Value, err)
			}
		}
		out = append(out, m)
	}
	return out
}

// checkSpiffeID applies the SPIFFE id rules: scheme spiffe, a lower-case
// trust domain, path segments of letters, digits, '.', '-' and '_', no
// trailing slash, no query or fragment.
func checkSpiffeID(s string) error {
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return err
	case u.Scheme != "spiffe":
		return fmt.Errorf("scheme is missing or not spiffe")
	case u.Host == "" || !trustDomain.MatchString(u.Host):
		return fmt.Errorf("trust domain %q is missing or has characters that are not allowed", u.Host)
	case u.User != nil || u.Port() != "":
		return fmt.Errorf("a trust domain has no user or port")
	case u.RawQuery != "" || u.Fragment != "" || strings.ContainsAny(s, "?#"):
		return fmt.Errorf("a SPIFFE id has no query or fragment")
	case strings.HasSuffix(u.Path, "/"):
		return fmt.Errorf("path cannot have a trailing slash")
	}
	if u.Path != "" {
		for _, seg := range strings.Split(strings.TrimPrefix(u.Path, "/"), "/") {
			if seg == "" || seg == "." || seg == ".." || !spiffePath.MatchString(seg) {
				return fmt.Errorf("path segment %q is not allowed", seg)
			}
		}
	}
	return nil
}

// MeshTrafficPermissionsIn returns the MeshTrafficPermissions of a mesh,
// sorted by name. The slice shares the Set's storage.
func (s *Set) MeshTrafficPermissionsIn(mesh string) []*MeshTrafficPermission {
	ps := s.MeshTrafficPermissions
	lo := sort.Search(len(ps), func(i int) bool { return ps[i].Mesh >= mesh })
	hi := sort.Search(len(ps), func(i int) bool { return ps[i].Mesh > mesh })
	return ps[lo:hi]
}

// MeshTrafficPermission returns the policy mesh/name, or nil.
func (s *Set) MeshTrafficPermission(mesh, name string) *MeshTrafficPermission {
	ps := s.MeshTrafficPermissionsIn(mesh)
	i := sort.Search(len(ps), func(i int) bool { return ps[i].Name >= name })
	if i < len(ps) && ps[i].Name == name {
		return ps[i]
	}
	return nil
}

// InboundPermissions is the merged result of the MeshTrafficPermissions
// that select one inbound, following Kuma 2.14:
//
//   - the policies whose top-level targetRef selects the inbound, in merge
//     order (least specific first; of equal specificity the greater name
//     first, so the smaller name wins);
//   - when any of them has rules[], only the rules[] policies apply: a
//     client is allowed when one of their allow or allowWithShadowDeny
//     matches names it and no deny does;
//   - otherwise their from[] items are merged: for each client the last item
//     (in merge order, each policy's items in their order) whose targetRef
//     selects it decides, and a client no item selects is denied.
//
// gitmesh certificates name a client's service only (spiffe://MESH/SERVICE),
// so a from[] targetRef that also selects by other tags cannot be checked at
// the inbound: such an item is enforced failing closed (a Deny it might
// decide denies the whole service, an Allow is taken only when every
// instance of the service is allowed), and reported by validate.
type InboundPermissions struct {
	// Policies select the inbound, in merge order. Empty: no
	// MeshTrafficPermission applies, and the mesh's legacy TrafficPermissions
	// decide.
	Policies []*MeshTrafficPermission
	// RulesForm is true when rules[] policies decide; Match is their
	// matches, in merge order.
	RulesForm bool
	Matches   []MatchVerdict
	// Services are the verdicts of the services a from[] item names,
	// sorted; Others is the verdict of every other client.
	Services []ServiceVerdict
	Others   Verdict
}

// Verdict is what the merged from[] items decide for a client.
type Verdict struct {
	// Action is the enforced action; "" when no item selects the client
	// (denied).
	Action Action
	// Exact is false when an item that selects by tags other than the
	// service took part: the action is then enforced failing closed.
	Exact bool
	// By is the deciding item; nil when Action is "".
	By     *MeshTrafficPermission
	ByFrom int
}

// ServiceVerdict is the verdict for the clients of one service.
type ServiceVerdict struct {
	Service string
	Verdict
}

// MatchVerdict is one match of a rules[] policy with its action.
type MatchVerdict struct {
	Match  SpiffeMatch
	Action Action
	By     *MeshTrafficPermission
}

// SelectingInbound returns the MeshTrafficPermissions of policies (a mesh's,
// in any order) that select inbound i of dp, in merge order.
func SelectingInbound(policies []*MeshTrafficPermission, dp *Dataplane, i int) []*MeshTrafficPermission {
	var out []*MeshTrafficPermission
	for _, p := range policies {
		if p.TargetRef.SelectsInbound(dp, i) {
			out = append(out, p)
		}
	}
	SortPermissions(out)
	return out
}

// SortPermissions puts policies in merge order.
func SortPermissions(ps []*MeshTrafficPermission) {
	slices.SortStableFunc(ps, func(a, b *MeshTrafficPermission) int { return ComparePolicies(&a.PolicyMeta, &b.PolicyMeta) })
}

// MergePermissions merges policies, in merge order, as Kuma does (see
// InboundPermissions).
func MergePermissions(policies []*MeshTrafficPermission) InboundPermissions {
	out := InboundPermissions{Policies: policies}
	if len(policies) == 0 {
		return out
	}
	for _, p := range policies {
		if len(p.Rules) > 0 {
			out.RulesForm = true
		}
	}
	if out.RulesForm {
		for _, p := range policies {
			for _, r := range p.Rules {
				for _, list := range []struct {
					ms []SpiffeMatch
					a  Action
				}{{r.Deny, ActionDeny}, {r.Allow, ActionAllow}, {r.AllowWithShadowDeny, ActionAllowWithShadowDeny}} {
					for _, m := range list.ms {
						out.Matches = append(out.Matches, MatchVerdict{Match: m, Action: list.a, By: p})
					}
				}
			}
		}
		return out
	}
	type item struct {
		p   *MeshTrafficPermission
		i   int
		sel Selector
	}
	var items []item
	named := map[string]bool{}
	for _, p := range policies {
		for i, f := range p.From {
			sel := f.TargetRef.Selector()
			if svc, ok := sel[TagService]; ok {
				named[svc] = true
			}
			items = append(items, item{p, i, sel})
		}
	}
	verdict := func(service string, named bool) Verdict {
		v := Verdict{Exact: true}
		shadow := false
		for k := len(items) - 1; k >= 0; k-- {
			it := items[k]
			svc, pinned := it.sel[TagService]
			if pinned && (!named || svc != service) {
				continue
			}
			action := it.p.From[it.i].Action
			definite := len(it.sel) == 0 || (pinned && len(it.sel) == 1)
			if !definite {
				v.Exact = false
				if action == ActionDeny {
					return Verdict{Action: ActionDeny, By: it.p, ByFrom: it.i}
				}
				shadow = shadow || action == ActionAllowWithShadowDeny
				continue
			}
			v.Action, v.By, v.ByFrom = action, it.p, it.i
			if shadow && v.Action == ActionAllow {
				v.Action = ActionAllowWithShadowDeny
			}
			return v
		}
		return Verdict{Exact: v.Exact} // no item decides for every instance: denied
	}
	for _, svc := range slices.Sorted(maps.Keys(named)) {
		out.Services = append(out.Services, ServiceVerdict{Service: svc, Verdict: verdict(svc, true)})
	}
	out.Others = verdict("", false)
	return out
}
