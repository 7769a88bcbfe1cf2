package xds

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
)

// Check verifies that p is something a proxy will accept: every resource is
// a named message of its type and, with every typed config packed inside
// it, passes its proto's ValidateAll; the resources make a go-control-plane
// snapshot; and every reference resolves: each cluster a
// listener or route names exists, each EDS cluster has its endpoints, each
// RDS name its route configuration, each SDS secret is SecretIdentity or
// SecretMeshCA in an Envoy proxy with mTLS, and each certificate provider
// is CertProviderInstance in a gRPC proxy with mTLS (an Envoy proxy uses no
// certificate provider, a gRPC proxy no SDS). Every route configuration and
// every endpoints resource must be referenced, api_listener (proxyless
// gRPC) included: what Snapshot.Consistent checks, which does not follow
// api_listener. The error joins every problem found, each naming the proxy
// and the resource.
//
// Check reads the typed configs of a translated proxy as translation made
// them, not from their encoding: a proxy is read-only once built.
func Check(p *Proxy) error { return NewChecker().Check(p) }

// Checker checks many proxies, validating each distinct resource object only
// once: translation shares a service's cluster, endpoints and routes among
// every proxy that uses them, and proxies' resources are read-only, so a
// resource that passed ValidateAll for one proxy passes for all. A Checker is
// not safe for concurrent use; use one per goroutine.
//
// A Checker kept across publishes also remembers results by content: a
// resource equal (by the digest of its deterministic encoding) to one
// validated before is not validated again, and a proxy whose structure (all
// but its endpoints' content) passed before needs only its endpoints
// validated. Call Release between publishes
// so that it does not keep the previous resources alive.
type Checker struct {
	// validated and typed hold what the Checker learnt of the values the
	// proxies of one Index share (see Index.isShared): the validation
	// result of each resource and typed config, and each typed config
	// unpacked. Nothing else is kept by pointer, so that checking many
	// proxies does not keep them all alive.
	validated map[any]error
	typed     map[*anypb.Any]proto.Message
	byDigest  map[[32]byte]error
	// passed holds the structureKey of the proxies that passed.
	passed map[string]bool

	// While one proxy is checked: its Index (nil for a proxy built by
	// hand, or checked outside a Build), and the typed configs of its own
	// unpacked so far.
	idx      *Index
	unpacked map[*anypb.Any]proto.Message
}

// maxDigests bounds the results a Checker remembers by content; past it,
// they are forgotten all at once.
const maxDigests = 1 << 20

// NewChecker returns an empty Checker.
func NewChecker() *Checker {
	return &Checker{validated: make(map[any]error), typed: make(map[*anypb.Any]proto.Message), byDigest: make(map[[32]byte]error),
		passed: make(map[string]bool), unpacked: make(map[*anypb.Any]proto.Message)}
}

// Release forgets the resources themselves and keeps the results by
// content.
func (k *Checker) Release() {
	clear(k.validated)
	clear(k.typed)
	if len(k.byDigest) > maxDigests {
		clear(k.byDigest)
	}
	if len(k.passed) > maxDigests {
		clear(k.passed)
	}
}

// structureKey identifies everything a check of p reads except the content
// of its endpoints: the listeners, clusters and routes (by their type
// hashes), the endpoints' names, whether p has mTLS, and its flavour. ""
// for a Proxy built by hand, whose hashes may not match its resources.
//
// A commit that only moves instances changes the endpoints of many proxies
// and nothing else of theirs; with this key their check is the validation
// of the new endpoints, which they share.
func structureKey(p *Proxy) string {
	if p.digests == nil || p.TypeHashes == nil {
		return ""
	}
	for typ := range p.Resources {
		switch typ {
		case resource.ListenerType, resource.ClusterType, resource.RouteType, resource.EndpointType:
		default:
			return "" // the whole check reports it
		}
	}
	h := sha256.New()
	for _, typ := range []resource.Type{resource.ListenerType, resource.ClusterType, resource.RouteType} {
		th, ok := p.TypeHashes[typ]
		if !ok && len(p.Resources[typ]) > 0 {
			return ""
		}
		h.Write([]byte(th))
	}
	for _, r := range p.Resources[resource.EndpointType] {
		name := cache.GetResourceName(r)
		h.Write([]byte{byte(len(name) >> 8), byte(len(name))})
		h.Write([]byte(name))
	}
	if p.MTLS {
		h.Write([]byte{1})
	}
	h.Write([]byte(p.Flavor))
	return string(h.Sum(nil))
}

