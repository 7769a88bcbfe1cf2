package schema

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// The Kuma 2.x targetRef policies. Each is written in Kuma's universal form:
//
//	type: MeshTrafficPermission
//	name: allow-web
//	mesh: default
//	labels: {team: web}
//	spec:
//	  targetRef: {kind: MeshService, name: web}
//	  from: [...]
//
// The top-level targetRef selects the dataplanes (and their inbounds) the
// policy configures; to[] and from[] select the destinations and sources it
// is about. The kinds and where each may appear follow Kuma 2.14's
// validators.

// TargetKind is the kind of a targetRef.
type TargetKind string

// The targetRef kinds gitmesh reads.
const (
	KindMesh              TargetKind = "Mesh"
	KindMeshSubset        TargetKind = "MeshSubset"
	KindMeshService       TargetKind = "MeshService"
	KindMeshServiceSubset TargetKind = "MeshServiceSubset"
	KindDataplane         TargetKind = "Dataplane"
	KindMeshHTTPRoute     TargetKind = "MeshHTTPRoute"
)

// kindOrder is Kuma's specificity of a targetRef kind: policies are merged
// from the least specific to the most specific, so the most specific wins.
var kindOrder = map[TargetKind]int{
	KindMesh:              1,
	KindDataplane:         2,
	KindMeshSubset:        3,
	KindMeshService:       5,
	KindMeshServiceSubset: 8,
	KindMeshHTTPRoute:     9,
}

// CompareKinds orders kinds by specificity, least specific first.
func CompareKinds(a, b TargetKind) int { return kindOrder[a] - kindOrder[b] }

// TargetRef is a validated targetRef.
type TargetRef struct {
	Kind TargetKind
	// Name is the service (MeshService, MeshServiceSubset), the dataplane
	// (Dataplane) or the route (MeshHTTPRoute); empty otherwise.
	Name string
	// Tags narrow MeshSubset and MeshServiceSubset; nil otherwise.
	Tags map[string]string
	// Labels select dataplanes by their labels (kind Dataplane).
	Labels map[string]string
	// SectionName selects one inbound of a Dataplane by its name or port.
	SectionName string
	// Pointer is where the targetRef is in its document ("" for the
	// implicit `kind: Mesh` of a policy without one).
	Pointer string
}

// Selector is the tags a dataplane's inbound (or a source) must have to be
// selected: kuma.io/service for the service kinds, plus the subset's tags.
// Mesh and Dataplane select by other means and have an empty selector.
func (t TargetRef) Selector() Selector {
	sel := Selector{}
	switch t.Kind {
	case KindMeshService, KindMeshServiceSubset:
		sel[TagService] = t.Name
	}
	maps.Copy(sel, t.Tags)
	return sel
}

// String renders the targetRef as Kuma's docs write it, e.g.
// MeshService(web) or MeshSubset{version=v1}.
func (t TargetRef) String() string {
	var b strings.Builder
	b.WriteString(string(t.Kind))
	if t.Name != "" {
		b.WriteString("(" + t.Name + ")")
	}
	if len(t.Tags) > 0 {
		b.WriteString(formatTags(t.Tags))
	}
	if len(t.Labels) > 0 {
		b.WriteString(" labels" + formatTags(t.Labels))
	}
	if t.SectionName != "" {
		b.WriteString(" section " + t.SectionName)
	}
	return b.String()
}

func formatTags(tags map[string]string) string {
	keys := slices.Sorted(maps.Keys(tags))
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + tags[k]
	}
	return "{" + strings.Join(parts, ",") + "}"
}

