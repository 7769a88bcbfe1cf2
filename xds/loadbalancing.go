package xds

import (
	"fmt"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/gitmesh/gitmesh/schema"
)

// MeshLoadBalancingStrategy: the algorithm is the cluster's lb_policy, the
// hash policies the outbound's route hash_policy, as Kuma sets them.
// gRPC-Go takes round robin, least request (gRFC A48) and ring hash with
// xxHash (gRFC A42), hashing on headers; it rejects a cluster with another
// policy, so those get the nearest it takes, and a note.
func init() {
	registerApplier(&confApplier{typ: schema.TypeMeshLoadBalancingStrategy, cluster: lbCluster, outbound: lbOutbound})
}

func decodeLB(c schema.Conf) (*schema.LoadBalancing, error) {
	lb := &schema.LoadBalancing{}
	return lb, c.Decode(lb)
}

func lbCluster(e *clusterEdit, c schema.Conf) error {
	lb, err := decodeLB(c)
	if err != nil {
		return err
	}
	l := lb.LoadBalancer
	if l == nil {
		return nil
	}
	cl, grpc := e.cluster, e.flavor == FlavorGRPC
	note := func(what string) {
		e.notes = append(e.notes, fmt.Sprintf("cluster %s: proxyless gRPC has no MeshLoadBalancingStrategy %s", cl.GetName(), what))
	}
	switch l.Type {
	case "RoundRobin":
		cl.LbPolicy = clusterv3.Cluster_ROUND_ROBIN
	case "Random":
		if grpc {
			note("Random: it balances round robin")
			cl.LbPolicy = clusterv3.Cluster_ROUND_ROBIN
			break
		}
		cl.LbPolicy = clusterv3.Cluster_RANDOM
	case "LeastRequest":
		cl.LbPolicy = clusterv3.Cluster_LEAST_REQUEST
		if lr := l.LeastRequest; lr != nil {
			cfg := &clusterv3.Cluster_LeastRequestLbConfig{}
			if lr.ChoiceCount != nil {
				cfg.ChoiceCount = wrapperspb.UInt32(*lr.ChoiceCount)
			}
			if lr.ActiveRequestBias != nil {
				if grpc {
					note("leastRequest.activeRequestBias")
				} else {
					cfg.ActiveRequestBias = &corev3.RuntimeDouble{DefaultValue: float64(*lr.ActiveRequestBias)}
				}
			}
			cl.LbConfig = &clusterv3.Cluster_LeastRequestLbConfig_{LeastRequestLbConfig: cfg}
		}
	case "RingHash":
		cfg := &clusterv3.Cluster_RingHashLbConfig{HashFunction: clusterv3.Cluster_RingHashLbConfig_XX_HASH}
		if rh := l.RingHash; rh != nil {
			if rh.HashFunction == "MurmurHash2" {
				if grpc {
					note("MurmurHash2: its ring hashes with xxHash")
				} else {
					cfg.HashFunction = clusterv3.Cluster_RingHashLbConfig_MURMUR_HASH_2
				}
			}
			if rh.MinRingSize != nil {
				cfg.MinimumRingSize = wrapperspb.UInt64(uint64(*rh.MinRingSize))
			}
			if rh.MaxRingSize != nil {
				cfg.MaximumRingSize = wrapperspb.UInt64(uint64(*rh.MaxRingSize))
			}
		}
		cl.LbPolicy, cl.LbConfig = clusterv3.Cluster_RING_HASH, &clusterv3.Cluster_RingHashLbConfig_{RingHashLbConfig: cfg}
	case "Maglev":
		if grpc {
			note("Maglev: it uses a ring hash")
			cl.LbPolicy = clusterv3.Cluster_RING_HASH
			cl.LbConfig = &clusterv3.Cluster_RingHashLbConfig_{RingHashLbConfig: &clusterv3.Cluster_RingHashLbConfig{HashFunction: clusterv3.Cluster_RingHashLbConfig_XX_HASH}}
			break
		}
		cl.LbPolicy = clusterv3.Cluster_MAGLEV
		if m := l.Maglev; m != nil && m.TableSize != nil {
			cl.LbConfig = &clusterv3.Cluster_MaglevLbConfig_{MaglevLbConfig: &clusterv3.Cluster_MaglevLbConfig{TableSize: wrapperspb.UInt64(uint64(*m.TableSize))}}
		}
	}
	return nil
}

func lbOutbound(e *outboundEdit, c schema.Conf) error {
	lb, err := decodeLB(c)
	if err != nil {
		return err
	}
	var hps []*routev3.RouteAction_HashPolicy
	for _, p := range lb.Policies() {
		hp := &routev3.RouteAction_HashPolicy{Terminal: p.Terminal}
		switch {
		case p.Type == "Header" && p.Header != nil:
			hp.PolicySpecifier = &routev3.RouteAction_HashPolicy_Header_{Header: &routev3.RouteAction_HashPolicy_Header{HeaderName: p.Header.Name}}
		case e.flavor == FlavorGRPC:
			e.notes = append(e.notes, fmt.Sprintf("%s: proxyless gRPC hashes on headers only: the %s hash policy is left out", e.out, p.Type))
			continue
		case p.Type == "Cookie" && p.Cookie != nil:
			ck := &routev3.RouteAction_HashPolicy_Cookie{Name: p.Cookie.Name, Path: p.Cookie.Path}
			if p.Cookie.TTL != nil {
				ck.Ttl = durationpb.New(p.Cookie.TTL.Duration)
			}
			hp.PolicySpecifier = &routev3.RouteAction_HashPolicy_Cookie_{Cookie: ck}
		case (p.Type == "Connection" || p.Type == "SourceIP") && p.Connection != nil:
			hp.PolicySpecifier = &routev3.RouteAction_HashPolicy_ConnectionProperties_{ConnectionProperties: &routev3.RouteAction_HashPolicy_ConnectionProperties{SourceIp: p.Connection.SourceIP}}
		case p.Type == "QueryParameter" && p.QueryParameter != nil:
			hp.PolicySpecifier = &routev3.RouteAction_HashPolicy_QueryParameter_{QueryParameter: &routev3.RouteAction_HashPolicy_QueryParameter{Name: p.QueryParameter.Name}}
		case p.Type == "FilterState" && p.FilterState != nil:
			hp.PolicySpecifier = &routev3.RouteAction_HashPolicy_FilterState_{FilterState: &routev3.RouteAction_HashPolicy_FilterState{Key: p.FilterState.Key}}
		default:
			continue
		}
		hps = append(hps, hp)
	}
	for _, a := range e.actions {
		a.HashPolicy = hps
	}
	return nil
}
