package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/gitmesh/gitmesh/schema"
	"github.com/gitmesh/gitmesh/xds"
)

// The verdicts of a matrix cell.
const (
	cellAllowed    = "allowed"
	cellDenied     = "denied"
	cellShadow     = "shadow-denied" // allowed, and logged as a deny would be (AllowWithShadowDeny)
	cellMixed      = "mixed"         // instances of the service decide differently
	cellUnenforced = "unenforced"    // the mesh has no mTLS: every client gets in
)

// matrixJSON is the answer of GET /meshes/{mesh}/matrix: who may call whom
// in the served commit, service by service, and the route splits.
type matrixJSON struct {
	Mesh string `json:"mesh"`
	MTLS bool   `json:"mtls"`
	// Services are the services of the mesh's inbounds, sorted: the rows
	// (clients) and columns (destinations) of the matrix.
	Services []string    `json:"services"`
	Cells    []cellJSON  `json:"cells"`
	Routes   []splitJSON `json:"routes"`
}

// cellJSON is what the policies decide for calls from one service to
// another, over every inbound of the destination.
type cellJSON struct {
	From    string `json:"from"`
	To      string `json:"to"`
	Verdict string `json:"verdict"`
	// Reasons say, inbound by inbound, what decides ("backend from[0]:
	// Allow"); Policies are the policies that select the destination's
	// inbounds, with where they are written.
	Reasons  []string           `json:"reasons,omitempty"`
	Policies []schema.PolicyRef `json:"policies,omitempty"`
}

// splitJSON is the routes one service's dataplanes use to call another.
type splitJSON struct {
	From   string                `json:"from"`
	To     string                `json:"to"`
	Routes []schema.RouteSummary `json:"routes,omitempty"`
	TCP    *schema.RouteSummary  `json:"tcp,omitempty"`
}

// matrix serves GET /meshes/{mesh}/matrix.
func matrix(set *schema.Set, r *http.Request) answer {
	mesh := r.PathValue("mesh")
	m := set.Mesh(mesh)
	if m == nil {
		return notFound("mesh %q not found", mesh)
	}
	out := matrixJSON{Mesh: mesh, MTLS: m.MTLS.Enabled, Cells: []cellJSON{}, Routes: []splitJSON{}}
	byService := map[string][]schema.InboundPolicies{}
	seenSplit := map[string]bool{}
	for _, dp := range set.DataplanesIn(mesh) {
		pol := set.PoliciesOf(dp)
		for _, ip := range pol.Inbounds {
			byService[ip.Service] = append(byService[ip.Service], ip)
		}
		from := ""
		if len(pol.Inbounds) > 0 {
			from = pol.Inbounds[0].Service
		}
		for _, op := range pol.Outbounds {
			if len(op.Routes) == 0 && op.TCP == nil {
				continue
			}
			sp := splitJSON{From: from, To: op.Service, Routes: op.Routes, TCP: op.TCP}
			key, _ := json.Marshal(sp)
			if !seenSplit[string(key)] {
				seenSplit[string(key)] = true
				out.Routes = append(out.Routes, sp)
			}
		}
	}
	for svc := range byService {
		out.Services = append(out.Services, svc)
	}
	slices.Sort(out.Services)
	for _, to := range out.Services {
		for _, from := range out.Services {
			out.Cells = append(out.Cells, cell(mesh, from, to, byService[to]))
		}
	}
	return found(out)
}

// cell is what inbounds (every inbound of service to) decide for clients
// of service from.
func cell(mesh, from, to string, inbounds []schema.InboundPolicies) cellJSON {
	c := cellJSON{From: from, To: to}
	verdicts := map[string]bool{}
	for _, ip := range inbounds {
		for _, p := range ip.Policies {
			if !slices.Contains(c.Policies, p) {
				c.Policies = append(c.Policies, p)
			}
		}
		v, reason := inboundVerdict(mesh, from, ip)
		verdicts[v] = true
		reason = ip.Inbound + ": " + reason
		if !slices.Contains(c.Reasons, reason) {
			c.Reasons = append(c.Reasons, reason)
		}
	}
	switch len(verdicts) {
	case 0:
		c.Verdict = cellDenied
	case 1:
		for v := range verdicts {
			c.Verdict = v
		}
	default:
		c.Verdict = cellMixed
	}
	return c
}

