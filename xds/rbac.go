package xds

import (
	"slices"
	"sort"
	"strconv"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	rbacnetworkv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"

	"github.com/gitmesh/gitmesh/schema"
)

// policyName names the RBAC policy of a permission's rule: the permission's
// name, followed by "/rules/<i>" when the permission has several rules (the
// Kuma 0.2 form), so every name is unique and stable.
func policyName(tp *schema.TrafficPermission, i int) string {
	if len(tp.Rules) == 1 {
		return tp.Name
	}
	return tp.Name + "/rules/" + strconv.Itoa(i)
}

// rbacPolicy allows any request from the rule's sources. A source is
// identified by the SPIFFE id of its certificate, which names only its
// service: a selector's other tags cannot be checked at the destination, and
// a selector whose service is '*' or absent allows any authenticated peer.
func rbacPolicy(mesh string, sources []schema.Selector) *rbacv3.Policy {
	anySource := false
	var ids []string
	for _, s := range sources {
		svc, ok := s[schema.TagService]
		if !ok || svc == "*" {
			anySource = true
			break
		}
		if !slices.Contains(ids, svc) {
			ids = append(ids, svc)
		}
	}
	p := &rbacv3.Policy{
		Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_Any{Any: true}}},
	}
	if anySource {
		p.Principals = []*rbacv3.Principal{{Identifier: &rbacv3.Principal_Any{Any: true}}}
		return p
	}
	sort.Strings(ids)
	p.Principals = make([]*rbacv3.Principal, len(ids))
	for i, svc := range ids {
		p.Principals[i] = &rbacv3.Principal{Identifier: &rbacv3.Principal_Authenticated_{
			Authenticated: &rbacv3.Principal_Authenticated{PrincipalName: &matcherv3.StringMatcher{
				MatchPattern: &matcherv3.StringMatcher_Exact{Exact: SpiffeID(mesh, svc)},
			}},
		}}
	}
	return p
}

// rbacRules allows what the rules at the given positions allow, and nothing
// else: no rule means no policy, which denies every connection.
func (mi *meshIndex) rbacRules(positions []int32) *rbacv3.RBAC {
	r := &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW, Policies: make(map[string]*rbacv3.Policy, len(positions))}
	for _, pos := range positions {
		ru := mi.rules[pos]
		r.Policies[ru.name] = ru.policy
	}
	return r
}

// networkRBAC is the configuration of the RBAC network filter, placed
// before tcp_proxy.
func networkRBAC(statPrefix string, rules, shadow *rbacv3.RBAC) *rbacnetworkv3.RBAC {
	return &rbacnetworkv3.RBAC{StatPrefix: statPrefix, Rules: rules, ShadowRules: shadow}
}

// httpRBAC is the RBAC HTTP filter, placed before the router.
func httpRBAC(rules, shadow *rbacv3.RBAC) (*hcmv3.HttpFilter, error) {
	a, err := toAny(&rbachttpv3.RBAC{Rules: rules, ShadowRules: shadow})
	if err != nil {
		return nil, err
	}
	return &hcmv3.HttpFilter{
		Name:       wellknown.HTTPRoleBasedAccessControl,
		ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: a},
	}, nil
}

// meshPermissionRBAC is the RBAC of an inbound that MeshTrafficPermissions
// select: an ALLOW policy per deciding MeshTrafficPermission, named like it,
// for the clients it allows (AllowWithShadowDeny included), and, when some
// are AllowWithShadowDeny, shadow rules denying those, which Envoy logs and
// counts (with the policy's name as the effective policy id) without
// enforcing. A policy that decides nothing allowed has no RBAC policy.
func meshPermissionRBAC(mesh string, ip schema.InboundPermissions) (rules, shadow *rbacv3.RBAC) {
	allow, shadowed := map[string][]*rbacv3.Principal{}, map[string][]*rbacv3.Principal{}
	if ip.RulesForm {
		var denies []*rbacv3.Principal
		for _, m := range ip.Matches {
			if m.Action == schema.ActionDeny {
				denies = append(denies, spiffePrincipal(m.Match))
			}
		}
		for _, m := range ip.Matches {
			if !m.Action.Allows() {
				continue
			}
			p := spiffePrincipal(m.Match)
			if m.Action == schema.ActionAllowWithShadowDeny {
				shadowed[m.By.Name] = append(shadowed[m.By.Name], p)
			}
			if len(denies) > 0 {
				p = &rbacv3.Principal{Identifier: &rbacv3.Principal_AndIds{AndIds: &rbacv3.Principal_Set{
					Ids: []*rbacv3.Principal{p, notAny(denies)},
				}}}
			}
			allow[m.By.Name] = append(allow[m.By.Name], p)
		}
	} else {
		verdictPrincipals(mesh, ip, schema.Action.Allows, allow)
		verdictPrincipals(mesh, ip, func(a schema.Action) bool { return a == schema.ActionAllowWithShadowDeny }, shadowed)
	}
	rules = &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW, Policies: rbacPolicies(allow)}
	if len(shadowed) > 0 {
		shadow = &rbacv3.RBAC{Action: rbacv3.RBAC_DENY, Policies: rbacPolicies(shadowed)}
	}
	return rules, shadow
}

func rbacPolicies(byName map[string][]*rbacv3.Principal) map[string]*rbacv3.Policy {
	out := make(map[string]*rbacv3.Policy, len(byName))
	for name, ps := range byName {
		out[name] = &rbacv3.Policy{
			Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_Any{Any: true}}},
			Principals:  ps,
		}
	}
	return out
}

// verdictPrincipals adds to out, under the name of the deciding policy, the
// principals of the clients whose merged from[] action satisfies want: each
// named service's SPIFFE id, and for every other client any peer but the
// named services whose action does not.
func verdictPrincipals(mesh string, ip schema.InboundPermissions, want func(schema.Action) bool, out map[string][]*rbacv3.Principal) {
	var excluded []*rbacv3.Principal
	for _, sv := range ip.Services {
		p := exactPrincipal(SpiffeID(mesh, sv.Service))
		if want(sv.Action) {
			out[sv.By.Name] = append(out[sv.By.Name], p)
		} else {
			excluded = append(excluded, p)
		}
	}
	if want(ip.Others.Action) {
		by := ip.Others.By.Name
		if len(excluded) == 0 {
			out[by] = append(out[by], &rbacv3.Principal{Identifier: &rbacv3.Principal_Any{Any: true}})
			return
		}
		out[by] = append(out[by], notAny(excluded))
	}
}

// notAny is a principal matching a peer none of ps matches.
func notAny(ps []*rbacv3.Principal) *rbacv3.Principal {
	inner := ps[0]
	if len(ps) > 1 {
		inner = &rbacv3.Principal{Identifier: &rbacv3.Principal_OrIds{OrIds: &rbacv3.Principal_Set{Ids: ps}}}
	}
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_NotId{NotId: inner}}
}

func exactPrincipal(id string) *rbacv3.Principal {
	return authenticatedPrincipal(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: id}})
}

func spiffePrincipal(m schema.SpiffeMatch) *rbacv3.Principal {
	if m.Prefix {
		return authenticatedPrincipal(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: m.Value}})
	}
	return exactPrincipal(m.Value)
}

func authenticatedPrincipal(name *matcherv3.StringMatcher) *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_Authenticated_{
		Authenticated: &rbacv3.Principal_Authenticated{PrincipalName: name},
	}}
}
