package schema

import (
	"fmt"
	"maps"
	"slices"
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

	var meshes, dps, tps, mtps, hrs, trs, confs []*entry
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
		case e.hr != nil:
			hrs = append(hrs, e)
		case e.tr != nil:
			trs = append(trs, e)
		case e.conf != nil:
			confs = append(confs, e)
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
	hrs = dedupe(hrs, func(e *entry) string { return fmt.Sprintf("MeshHTTPRoute %q in mesh %q", e.name, e.mesh) })
	trs = dedupe(trs, func(e *entry) string { return fmt.Sprintf("MeshTCPRoute %q in mesh %q", e.name, e.mesh) })
	confs = dedupeConf(confs, dedupe)

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
	rc := &routeChecker{set: set, protocols: serviceProtocols(set), warnAt: warnAt, unknownService: unknownService}
	for _, run := range []struct {
		es    []*entry
		check func(*entry)
	}{{hrs, rc.httpRoute}, {trs, rc.tcpRoute}} {
		byMesh(run.es, func(mesh string, es []*entry) {
			if meshByName[mesh] == nil {
				for _, e := range es {
					knownMesh(e)
				}
				return
			}
			for _, e := range es {
				if e.hr != nil {
					set.MeshHTTPRoutes = append(set.MeshHTTPRoutes, e.hr)
				} else {
					set.MeshTCPRoutes = append(set.MeshTCPRoutes, e.tr)
				}
				run.check(e)
			}
		})
	}
	for _, e := range confs {
		if meshByName[e.mesh] == nil {
			knownMesh(e)
			continue
		}
		set.Policies = append(set.Policies, e.conf)
		rc.confPolicy(e)
	}
	kumaDiffers(set, dps, warnAt)
	flavorSupport(set, mtps, warnAt)
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

// kumaDiffers warns on each inbound where Kuma would allow fewer clients
// than gitmesh: Kuma applies one legacy TrafficPermission per inbound (the
// most specific match, else the newest, which git cannot tell), while
// gitmesh allows the sources of every matching permission. Inbounds a
// MeshTrafficPermission selects follow it, in Kuma as in gitmesh.
func kumaDiffers(set *Set, dps []*entry, warnAt func(*entry, string, Code, string, string)) {
	type candidate struct {
		tp      *TrafficPermission
		exact   int // best matching destination selector: values other than '*'
		wild    int // and '*' values
		sources map[string]bool
	}
	memo := map[string]string{} // mesh + tags -> message ("" = no difference)
	// Per mesh, the permissions with a destination pinned to each service,
	// and those with one that is not: the only ones an inbound can match.
	type meshPerms struct {
		byService map[string][]*TrafficPermission
		any       []*TrafficPermission
	}
	index := map[string]*meshPerms{}
	permsOf := func(mesh string) *meshPerms {
		if mp, ok := index[mesh]; ok {
			return mp
		}
		mp := &meshPerms{byService: map[string][]*TrafficPermission{}}
		for _, tp := range set.PermissionsIn(mesh) {
			pinned, anyDest := map[string]bool{}, false
			for _, r := range tp.Rules {
				for _, d := range r.Destinations {
					if svc, ok := d[TagService]; ok && svc != "*" {
						pinned[svc] = true
					} else {
						anyDest = true
					}
				}
			}
			if anyDest {
				mp.any = append(mp.any, tp)
				continue
			}
			for svc := range pinned {
				mp.byService[svc] = append(mp.byService[svc], tp)
			}
		}
		index[mesh] = mp
		return mp
	}
	for _, e := range dps {
		dp := e.dp
		m := set.Mesh(dp.Mesh)
		if m == nil || !m.MTLS.Enabled || len(set.PermissionsIn(dp.Mesh)) < 2 {
			continue
		}
		mp := permsOf(dp.Mesh)
		mtps := set.MeshTrafficPermissionsIn(dp.Mesh)
		for i, in := range dp.Inbound {
			if len(SelectingInbound(mtps, dp, i)) > 0 {
				continue
			}
			key := dp.Mesh + "\x00" + formatTags(in.Tags)
			msg, seen := memo[key]
			if !seen {
				var cands []candidate
				for _, tp := range slices.Concat(mp.byService[in.Service()], mp.any) {
					c := candidate{tp: tp, exact: -1, sources: map[string]bool{}}
					for _, r := range tp.Rules {
						matched := false
						for _, d := range r.Destinations {
							if !d.Matches(in.Tags) {
								continue
							}
							matched = true
							ex, wi := 0, 0
							for _, v := range d {
								if v == "*" {
									wi++
								} else {
									ex++
								}
							}
							if ex > c.exact || (ex == c.exact && wi > c.wild) {
								c.exact, c.wild = ex, wi
							}
						}
						if matched {
							for _, s := range r.Sources {
								svc, ok := s[TagService]
								if !ok {
									svc = "*"
								}
								c.sources[svc] = true
							}
						}
					}
					if c.exact >= 0 {
						cands = append(cands, c)
					}
				}
				msg = kumaDifference(cands, func(c candidate) (string, int, int, map[string]bool) {
					return c.tp.Name, c.exact, c.wild, c.sources
				})
				memo[key] = msg
			}
			if msg != "" {
				warnAt(e, fmt.Sprintf("/networking/inbound/%d", i), CodeKumaDiffers, msg,
					"merge these permissions into one, or move to MeshTrafficPermission, which Kuma and gitmesh merge alike")
			}
		}
	}
}

// kumaDifference describes how Kuma's single pick among the matching
// permissions allows fewer sources than all of them do; "" when it cannot.
func kumaDifference[C any](cands []C, of func(C) (name string, exact, wild int, sources map[string]bool)) string {
	if len(cands) < 2 {
		return ""
	}
	union := map[string]bool{}
	bestEx, bestWi := -1, -1
	for _, c := range cands {
		_, ex, wi, src := of(c)
		for s := range src {
			union[s] = true
		}
		if ex > bestEx || (ex == bestEx && wi > bestWi) {
			bestEx, bestWi = ex, wi
		}
	}
	covers := func(src map[string]bool) bool {
		if src["*"] {
			return true
		}
		for s := range union {
			if !src[s] {
				return false
			}
		}
		return true
	}
	var names, narrower []string
	for _, c := range cands {
		name, ex, wi, src := of(c)
		names = append(names, name)
		if ex == bestEx && wi == bestWi && !covers(src) {
			narrower = append(narrower, fmt.Sprintf("%s (sources %s)", name, strings.Join(slices.Sorted(maps.Keys(src)), ", ")))
		}
	}
	if len(narrower) == 0 {
		return ""
	}
	sort.Strings(names)
	return fmt.Sprintf("Kuma applies only one of the TrafficPermissions matching this inbound (%s) and may pick %s; gitmesh allows the sources of all of them: %s",
		strings.Join(names, ", "), strings.Join(narrower, " or "), strings.Join(slices.Sorted(maps.Keys(union)), ", "))
}

// FlavorLabel is the Dataplane label that tells validate which data plane a
// node runs (envoy or grpc), so it can say what that data plane would drop.
const FlavorLabel = "gitmesh.io/flavor"

// flavorSupport warns (unsupported-by-flavor) at each policy field a
// dataplane's labelled data plane cannot honour: proxyless gRPC has no RBAC
// shadow rules, so AllowWithShadowDeny only allows there.
func flavorSupport(set *Set, mtps []*entry, warnAt func(*entry, string, Code, string, string)) {
	for _, e := range mtps {
		p := e.mtp
		var ptr string
		for _, f := range p.From {
			if f.Action == ActionAllowWithShadowDeny && ptr == "" {
				ptr = f.Pointer + "/default/action"
			}
		}
		for _, r := range p.Rules {
			if len(r.AllowWithShadowDeny) > 0 && ptr == "" {
				ptr = r.Pointer + "/allowWithShadowDeny"
			}
		}
		if ptr == "" {
			continue
		}
		var grpc []string
		for _, dp := range set.DataplanesIn(p.Mesh) {
			if dp.Labels[FlavorLabel] == "grpc" && p.TargetRef.SelectsDataplane(dp) {
				grpc = append(grpc, dp.Name)
			}
		}
		if len(grpc) == 0 {
			continue
		}
		more := ""
		if len(grpc) > 5 {
			more = fmt.Sprintf(" and %d more", len(grpc)-5)
			grpc = grpc[:5]
		}
		warnAt(e, ptr, CodeUnsupportedByFlavor,
			fmt.Sprintf("AllowWithShadowDeny only allows on proxyless gRPC, which has no shadow rules: dataplanes %s%s are labelled %s: grpc",
				strings.Join(grpc, ", "), more, FlavorLabel),
			"only Envoy logs a shadow deny: on gRPC nodes the clients are simply allowed")
	}
}
