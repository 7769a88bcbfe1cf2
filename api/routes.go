package api

import (
	"net/http"
	"strconv"

	"github.com/gitmesh/gitmesh/schema"
)

// The route policies in Kuma 2.x's REST shape: metadata at the top, the
// policy under spec, as a user writes it (defaults filled in: a backend's
// weight, a redirect's status code).

type meshHTTPRouteJSON = policyJSON[httpRouteSpecJSON]

type httpRouteSpecJSON struct {
	TargetRef targetRefJSON `json:"targetRef"`
	To        []httpToJSON  `json:"to"`
}

type httpToJSON struct {
	TargetRef targetRefJSON  `json:"targetRef"`
	Rules     []httpRuleJSON `json:"rules"`
}

type httpRuleJSON struct {
	Matches []schema.HTTPMatch `json:"matches"`
	Default struct {
		Filters     []filterJSON     `json:"filters,omitempty"`
		BackendRefs []backendRefJSON `json:"backendRefs,omitempty"`
	} `json:"default"`
}

type backendRefJSON struct {
	Kind   string            `json:"kind"`
	Name   string            `json:"name,omitempty"`
	Tags   map[string]string `json:"tags,omitempty"`
	Weight uint32            `json:"weight"`
}

type headerModifierJSON struct {
	Set    []headerValueJSON `json:"set,omitempty"`
	Add    []headerValueJSON `json:"add,omitempty"`
	Remove []string          `json:"remove,omitempty"`
}

type headerValueJSON struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

type pathRewriteJSON struct {
	Type               string `json:"type"`
	ReplaceFullPath    string `json:"replaceFullPath,omitempty"`
	ReplacePrefixMatch string `json:"replacePrefixMatch,omitempty"`
}

type filterJSON struct {
	Type                   string              `json:"type"`
	RequestHeaderModifier  *headerModifierJSON `json:"requestHeaderModifier,omitempty"`
	ResponseHeaderModifier *headerModifierJSON `json:"responseHeaderModifier,omitempty"`
	RequestRedirect        *redirectJSON       `json:"requestRedirect,omitempty"`
	URLRewrite             *urlRewriteJSON     `json:"urlRewrite,omitempty"`
	RequestMirror          *mirrorJSON         `json:"requestMirror,omitempty"`
}

type redirectJSON struct {
	Scheme     string           `json:"scheme,omitempty"`
	Hostname   string           `json:"hostname,omitempty"`
	Path       *pathRewriteJSON `json:"path,omitempty"`
	Port       uint32           `json:"port,omitempty"`
	StatusCode int              `json:"statusCode"`
}

type urlRewriteJSON struct {
	Hostname string           `json:"hostname,omitempty"`
	Path     *pathRewriteJSON `json:"path,omitempty"`
}

type mirrorJSON struct {
	Percentage string         `json:"percentage"`
	BackendRef backendRefJSON `json:"backendRef"`
}

func toBackendRefs(bs []schema.BackendRef) []backendRefJSON {
	out := make([]backendRefJSON, len(bs))
	for i, b := range bs {
		out[i] = toBackendRef(b)
	}
	return out
}

func toBackendRef(b schema.BackendRef) backendRefJSON {
	return backendRefJSON{Kind: string(b.Kind), Name: b.Name, Tags: b.Tags, Weight: b.Weight}
}

func toHeaderModifier(hm *schema.HeaderModifier) *headerModifierJSON {
	if hm == nil {
		return nil
	}
	out := &headerModifierJSON{Remove: hm.Remove}
	for _, h := range hm.Set {
		out.Set = append(out.Set, headerValueJSON(h))
	}
	for _, h := range hm.Add {
		out.Add = append(out.Add, headerValueJSON(h))
	}
	return out
}

func toPathRewrite(p *schema.PathRewrite) *pathRewriteJSON {
	if p == nil {
		return nil
	}
	return &pathRewriteJSON{Type: p.Type, ReplaceFullPath: p.ReplaceFullPath, ReplacePrefixMatch: p.ReplacePrefixMatch}
}

func toFilter(f schema.HTTPFilter) filterJSON {
	out := filterJSON{Type: f.Type, RequestHeaderModifier: toHeaderModifier(f.RequestHeader), ResponseHeaderModifier: toHeaderModifier(f.ResponseHeader)}
	if r := f.Redirect; r != nil {
		out.RequestRedirect = &redirectJSON{r.Scheme, r.Hostname, toPathRewrite(r.Path), r.Port, r.StatusCode}
	}
	if r := f.Rewrite; r != nil {
		out.URLRewrite = &urlRewriteJSON{r.Hostname, toPathRewrite(r.Path)}
	}
	if m := f.Mirror; m != nil {
		out.RequestMirror = &mirrorJSON{strconv.FormatFloat(m.Percentage, 'f', -1, 64), toBackendRef(m.BackendRef)}
	}
	return out
}

func toMeshHTTPRoute(p *schema.MeshHTTPRoute) meshHTTPRouteJSON {
	out := policyOf[httpRouteSpecJSON](schema.TypeMeshHTTPRoute, p.PolicyMeta)
	out.Spec.TargetRef = toTargetRef(p.TargetRef)
	out.Spec.To = []httpToJSON{}
	for _, to := range p.To {
		j := httpToJSON{TargetRef: toTargetRef(to.TargetRef), Rules: []httpRuleJSON{}}
		for _, r := range to.Rules {
			var rj httpRuleJSON
			rj.Matches = r.Matches
			for _, f := range r.Filters {
				rj.Default.Filters = append(rj.Default.Filters, toFilter(f))
			}
			if r.HasBackendRefs {
				rj.Default.BackendRefs = toBackendRefs(r.BackendRefs)
			}
			j.Rules = append(j.Rules, rj)
		}
		out.Spec.To = append(out.Spec.To, j)
	}
	return out
}

