package schema

import (
	"fmt"
	"sort"
)

// crossCheck checks resources against each other and assembles the Set:
// duplicates, references to meshes and services, and endpoints two dataplanes
// would both claim.
func crossCheck(entries []*entry) (*Set, []Finding) {
	var findings []Finding
	errorAt := func(e *entry, ptr, code, msg, hint string) {
		findings = append(findings, e.finding(SeverityError, ptr, code, msg, hint))
	}
	warnAt := func(e *entry, ptr, code, msg, hint string) {
		findings = append(findings, e.finding(SeverityWarning, ptr, code, msg, hint))
	}

	var meshes, dps, tps []*entry
	for _, e := range entries {
		switch {
		case e.m != nil:
			meshes = append(meshes, e)
		case e.dp != nil:
			dps = append(dps, e)
		case e.tp != nil:
			tps = append(tps, e)
		}
	}
	dedupe := func(es []*entry, what func(*entry) string) []*entry {
		sortEntries(es)
		out := es[:0:0]
		for i, e := range es {
			if i > 0 && es[i-1].mesh == e.mesh && es[i-1].name == e.name {
				first := out[len(out)-1]
				errorAt(e, "/name", CodeDuplicate, fmt.Sprintf("%s is declared twice; first at %s:%d", what(e), first.file, first.doc.root.Line),
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

	set := &Set{}
	meshByName := map[string]*Mesh{}
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

	// Services each mesh provides, and who claims each inbound endpoint.
	services := map[string]map[string]bool{}
	type claim struct {
		e   *entry
		ptr string
	}
	endpoints := map[string]claim{} // mesh + " " + ip:port
	for _, e := range dps {
		if !knownMesh(e) {
			continue
		}
		set.Dataplanes = append(set.Dataplanes, e.dp)
		if services[e.mesh] == nil {
			services[e.mesh] = map[string]bool{}
		}
		for i, in := range e.dp.Inbound {
			services[e.mesh][in.Service()] = true
			key := e.mesh + " " + in.HostPort()
			ptr := fmt.Sprintf("/networking/inbound/%d", i)
			if first, dup := endpoints[key]; dup && first.e != e {
				errorAt(e, ptr, CodeEndpointConflict,
					fmt.Sprintf("inbound %s is also an inbound of dataplane %q (%s:%d)", in.HostPort(), first.e.name, first.e.file, first.e.doc.root.Line),
					"two dataplanes cannot listen on the same IP:port; change the address or port of one")
				continue
			}
			endpoints[key] = claim{e, ptr}
		}
	}
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
	unknownService := func(e *entry, ptr, svc, what string) {
		if svc == "" || svc == "*" || services[e.mesh][svc] { // "": reported as missing-service
			return
		}
		hint := "no dataplane in the mesh has an inbound with this service tag"
		if s := suggest(svc, serviceNames(e.mesh)); s != "" {
			hint = fmt.Sprintf("did you mean %q?", s)
		}
		warnAt(e, ptr, CodeUnknownService, fmt.Sprintf("%s names service %q, which no dataplane in mesh %q provides", what, svc, e.mesh), hint)
	}
	for _, e := range dps {
		if meshByName[e.mesh] == nil {
			continue
		}
		for i, out := range e.dp.Outbound {
			unknownService(e, fmt.Sprintf("/networking/outbound/%d/service", i), out.Service, "outbound")
		}
	}

	for _, e := range tps {
		if !knownMesh(e) {
			continue
		}
		set.TrafficPermissions = append(set.TrafficPermissions, e.tp)
		if !meshByName[e.mesh].MTLS.Enabled {
			warnAt(e, "/name", CodeNoEffect, fmt.Sprintf("TrafficPermission %q has no effect: mesh %q does not have mTLS enabled", e.name, e.mesh),
				"as in Kuma, permissions are enforced only with mTLS: set `mtls.enabled: true` on the Mesh")
		}
		for r, rule := range e.tp.Rules {
			base := e.ruleBases[r]
			for i, sel := range rule.Sources {
				unknownService(e, fmt.Sprintf("%s/sources/%d/match", base, i), sel[TagService], "source")
			}
			for i, sel := range rule.Destinations {
				unknownService(e, fmt.Sprintf("%s/destinations/%d/match", base, i), sel[TagService], "destination")
			}
		}
	}
	return set, findings
}