// inboundVerdict is what one inbound decides for the clients of service
// from, and why.
func inboundVerdict(mesh, from string, ip schema.InboundPolicies) (verdict, reason string) {
	switch {
	case strings.HasPrefix(ip.Permissions, "none"):
		return cellUnenforced, "mTLS is off: every client gets in"
	case strings.HasPrefix(ip.Permissions, "MeshTrafficPermission rules"):
		id := "spiffe://" + mesh + "/" + from
		var deny, allow, shadow string
		for _, cv := range ip.Clients {
			kind, value, _ := strings.Cut(cv.Client, " ")
			if !(kind == "Exact" && value == id || kind == "Prefix" && strings.HasPrefix(id, value)) {
				continue
			}
			by := cv.By + " " + cv.Client + ": " + cv.Action
			switch schema.Action(cv.Action) {
			case schema.ActionDeny:
				deny = by
			case schema.ActionAllowWithShadowDeny:
				shadow = by
			default:
				allow = by
			}
		}
		switch {
		case deny != "":
			return cellDenied, deny
		case shadow != "":
			return cellShadow, shadow
		case allow != "":
			return cellAllowed, allow
		}
		return cellDenied, "no rule matches " + id
	case strings.HasPrefix(ip.Permissions, "MeshTrafficPermission"):
		var pick *schema.ClientVerdict
		for i, cv := range ip.Clients {
			if cv.Client == from || (cv.Client == "*" && pick == nil) {
				pick = &ip.Clients[i]
			}
		}
		if pick == nil {
			return cellDenied, "no item selects it"
		}
		reason = pick.Action
		if pick.By != "" {
			reason = pick.By + ": " + pick.Action
		}
		switch schema.Action(pick.Action) {
		case schema.ActionAllow:
			return cellAllowed, reason
		case schema.ActionAllowWithShadowDeny:
			return cellShadow, reason
		}
		return cellDenied, reason
	default: // legacy TrafficPermission: any matching permission's sources are let in
		for _, cv := range ip.Clients {
			if cv.Client == from || cv.Client == "*" {
				return cellAllowed, cv.By + ": Allow"
			}
		}
		return cellDenied, "no TrafficPermission lets it in"
	}
}

// dataplanePolicies serves GET /meshes/{mesh}/dataplanes/{name}/policies:
// the policies that apply to each inbound and outbound of the dataplane,
// and what they decide.
func dataplanePolicies(set *schema.Set, r *http.Request) answer {
	dp, missing := pathDataplane(set, r)
	if dp == nil {
		return missing
	}
	return found(set.PoliciesOf(dp))
}

// dataplaneResources serves the resources the served commit gives one
// dataplane for a flavour (?flavor=envoy, the default, or grpc), as
// `gitmesh render --format json` prints them.
func (s *server) dataplaneResources(w http.ResponseWriter, r *http.Request) {
	res, commit, ok := s.b.Served()
	if !ok || res == nil || res.Set == nil || res.Translation == nil {
		writeError(w, http.StatusServiceUnavailable, "no commit is served yet")
		return
	}
	w.Header().Set(CommitHeader, string(commit.Hash))
	mesh, name := r.PathValue("mesh"), r.PathValue("name")
	dp := res.Set.Dataplane(mesh, name)
	if dp == nil {
		writeError(w, http.StatusNotFound, fmt.Sprintf("dataplane %q not found in mesh %q", name, mesh))
		return
	}
	flavor := xds.Flavor(r.URL.Query().Get("flavor"))
	if flavor == "" {
		flavor = xds.FlavorEnvoy
	}
	if flavor != xds.FlavorEnvoy && flavor != xds.FlavorGRPC {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("flavor %q: want envoy or grpc", flavor))
		return
	}
	n := res.Translation.Node(dp.NodeID().String())
	var p *xds.Proxy
	if n != nil {
		p = n.Proxy(flavor)
	}
	if p == nil {
		writeError(w, http.StatusNotFound, fmt.Sprintf("the served commit has no %s proxy for %s", flavor, dp.NodeID()))
		return
	}
	b, err := xds.MarshalProxy(p, xds.FormatJSON)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
}
