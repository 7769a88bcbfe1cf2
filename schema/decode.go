package schema

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// The decoders below normalise the Kuma forms into the model and check what a
// schema cannot state. They also run on documents that failed their schema (so
// one pass reports everything), and so never assume a field's type: a value
// of the wrong type reads as absent.

var (
	sectionNameRE  = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	labelNameRE    = regexp.MustCompile(`^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)$`)
	labelPrefixRE  = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	labelValueRE   = regexp.MustCompile(`^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$`)
	nameRE         = regexp.MustCompile(`^[a-z0-9_-]+$`)
	resourceNameRE = regexp.MustCompile(`^[a-z0-9._-]+$`)
	tagKeyRE       = regexp.MustCompile(`^[a-zA-Z0-9._:/-]+$`)
	// A tag value is Kuma's: letters, digits, '.', '-', '_' and ':'; a
	// selector's value may hold '/' too, or be '*'.
	tagValueRE      = regexp.MustCompile(`^[a-zA-Z0-9._:-]+$`)
	selectorValueRE = regexp.MustCompile(`^[a-zA-Z0-9._:/-]+$`)
)

// ValidName reports whether s is a valid mesh name: lower-case letters,
// digits, '-' and '_', at most 253 characters. A mesh name has no '.', so a
// node id <mesh>.<name> splits at its first dot.
func ValidName(s string) bool { return len(s) <= 253 && nameRE.MatchString(s) }

// ValidResourceName reports whether s is a valid name of a resource in a
// mesh (a Dataplane, a policy): as a mesh name, and '.' too, as Kuma allows
// (billing.1).
func ValidResourceName(s string) bool { return len(s) <= 253 && resourceNameRE.MatchString(s) }

// kumaTagAliases are the Kuma 1.x spellings of well-known tags.
var kumaTagAliases = map[string]string{
	"kuma.io/service":  TagService,
	"kuma.io/protocol": TagProtocol,
}

var protocols = []string{ProtocolGRPC, ProtocolHTTP, ProtocolTCP}

// decoder collects the rule violations of one document.
type decoder struct {
	issues []issue
}

func (d *decoder) add(ptr string, code Code, hint, format string, args ...any) {
	d.issues = append(d.issues, issue{pointer: ptr, code: code, message: fmt.Sprintf(format, args...), hint: hint})
}

func str(m map[string]any, k string) string {
	s, _ := m[k].(string)
	return s
}

func uint32Of(m map[string]any, k string) uint32 {
	switch n := m[k].(type) {
	case int64:
		return uint32(n)
	case float64:
		return uint32(n)
	}
	return 0
}

func mapOf(m map[string]any, k string) map[string]any {
	v, _ := m[k].(map[string]any)
	return v
}

func listOf(m map[string]any, k string) []any {
	v, _ := m[k].([]any)
	return v
}

// name checks a mesh name (the `mesh` field, a Mesh's `name`).
func (d *decoder) name(m map[string]any, k string) string {
	v := str(m, k)
	if v != "" && !nameRE.MatchString(v) {
		hint := "use lower-case letters, digits, '-' and '_'"
		if strings.Contains(v, ".") {
			hint = "a '.' is not allowed: node ids are <mesh>.<name>; " + hint
		}
		d.add("/"+k, CodeInvalidName, hint, "%s %q has characters that are not allowed", k, v)
	}
	return v
}

// resourceName checks the name of a resource in a mesh, which may hold dots.
func (d *decoder) resourceName(m map[string]any) string {
	v := str(m, "name")
	if v != "" && !resourceNameRE.MatchString(v) {
		d.add("/name", CodeInvalidName, "use lower-case letters, digits, '-', '_' and '.'", "name %q has characters that are not allowed", v)
	}
	return v
}

func meshOf(d *decoder, m map[string]any) string {
	if _, ok := m["mesh"]; !ok {
		return DefaultMesh
	}
	return d.name(m, "mesh")
}

