package schema

import (
	"fmt"
	"sort"
	"strings"
)

// crossCheck checks resources against each other and assembles the Set:
// duplicates, references to meshes and services, and endpoints two dataplanes
// would both claim.
func crossCheck(entries []*entry) (*Set, []Finding) {
	var findings []Finding
	errorAt := func(e *entry, ptr string, code Code, msg, hint string) {
		findings = append(findings, e.finding(SeverityError, ptr, code, msg, hint))
	}
	warnAt := func(e *entry, ptr string, code Code, msg, hint string) {
		findings = append(findings, e.finding(SeverityWarning, ptr, code, msg, hint))
	}

	var meshes, dps, tps, mtps []*entry
	for _, e := range entries {
		switch {
		case e.m != nil:
			meshes = append(meshes, e)
		case e.dp != nil:
			dps = append(dps, e)
		case e.tp != nil:
			tps = append(tps, e)
		case e.mtp != nil:
			mtps = append(mtps, e)
		}
	}
	dedupe := func(es []*entry, what func(*entry) string) []*entry {
		sortEntries(es)
		out := es[:0:0]
		for i, e := range es {
			if i > 0 && es[i-1].mesh == e.mesh && es[i-1].name == e.name {
				first := out[len(out)-1]
				errorAt(e, "/name", CodeDuplicate, fmt.Sprintf("%s is declared twice; first at %s:%d", what(e), first.file, first.doc.line),
					"resource names are unique per type and mesh: rename or delete one")
				continue
			}
			out = append(out, e)
		}
		return out
	}
	meshes = dedupe(meshes, func(e *entry) string { return fmt.Sprintf("Mesh %q", e.name) })
	dps = dedupe(dps, func(e *entry) string { return fmt.Sprintf("Dataplane %q in mesh %q", e.name, e.mesh) })
	tps = dedupe(tps, func(e *entry) string { return fmt.Sprintf("TrafficPermission %q in mesh %q", e.name, e.mesh) })
	mtps = dedupe(mtps, func(e *entry) string { return fmt.Sprintf("MeshTrafficPermission %q in mesh %q", e.name, e.mesh) })

	set := &Set{Meshes: make([]*Mesh, 0, len(meshes)+1)}
	if len(dps) > 0 { // an empty list stays nil, as the Set's JSON shows it
		set.Dataplanes = make([]*Dataplane, 0, len(dps))
	}
	if len(tps) > 0 {
		set.TrafficPermissions = make([]*TrafficPermission, 0, len(tps))
	}
	meshByName := make(map[string]*Mesh, len(meshes)+1)
	for _, e := range meshes {
		set.Meshes = append(set.Meshes, e.m)
		meshByName[e.name] = e.m
	}
	if meshByName[DefaultMesh] == nil {
		def := &Mesh{Name: DefaultMesh, Implicit: true, MTLS: MTLS{CA: CA{Kind: CABuiltin}}}
		set.Meshes = append(set.Meshes, def)
		meshByName[DefaultMesh] = def
		sort.Slice(set.Meshes, func(i, j int) bool { return set.Meshes[i].Name < set.Meshes[j].Name })
	}
	meshNames := make([]string, 0, len(meshByName))
	for _, m := range set.Meshes {
		meshNames = append(meshNames, m.Name)
	}
	knownMesh := func(e *entry) bool {
		if meshByName[e.mesh] != nil {
			return true
		}
		hint := "declare the Mesh, or use one of: " + fmt.Sprint(meshNames)
		if s := suggest(e.mesh, meshNames); s != "" {
			hint = fmt.Sprintf("did you mean %q?", s)
		}
		errorAt(e, "/mesh", CodeUnknownMesh, fmt.Sprintf("mesh %q is not declared in this tree", e.mesh), hint)
		return false
	}

	// Services each mesh provides, and who claims each inbound endpoint. The
	// entries are sorted by mesh, so each mesh's maps are looked up once.
	services := map[string]map[string]bool{}
	type endpoint struct {
		address string
		port    uint32
	}
	type claim struct {
		e       *entry
		inbound int
	}
	byMesh(dps, func(mesh string, run []*entry) {
		if meshByName[mesh] == nil {
			for _, e := range run {
				knownMesh(e)
			}
			return
		}
		provided := map[string]bool{}
		services[mesh] = provided
		endpoints := make(map[endpoint]claim, len(run))
		for _, e := range run {
			set.Dataplanes = append(set.Dataplanes, e.dp)
			for i, in := range e.dp.Inbound {
				provided[e.services[i]] = true
				key := endpoint{in.Address, in.Port}
				if first, dup := endpoints[key]; dup && first.e != e {
					errorAt(e, fmt.Sprintf("/networking/inbound/%d", i), CodeEndpointConflict,
						fmt.Sprintf("inbound %s is also an inbound of dataplane %q (%s:%d)", in.HostPort(), first.e.name, first.e.file, first.e.doc.line),
						"two dataplanes cannot listen on the same IP:port; change the address or port of one")
					continue
				}
				endpoints[key] = claim{e, i}
			}
		}
	})
	sortedServices := map[string][]string{} // built on the first warning of a mesh
	serviceNames := func(mesh string) []string {
		if out, ok := sortedServices[mesh]; ok {
			return out
		}
		out := make([]string, 0, len(services[mesh]))
		for s := range services[mesh] {
			out = append(out, s)
		}
		sort.Strings(out)
		sortedServices[mesh] = out
		return out
	}
	// known reports whether svc needs no warning: "" is reported as a
	// missing service, and '*' matches any.
	known := func(provided map[string]bool, svc string) bool {
		return svc == "" || svc == "*" || provided[svc]
	}
	unknownService := func(e *entry, ptr, svc, what string) {
		hint := "no dataplane in the mesh has an inbound with this service tag"
		if s := suggest(svc, serviceNames(e.mesh)); s != "" {
			hint = fmt.Sprintf("did you mean %q?", s)
		}
		warnAt(e, ptr, CodeUnknownService, fmt.Sprintf("%s names service %q, which no dataplane in mesh %q provides", what, svc, e.mesh), hint)
	}
	byMesh(dps, func(mesh string, run []*entry) {
		if meshByName[mesh] == nil {
			return
		}
		provided := services[mesh]
		for _, e := range run {
			for i, out := range e.dp.Outbound {
				if !known(provided, out.Service) {
					unknownService(e, fmt.Sprintf("/networking/outbound/%d/service", i), out.Service, "outbound")
				}
			}
		}
	})

	byMesh(tps, func(mesh string, run []*entry) {
		m := meshByName[mesh]
		if m == nil {
			for _, e := range run {
				knownMesh(e)
			}
			return
		}
		provided := services[mesh]
		for _, e := range run {
			set.TrafficPermissions = append(set.TrafficPermissions, e.tp)
			if !m.MTLS.Enabled {
				warnAt(e, "/name", CodeNoEffect, fmt.Sprintf("TrafficPermission %q has no effect: mesh %q does not have mTLS enabled", e.name, e.mesh),
					"as in Kuma, permissions are enforced only with mTLS: set `mtls.enabled: true` on the Mesh")
			}
			for r, rule := range e.tp.Rules {
				base := e.ruleBases[r]
				for i, sel := range rule.Sources {
					if svc := sel[TagService]; !known(provided, svc) {
						unknownService(e, fmt.Sprintf("%s/sources/%d/match", base, i), svc, "source")
					}
				}
				for i, sel := range rule.Destinations {
					if svc := sel[TagService]; !known(provided, svc) {
						unknownService(e, fmt.Sprintf("%s/destinations/%d/match", base, i), svc, "destination")
					}
				}
			}
		}
	})
	byMesh(mtps, func(mesh string, run []*entry) {
		m := meshByName[mesh]
		if m == nil {
			for _, e := range run {
				knownMesh(e)
			}
			return
		}
		for _, e := range run {
			set.MeshTrafficPermissions = append(set.MeshTrafficPermissions, e.mtp)
			checkMeshTrafficPermission(e, m, services[mesh], warnAt, unknownService)
		}
	})
	return set, findings
}