// shared reports whether x is a value the proxies of the Index being
// checked share.
func (k *Checker) shared(p *Proxy, x any) bool { return k.idx.isShared(p.Mesh, x) }

// validate is ValidateAll of r and every config packed in it, remembered
// for a shared r and by digest.
func (k *Checker) validate(p *Proxy, r types.Resource) error {
	shared := k.shared(p, r)
	if shared {
		if err, done := k.validated[r]; done {
			return err
		}
	}
	d, hasDigest := p.digests[r]
	if hasDigest {
		if err, done := k.byDigest[d]; done {
			if shared {
				k.validated[r] = err
			}
			return err
		}
	}
	err := k.validateDeep(p, r)
	if shared {
		k.validated[r] = err
	}
	if hasDigest {
		k.byDigest[d] = err
	}
	return err
}

// validateDeep runs ValidateAll on m and on every message packed in an Any
// anywhere inside it, which ValidateAll alone does not look into.
func (k *Checker) validateDeep(p *Proxy, m proto.Message) error {
	if v, ok := m.(validator); ok {
		if err := v.ValidateAll(); err != nil {
			return err
		}
	}
	return k.validateAnysIn(p, m)
}

// validateAnysIn validates the config packed in every Any inside m. The
// Anys inside a shared message are validated once: ValidateAll of the
// message holding it has looked at the rest.
func (k *Checker) validateAnysIn(p *Proxy, m proto.Message) error {
	var errs []error
	walkAnys(m.ProtoReflect(), func(a *anypb.Any) {
		if err := k.validateAny(p, a); err != nil {
			errs = append(errs, fmt.Errorf("typed config %s: %w", a.GetTypeUrl(), err))
		}
	}, func(sub proto.Message) bool {
		if !k.shared(p, sub) {
			return false
		}
		err, done := k.validated[sub]
		if !done {
			err = k.validateAnysIn(p, sub)
			k.validated[sub] = err
		}
		if err != nil {
			errs = append(errs, err)
		}
		return true
	})
	return errors.Join(errs...)
}

// validateAny validates the config packed in a, once for a shared a.
func (k *Checker) validateAny(p *Proxy, a *anypb.Any) error {
	shared := k.shared(p, a)
	if shared {
		if err, done := k.validated[a]; done {
			return err
		}
	}
	inner, err := k.unpack(p, a)
	if err == nil {
		err = k.validateDeep(p, inner)
	}
	if shared {
		k.validated[a] = err
	}
	return err
}

// unpack is the message packed in a, unpacked once per Index for a shared
// a and once per check otherwise. The result is read-only.
func (k *Checker) unpack(p *Proxy, a *anypb.Any) (proto.Message, error) {
	if m, ok := p.typed[a]; ok {
		return m, nil
	}
	cache := k.unpacked
	if k.shared(p, a) {
		cache = k.typed
	}
	if m, ok := cache[a]; ok {
		return m, nil
	}
	m, err := a.UnmarshalNew()
	if err != nil {
		return nil, err
	}
	cache[a] = m
	return m, nil
}

// Check is the package-level Check, sharing validation results with earlier
// calls on k.
func (k *Checker) Check(p *Proxy) error { return k.checkIn(nil, p) }