// ip checks an IP literal and returns it in canonical form.
func (d *decoder) ip(ptr, field, s string) string {
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		d.add(ptr, CodeInvalidAddress, "write an IPv4 or IPv6 address such as 10.0.0.1", "%s %q is not an IP address", field, s)
		return s
	}
	return a.Unmap().String()
}

// tags validates a tag map and normalises kuma.io/ spellings.
func (d *decoder) tags(ptr string, raw map[string]any, allowWildcard bool) map[string]string {
	out := make(map[string]string, len(raw))
	for _, k := range tagOrder(raw) {
		val, _ := raw[k].(string)
		kptr := ptr + "/" + escapePointer(k)
		if !tagKeyRE.MatchString(k) {
			d.add(kptr, CodeInvalidTag, "tag names use letters, digits, '.', '-', '_', ':' and '/'", "tag name %q has characters that are not allowed", k)
			continue
		}
		valueRE := tagValueRE
		if allowWildcard {
			valueRE = selectorValueRE
		}
		if !(allowWildcard && val == "*") && !valueRE.MatchString(val) {
			hint := "tag values use letters, digits, '.', '-', '_' and ':', as in Kuma"
			if val == "*" {
				hint = "'*' is allowed only in TrafficPermission selectors"
			}
			d.add(kptr, CodeInvalidTag, hint, "tag %q has value %q, which is not allowed", k, val)
			continue
		}
		key := k
		if short, ok := kumaTagAliases[k]; ok {
			key = short
		}
		if prev, ok := out[key]; ok && prev != val {
			d.add(kptr, CodeConflictingTag, fmt.Sprintf("%q and %q are the same tag: keep one", key, "kuma.io/"+key),
				"tag %q is set twice with different values (%q and %q)", key, prev, val)
			continue
		}
		out[key] = val
	}
	if p, ok := out[TagProtocol]; ok && p != "*" && !slices.Contains(protocols, p) {
		hint := "use one of: " + strings.Join(protocols, ", ")
		if s := suggest(p, protocols); s != "" {
			hint = fmt.Sprintf("did you mean %q?", s)
		}
		d.add(ptr+"/"+protocolKey(raw), CodeInvalidProtocol, hint, "protocol %q is not supported", p)
	}
	return out
}

// tagOrder returns the keys of a tag map sorted, each well-known tag before
// its kuma.io/ spelling, so that findings do not depend on map order: a tag
// set under both spellings is reported at the kuma.io/ one.
func tagOrder(raw map[string]any) []string {
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	canonical := func(k string) (string, bool) {
		if short, ok := kumaTagAliases[k]; ok {
			return short, true
		}
		return k, false
	}
	slices.SortFunc(keys, func(a, b string) int {
		ca, aliasA := canonical(a)
		cb, aliasB := canonical(b)
		if c := strings.Compare(ca, cb); c != 0 {
			return c
		}
		switch {
		case aliasA == aliasB:
			return strings.Compare(a, b)
		case aliasB:
			return -1
		default:
			return 1
		}
	})
	return keys
}

func protocolKey(raw map[string]any) string {
	if _, ok := raw[TagProtocol]; ok {
		return TagProtocol
	}
	return escapePointer("kuma.io/protocol")
}