// checkMeshTrafficPermission warns where a MeshTrafficPermission does less
// than it says: without mTLS, on services nobody provides, on tags a
// certificate does not carry, on identities this mesh does not issue.
func checkMeshTrafficPermission(e *entry, m *Mesh, provided map[string]bool,
	warnAt func(*entry, string, Code, string, string), unknownService func(*entry, string, string, string)) {
	p := e.mtp
	if !m.MTLS.Enabled {
		warnAt(e, "/name", CodeNoEffect, fmt.Sprintf("MeshTrafficPermission %q has no effect: mesh %q does not have mTLS enabled", e.name, e.mesh),
			"as in Kuma, permissions are enforced only with mTLS: enable an mTLS backend on the Mesh")
	}
	serviceRef := func(t TargetRef, what string) {
		if (t.Kind == KindMeshService || t.Kind == KindMeshServiceSubset) && t.Name != "" && !provided[t.Name] {
			unknownService(e, t.Pointer+"/name", t.Name, what)
		}
	}
	serviceRef(p.TargetRef, "targetRef")
	for _, f := range p.From {
		serviceRef(f.TargetRef, "from targetRef")
		sel := f.TargetRef.Selector()
		delete(sel, TagService)
		if len(sel) > 0 {
			warnAt(e, f.TargetRef.Pointer, CodeUnenforceableSource,
				fmt.Sprintf("from[] selects clients by %s, which their certificates do not carry: an Allow applies only where every instance of the service is allowed, a Deny denies the whole service", formatTags(sel)),
				"gitmesh certificates name the client's service only (spiffe://MESH/SERVICE): select clients by kind Mesh or MeshService")
		}
	}
	for _, r := range p.Rules {
		for _, list := range [][]SpiffeMatch{r.Allow, r.Deny, r.AllowWithShadowDeny} {
			for _, sm := range list {
				td := strings.TrimPrefix(sm.Value, "spiffe://")
				td, _, _ = strings.Cut(td, "/")
				if checkSpiffeID(sm.Value) == nil && td != e.mesh && !(sm.Prefix && strings.HasPrefix(e.mesh, td)) {
					warnAt(e, sm.Pointer+"/value", CodeNoEffect,
						fmt.Sprintf("%s matches no client of mesh %q: gitmesh issues spiffe://%s/SERVICE", sm, e.mesh, e.mesh),
						fmt.Sprintf("write spiffe://%s/SERVICE", e.mesh))
				}
			}
		}
	}
}

// byMesh calls f with each run of entries of one mesh, in order; es is sorted
// by mesh.
func byMesh(es []*entry, f func(mesh string, run []*entry)) {
	for len(es) > 0 {
		n := 1
		for n < len(es) && es[n].mesh == es[0].mesh {
			n++
		}
		f(es[0].mesh, es[:n])
		es = es[n:]
	}
}