// checkIn checks p, a proxy translated from idx: what idx shares is
// validated once for all the proxies k checks until Release.
func (k *Checker) checkIn(idx *Index, p *Proxy) error {
	k.idx = idx
	defer func() {
		k.idx = nil
		clear(k.unpacked)
	}()
	key := structureKey(p)
	if key != "" && k.passed[key] && k.endpointsValid(p) {
		return nil
	}
	err := k.check(p)
	if err == nil && key != "" {
		k.passed[key] = true
	}
	return err
}

// endpointsValid reports whether p's endpoints are all named messages of
// their type that pass validation: with a known-good structure, the rest of
// the check. False sends p through the whole check, for its errors.
func (k *Checker) endpointsValid(p *Proxy) bool {
	for _, r := range p.Resources[resource.EndpointType] {
		if r == nil || resource.APITypePrefix+string(r.ProtoReflect().Descriptor().FullName()) != resource.EndpointType {
			return false
		}
		if k.validate(p, r) != nil {
			return false
		}
	}
	return true
}

func (k *Checker) check(p *Proxy) error {
	c := checker{
		k:     k,
		p:     p,
		names: make(map[resource.Type]map[string]bool),
		refs:  make(map[resource.Type]map[string]bool),
	}
	for _, typ := range resourceTypes() {
		seen := make(map[string]bool)
		c.names[typ] = seen
		for i, r := range p.Resources[typ] {
			name := cache.GetResourceName(r)
			switch {
			case r == nil:
				c.failAt(typ, i, "is nil")
				continue
			case resource.APITypePrefix+string(r.ProtoReflect().Descriptor().FullName()) != typ:
				c.fail(typ, name, fmt.Errorf("has type %s", r.ProtoReflect().Descriptor().FullName()))
				continue
			case name == "":
				c.failAt(typ, i, "has no name")
				continue
			case seen[name]:
				c.fail(typ, name, errors.New("appears twice"))
			}
			seen[name] = true
			if err := k.validate(p, r); err != nil {
				c.fail(typ, name, err)
			}
		}
	}
	for typ := range p.Resources {
		if cache.GetResponseType(typ) == types.UnknownType || typ == resource.SecretType {
			c.errs = append(c.errs, fmt.Errorf("proxy %s: unexpected resource type %s", p.NodeID, typ))
		}
	}
	for _, r := range p.Resources[resource.ListenerType] {
		if l, ok := r.(*listenerv3.Listener); ok {
			c.listener(l)
		}
	}
	for _, r := range p.Resources[resource.ClusterType] {
		if cl, ok := r.(*clusterv3.Cluster); ok {
			c.cluster(cl)
		}
	}
	for _, r := range p.Resources[resource.RouteType] {
		if rc, ok := r.(*routev3.RouteConfiguration); ok {
			c.route(rc)
		}
	}
	for _, typ := range []resource.Type{resource.RouteType, resource.EndpointType} {
		for _, r := range p.Resources[typ] {
			if name := cache.GetResourceName(r); name != "" && !c.refs[typ][name] {
				c.fail(typ, name, errors.New("is referenced by nothing"))
			}
		}
	}
	// The references checked above are what Snapshot.Consistent checks
	// (every route and endpoints resource referenced, every reference
	// present), api_listener included, which it does not follow; the type
	// URLs what NewSnapshot does.
	return errors.Join(c.errs...)
}

// checker accumulates the problems of one proxy.
type checker struct {
	k     *Checker
	p     *Proxy
	names map[resource.Type]map[string]bool // resources present
	refs  map[resource.Type]map[string]bool // resources referenced
	errs  []error
}

func (c *checker) fail(typ resource.Type, name string, err error) {
	c.errs = append(c.errs, fmt.Errorf("proxy %s: %s %q: %w", c.p.NodeID, typeName(typ), name, err))
}

// failAt records a failure of the resource at index i of its type, for
// resources without a name.
func (c *checker) failAt(typ resource.Type, i int, problem string) {
	c.errs = append(c.errs, fmt.Errorf("proxy %s: %s %d %s", c.p.NodeID, typeName(typ), i, problem))
}