func decodeMesh(m map[string]any) (*Mesh, []issue) {
	d := &decoder{}
	mesh := &Mesh{Name: d.name(m, "name"), Labels: d.labels(m)}
	_, hasEnabled := mapOf(m, "mtls")["enabled"]
	_, hasCA := mapOf(m, "mtls")["ca"]
	_, hasBackend := mapOf(m, "mtls")["enabledBackend"]
	_, hasBackends := mapOf(m, "mtls")["backends"]
	if mt := mapOf(m, "mtls"); mt != nil && (hasBackend || hasBackends) {
		if hasEnabled || hasCA {
			d.add("/mtls", CodeMixedForms, "use either `enabled`/`ca` (Kuma 0.x) or `enabledBackend`/`backends` (Kuma 2.x), not both",
				"mtls mixes the Kuma 0.x and 2.x forms")
		}
		mesh.MTLS = d.mtlsBackends(mt)
	} else if mt != nil {
		mesh.MTLS.Enabled, _ = mt["enabled"].(bool)
		mesh.MTLS.CA.Kind = CABuiltin
		if ca := mapOf(mt, "ca"); ca != nil {
			_, builtin := ca["builtin"]
			prov := mapOf(ca, "provided")
			switch {
			case builtin && prov != nil:
				d.add("/mtls/ca", CodeConflictingCA, "keep either `builtin: {}` or `provided`", "mtls.ca sets both a builtin and a provided CA")
			case prov != nil:
				mesh.MTLS.CA = CA{Kind: CAProvided, Provided: &ProvidedCA{
					CertFile: str(mapOf(prov, "cert"), "file"),
					KeyFile:  str(mapOf(prov, "key"), "file"),
				}}
			}
		}
	}
	if lg := mapOf(m, "logging"); lg != nil {
		mesh.Logging = d.logging(lg)
	}
	if tr := mapOf(m, "tracing"); tr != nil {
		mesh.Tracing = d.tracing(tr)
	}
	if mx := mapOf(m, "metrics"); mx != nil {
		mesh.Metrics = &Metrics{}
		p, tagsPtr := mapOf(mx, "prometheus"), "/metrics/prometheus/tags"
		if _, ok := mx["backends"]; ok { // Kuma 2.x: the enabled backend's conf
			if p != nil {
				d.add("/metrics", CodeMixedForms, "use either `prometheus` (Kuma 0.x) or `enabledBackend`/`backends` (Kuma 2.x)", "metrics mixes the Kuma 0.x and 2.x forms")
			}
			p = nil
			enabled := str(mx, "enabledBackend")
			var names []string
			for i, raw := range listOf(mx, "backends") {
				b, _ := raw.(map[string]any)
				names = append(names, str(b, "name"))
				if enabled != "" && str(b, "name") == enabled {
					p, tagsPtr = mapOf(b, "conf"), fmt.Sprintf("/metrics/backends/%d/conf/tags", i)
					if p == nil {
						p = map[string]any{}
					}
				}
			}
			d.backendNames("/metrics", names, "")
			if enabled != "" && !slices.Contains(names, enabled) {
				d.add("/metrics/enabledBackend", CodeUnknownBackend, "name one of the declared backends", "enabledBackend %q is not one of the declared backends", enabled)
			}
		}
		if p != nil {
			prom := &Prometheus{Port: uint32Of(p, "port"), Path: str(p, "path")}
			if prom.Port == 0 {
				prom.Port = 5670 // Kuma's default
			}
			if prom.Path == "" {
				prom.Path = "/metrics"
			}
			if t := mapOf(p, "tags"); t != nil {
				prom.Tags = d.tags(tagsPtr, t, false)
			}
			mesh.Metrics.Prometheus = prom
		}
	}
	return mesh, d.issues
}

// backendNames checks that backend names are unique and that defaultBackend
// names one of them.
func (d *decoder) backendNames(ptr string, names []string, def string) {
	seen := map[string]bool{}
	for i, n := range names {
		if seen[n] {
			d.add(fmt.Sprintf("%s/backends/%d/name", ptr, i), CodeDuplicateBackend, "give each backend its own name", "backend %q is declared twice", n)
		}
		seen[n] = true
	}
	if def != "" && !seen[def] {
		hint := "declare a backend with that name, or name an existing one"
		if s := suggest(def, names); s != "" {
			hint = fmt.Sprintf("did you mean %q?", s)
		}
		d.add(ptr+"/defaultBackend", CodeUnknownBackend, hint, "defaultBackend %q is not one of the declared backends", def)
	}
}

