package schema

import (
	"fmt"
	"strings"
)

// DataplanePolicies lists the policies that apply to one dataplane, per
// inbound and outbound, and what they decide: Kuma's "policies affecting a
// dataplane", with where each policy is written.
type DataplanePolicies struct {
	Dataplane string             `json:"dataplane"` // MESH/NAME
	Inbounds  []InboundPolicies  `json:"inbounds"`
	Outbounds []OutboundPolicies `json:"outbounds,omitempty"`
	// Proxy are the merged conf policies of the proxy as a whole
	// (MeshTrace, MeshMetric).
	Proxy []ConfSummary `json:"proxy,omitempty"`
}

// InboundPolicies is what decides who may reach one inbound.
type InboundPolicies struct {
	Inbound string `json:"inbound"` // address:port
	Service string `json:"service"`
	// Permissions names what decides: MeshTrafficPermission (from[] or
	// rules[]), TrafficPermission (legacy), or nothing without mTLS.
	Permissions string      `json:"permissions"`
	Policies    []PolicyRef `json:"policies,omitempty"`
	// Clients are the merged verdicts: one per service a policy names, then
	// every other client ("*"); for rules[], one per match.
	Clients []ClientVerdict `json:"clients,omitempty"`
	// Confs are the merged conf policies (MeshTimeout, ...) of the
	// inbound, from the items that apply to every client.
	Confs []ConfSummary `json:"confs,omitempty"`
}

// OutboundPolicies is what configures one outbound.
type OutboundPolicies struct {
	Outbound string `json:"outbound"` // address:port
	Service  string `json:"service"`
	// Policies are the route policies that select the dataplane for the
	// service, in merge order.
	Policies []PolicyRef `json:"policies,omitempty"`
	// Routes are the merged HTTP routes, in the order they match; TCP the
	// backends of the deciding MeshTCPRoute.
	Routes []RouteSummary `json:"routes,omitempty"`
	TCP    *RouteSummary  `json:"tcp,omitempty"`
	// Confs are the merged conf policies (MeshTimeout, ...) of the calls
	// to the service.
	Confs []ConfSummary `json:"confs,omitempty"`
}

// ConfSummary is the merged conf of one conf policy type and the items it
// is merged from, in merge order.
type ConfSummary struct {
	Type string         `json:"type"`
	Conf map[string]any `json:"conf"`
	From []PolicyRef    `json:"from"`
}

func confSummaries(c func(typ string) Conf) []ConfSummary {
	var out []ConfSummary
	for _, typ := range ConfKinds() {
		conf := c(typ)
		if conf.Empty() {
			continue
		}
		cs := ConfSummary{Type: typ, Conf: jsonTree(conf.Values).(map[string]any)}
		for _, src := range conf.From {
			cs.From = append(cs.From, PolicyRef{Type: typ, Name: src.Policy.Name + " " + src.Item, File: src.Policy.Origin.File, Line: src.Line})
		}
		out = append(out, cs)
	}
	return out
}

// RouteSummary is one route as the data plane gets it.
type RouteSummary struct {
	Name     string   `json:"name"`
	Match    string   `json:"match,omitempty"`
	Backends []string `json:"backends"`
	Filters  []string `json:"filters,omitempty"`
	// By is the policy and rule that set the backends, with where it is
	// written; empty for the catch-all route gitmesh adds.
	By   string `json:"by,omitempty"`
	File string `json:"file,omitempty"`
	Line int    `json:"line,omitempty"`
	// Unused is set when no backend has a weight: the data plane does not
	// get the route, as in Kuma.
	Unused bool `json:"unused,omitempty"`
}

// backendList renders backends as "name weight".
func backendList(bs []BackendRef) []string {
	out := make([]string, 0, len(bs))
	for _, b := range bs {
		out = append(out, b.String())
	}
	return out
}

// PolicyRef names a policy and where it is written.
type PolicyRef struct {
	Type string `json:"type"`
	Name string `json:"name"`
	File string `json:"file,omitempty"`
	Line int    `json:"line,omitempty"`
}

// ClientVerdict is what the policies decide for a client.
type ClientVerdict struct {
	Client string `json:"client"` // a service, "*" for any other, or a SPIFFE match
	Action string `json:"action"` // Allow, Deny, AllowWithShadowDeny
	// By is the deciding policy and item, e.g. backend from[1].
	By string `json:"by,omitempty"`
	// Inexact is set when an item selecting by tags a certificate does not
	// carry took part: the action is enforced failing closed.
	Inexact bool `json:"inexact,omitempty"`
}

func refOf(typ string, name string, o Origin) PolicyRef {
	return PolicyRef{Type: typ, Name: name, File: o.File, Line: o.Line}
}

