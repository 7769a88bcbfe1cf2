// Package xds turns a validated policy set into the resources each proxy
// runs, for Envoy or for a proxyless gRPC application. Translation is a
// pure, deterministic function of the set and its options: it never logs,
// touches a cache or reads the clock, so the same input yields
// byte-identical output.
package xds

import (
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// Flavor is the kind of data plane a node runs.
type Flavor string

// The data-plane flavours gitmesh serves. An Envoy proxy gets a listener
// per inbound and outbound, with certificates over SDS. A proxyless gRPC
// application gets a server listener per inbound, named by
// GRPCServerListenerName, and for each service it has an outbound to, the
// API listener, route configuration, cluster and endpoints it reaches when
// it dials xds:///<service>, all named <service>; it reads certificates
// through the certificate provider CertProviderInstance.
const (
	FlavorEnvoy Flavor = "envoy"
	FlavorGRPC  Flavor = "grpc"
)

// SDS secret names a proxy's resources reference when its mesh has mTLS. The
// snapshot is per proxy, so the names need not be unique across proxies (Kuma
// uses the same two names).
const (
	SecretIdentity = "identity_cert"
	SecretMeshCA   = "mesh_ca"
)

// Proxy is everything translation produces for one dataplane.
//
// Resources shared by several proxies of a mesh (a service's cluster, its
// endpoints and routes) are the same proto values in each Proxy: a Proxy and
// everything it holds are read-only once returned, and safe for concurrent
// readers.
type Proxy struct {
	NodeID    string // <mesh>.<dataplane>
	Mesh      string
	Dataplane string
	Flavor    Flavor
	// Resources holds the listeners, clusters, routes and endpoints by type
	// URL (resource.ListenerType, ...), each slice sorted by resource name.
	// Secrets are not here: they come from the mesh CA and carry their own
	// version, so a certificate renewal never changes Hash.
	Resources map[resource.Type][]types.Resource
	// Identities are the SPIFFE URI SANs the proxy's identity certificate must
	// carry (spiffe://<mesh>/<service>, one per service of its inbounds), in
	// sorted order; empty when the mesh has no mTLS.
	Identities []string
	// MTLS is true when the proxy's mesh has mTLS: the snapshot must then
	// carry the SDS secrets SecretIdentity and SecretMeshCA next to
	// Resources. An Envoy proxy's resources reference them; a gRPC proxy's
	// reference the certificate provider CertProviderInstance instead,
	// whose files an agent writes from those secrets, fetched over SDS.
	MTLS bool
	// Unsupported says, one line each, what of the dataplane's policies
	// this flavour cannot do and drops (gRPC: no RBAC shadow rules). The
	// resources are still correct for what the flavour supports.
	Unsupported []string
	// Hash is the hex SHA-256 of the deterministic encoding of Resources:
	// for each type in a fixed order, its URL and, for each resource, its
	// name and the SHA-256 of its deterministic proto encoding. Equal
	// resources give equal hashes, across processes and replicas.
	Hash string
	// TypeHashes holds, per type URL of Resources, the hash of that type's
	// resources alone, computed the same way: a commit that changes only a
	// proxy's endpoints changes only its endpoints' hash. Nil for a Proxy
	// built by hand, which then versions every type by Hash.
	TypeHashes map[resource.Type]string

	// digests holds the SHA-256 of each resource's deterministic encoding,
	// as Hash was computed from; nil for a Proxy built by hand.
	digests map[types.Resource][32]byte
	// sections are the names and digests Hash was computed from (nil for
	// a Proxy built by hand); Build keeps them in the Node.
	sections *sections
	// checked is set by Builder.Build once the proxy passed Check, before
	// anyone else can see it; never set afterwards.
	checked bool
	// typed holds the messages packed in the typed configs of the proxy's
	// own resources, as translation made them, for Check; Build drops it
	// once the proxy is checked.
	typed map[*anypb.Any]proto.Message
}

// Checked reports whether p passed Check when it was built (every proxy of
// a Translation has): a publisher need not check it again.
func (p *Proxy) Checked() bool { return p.checked }

// SecretNames are the SDS secrets the snapshot serving p must carry next to
// Resources: SecretIdentity and SecretMeshCA when p's mesh has mTLS, none
// otherwise, whatever p's flavour. Check verifies that the resources
// reference no other secret (and, for gRPC, none at all).
func (p *Proxy) SecretNames() []string {
	if !p.MTLS {
		return nil
	}
	return []string{SecretIdentity, SecretMeshCA}
}