func (d *decoder) logging(lg map[string]any) *Logging {
	out := &Logging{DefaultBackend: str(lg, "defaultBackend")}
	var names []string
	for i, b := range listOf(lg, "backends") {
		bm, _ := b.(map[string]any)
		ptr := fmt.Sprintf("/logging/backends/%d", i)
		be := LoggingBackend{Name: str(bm, "name"), Format: str(bm, "format"),
			FilePath: str(mapOf(bm, "file"), "path"), TCPAddress: str(mapOf(bm, "tcp"), "address")}
		addrPtr := ptr + "/tcp/address"
		if typ, ok := bm["type"].(string); ok { // Kuma 2.x: {type: file|tcp, conf: {...}}
			d.oneShape(ptr, bm, "file", "tcp")
			conf := mapOf(bm, "conf")
			if typ == "file" {
				be.FilePath = str(conf, "path")
			} else {
				be.TCPAddress, addrPtr = str(conf, "address"), ptr+"/conf/address"
			}
			if be.FilePath == "" && be.TCPAddress == "" {
				d.add(ptr, CodeInvalidBackend, "add `conf: {path: ...}` for type file, `conf: {address: HOST:PORT}` for type tcp",
					"logging backend %q of type %s has no destination", be.Name, typ)
				names = append(names, be.Name)
				out.Backends = append(out.Backends, be)
				continue
			}
		}
		switch {
		case be.FilePath == "" && be.TCPAddress == "":
			d.add(ptr, CodeInvalidBackend, "add `file: {path: ...}` or `tcp: {address: HOST:PORT}`", "logging backend %q has neither file nor tcp", be.Name)
		case be.FilePath != "" && be.TCPAddress != "":
			d.add(ptr, CodeInvalidBackend, "keep one of `file` and `tcp`", "logging backend %q has both file and tcp", be.Name)
		case be.TCPAddress != "":
			if _, port, err := net.SplitHostPort(be.TCPAddress); err != nil || !validPort(port) {
				d.add(addrPtr, CodeInvalidAddress, "write HOST:PORT, e.g. 127.0.0.1:5000", "tcp address %q is not HOST:PORT", be.TCPAddress)
			}
		}
		names = append(names, be.Name)
		out.Backends = append(out.Backends, be)
	}
	d.backendNames("/logging", names, out.DefaultBackend)
	return out
}

func (d *decoder) tracing(tr map[string]any) *Tracing {
	out := &Tracing{DefaultBackend: str(tr, "defaultBackend")}
	var names []string
	for i, b := range listOf(tr, "backends") {
		bm, _ := b.(map[string]any)
		z, urlPtr := mapOf(bm, "zipkin"), fmt.Sprintf("/tracing/backends/%d/zipkin/url", i)
		typ, typed := bm["type"].(string) // Kuma 2.x: {type: zipkin|datadog, conf: {...}}
		if typed {
			d.oneShape(fmt.Sprintf("/tracing/backends/%d", i), bm, "zipkin")
			z, urlPtr = mapOf(bm, "conf"), fmt.Sprintf("/tracing/backends/%d/conf/url", i)
		} else if z == nil {
			d.add(fmt.Sprintf("/tracing/backends/%d", i), CodeInvalidBackend, "add `type: zipkin` and `conf: {url: ...}` (or the Kuma 0.x `zipkin: {url: ...}`)",
				"tracing backend %q has no collector", str(bm, "name"))
		}
		be := TracingBackend{Name: str(bm, "name"), Zipkin: Zipkin{URL: str(z, "url"), APIVersion: str(z, "apiVersion")}}
		be.Zipkin.TraceID128Bit, _ = z["traceId128bit"].(bool)
		if be.Zipkin.APIVersion == "" {
			be.Zipkin.APIVersion = "httpJson"
		}
		switch s := bm["sampling"].(type) {
		case int64:
			f := float64(s)
			be.Sampling = &f
		case float64:
			be.Sampling = &s
		}
		if typ == "datadog" {
			be.Zipkin = Zipkin{}
			be.Datadog = &Datadog{Address: str(z, "address"), Port: uint32Of(z, "port")}
			be.Datadog.SplitService, _ = z["splitService"].(bool)
			if be.Datadog.Address == "" || be.Datadog.Port == 0 {
				d.add(fmt.Sprintf("/tracing/backends/%d/conf", i), CodeInvalidBackend, "write `conf: {address: HOST, port: PORT}`",
					"datadog backend %q needs an address and a port", be.Name)
			}
		} else if u, err := url.Parse(be.Zipkin.URL); (z != nil || typed) && (err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "") {
			d.add(urlPtr, CodeInvalidValue, "write an http(s) URL such as http://zipkin:9411/api/v2/spans",
				"zipkin url %q is not an http(s) URL", be.Zipkin.URL)
		}
		names = append(names, be.Name)
		out.Backends = append(out.Backends, be)
	}
	d.backendNames("/tracing", names, out.DefaultBackend)
	return out
}

