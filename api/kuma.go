package api

import (
	"github.com/gitmesh/gitmesh/schema"
)

// The resources below are Kuma's JSON form (universal mode, the Kuma 0.4
// shapes of its REST API): `type`, `mesh`, `name`, then the spec. Origin is
// gitmesh's own addition, the file and line the resource comes from; Kuma
// clients ignore a field they do not know.

// origin is where a resource was declared, relative to the policy root.
type origin struct {
	File string `json:"file"`
	Line int    `json:"line,omitempty"`
}

func originOf(o schema.Origin) *origin {
	if o.File == "" {
		return nil
	}
	return &origin{File: o.File, Line: o.Line}
}

type meshJSON struct {
	Type    string            `json:"type"`
	Name    string            `json:"name"`
	Labels  map[string]string `json:"labels,omitempty"`
	MTLS    *mtlsJSON         `json:"mtls,omitempty"`
	Logging *loggingJSON      `json:"logging,omitempty"`
	Tracing *tracingJSON      `json:"tracing,omitempty"`
	Metrics *metricsJSON      `json:"metrics,omitempty"`
	Origin  *origin           `json:"origin,omitempty"`
}

type mtlsJSON struct {
	Enabled bool   `json:"enabled"`
	CA      caJSON `json:"ca"`
}

type caJSON struct {
	Builtin  *struct{}     `json:"builtin,omitempty"`
	Provided *providedJSON `json:"provided,omitempty"`
}

type providedJSON struct {
	Cert fileJSON `json:"cert"`
	Key  fileJSON `json:"key"`
}

type fileJSON struct {
	File string `json:"file"`
}

type loggingJSON struct {
	DefaultBackend string               `json:"defaultBackend,omitempty"`
	Backends       []loggingBackendJSON `json:"backends"`
}

type loggingBackendJSON struct {
	Name   string       `json:"name"`
	Format string       `json:"format,omitempty"`
	File   *pathJSON    `json:"file,omitempty"`
	TCP    *addressJSON `json:"tcp,omitempty"`
}

type pathJSON struct {
	Path string `json:"path"`
}

type addressJSON struct {
	Address string `json:"address"`
}

type tracingJSON struct {
	DefaultBackend string               `json:"defaultBackend,omitempty"`
	Backends       []tracingBackendJSON `json:"backends"`
}

type tracingBackendJSON struct {
	Name     string      `json:"name"`
	Sampling *float64    `json:"sampling,omitempty"`
	Zipkin   *zipkinJSON `json:"zipkin,omitempty"`
	// Datadog is a Kuma 2.x datadog backend, in place of Zipkin.
	Datadog *datadogJSON `json:"datadog,omitempty"`
}

type datadogJSON struct {
	Address      string `json:"address"`
	Port         uint32 `json:"port"`
	SplitService bool   `json:"splitService,omitempty"`
}

type zipkinJSON struct {
	URL           string `json:"url"`
	TraceID128Bit bool   `json:"traceId128bit,omitempty"`
	APIVersion    string `json:"apiVersion,omitempty"`
}

type metricsJSON struct {
	Prometheus *prometheusJSON `json:"prometheus,omitempty"`
}

type prometheusJSON struct {
	Port uint32            `json:"port"`
	Path string            `json:"path"`
	Tags map[string]string `json:"tags,omitempty"`
}