// PoliciesOf lists the policies affecting dp, a dataplane of s.
func (s *Set) PoliciesOf(dp *Dataplane) DataplanePolicies {
	out := DataplanePolicies{Dataplane: dp.NodeID().Ref(),
		Proxy: confSummaries(func(typ string) Conf { return ProxyConf(s.PoliciesOfType(typ, dp.Mesh), dp) })}
	m := s.Mesh(dp.Mesh)
	mtps := s.MeshTrafficPermissionsIn(dp.Mesh)
	for i, in := range dp.Inbound {
		ip := InboundPolicies{Inbound: in.HostPort(), Service: in.Service(),
			Confs: confSummaries(func(typ string) Conf { return FromConf(s.PoliciesOfType(typ, dp.Mesh), dp, i) })}
		if m == nil || !m.MTLS.Enabled {
			ip.Permissions = "none: mTLS is off, every client is let in"
			out.Inbounds = append(out.Inbounds, ip)
			continue
		}
		if sel := SelectingInbound(mtps, dp, i); len(sel) > 0 {
			merged := MergePermissions(sel)
			for _, p := range sel {
				ip.Policies = append(ip.Policies, refOf(TypeMeshTrafficPermission, p.Name, p.Origin))
			}
			if merged.RulesForm {
				ip.Permissions = "MeshTrafficPermission rules[] (from[] of the same inbound ignored, as in Kuma)"
				for _, mv := range merged.Matches {
					ip.Clients = append(ip.Clients, ClientVerdict{Client: mv.Match.String(), Action: string(mv.Action), By: mv.By.Name})
				}
			} else {
				ip.Permissions = "MeshTrafficPermission from[]"
				verdict := func(client string, v Verdict) ClientVerdict {
					cv := ClientVerdict{Client: client, Action: string(v.Action), Inexact: !v.Exact}
					if v.Action == "" {
						cv.Action = "Deny (no item selects it)"
					}
					if v.By != nil {
						cv.By = fmt.Sprintf("%s from[%d]", v.By.Name, v.ByFrom)
					}
					return cv
				}
				for _, sv := range merged.Services {
					ip.Clients = append(ip.Clients, verdict(sv.Service, sv.Verdict))
				}
				ip.Clients = append(ip.Clients, verdict("*", merged.Others))
			}
			out.Inbounds = append(out.Inbounds, ip)
			continue
		}
		ip.Permissions = "TrafficPermission (every matching permission's sources allowed; none: denied)"
		for _, tp := range s.PermissionsIn(dp.Mesh) {
			if tp.selects(in.Tags) {
				ip.Policies = append(ip.Policies, refOf(TypeTrafficPermission, tp.Name, tp.Origin))
				for _, r := range tp.Rules {
					for _, src := range r.Sources {
						svc := src[TagService]
						if svc == "" {
							svc = "*"
						}
						ip.Clients = append(ip.Clients, ClientVerdict{Client: svc, Action: string(ActionAllow), By: tp.Name})
					}
				}
			}
		}
		out.Inbounds = append(out.Inbounds, ip)
	}
	https, tcps := s.MeshHTTPRoutesIn(dp.Mesh), s.MeshTCPRoutesIn(dp.Mesh)
	for _, o := range dp.Outbound {
		op := OutboundPolicies{Outbound: o.HostPort(), Service: o.Service,
			Confs: confSummaries(func(typ string) Conf { return ToConf(s.PoliciesOfType(typ, dp.Mesh), dp, o.Service) })}
		hs, ts := SelectingClient(https, tcps, dp, o.Service)
		for _, p := range hs {
			op.Policies = append(op.Policies, refOf(TypeMeshHTTPRoute, p.Name, p.Origin))
		}
		for _, p := range ts {
			op.Policies = append(op.Policies, refOf(TypeMeshTCPRoute, p.Name, p.Origin))
		}
		if len(hs)+len(ts) > 0 {
			table := MergeRoutes(o.Service, hs, ts)
			for _, r := range table.HTTP {
				rs := RouteSummary{Name: r.Name(), Match: r.Match.String(), Backends: backendList(r.Backends)}
				for _, f := range r.Filters {
					rs.Filters = append(rs.Filters, f.Type)
				}
				if r.By != nil {
					rs.By, rs.File, rs.Line = r.By.Name+" "+r.Rule, r.By.Origin.File, r.Line
				}
				rs.Unused = true
				for _, b := range r.Backends {
					rs.Unused = rs.Unused && b.Weight == 0
				}
				op.Routes = append(op.Routes, rs)
			}
			if table.TCPBy != nil {
				op.TCP = &RouteSummary{Name: table.TCPBy.Name + strings.TrimPrefix(table.TCPRule, "/spec"), Backends: backendList(table.TCP),
					By: table.TCPBy.Name + " " + table.TCPRule, File: table.TCPBy.Origin.File, Line: table.TCPLine}
			}
		}
		out.Outbounds = append(out.Outbounds, op)
	}
	return out
}

// selects reports whether a destination selector of the permission matches
// tags.
func (tp *TrafficPermission) selects(tags map[string]string) bool {
	for _, r := range tp.Rules {
		for _, d := range r.Destinations {
			if d.Matches(tags) {
				return true
			}
		}
	}
	return false
}