func validPort(s string) bool {
	n, err := strconv.Atoi(s)
	return err == nil && n >= 1 && n <= 65535
}

func decodeDataplane(m map[string]any) (*Dataplane, []issue) {
	d := &decoder{}
	dp := &Dataplane{Name: d.resourceName(m), Mesh: meshOf(d, m), Labels: d.labels(m)}
	nw := mapOf(m, "networking")
	if a := str(nw, "address"); a != "" {
		dp.Address = d.ip("/networking/address", "networking.address", a)
	}
	for i, raw := range listOf(nw, "inbound") {
		in, _ := raw.(map[string]any) // nil when the schema already reported it
		dp.Inbound = append(dp.Inbound, d.inbound(fmt.Sprintf("/networking/inbound/%d", i), in, dp.Address))
	}
	for i, raw := range listOf(nw, "outbound") {
		out, _ := raw.(map[string]any)
		dp.Outbound = append(dp.Outbound, d.outbound(fmt.Sprintf("/networking/outbound/%d", i), out))
	}
	d.portConflicts(dp)
	return dp, d.issues
}

// mixed reports fields of the 0.4 form used next to a legacy `interface`.
func (d *decoder) mixed(ptr string, m map[string]any, fields ...string) {
	for _, f := range fields {
		if _, ok := m[f]; ok {
			d.add(ptr+"/"+f, CodeMixedForms, "use either `interface` (Kuma 0.2) or `address`/`port` fields (Kuma 0.4+), not both",
				"%s mixes the legacy `interface` with `%s`", fieldName(ptr), f)
		}
	}
}

func (d *decoder) inbound(ptr string, m map[string]any, dpAddress string) Inbound {
	in := Inbound{Name: str(m, "name"), Tags: d.tags(ptr+"/tags", mapOf(m, "tags"), false)}
	if in.Name != "" && !sectionNameRE.MatchString(in.Name) {
		d.add(ptr+"/name", CodeInvalidName, "use lower-case letters, digits and '-', at most 63, starting and ending with a letter or digit",
			"inbound name %q is not a valid section name", in.Name)
	}
	if _, ok := in.Tags[TagService]; !ok {
		d.add(ptr+"/tags", CodeMissingService, "add `service: NAME` to the inbound's tags", "%s has no `service` tag", fieldName(ptr))
	}
	if iface, ok := m["interface"].(string); ok {
		d.mixed(ptr, m, "address", "port", "servicePort")
		host, ports, ok := SplitInterface(iface, 2)
		if !ok {
			d.add(ptr+"/interface", CodeInvalidInterface, `write "IP:DATAPLANE_PORT:SERVICE_PORT", e.g. "10.0.0.1:10001:8080"`,
				"inbound interface %q is not IP:DATAPLANE_PORT:SERVICE_PORT", iface)
			return in
		}
		in.Address = d.ip(ptr+"/interface", "inbound interface address", host)
		in.Port, in.ServicePort = ports[0], ports[1]
		return in
	}
	in.Port = uint32Of(m, "port")
	in.ServicePort = uint32Of(m, "servicePort")
	if in.Port == 0 {
		d.add(ptr, CodeMissingPort, "add `port` (and `servicePort` when the application listens elsewhere), or a legacy `interface`",
			"%s has neither `port` nor `interface`", fieldName(ptr))
	}
	if in.ServicePort == 0 {
		in.ServicePort = in.Port
	}
	switch a := str(m, "address"); {
	case a != "":
		in.Address = d.ip(ptr+"/address", "inbound address", a)
	case dpAddress != "":
		in.Address = dpAddress
	default:
		d.add(ptr, CodeMissingAddress, "set `networking.address` or the inbound's `address`", "%s has no address", fieldName(ptr))
	}
	return in
}