// need records that resource name of type typ references ref of type
// refTyp, and a failure unless ref exists.
func (c *checker) need(typ resource.Type, name string, refTyp resource.Type, ref string) {
	if c.refs[refTyp] == nil {
		c.refs[refTyp] = make(map[string]bool)
	}
	c.refs[refTyp][ref] = true
	if !c.names[refTyp][ref] {
		c.fail(typ, name, fmt.Errorf("references %s %q, which does not exist", typeName(refTyp), ref))
	}
}

func (c *checker) listener(l *listenerv3.Listener) {
	typ := resource.ListenerType
	chains := append([]*listenerv3.FilterChain{}, l.GetFilterChains()...)
	if l.GetDefaultFilterChain() != nil {
		chains = append(chains, l.GetDefaultFilterChain())
	}
	for _, fc := range chains {
		for _, f := range fc.GetFilters() {
			c.filter(l.GetName(), f.GetTypedConfig())
		}
		ts := fc.GetTransportSocket()
		if ts == nil {
			if c.p.MTLS && l.GetTrafficDirection() == corev3.TrafficDirection_INBOUND {
				c.fail(typ, l.GetName(), errors.New("inbound listener without TLS in a mesh with mTLS"))
			}
			continue
		}
		m, err := c.k.unpack(c.p, ts.GetTypedConfig())
		dtc, ok := m.(*tlsv3.DownstreamTlsContext)
		if err == nil && !ok {
			err = fmt.Errorf("has type %s, want a DownstreamTlsContext", ts.GetTypedConfig().GetTypeUrl())
		}
		if err != nil {
			c.fail(typ, l.GetName(), fmt.Errorf("transport socket: %w", err))
			continue
		}
		c.secrets(typ, l.GetName(), dtc.GetCommonTlsContext())
	}
	if api := l.GetApiListener().GetApiListener(); api != nil {
		c.filter(l.GetName(), api)
	}
}

// filter checks the references of a network filter's typed config.
func (c *checker) filter(listener string, config *anypb.Any) {
	typ := resource.ListenerType
	if !config.MessageIs((*tcpproxyv3.TcpProxy)(nil)) && !config.MessageIs((*hcmv3.HttpConnectionManager)(nil)) {
		return
	}
	m, err := c.k.unpack(c.p, config)
	if err != nil {
		c.fail(typ, listener, err)
		return
	}
	switch m := m.(type) {
	case *tcpproxyv3.TcpProxy:
		if cl := m.GetCluster(); cl != "" {
			c.need(typ, listener, resource.ClusterType, cl)
		}
		for _, wc := range m.GetWeightedClusters().GetClusters() {
			c.need(typ, listener, resource.ClusterType, wc.GetName())
		}
	case *hcmv3.HttpConnectionManager:
		hcm := m
		if rds := hcm.GetRds(); rds != nil {
			if rds.GetConfigSource().GetAds() == nil {
				c.fail(typ, listener, fmt.Errorf("RDS %q not over ADS", rds.GetRouteConfigName()))
			}
			c.need(typ, listener, resource.RouteType, rds.GetRouteConfigName())
		}
		if rc := hcm.GetRouteConfig(); rc != nil {
			c.routeClusters(typ, listener, rc)
		}
		filters := hcm.GetHttpFilters()
		if n := len(filters); n == 0 || filters[n-1].GetName() != "envoy.filters.http.router" {
			c.fail(typ, listener, errors.New("HTTP filters do not end with the router"))
		}
	}
}

