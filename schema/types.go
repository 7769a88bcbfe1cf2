package schema

import (
	"net"
	"sort"
	"strconv"
)

// Resource types, as written in the `type` field of a document.
const (
	TypeMesh              = "Mesh"
	TypeDataplane         = "Dataplane"
	TypeTrafficPermission = "TrafficPermission"
)

// DefaultMesh is the mesh that exists implicitly (mTLS off) unless the
// repository declares it, as in Kuma.
const DefaultMesh = "default"

// Well-known tags. Kuma 1.x spells them with a `kuma.io/` prefix; the loader
// normalises those spellings to the short names below.
const (
	TagService  = "service"
	TagProtocol = "protocol"
)

// Protocols a `protocol` tag may name.
const (
	ProtocolTCP  = "tcp"
	ProtocolHTTP = "http"
	ProtocolGRPC = "grpc"
)

// Origin says where a resource was declared.
type Origin struct {
	File     string // slash-separated path relative to the loaded root
	Document int    // 1-based index of the YAML document within File
	Line     int    // 1-based line of the document's first key
	Column   int
}

// CAKind names the certificate authority of a mesh with mTLS.
type CAKind string

// The certificate authorities a Mesh may use.
const (
	CABuiltin  CAKind = "builtin"
	CAProvided CAKind = "provided"
)

// Mesh is a validated, normalised Mesh resource.
type Mesh struct {
	Name string
	// Labels are the resource's `labels`, nil when it has none.
	Labels map[string]string
	MTLS   MTLS
	// Logging, Tracing and Metrics are accepted and validated as Kuma does;
	// nil when the resource does not set them.
	Logging *Logging
	Tracing *Tracing
	Metrics *Metrics
	// Implicit is true for the default mesh when the repository does not
	// declare it.
	Implicit bool
	Origin   Origin
}

// MTLS is the mutual TLS setting of a mesh.
type MTLS struct {
	Enabled bool
	CA      CA
	// Backend is the enabled backend's name in the Kuma 2.x form; empty in
	// the 0.x form.
	Backend string
}

// CA is a mesh's certificate authority. Provided is set when Kind is
// CAProvided: the certificate and key are files on the control-plane host,
// never in git.
type CA struct {
	Kind     CAKind
	Provided *ProvidedCA
}

// ProvidedCA points at a CA certificate and key on the control-plane host.
type ProvidedCA struct {
	CertFile string
	KeyFile  string
}

// Logging lists access-log backends.
type Logging struct {
	DefaultBackend string
	Backends       []LoggingBackend
}

// LoggingBackend writes access logs to a file or a TCP address; exactly one
// of FilePath and TCPAddress is set.
type LoggingBackend struct {
	Name       string
	Format     string
	FilePath   string
	TCPAddress string
}

// Tracing lists tracing backends.
type Tracing struct {
	DefaultBackend string
	Backends       []TracingBackend
}

// TracingBackend is a Zipkin collector.
type TracingBackend struct {
	Name string
	// Sampling is a percentage in [0, 100]; nil means Kuma's default (100).
	Sampling *float64
	Zipkin   Zipkin
	// Datadog is set for a Kuma 2.x `type: datadog` backend (Zipkin is
	// then empty).
	Datadog *Datadog
}

// Datadog describes a Datadog agent.
type Datadog struct {
	Address      string
	Port         uint32
	SplitService bool
}

// Zipkin describes a Zipkin collector.
type Zipkin struct {
	URL           string
	TraceID128Bit bool
	APIVersion    string // httpJson (default) or httpProto
}

// Metrics configures metrics exposition.
type Metrics struct {
	Prometheus *Prometheus
}

// Prometheus exposes each dataplane's metrics on Port and Path.
type Prometheus struct {
	Port uint32
	Path string
	Tags map[string]string
}

// Dataplane is a validated, normalised Dataplane resource. Both Kuma forms
// (the 0.2 `interface` strings and the 0.4 `address`/`port` fields) load into
// the same shape.
type Dataplane struct {
	Mesh    string
	Name    string
	Labels  map[string]string
	Address string // networking.address; empty when the legacy form omits it
	// Inbound and Outbound keep the order of the resource.
	Inbound  []Inbound
	Outbound []Outbound
	Origin   Origin
}

// NodeID identifies the dataplane; its String is the xDS node id
// `<mesh>.<name>`.
func (d *Dataplane) NodeID() NodeID { return NodeID{Mesh: d.Mesh, Name: d.Name} }

// Inbound is a port on which a dataplane accepts traffic for its service.
type Inbound struct {
	// Name is the inbound's `name` (Kuma 2.x), which a targetRef's
	// sectionName may select; empty when unnamed.
	Name        string
	Address     string // IP the dataplane listens on
	Port        uint32 // dataplane port
	ServicePort uint32 // port the application listens on, on localhost
	// Tags always contain TagService; `kuma.io/` spellings are normalised.
	Tags map[string]string
}