func (d *decoder) outbound(ptr string, m map[string]any) Outbound {
	out := Outbound{Service: str(m, "service"), Address: "127.0.0.1"}
	if raw := mapOf(m, "tags"); raw != nil { // Kuma 2.x: tags: {kuma.io/service: NAME}
		tags := d.tags(ptr+"/tags", raw, false)
		switch svc, ok := tags[TagService]; {
		case !ok:
			d.add(ptr+"/tags", CodeMissingService, "add `kuma.io/service: NAME` to the outbound's tags", "%s has tags but no `kuma.io/service`", fieldName(ptr))
		case out.Service != "" && svc != out.Service:
			d.add(ptr+"/service", CodeConflictingTag, "keep one of `service` and the `kuma.io/service` tag",
				"%s names service %q and tag kuma.io/service %q", fieldName(ptr), out.Service, svc)
		default:
			out.Service = svc
		}
	} else if _, ok := m["service"]; !ok && m != nil {
		d.add(ptr, CodeMissingService, "add `tags: {kuma.io/service: NAME}` (or the Kuma 0.x `service: NAME`)", "%s names no service", fieldName(ptr))
	}
	if out.Service != "" && !tagValueRE.MatchString(out.Service) {
		d.add(ptr+"/service", CodeInvalidTag, "service names use letters, digits, '.', '-', '_' and ':', as in Kuma", "service %q has characters that are not allowed", out.Service)
	}
	if iface, ok := m["interface"].(string); ok {
		d.mixed(ptr, m, "address", "port")
		host, ports, ok := SplitInterface(iface, 1)
		if !ok {
			d.add(ptr+"/interface", CodeInvalidInterface, `write "[IP]:PORT", e.g. ":10001" or "127.0.0.1:10001"`,
				"outbound interface %q is not [IP]:PORT", iface)
			return out
		}
		if host != "" {
			out.Address = d.ip(ptr+"/interface", "outbound interface address", host)
		}
		out.Port = ports[0]
		return out
	}
	out.Port = uint32Of(m, "port")
	if out.Port == 0 {
		d.add(ptr, CodeMissingPort, "add `port`, or a legacy `interface`", "%s has neither `port` nor `interface`", fieldName(ptr))
	}
	if a := str(m, "address"); a != "" {
		out.Address = d.ip(ptr+"/address", "outbound address", a)
	}
	return out
}

// SplitInterface parses a legacy Dataplane interface "HOST:P1[:P2]" with
// nports ports, each a valid port without leading zeros; HOST may be an IPv6
// literal in brackets, or empty.
func SplitInterface(s string, nports int) (host string, ports []uint32, ok bool) {
	rest := s
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 || end+1 >= len(s) || s[end+1] != ':' {
			return "", nil, false
		}
		host, rest = s[1:end], s[end+2:]
	} else {
		i := strings.IndexByte(s, ':')
		if i < 0 {
			return "", nil, false
		}
		host, rest = s[:i], s[i+1:]
	}
	parts := strings.Split(rest, ":")
	if len(parts) != nports {
		return "", nil, false
	}
	for _, p := range parts {
		if !validPort(p) || (len(p) > 1 && p[0] == '0') {
			return "", nil, false
		}
		n, _ := strconv.Atoi(p)
		ports = append(ports, uint32(n))
	}
	if nports == 2 && host == "" {
		return "", nil, false
	}
	return host, ports, true
}