// namesDataplane reports whether a targetRef of kind Dataplane names dp:
// by name when it gives one, and by every label it gives.
func (t TargetRef) namesDataplane(dp *Dataplane) bool {
	if t.Name != "" && t.Name != dp.Name {
		return false
	}
	for k, v := range t.Labels {
		if got, ok := dp.Labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// SelectsInbound reports whether a top-level targetRef selects the inbound
// of dataplane dp with the given index.
func (t TargetRef) SelectsInbound(dp *Dataplane, i int) bool {
	in := dp.Inbound[i]
	switch t.Kind {
	case KindMesh:
		return true
	case KindDataplane:
		return t.namesDataplane(dp) && (t.SectionName == "" || t.SectionName == in.Name || t.SectionName == fmt.Sprint(in.Port))
	default:
		return t.Selector().Matches(in.Tags)
	}
}

// SelectsDataplane reports whether a top-level targetRef selects dp: kind
// Mesh and Dataplane select the proxy itself, the service kinds a proxy with
// a matching inbound.
func (t TargetRef) SelectsDataplane(dp *Dataplane) bool {
	for i := range dp.Inbound {
		if t.SelectsInbound(dp, i) {
			return true
		}
	}
	return false
}

// PolicyMeta is what every targetRef policy has.
type PolicyMeta struct {
	Mesh   string
	Name   string
	Labels map[string]string
	// TargetRef is the top-level targetRef; `kind: Mesh` when the policy
	// does not set one, as in Kuma.
	TargetRef TargetRef
	Origin    Origin
}

// ComparePolicies orders policies the way Kuma merges them: by the
// specificity of their top-level targetRef, then by name, the
// lexicographically smaller name last (so it wins a merge).
func ComparePolicies(a, b *PolicyMeta) int {
	if c := CompareKinds(a.TargetRef.Kind, b.TargetRef.Kind); c != 0 {
		return c
	}
	if a.TargetRef.Kind == KindDataplane {
		// A dataplane named outranks one selected by labels, and one inbound
		// (sectionName) outranks all of them, as in Kuma.
		rank := func(t TargetRef) int {
			r := 0
			if t.Name != "" {
				r = 1
			}
			if t.SectionName != "" {
				r += 2
			}
			return r
		}
		if c := rank(a.TargetRef) - rank(b.TargetRef); c != 0 {
			return c
		}
	}
	return strings.Compare(b.Name, a.Name)
}

// targetRefRules says which kinds a targetRef position accepts.
type targetRefRules struct {
	kinds []TargetKind
	// inbound is true for a top-level targetRef of a policy with from[] or
	// rules[] (Kuma allows sectionName only there).
	inbound bool
}

// targetRef decodes and checks a targetRef at ptr. A nil m (absent) is the
// implicit `kind: Mesh`.
func (d *decoder) targetRef(ptr string, m map[string]any, rules targetRefRules) TargetRef {
	if m == nil {
		return TargetRef{Kind: KindMesh}
	}
	t := TargetRef{Kind: TargetKind(str(m, "kind")), Name: str(m, "name"), SectionName: str(m, "sectionName"), Pointer: ptr}
	if t.Kind == "" {
		return t // the schema reports the missing kind
	}
	names := make([]string, len(rules.kinds))
	for i, k := range rules.kinds {
		names[i] = string(k)
	}
	if !slices.Contains(rules.kinds, t.Kind) {
		hint := "use one of: " + strings.Join(names, ", ")
		if s := suggest(string(t.Kind), names); s != "" && s != string(t.Kind) {
			hint = fmt.Sprintf("did you mean %q?", s)
		}
		if _, known := kindOrder[t.Kind]; known {
			d.add(ptr+"/kind", CodeInvalidTargetRef, hint, "targetRef kind %s is not allowed here", t.Kind)
		} else {
			d.add(ptr+"/kind", CodeInvalidTargetRef, hint, "targetRef kind %q is not supported", t.Kind)
		}
		return t
	}
	_, hasTags := m["tags"]
	_, hasLabels := m["labels"]
	notWith := func(field string, present bool) {
		if present {
			d.add(ptr+"/"+field, CodeInvalidTargetRef, "remove it: kind "+string(t.Kind)+" does not take `"+field+"`",
				"targetRef `%s` must not be set with kind %s", field, t.Kind)
		}
	}
	_, hasName := m["name"]
	_, hasSection := m["sectionName"]
	_, hasProxyTypes := m["proxyTypes"]
	switch t.Kind {
	case KindMesh:
		notWith("name", hasName)
		notWith("tags", hasTags)
		notWith("labels", hasLabels)
		notWith("sectionName", hasSection)
	case KindMeshSubset:
		notWith("name", hasName)
		notWith("labels", hasLabels)
		notWith("sectionName", hasSection)
		t.Tags = d.tags(ptr+"/tags", mapOf(m, "tags"), false)
	case KindMeshService, KindMeshHTTPRoute:
		notWith("tags", hasTags)
		notWith("labels", hasLabels)
		notWith("proxyTypes", hasProxyTypes)
		if t.Kind == KindMeshHTTPRoute {
			notWith("sectionName", hasSection)
		}
		if t.Name == "" && !hasName {
			d.add(ptr, CodeInvalidTargetRef, "add `name: SERVICE`", "targetRef of kind %s needs a `name`", t.Kind)
		}
		d.serviceName(ptr+"/name", t.Name)
	case KindMeshServiceSubset:
		notWith("labels", hasLabels)
		notWith("sectionName", hasSection)
		notWith("proxyTypes", hasProxyTypes)
		if !hasName {
			d.add(ptr, CodeInvalidTargetRef, "add `name: SERVICE`", "targetRef of kind %s needs a `name`", t.Kind)
		}
		d.serviceName(ptr+"/name", t.Name)
		t.Tags = d.tags(ptr+"/tags", mapOf(m, "tags"), false)
		delete(t.Tags, TagService) // the name is the service
	case KindDataplane:
		notWith("tags", hasTags)
		notWith("proxyTypes", hasProxyTypes)
		if hasLabels {
			t.Labels = d.tags(ptr+"/labels", mapOf(m, "labels"), false)
			if hasName {
				d.add(ptr+"/labels", CodeInvalidTargetRef, "select the dataplane either by `name` or by `labels`", "targetRef sets both `name` and `labels`")
			}
		}
		if hasSection && !rules.inbound {
			d.add(ptr+"/sectionName", CodeInvalidTargetRef, "sectionName selects an inbound: it applies only to policies with from[] or rules[]",
				"targetRef `sectionName` can only be used with inbound policies")
		}
	}
	if _, hasMesh := m["mesh"]; hasMesh {
		d.add(ptr+"/mesh", CodeInvalidTargetRef, "remove it: a policy applies within its own mesh", "targetRef `mesh` must not be set")
	}
	return t
}

// serviceName checks a service name given in a targetRef.
func (d *decoder) serviceName(ptr, name string) {
	if name != "" && !tagValueRE.MatchString(name) {
		d.add(ptr, CodeInvalidTag, "service names use letters, digits, '.', '-', '_' and ':', as in Kuma", "service %q has characters that are not allowed", name)
	}
}

// policyMeta decodes what every targetRef policy has; spec is the document's
// `spec` mapping.
func (d *decoder) policyMeta(m map[string]any, rules targetRefRules) PolicyMeta {
	spec := mapOf(m, "spec")
	p := PolicyMeta{Name: d.resourceName(m), Mesh: meshOf(d, m), Labels: d.labels(m)}
	p.TargetRef = d.targetRef("/spec/targetRef", mapOf(spec, "targetRef"), rules)
	return p
}