// Service is the inbound's `service` tag.
func (in Inbound) Service() string { return in.Tags[TagService] }

// Protocol is the inbound's `protocol` tag, ProtocolTCP when absent.
func (in Inbound) Protocol() string {
	if p := in.Tags[TagProtocol]; p != "" {
		return p
	}
	return ProtocolTCP
}

// HostPort is "address:port" of the dataplane side of the inbound.
func (in Inbound) HostPort() string {
	return net.JoinHostPort(in.Address, strconv.FormatUint(uint64(in.Port), 10))
}

// Outbound is a local port on which a dataplane offers another service.
type Outbound struct {
	Address string // defaults to 127.0.0.1
	Port    uint32
	Service string
}

// HostPort is "address:port" of the outbound listener.
func (out Outbound) HostPort() string {
	return net.JoinHostPort(out.Address, strconv.FormatUint(uint64(out.Port), 10))
}

// TrafficPermission is a validated, normalised TrafficPermission. The Kuma
// 0.3 form (top-level sources/destinations) becomes a single rule.
type TrafficPermission struct {
	Mesh   string
	Name   string
	Labels map[string]string
	Rules  []PermissionRule
	Origin Origin
}

// PermissionRule allows traffic from any source selector to any destination
// selector.
type PermissionRule struct {
	Sources      []Selector
	Destinations []Selector
}

// Selector is a `match` of tags; the value "*" matches any value, and a tag
// the selector does not name is not constrained.
type Selector map[string]string

// Matches reports whether tags satisfy every entry of the selector.
func (s Selector) Matches(tags map[string]string) bool {
	for k, want := range s {
		got, ok := tags[k]
		if !ok {
			return false
		}
		if want != "*" && want != got {
			return false
		}
	}
	return true
}

// Set is a validated policy set: every Mesh (the implicit default included),
// Dataplane and TrafficPermission of a tree, sorted by (mesh, name). A Set is
// immutable once returned by the loader and safe for concurrent readers.
type Set struct {
	Meshes             []*Mesh
	Dataplanes         []*Dataplane
	TrafficPermissions []*TrafficPermission
	// MeshTrafficPermissions are the Kuma 2.x permissions, sorted by (mesh,
	// name).
	MeshTrafficPermissions []*MeshTrafficPermission
	// MeshHTTPRoutes and MeshTCPRoutes are the Kuma 2.x routes, sorted by
	// (mesh, name).
	MeshHTTPRoutes []*MeshHTTPRoute `json:",omitempty"`
	MeshTCPRoutes  []*MeshTCPRoute  `json:",omitempty"`
	// Policies are the conf policies (MeshTimeout, MeshRetry, ...), sorted
	// by (type, mesh, name).
	Policies []*ConfPolicy `json:",omitempty"`
}

// Mesh returns the mesh with the given name, or nil.
func (s *Set) Mesh(name string) *Mesh {
	i := sort.Search(len(s.Meshes), func(i int) bool { return s.Meshes[i].Name >= name })
	if i < len(s.Meshes) && s.Meshes[i].Name == name {
		return s.Meshes[i]
	}
	return nil
}

// Dataplane returns the dataplane mesh/name, or nil.
func (s *Set) Dataplane(mesh, name string) *Dataplane {
	dps := s.DataplanesIn(mesh)
	i := sort.Search(len(dps), func(i int) bool { return dps[i].Name >= name })
	if i < len(dps) && dps[i].Name == name {
		return dps[i]
	}
	return nil
}

// DataplanesIn returns the dataplanes of a mesh, sorted by name. The slice
// shares the Set's storage and must not be modified.
func (s *Set) DataplanesIn(mesh string) []*Dataplane {
	lo := sort.Search(len(s.Dataplanes), func(i int) bool { return s.Dataplanes[i].Mesh >= mesh })
	hi := sort.Search(len(s.Dataplanes), func(i int) bool { return s.Dataplanes[i].Mesh > mesh })
	return s.Dataplanes[lo:hi]
}

// PermissionsIn returns the traffic permissions of a mesh, sorted by name.
// The slice shares the Set's storage and must not be modified.
func (s *Set) PermissionsIn(mesh string) []*TrafficPermission {
	tps := s.TrafficPermissions
	lo := sort.Search(len(tps), func(i int) bool { return tps[i].Mesh >= mesh })
	hi := sort.Search(len(tps), func(i int) bool { return tps[i].Mesh > mesh })
	return tps[lo:hi]
}

// Len is the number of declared resources (the implicit default mesh is not
// counted).
func (s *Set) Len() int {
	n := len(s.Dataplanes) + len(s.TrafficPermissions) + len(s.MeshTrafficPermissions) + len(s.MeshHTTPRoutes) + len(s.MeshTCPRoutes) + len(s.Policies)
	for _, m := range s.Meshes {
		if !m.Implicit {
			n++
		}
	}
	return n
}