// portConflicts finds two listeners of one dataplane on the same IP:port.
func (d *decoder) portConflicts(dp *Dataplane) {
	seen := map[string]string{}
	check := func(hostPort, ptr string) {
		if first, dup := seen[hostPort]; dup {
			d.add(ptr, CodePortConflict, "give each inbound and outbound its own IP:port", "%s listens on %s, as %s already does", fieldName(ptr), hostPort, fieldName(first))
			return
		}
		seen[hostPort] = ptr
	}
	for i, in := range dp.Inbound {
		if in.Port != 0 && in.Address != "" {
			check(in.HostPort(), fmt.Sprintf("/networking/inbound/%d", i))
		}
	}
	for i, out := range dp.Outbound {
		if out.Port != 0 {
			check(out.HostPort(), fmt.Sprintf("/networking/outbound/%d", i))
		}
	}
}

// decodeTrafficPermission also returns the pointer prefix of each rule, so
// later checks can point at the form the author wrote.
func decodeTrafficPermission(m map[string]any) (*TrafficPermission, []string, []issue) {
	d := &decoder{}
	tp := &TrafficPermission{Name: d.resourceName(m), Mesh: meshOf(d, m), Labels: d.labels(m)}
	_, hasSources := m["sources"]
	_, hasDest := m["destinations"]
	_, hasRules := m["rules"]
	var bases []string
	switch {
	case hasRules && (hasSources || hasDest):
		d.add("/rules", CodeMixedForms, "use either top-level `sources`/`destinations` (Kuma 0.3+) or `rules` (Kuma 0.2)",
			"a TrafficPermission cannot have both `rules` and top-level sources/destinations")
	case hasRules:
		for i, r := range listOf(m, "rules") {
			base := fmt.Sprintf("/rules/%d", i)
			rm, _ := r.(map[string]any)
			tp.Rules = append(tp.Rules, d.rule(base, rm))
			bases = append(bases, base)
		}
	case hasSources && hasDest:
		tp.Rules = []PermissionRule{d.rule("", m)}
		bases = []string{""}
	case hasSources:
		d.add("/destinations", CodeMissingField, "add `destinations: [{match: {service: NAME}}]`", "the permission has sources but no destinations")
	case hasDest:
		d.add("/sources", CodeMissingField, "add `sources: [{match: {service: NAME}}]`", "the permission has destinations but no sources")
	default:
		d.add("", CodeMissingRules, "add `sources` and `destinations`, each a list of `match: {service: NAME}`", "the permission allows nothing: it has no sources and destinations")
	}
	return tp, bases, d.issues
}

func (d *decoder) rule(base string, m map[string]any) PermissionRule {
	var r PermissionRule
	for _, side := range []string{"sources", "destinations"} {
		for i, s := range listOf(m, side) {
			ptr := fmt.Sprintf("%s/%s/%d/match", base, side, i)
			sm, _ := s.(map[string]any)
			sel := Selector(d.tags(ptr, mapOf(sm, "match"), true))
			if _, ok := sel[TagService]; !ok {
				d.add(ptr, CodeMissingService, "add `service: NAME`, or `service: '*'` to match any service", "%s has no `service` tag", fieldName(ptr))
			}
			if side == "sources" {
				r.Sources = append(r.Sources, sel)
			} else {
				r.Destinations = append(r.Destinations, sel)
			}
		}
	}
	return r
}

// labels decodes a resource's `labels`, checked as Kuma checks them: a key
// is an optional DNS-subdomain prefix and '/', then a name of at most 63
// letters, digits, '-', '_' and '.', starting and ending with a letter or
// digit; a value is empty or such a name.
func (d *decoder) labels(m map[string]any) map[string]string {
	raw := mapOf(m, "labels")
	if raw == nil {
		return nil
	}
	out := make(map[string]string, len(raw))
	for _, k := range tagOrder(raw) {
		v, _ := raw[k].(string)
		ptr := "/labels/" + escapePointer(k)
		prefix, name, hasPrefix := strings.Cut(k, "/")
		if !hasPrefix {
			prefix, name = "", k
		}
		if (hasPrefix && (len(prefix) > 253 || !labelPrefixRE.MatchString(prefix))) || !labelNameRE.MatchString(name) {
			d.add(ptr, CodeInvalidLabel, "a label key is [PREFIX/]NAME: NAME at most 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit; PREFIX a DNS subdomain",
				"label key %q is not valid", k)
			continue
		}
		if !labelValueRE.MatchString(v) {
			d.add(ptr, CodeInvalidLabel, "a label value is empty, or at most 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit",
				"label %q has value %q, which is not valid", k, v)
			continue
		}
		out[k] = v
	}
	return out
}

