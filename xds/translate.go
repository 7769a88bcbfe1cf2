package xds

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/gitmesh/gitmesh/schema"
)

// Options tune a translation. The zero value translates for Envoy.
type Options struct {
	// Flavor is the data plane the resources are for; empty means
	// FlavorEnvoy.
	Flavor Flavor
	// unhashed leaves Hash and TypeHashes empty, for a proxy that is
	// checked and dropped (BuilderOptions.CheckOnly).
	unhashed bool
}

func (o Options) flavor() Flavor {
	if o.Flavor == "" {
		return FlavorEnvoy
	}
	return o.Flavor
}

// ErrUnsupportedFlavor is returned (wrapped) for a flavour other than
// FlavorEnvoy and FlavorGRPC.
var ErrUnsupportedFlavor = errors.New("unknown flavour")

// resourceTypes are the types a Proxy carries, in the order Hash and Check
// visit them; the listenerIdx... constants index it.
func resourceTypes() [numTypes]resource.Type {
	return [numTypes]resource.Type{
		resource.ListenerType,
		resource.ClusterType,
		resource.RouteType,
		resource.EndpointType,
	}
}

// Translate translates every dataplane of set, sorted by node id. It builds
// the Index once; callers that re-translate a few proxies should keep an
// Index and call TranslateProxy instead.
func Translate(set *schema.Set, opts Options) ([]*Proxy, error) {
	idx, err := NewIndex(set)
	if err != nil {
		return nil, err
	}
	proxies := make([]*Proxy, 0, len(set.Dataplanes))
	var b builder
	for _, dp := range set.Dataplanes {
		p, err := b.proxy(idx, dp, opts)
		if err != nil {
			return nil, err
		}
		proxies = append(proxies, p)
	}
	sort.Slice(proxies, func(i, j int) bool { return proxies[i].NodeID < proxies[j].NodeID })
	return proxies, nil
}

// TranslateProxy translates one dataplane of the Set idx was built from.
// It reads idx and never modifies it, so calls may run concurrently.
func TranslateProxy(idx *Index, dp *schema.Dataplane, opts Options) (*Proxy, error) {
	var b builder
	return b.proxy(idx, dp, opts)
}

// builder holds scratch space reused across the proxies of one Translate
// call; it never outlives the call and is not shared between goroutines.
type builder struct {
	buf     []byte  // marshalling buffer for hashes
	entries []entry // scratch for the types hashed and not kept
}

func (b *builder) proxy(idx *Index, dp *schema.Dataplane, opts Options) (*Proxy, error) {
	node := dp.NodeID().String()
	flavor := opts.flavor()
	if flavor != FlavorEnvoy && flavor != FlavorGRPC {
		return nil, fmt.Errorf("translate %s: %w %q", node, ErrUnsupportedFlavor, flavor)
	}
	mi := idx.meshes[dp.Mesh]
	if mi == nil {
		return nil, fmt.Errorf("translate %s: mesh %q does not exist", node, dp.Mesh)
	}
	p := &Proxy{
		NodeID:    node,
		Mesh:      dp.Mesh,
		Dataplane: dp.Name,
		Flavor:    flavor,
		MTLS:      mi.mesh.MTLS.Enabled,
	}
	var rs resourceSet
	if flavor == FlavorGRPC {
		if err := rs.addGRPC(mi, dp); err != nil {
			return nil, fmt.Errorf("translate %s: %w", node, err)
		}
	} else {
		if err := rs.addInbounds(mi, dp); err != nil {
			return nil, fmt.Errorf("translate %s: %w", node, err)
		}
		if err := rs.addOutbounds(mi, dp); err != nil {
			return nil, fmt.Errorf("translate %s: %w", node, err)
		}
	}
	if err := rs.applyProxy(mi, dp, flavor); err != nil {
		return nil, fmt.Errorf("translate %s: %w", node, err)
	}
	p.Resources, p.typed, p.Unsupported = rs.sorted(), rs.typed, rs.unsupported
	if p.MTLS {
		p.Identities = identities(dp)
	}
	if opts.unhashed {
		return p, nil
	}
	h, digests, perType, secs, err := b.hash(&rs)
	if err != nil {
		return nil, fmt.Errorf("translate %s: %w", node, err)
	}
	p.Hash, p.TypeHashes, p.digests, p.sections = h, perType, digests, secs
	return p, nil
}

