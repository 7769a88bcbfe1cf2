package xds

// How each conf policy kind reaches the resources. A kind registers, in
// its own file, what it does at each place a merged conf applies:
//
//   - cluster: a destination service's cluster, per flavour (its to[]
//     items, merged for the destination);
//   - outbound: the calls of one outbound (its to[] items): route actions,
//     the HTTP connection manager or tcp_proxy of an Envoy outbound, the
//     HTTP filters of a gRPC client;
//   - inbound: one inbound's listener (its from[] and rules[] items that
//     apply to every client);
//   - proxy: the whole proxy once its inbounds and outbounds are made, given
//     the mesh's policies of the kind (none, for what a Mesh's own sections
//     configure): every HTTP connection manager and tcp_proxy of the proxy,
//     each its own copy to edit, and the clusters and listeners it adds.
//     What depends on the proxy itself (its address, its service, the
//     collector cluster every filter names) belongs here, not in the
//     outbound values the proxies of an Index share.
//
// Each says what its flavour cannot apply in notes, which become the
// proxy's unsupported list.

import (
	"math"
	"slices"
	"sort"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"

	"github.com/gitmesh/gitmesh/schema"
)

// clusterEdit is a destination cluster being made.
type clusterEdit struct {
	cluster *clusterv3.Cluster
	flavor  Flavor
	// http says that the destination speaks HTTP (Kuma sets HTTP cluster
	// options for it only); grpc that it speaks gRPC and that its Envoy
	// cluster speaks HTTP/2.
	http, grpc bool
	notes      []string
}

// outboundEdit is the calls of one outbound being made.
type outboundEdit struct {
	flavor  Flavor
	out     string // "outbound <service>", for notes
	service *service
	// actions are the route actions (HTTP, and every gRPC outbound); hcm
	// the Envoy HTTP connection manager (HTTP), tcp the Envoy tcp_proxy
	// (TCP); grpcFilters the HTTP filters a gRPC client runs before its
	// router.
	actions     []*routev3.RouteAction
	hcm         *hcmv3.HttpConnectionManager
	tcp         *tcpproxyv3.TcpProxy
	grpcFilters []*hcmv3.HttpFilter
	notes       []string
}

// inboundEdit is one inbound's listener being made.
type inboundEdit struct {
	flavor Flavor
	dp     *schema.Dataplane
	in     schema.Inbound
	conf   inboundConf // what applies
	// hcm and action are an Envoy HTTP inbound's connection manager and
	// route action; tcp an Envoy TCP inbound's tcp_proxy. httpFilters run
	// after RBAC and before the router; networkFilters after RBAC and
	// before the tcp_proxy (TCP), before the connection manager (HTTP).
	hcm            *hcmv3.HttpConnectionManager
	action         *routev3.RouteAction
	tcp            *tcpproxyv3.TcpProxy
	httpFilters    []*hcmv3.HttpFilter
	networkFilters []*listenerv3.Filter
	notes          []string
}

// confApplier is what one conf policy kind does; nil functions do nothing.
type confApplier struct {
	typ      string
	cluster  func(e *clusterEdit, c schema.Conf) error
	outbound func(e *outboundEdit, c schema.Conf) error
	inbound  func(e *inboundEdit, c schema.Conf) error
	proxy    func(e *proxyEdit, policies []*schema.ConfPolicy) error
	// h2 says whether a to[] item (its default) needs the cluster of a
	// gRPC service it names to speak HTTP/2 on Envoy; outbound kinds
	// always do.
	h2 func(conf map[string]any) bool
}

// appliers are the registered kinds in the order they run: Kuma's plugin
// order, so that where two kinds set the same field (MeshHealthCheck's and
// MeshCircuitBreaker's panic threshold) the one Kuma applies last wins.
var appliers []*confApplier

// kumaOrder is each kind's `+kuma:policy:order` in Kuma 2.14; a kind
// without one runs after them, by type.
var kumaOrder = map[string]int{
	schema.TypeMeshLoadBalancingStrategy: 400,
	schema.TypeMeshAccessLog:             600,
	schema.TypeMeshTrace:                 700,
	schema.TypeMeshFaultInjection:        800,
	schema.TypeMeshRateLimit:             900,
	schema.TypeMeshTimeout:               1000,
	schema.TypeMeshHealthCheck:           1200,
	schema.TypeMeshCircuitBreaker:        1300,
	schema.TypeMeshRetry:                 1400,
	schema.TypeMeshMetric:                1500,
}

func registerApplier(a *confApplier) {
	appliers = append(appliers, a)
	order := func(typ string) int {
		if o, ok := kumaOrder[typ]; ok {
			return o
		}
		return math.MaxInt
	}
	sort.Slice(appliers, func(i, j int) bool {
		oi, oj := order(appliers[i].typ), order(appliers[j].typ)
		return oi < oj || (oi == oj && appliers[i].typ < appliers[j].typ)
	})
	clusterKinds, outboundKinds = nil, nil
	for _, a := range appliers {
		if a.cluster != nil {
			clusterKinds = append(clusterKinds, a.typ)
		}
		if a.outbound != nil {
			outboundKinds = append(outboundKinds, a.typ)
		}
	}
}

// clusterKinds and outboundKinds are the types whose applier edits
// clusters, and outbounds, in the order appliers run; set as kinds
// register, read on every translation.
var clusterKinds, outboundKinds []string

// outboundConf is the merged to[] conf of one outbound, by type.
type outboundConf map[string]schema.Conf

func (ci *confIndex) outbound(dp *schema.Dataplane, service string) outboundConf {
	var oc outboundConf
	for _, typ := range outboundKinds {
		if c := schema.ToConf(ci.byType[typ], dp, service); !c.Empty() {
			if oc == nil {
				oc = outboundConf{}
			}
			oc[typ] = c
		}
	}
	return oc
}

// apply runs the outbound appliers of the kinds in oc.
func (e *outboundEdit) apply(oc outboundConf) error {
	for _, a := range appliers {
		if c, ok := oc[a.typ]; ok && a.outbound != nil {
			if err := a.outbound(e, c); err != nil {
				return err
			}
		}
	}
	return nil
}

// inboundConf is the merged from[] and rules[] conf of one inbound, by
// type.
type inboundConf map[string]schema.Conf

// inbound merges, for inbound i of dp, the items of every kind with an
// inbound applier; nil when none has any.
func (ci *confIndex) inbound(dp *schema.Dataplane, i int) inboundConf {
	if ci.none() {
		return nil
	}
	var ic inboundConf
	for _, a := range appliers {
		if a.inbound == nil {
			continue
		}
		if c := schema.FromConf(ci.byType[a.typ], dp, i); !c.Empty() {
			if ic == nil {
				ic = inboundConf{}
			}
			ic[a.typ] = c
		}
	}
	return ic
}

// apply runs the inbound appliers of the kinds in e.conf.
func (e *inboundEdit) apply() error {
	for _, a := range appliers {
		if c, ok := e.conf[a.typ]; ok && a.inbound != nil {
			if err := a.inbound(e, c); err != nil {
				return err
			}
		}
	}
	return nil
}

func addNotes(list []string, notes ...string) []string {
	for _, n := range notes {
		if !slices.Contains(list, n) {
			list = append(list, n)
		}
	}
	return list
}