// mtlsBackends decodes Kuma 2.x's mTLS form: the enabled backend's CA
// becomes the mesh's, as the 0.x form's does. CA material comes from files
// on the control-plane host only: a key inline in git is an error.
func (d *decoder) mtlsBackends(mt map[string]any) MTLS {
	out := MTLS{CA: CA{Kind: CABuiltin}, Backend: str(mt, "enabledBackend")}
	backends := listOf(mt, "backends")
	if len(backends) > 1 {
		d.add("/mtls/backends", CodeInvalidBackend, "declare one backend, as Kuma allows", "mtls cannot have more than 1 backend")
	}
	var names []string
	for i, raw := range backends {
		b, _ := raw.(map[string]any)
		name := str(b, "name")
		names = append(names, name)
		enabled := name == out.Backend && out.Backend != ""
		out.Enabled = out.Enabled || enabled
		if str(b, "type") != string(CAProvided) {
			continue
		}
		conf := mapOf(b, "conf")
		ptr := fmt.Sprintf("/mtls/backends/%d/conf", i)
		prov := &ProvidedCA{}
		for _, part := range []struct {
			key  string
			into *string
		}{{"cert", &prov.CertFile}, {"key", &prov.KeyFile}} {
			src := mapOf(conf, part.key)
			pptr := ptr + "/" + part.key
			switch {
			case src == nil:
				d.add(ptr, CodeMissingField, "add `"+part.key+": {file: PATH}`, a file on the control-plane host", "provided CA has no `%s`", part.key)
			case src["inline"] != nil || src["inlineString"] != nil:
				d.add(pptr, CodeSecretInGit, "never commit CA material: put it in a file on the control-plane host and write `"+part.key+": {file: PATH}`",
					"provided CA %s is inline in the repository", part.key)
			case src["secret"] != nil:
				d.add(pptr+"/secret", CodeUnsupported, "gitmesh has no secret store: write `"+part.key+": {file: PATH}`, a file on the control-plane host",
					"provided CA %s from a Kuma secret is not supported", part.key)
			case str(src, "file") == "":
				d.add(pptr, CodeMissingField, "write `"+part.key+": {file: PATH}`", "provided CA %s has no `file`", part.key)
			default:
				*part.into = str(src, "file")
			}
		}
		if enabled {
			out.CA = CA{Kind: CAProvided, Provided: prov}
		}
	}
	d.backendNames("/mtls", names, "")
	if out.Backend != "" && !slices.Contains(names, out.Backend) {
		hint := "declare a backend with that name, or name an existing one"
		if s := suggest(out.Backend, names); s != "" {
			hint = fmt.Sprintf("did you mean %q?", s)
		}
		d.add("/mtls/enabledBackend", CodeUnknownBackend, hint, "enabledBackend %q is not one of the declared backends", out.Backend)
	}
	return out
}

// oneShape reports the Kuma 0.x shape of a backend (its kind as a key) used
// next to the 2.x `type`.
func (d *decoder) oneShape(ptr string, b map[string]any, legacy ...string) {
	for _, k := range legacy {
		if _, ok := b[k]; ok {
			d.add(ptr+"/"+k, CodeMixedForms, "use either `type` and `conf` (Kuma 2.x) or `"+k+":` (Kuma 0.x), not both",
				"backend mixes the Kuma 2.x `type` with the 0.x `%s`", k)
		}
	}
}
