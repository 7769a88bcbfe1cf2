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
func networkRBAC(statPrefix string, rules *rbacv3.RBAC) *rbacnetworkv3.RBAC {
	return &rbacnetworkv3.RBAC{StatPrefix: statPrefix, Rules: rules}
}

// httpRBAC is the RBAC HTTP filter, placed before the router.
func httpRBAC(rules *rbacv3.RBAC) (*hcmv3.HttpFilter, error) {
	a, err := toAny(&rbachttpv3.RBAC{Rules: rules})
	if err != nil {
		return nil, err
	}
	return &hcmv3.HttpFilter{
		Name:       wellknown.HTTPRoleBasedAccessControl,
		ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: a},
	}, nil
}