func toMesh(m *schema.Mesh) meshJSON {
	out := meshJSON{Type: schema.TypeMesh, Name: m.Name, Labels: m.Labels, Origin: originOf(m.Origin)}
	// The loader gives every mesh a builtin CA; a disabled mTLS with it is
	// what Kuma leaves out.
	if m.MTLS.Enabled || m.MTLS.CA.Kind == schema.CAProvided {
		mt := &mtlsJSON{Enabled: m.MTLS.Enabled}
		if p := m.MTLS.CA.Provided; m.MTLS.CA.Kind == schema.CAProvided && p != nil {
			mt.CA.Provided = &providedJSON{Cert: fileJSON{p.CertFile}, Key: fileJSON{p.KeyFile}}
		} else {
			mt.CA.Builtin = &struct{}{}
		}
		out.MTLS = mt
	}
	if lg := m.Logging; lg != nil {
		l := &loggingJSON{DefaultBackend: lg.DefaultBackend, Backends: []loggingBackendJSON{}}
		for _, b := range lg.Backends {
			be := loggingBackendJSON{Name: b.Name, Format: b.Format}
			if b.FilePath != "" {
				be.File = &pathJSON{b.FilePath}
			}
			if b.TCPAddress != "" {
				be.TCP = &addressJSON{b.TCPAddress}
			}
			l.Backends = append(l.Backends, be)
		}
		out.Logging = l
	}
	if tr := m.Tracing; tr != nil {
		t := &tracingJSON{DefaultBackend: tr.DefaultBackend, Backends: []tracingBackendJSON{}}
		for _, b := range tr.Backends {
			j := tracingBackendJSON{Name: b.Name, Sampling: b.Sampling}
			if dd := b.Datadog; dd != nil {
				j.Datadog = &datadogJSON{Address: dd.Address, Port: dd.Port, SplitService: dd.SplitService}
			} else {
				j.Zipkin = &zipkinJSON{URL: b.Zipkin.URL, TraceID128Bit: b.Zipkin.TraceID128Bit, APIVersion: b.Zipkin.APIVersion}
			}
			t.Backends = append(t.Backends, j)
		}
		out.Tracing = t
	}
	if mx := m.Metrics; mx != nil {
		out.Metrics = &metricsJSON{}
		if p := mx.Prometheus; p != nil {
			out.Metrics.Prometheus = &prometheusJSON{Port: p.Port, Path: p.Path, Tags: p.Tags}
		}
	}
	return out
}

type dataplaneJSON struct {
	Type       string            `json:"type"`
	Mesh       string            `json:"mesh"`
	Name       string            `json:"name"`
	Labels     map[string]string `json:"labels,omitempty"`
	Networking networkingJSON    `json:"networking"`
	Origin     *origin           `json:"origin,omitempty"`
}

type networkingJSON struct {
	Address  string         `json:"address,omitempty"`
	Inbound  []inboundJSON  `json:"inbound"`
	Outbound []outboundJSON `json:"outbound,omitempty"`
}

type inboundJSON struct {
	Port        uint32            `json:"port"`
	ServicePort uint32            `json:"servicePort"`
	Address     string            `json:"address,omitempty"`
	Tags        map[string]string `json:"tags"`
}

type outboundJSON struct {
	Port    uint32 `json:"port"`
	Address string `json:"address,omitempty"`
	Service string `json:"service"`
}

// defaultOutboundAddress is where an outbound listens unless it says.
const defaultOutboundAddress = "127.0.0.1"

// toDataplane writes a dataplane in the Kuma 0.4 form, whichever form it
// was declared in. A legacy dataplane has no networking.address: it takes
// its first inbound's, and an inbound states its own address only when it
// differs from that.
func toDataplane(dp *schema.Dataplane) dataplaneJSON {
	nw := networkingJSON{Address: dp.Address, Inbound: []inboundJSON{}}
	if nw.Address == "" && len(dp.Inbound) > 0 {
		nw.Address = dp.Inbound[0].Address
	}
	for _, in := range dp.Inbound {
		ij := inboundJSON{Port: in.Port, ServicePort: in.ServicePort, Tags: in.Tags}
		if in.Address != nw.Address {
			ij.Address = in.Address
		}
		if ij.Tags == nil {
			ij.Tags = map[string]string{}
		}
		nw.Inbound = append(nw.Inbound, ij)
	}
	for _, o := range dp.Outbound {
		oj := outboundJSON{Port: o.Port, Service: o.Service}
		if o.Address != defaultOutboundAddress {
			oj.Address = o.Address
		}
		nw.Outbound = append(nw.Outbound, oj)
	}
	return dataplaneJSON{Type: schema.TypeDataplane, Mesh: dp.Mesh, Name: dp.Name, Labels: dp.Labels, Networking: nw, Origin: originOf(dp.Origin)}
}

type permissionJSON struct {
	Type   string            `json:"type"`
	Mesh   string            `json:"mesh"`
	Name   string            `json:"name"`
	Labels map[string]string `json:"labels,omitempty"`
	// Sources and Destinations hold a permission of one rule (the Kuma 0.3+
	// form); Rules one of several, which only the 0.2 form can say.
	Sources      []selectorJSON `json:"sources,omitempty"`
	Destinations []selectorJSON `json:"destinations,omitempty"`
	Rules        []ruleJSON     `json:"rules,omitempty"`
	Origin       *origin        `json:"origin,omitempty"`
}

type ruleJSON struct {
	Sources      []selectorJSON `json:"sources"`
	Destinations []selectorJSON `json:"destinations"`
}

type selectorJSON struct {
	Match map[string]string `json:"match"`
}