func (c *checker) cluster(cl *clusterv3.Cluster) {
	typ := resource.ClusterType
	if cl.GetType() == clusterv3.Cluster_EDS {
		eds := cl.GetEdsClusterConfig()
		if eds.GetEdsConfig().GetAds() == nil {
			c.fail(typ, cl.GetName(), errors.New("EDS not over ADS"))
		}
		name := eds.GetServiceName()
		if name == "" {
			name = cl.GetName()
		}
		c.need(typ, cl.GetName(), resource.EndpointType, name)
	}
	ts := cl.GetTransportSocket()
	if ts == nil {
		return
	}
	m, err := c.k.unpack(c.p, ts.GetTypedConfig())
	utc, ok := m.(*tlsv3.UpstreamTlsContext)
	if err == nil && !ok {
		err = fmt.Errorf("has type %s, want an UpstreamTlsContext", ts.GetTypedConfig().GetTypeUrl())
	}
	if err != nil {
		c.fail(typ, cl.GetName(), fmt.Errorf("transport socket: %w", err))
		return
	}
	c.secrets(typ, cl.GetName(), utc.GetCommonTlsContext())
}

func (c *checker) route(rc *routev3.RouteConfiguration) {
	c.routeClusters(resource.RouteType, rc.GetName(), rc)
}

// routeClusters checks that every cluster rc routes to exists; owner is
// the resource holding rc (itself, or a listener with an inline route).
func (c *checker) routeClusters(typ resource.Type, owner string, rc *routev3.RouteConfiguration) {
	for _, vh := range rc.GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			a := r.GetRoute()
			if a == nil {
				continue
			}
			if cl := a.GetCluster(); cl != "" {
				c.need(typ, owner, resource.ClusterType, cl)
			}
			for _, wc := range a.GetWeightedClusters().GetClusters() {
				c.need(typ, owner, resource.ClusterType, wc.GetName())
			}
			for _, mp := range a.GetRequestMirrorPolicies() {
				c.need(typ, owner, resource.ClusterType, mp.GetCluster())
			}
		}
	}
}

// secrets checks where a TLS context takes its certificates from: SDS
// secrets for Envoy, the certificate provider CertProviderInstance for gRPC
// (which rejects SDS; Envoy's bootstrap defines no certificate provider).
func (c *checker) secrets(typ resource.Type, name string, ctx *tlsv3.CommonTlsContext) {
	grpc := c.p.Flavor == FlavorGRPC
	refs := append([]*tlsv3.SdsSecretConfig{}, ctx.GetTlsCertificateSdsSecretConfigs()...)
	if v := ctx.GetValidationContextSdsSecretConfig(); v != nil {
		refs = append(refs, v)
	}
	if v := ctx.GetCombinedValidationContext().GetValidationContextSdsSecretConfig(); v != nil {
		refs = append(refs, v)
	}
	for _, ref := range refs {
		switch {
		case grpc:
			c.fail(typ, name, fmt.Errorf("references secret %q: gRPC takes certificates from a certificate provider, not SDS", ref.GetName()))
		case !c.p.MTLS:
			c.fail(typ, name, fmt.Errorf("references secret %q in a mesh without mTLS", ref.GetName()))
		case ref.GetName() != SecretIdentity && ref.GetName() != SecretMeshCA:
			c.fail(typ, name, fmt.Errorf("references unknown secret %q", ref.GetName()))
		case ref.GetSdsConfig().GetAds() == nil:
			c.fail(typ, name, fmt.Errorf("secret %q not over ADS", ref.GetName()))
		}
	}
	var providers []*tlsv3.CertificateProviderPluginInstance
	for _, pi := range []*tlsv3.CertificateProviderPluginInstance{
		ctx.GetTlsCertificateProviderInstance(),
		ctx.GetValidationContext().GetCaCertificateProviderInstance(),
		ctx.GetCombinedValidationContext().GetDefaultValidationContext().GetCaCertificateProviderInstance(),
	} {
		if pi != nil {
			providers = append(providers, pi)
		}
	}
	for _, pi := range providers {
		switch {
		case !grpc:
			c.fail(typ, name, fmt.Errorf("uses certificate provider %q in an Envoy proxy, which takes certificates over SDS", pi.GetInstanceName()))
		case !c.p.MTLS:
			c.fail(typ, name, fmt.Errorf("uses certificate provider %q in a mesh without mTLS", pi.GetInstanceName()))
		case pi.GetInstanceName() != CertProviderInstance:
			c.fail(typ, name, fmt.Errorf("uses unknown certificate provider %q", pi.GetInstanceName()))
		}
	}
}