type meshTCPRouteJSON = policyJSON[tcpRouteSpecJSON]

type tcpRouteSpecJSON struct {
	TargetRef targetRefJSON `json:"targetRef"`
	To        []tcpToJSON   `json:"to"`
}

type tcpToJSON struct {
	TargetRef targetRefJSON `json:"targetRef"`
	Rules     []tcpRuleJSON `json:"rules"`
}

type tcpRuleJSON struct {
	Default struct {
		BackendRefs []backendRefJSON `json:"backendRefs"`
	} `json:"default"`
}

func toMeshTCPRoute(p *schema.MeshTCPRoute) meshTCPRouteJSON {
	out := policyOf[tcpRouteSpecJSON](schema.TypeMeshTCPRoute, p.PolicyMeta)
	out.Spec.TargetRef = toTargetRef(p.TargetRef)
	out.Spec.To = []tcpToJSON{}
	for _, to := range p.To {
		j := tcpToJSON{TargetRef: toTargetRef(to.TargetRef)}
		j.Rules = make([]tcpRuleJSON, 1)
		j.Rules[0].Default.BackendRefs = toBackendRefs(to.BackendRefs)
		out.Spec.To = append(out.Spec.To, j)
	}
	return out
}

// inMesh serves the policies list gives of the mesh the path names, in
// the shape to makes, paged.
func inMesh[T, J any](list func(*schema.Set, string) []T, to func(T) J) func(*schema.Set, *http.Request) answer {
	return func(set *schema.Set, r *http.Request) answer {
		mesh := r.PathValue("mesh")
		if set.Mesh(mesh) == nil {
			return notFound("mesh %q not found", mesh)
		}
		return paged(r, list(set, mesh), to)
	}
}

// oneInMesh serves the policy get finds (nil: none) by the mesh and name
// the path names, in the shape to makes; what names its kind for errors.
func oneInMesh[T comparable, J any](get func(*schema.Set, string, string) T, to func(T) J, what string) func(*schema.Set, *http.Request) answer {
	return func(set *schema.Set, r *http.Request) answer {
		mesh, name := r.PathValue("mesh"), r.PathValue("name")
		if set.Mesh(mesh) == nil {
			return notFound("mesh %q not found", mesh)
		}
		var none T
		if p := get(set, mesh, name); p != none {
			return found(to(p))
		}
		return notFound("%s %q not found in mesh %q", what, name, mesh)
	}
}

var (
	listMeshHTTPRoutes = inMesh((*schema.Set).MeshHTTPRoutesIn, toMeshHTTPRoute)
	getMeshHTTPRoute   = oneInMesh((*schema.Set).MeshHTTPRoute, toMeshHTTPRoute, "mesh http route")
	listMeshTCPRoutes  = inMesh((*schema.Set).MeshTCPRoutesIn, toMeshTCPRoute)
	getMeshTCPRoute    = oneInMesh((*schema.Set).MeshTCPRoute, toMeshTCPRoute, "mesh tcp route")
)

// confPolicyJSON is a conf policy (MeshTimeout, ...) in Kuma 2.x's REST
// shape; its confs are shown as written.
type confPolicyJSON = policyJSON[confSpecJSON]

type confSpecJSON struct {
	TargetRef targetRefJSON  `json:"targetRef"`
	To        []confItemJSON `json:"to,omitempty"`
	From      []confItemJSON `json:"from,omitempty"`
	Rules     []confRuleJSON `json:"rules,omitempty"`
	Default   map[string]any `json:"default,omitempty"`
}

type confItemJSON struct {
	TargetRef targetRefJSON  `json:"targetRef"`
	Default   map[string]any `json:"default,omitempty"`
}

type confRuleJSON struct {
	Matches []matchJSON    `json:"matches,omitempty"`
	Default map[string]any `json:"default,omitempty"`
}

func toConfPolicy(p *schema.ConfPolicy) confPolicyJSON {
	out := policyOf[confSpecJSON](p.Type, p.PolicyMeta)
	out.Spec.TargetRef, out.Spec.Default = toTargetRef(p.TargetRef), p.Default
	for _, it := range p.To {
		out.Spec.To = append(out.Spec.To, confItemJSON{TargetRef: toTargetRef(it.TargetRef), Default: it.Default})
	}
	for _, it := range p.From {
		out.Spec.From = append(out.Spec.From, confItemJSON{TargetRef: toTargetRef(it.TargetRef), Default: it.Default})
	}
	for _, it := range p.Rules {
		var ms []matchJSON
		if len(it.Matches) > 0 {
			ms = matches(it.Matches)
		}
		out.Spec.Rules = append(out.Spec.Rules, confRuleJSON{Matches: ms, Default: it.Default})
	}
	return out
}

// confPolicies serves the policies of one conf type: the list, or one.
func confPolicies(typ string, one bool) func(*schema.Set, *http.Request) answer {
	if one {
		return oneInMesh(func(set *schema.Set, mesh, name string) *schema.ConfPolicy { return set.Policy(typ, mesh, name) }, toConfPolicy, typ)
	}
	return inMesh(func(set *schema.Set, mesh string) []*schema.ConfPolicy { return set.PoliciesOfType(typ, mesh) }, toConfPolicy)
}