func selectors(ss []schema.Selector) []selectorJSON {
	out := make([]selectorJSON, 0, len(ss))
	for _, s := range ss {
		m := map[string]string(s)
		if m == nil {
			m = map[string]string{}
		}
		out = append(out, selectorJSON{Match: m})
	}
	return out
}

func toPermission(tp *schema.TrafficPermission) permissionJSON {
	out := permissionJSON{Type: schema.TypeTrafficPermission, Mesh: tp.Mesh, Name: tp.Name, Labels: tp.Labels, Origin: originOf(tp.Origin)}
	if len(tp.Rules) == 1 {
		out.Sources = selectors(tp.Rules[0].Sources)
		out.Destinations = selectors(tp.Rules[0].Destinations)
		return out
	}
	for _, r := range tp.Rules {
		out.Rules = append(out.Rules, ruleJSON{Sources: selectors(r.Sources), Destinations: selectors(r.Destinations)})
	}
	return out
}

// targetRefJSON is a targetRef as Kuma writes it.
type targetRefJSON struct {
	Kind        string            `json:"kind"`
	Name        string            `json:"name,omitempty"`
	Tags        map[string]string `json:"tags,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	SectionName string            `json:"sectionName,omitempty"`
}

func toTargetRef(t schema.TargetRef) targetRefJSON {
	return targetRefJSON{Kind: string(t.Kind), Name: t.Name, Tags: t.Tags, Labels: t.Labels, SectionName: t.SectionName}
}

// policyJSON is a Kuma 2.x policy in Kuma's REST shape: the metadata at
// the top, the policy under spec.
type policyJSON[S any] struct {
	Type   string            `json:"type"`
	Mesh   string            `json:"mesh"`
	Name   string            `json:"name"`
	Labels map[string]string `json:"labels,omitempty"`
	Spec   S                 `json:"spec"`
	Origin *origin           `json:"origin,omitempty"`
}

// policyOf is a policy of type typ with m's metadata, its spec's
// top-level targetRef set by the caller.
func policyOf[S any](typ string, m schema.PolicyMeta) policyJSON[S] {
	return policyJSON[S]{Type: typ, Mesh: m.Mesh, Name: m.Name, Labels: m.Labels, Origin: originOf(m.Origin)}
}

// meshTrafficPermissionJSON is a MeshTrafficPermission in that shape.
type meshTrafficPermissionJSON = policyJSON[mtpSpecJSON]

type mtpSpecJSON struct {
	TargetRef targetRefJSON `json:"targetRef"`
	From      []mtpFromJSON `json:"from,omitempty"`
	Rules     []mtpRuleJSON `json:"rules,omitempty"`
}

type mtpFromJSON struct {
	TargetRef targetRefJSON `json:"targetRef"`
	Default   struct {
		Action string `json:"action"`
	} `json:"default"`
}

type mtpRuleJSON struct {
	Default struct {
		Allow               []matchJSON `json:"allow,omitempty"`
		Deny                []matchJSON `json:"deny,omitempty"`
		AllowWithShadowDeny []matchJSON `json:"allowWithShadowDeny,omitempty"`
	} `json:"default"`
}

type matchJSON struct {
	SpiffeID struct {
		Type  string `json:"type"`
		Value string `json:"value"`
	} `json:"spiffeID"`
}

func matches(ms []schema.SpiffeMatch) []matchJSON {
	out := make([]matchJSON, len(ms))
	for i, m := range ms {
		out[i].SpiffeID.Type, out[i].SpiffeID.Value = "Exact", m.Value
		if m.Prefix {
			out[i].SpiffeID.Type = "Prefix"
		}
	}
	return out
}

func toMeshTrafficPermission(p *schema.MeshTrafficPermission) meshTrafficPermissionJSON {
	out := policyOf[mtpSpecJSON](schema.TypeMeshTrafficPermission, p.PolicyMeta)
	out.Spec.TargetRef = toTargetRef(p.TargetRef)
	for _, f := range p.From {
		var j mtpFromJSON
		j.TargetRef, j.Default.Action = toTargetRef(f.TargetRef), string(f.Action)
		out.Spec.From = append(out.Spec.From, j)
	}
	for _, r := range p.Rules {
		var j mtpRuleJSON
		j.Default.Allow, j.Default.Deny, j.Default.AllowWithShadowDeny = matches(r.Allow), matches(r.Deny), matches(r.AllowWithShadowDeny)
		out.Spec.Rules = append(out.Spec.Rules, j)
	}
	return out
}