// named is a resource with its name and, for resources shared across
// proxies, the digest computed once by the Index (nil otherwise).
type named struct {
	name   string
	res    types.Resource
	digest *[32]byte
}

// resourceSet collects one proxy's resources, rejecting two different
// resources of one type under one name.
type resourceSet struct {
	// unsupported is what the proxy's flavour drops (Proxy.Unsupported).
	unsupported []string
	byType      [numTypes][]named
	// typed holds the message packed in each typed config of the proxy's
	// own (not shared) resources, so that Check reads it without
	// unpacking.
	typed map[*anypb.Any]proto.Message
}

// filter is a network filter packing config, recorded in rs.typed.
func (rs *resourceSet) filter(name string, config proto.Message) (*listenerv3.Filter, error) {
	f, err := networkFilter(name, config)
	if err != nil {
		return nil, err
	}
	if rs.typed == nil {
		rs.typed = make(map[*anypb.Any]proto.Message, 2)
	}
	rs.typed[f.GetTypedConfig()] = config
	return f, nil
}

func (rs *resourceSet) add(typ int, name string, r types.Resource, digest *[32]byte) error {
	for _, n := range rs.byType[typ] {
		if n.name == name {
			if n.res == r {
				return nil // the same shared resource, referenced twice
			}
			return fmt.Errorf("two %s resources named %q", typeName(resourceTypes()[typ]), name)
		}
	}
	rs.byType[typ] = append(rs.byType[typ], named{name: name, res: r, digest: digest})
	return nil
}

// sorted sorts each type's resources by name and returns them by type URL.
func (rs *resourceSet) sorted() map[resource.Type][]types.Resource {
	out := make(map[resource.Type][]types.Resource, numTypes)
	for i, typ := range resourceTypes() {
		ns := rs.byType[i]
		sort.Slice(ns, func(a, b int) bool { return ns[a].name < ns[b].name })
		list := make([]types.Resource, len(ns))
		for j, n := range ns {
			list[j] = n.res
		}
		out[typ] = list
	}
	return out
}

// Indexes into resourceTypes and resourceSet.byType.
const (
	listenerIdx = iota
	clusterIdx
	routeIdx
	endpointIdx
	numTypes
)

// typeName is the short name of a resource type for messages.
func typeName(typ resource.Type) string {
	switch typ {
	case resource.ListenerType:
		return "listener"
	case resource.ClusterType:
		return "cluster"
	case resource.RouteType:
		return "route"
	case resource.EndpointType:
		return "endpoints"
	case resource.SecretType:
		return "secret"
	}
	return typ
}

// identities are the sorted distinct SPIFFE ids of dp's inbound services.
func identities(dp *schema.Dataplane) []string {
	var ids []string
	for _, in := range dp.Inbound {
		id := SpiffeID(dp.Mesh, in.Service())
		if !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids
}

// SpiffeID is the URI SAN of a service's certificates: spiffe://<mesh>/<service>.
func SpiffeID(mesh, service string) string { return "spiffe://" + mesh + "/" + service }

// InboundName names the listener (and, for HTTP, the route configuration) of
// an inbound: inbound:<ip>:<dataplane-port>.
func InboundName(in schema.Inbound) string { return "inbound:" + in.HostPort() }

// OutboundName names the listener of an outbound: outbound:<ip>:<port>.
func OutboundName(out schema.Outbound) string { return "outbound:" + out.HostPort() }

// LocalClusterName names the static cluster that reaches an application on
// its service port: localhost:<service-port>.
func LocalClusterName(servicePort uint32) string {
	return "localhost:" + strconv.FormatUint(uint64(servicePort), 10)
}

// OutboundRouteName names the route configuration of an HTTP outbound to a
// service: outbound:<service>. Every outbound to the service shares it.
func OutboundRouteName(service string) string { return "outbound:" + service }