// validator is what protoc-gen-validate generates for each message.
type validator interface{ ValidateAll() error }

// walkAnys calls fn for each Any directly or indirectly inside m, except
// inside other Anys (validateDeep recurses into those after unpacking), and
// except inside a message for which skip returns true. It looks only at
// the fields whose type can hold an Any (anyFields).
func walkAnys(m protoreflect.Message, fn func(*anypb.Any), skip func(proto.Message) bool) {
	for _, fd := range anyFields(m.Descriptor()) {
		if !m.Has(fd) {
			continue
		}
		v := m.Get(fd)
		switch {
		case fd.IsList():
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				visit(l.Get(i).Message(), fn, skip)
			}
		case fd.IsMap():
			v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
				visit(mv.Message(), fn, skip)
				return true
			})
		default:
			visit(v.Message(), fn, skip)
		}
	}
}

// fieldsHoldingAny remembers anyFields by message type.
var fieldsHoldingAny sync.Map // protoreflect.FullName -> []protoreflect.FieldDescriptor

// anyFields are the fields of md whose type can hold an Any (mayHoldAny).
func anyFields(md protoreflect.MessageDescriptor) []protoreflect.FieldDescriptor {
	if v, ok := fieldsHoldingAny.Load(md.FullName()); ok {
		return v.([]protoreflect.FieldDescriptor)
	}
	var out []protoreflect.FieldDescriptor
	fields := md.Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		sub := fd.Message()
		if fd.IsMap() {
			sub = fd.MapValue().Message()
		}
		if sub != nil && mayHoldAny(sub) {
			out = append(out, fd)
		}
	}
	fieldsHoldingAny.Store(md.FullName(), out)
	return out
}

func visit(m protoreflect.Message, fn func(*anypb.Any), skip func(proto.Message) bool) {
	msg := m.Interface()
	if a, ok := msg.(*anypb.Any); ok {
		fn(a)
		return
	}
	if skip(msg) {
		return
	}
	walkAnys(m, fn, skip)
}

// anyHolders remembers, by message type, whether a message of the type can
// hold an Any in some field, directly or through other messages.
var anyHolders sync.Map // protoreflect.FullName -> bool

var anyName = (&anypb.Any{}).ProtoReflect().Descriptor().FullName()

// mayHoldAny reports whether a message of type md is, or can hold, an Any:
// whether the type graph leads from md to Any. Remembered per type.
func mayHoldAny(md protoreflect.MessageDescriptor) bool {
	if v, ok := anyHolders.Load(md.FullName()); ok {
		return v.(bool)
	}
	seen := map[protoreflect.FullName]bool{md.FullName(): true}
	queue := []protoreflect.MessageDescriptor{md}
	found := false
	for len(queue) > 0 && !found {
		m := queue[0]
		queue = queue[1:]
		if m.FullName() == anyName {
			found = true
			break
		}
		fields := m.Fields()
		for i := 0; i < fields.Len(); i++ {
			fd := fields.Get(i)
			sub := fd.Message()
			if fd.IsMap() {
				sub = fd.MapValue().Message()
			}
			if sub != nil && !seen[sub.FullName()] {
				seen[sub.FullName()] = true
				queue = append(queue, sub)
			}
		}
	}
	anyHolders.Store(md.FullName(), found)
	return found
}

// Compile-time checks that the resources translation emits are validated.
var (
	_ validator = (*listenerv3.Listener)(nil)
	_ validator = (*clusterv3.Cluster)(nil)
	_ validator = (*routev3.RouteConfiguration)(nil)
	_ validator = (*endpointv3.ClusterLoadAssignment)(nil)
)
