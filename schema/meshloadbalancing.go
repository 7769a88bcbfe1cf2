package schema

import (
	"fmt"
	"strings"
)

// TypeMeshLoadBalancingStrategy is Kuma 2.x's load-balancing policy.
const TypeMeshLoadBalancingStrategy = "MeshLoadBalancingStrategy"

func init() {
	registerConfKind(&confKind{
		typ: TypeMeshLoadBalancingStrategy, plural: "meshloadbalancingstrategies", schema: "meshloadbalancingstrategy.json",
		top:       targetRefRules{kinds: []TargetKind{KindMesh, KindMeshSubset, KindMeshService, KindMeshServiceSubset, KindDataplane}},
		to:        &targetRefRules{kinds: []TargetKind{KindMesh, KindMeshService}},
		check:     checkLoadBalancing,
		grpcDrops: loadBalancingGRPCDrops,
		warn: func(conf map[string]any) []confWarning {
			if _, ok := conf["localityAwareness"]; ok {
				return []confWarning{{field: "localityAwareness", message: "localityAwareness has no effect: gitmesh serves one zone, where every endpoint is local",
					hint: "remove it"}}
			}
			return nil
		},
	})
}

// LoadBalancing is a merged MeshLoadBalancingStrategy conf.
type LoadBalancing struct {
	LoadBalancer *struct {
		Type         string `json:"type"`
		LeastRequest *struct {
			ChoiceCount       *uint32 `json:"choiceCount,omitempty"`
			ActiveRequestBias *Number `json:"activeRequestBias,omitempty"`
		} `json:"leastRequest,omitempty"`
		RingHash *struct {
			HashFunction string       `json:"hashFunction,omitempty"`
			MinRingSize  *uint32      `json:"minRingSize,omitempty"`
			MaxRingSize  *uint32      `json:"maxRingSize,omitempty"`
			HashPolicies []HashPolicy `json:"hashPolicies,omitempty"`
		} `json:"ringHash,omitempty"`
		Maglev *struct {
			TableSize    *uint32      `json:"tableSize,omitempty"`
			HashPolicies []HashPolicy `json:"hashPolicies,omitempty"`
		} `json:"maglev,omitempty"`
	} `json:"loadBalancer,omitempty"`
	HashPolicies []HashPolicy `json:"hashPolicies,omitempty"`
}

// HashPolicy says what a consistent hash is computed from.
type HashPolicy struct {
	Type     string `json:"type"`
	Terminal bool   `json:"terminal,omitempty"`
	Header   *struct {
		Name string `json:"name"`
	} `json:"header,omitempty"`
	Cookie *struct {
		Name string    `json:"name"`
		TTL  *Duration `json:"ttl,omitempty"`
		Path string    `json:"path,omitempty"`
	} `json:"cookie,omitempty"`
	Connection *struct {
		SourceIP bool `json:"sourceIP,omitempty"`
	} `json:"connection,omitempty"`
	QueryParameter *struct {
		Name string `json:"name"`
	} `json:"queryParameter,omitempty"`
	FilterState *struct {
		Key string `json:"key"`
	} `json:"filterState,omitempty"`
}

// Policies are the hash policies that apply: the loadBalancer's own, or
// the top-level ones.
func (lb *LoadBalancing) Policies() []HashPolicy {
	if l := lb.LoadBalancer; l != nil {
		if l.RingHash != nil && len(l.RingHash.HashPolicies) > 0 {
			return l.RingHash.HashPolicies
		}
		if l.Maglev != nil && len(l.Maglev.HashPolicies) > 0 {
			return l.Maglev.HashPolicies
		}
	}
	return lb.HashPolicies
}

func (d *decoder) hashPolicies(ptr string, list []any) {
	for i, raw := range list {
		hp, _ := raw.(map[string]any)
		p := fmt.Sprintf("%s/%d", ptr, i)
		need := func(field string) map[string]any {
			v := mapOf(hp, field)
			if v == nil {
				d.add(p+"/"+field, CodeMissingField, "add `"+field+"`", "must be defined")
			}
			return v
		}
		switch str(hp, "type") {
		case "Header":
			need("header")
		case "Cookie":
			if c := need("cookie"); c != nil {
				if path, ok := c["path"].(string); ok && !strings.HasPrefix(path, "/") {
					d.add(p+"/cookie/path", CodeInvalidValue, "start the path with /", "must be an absolute path")
				}
				d.duration(p+"/cookie", c, "ttl")
			}
		case "QueryParameter":
			need("queryParameter")
		case "FilterState":
			need("filterState")
		case "Connection", "SourceIP":
			need("connection")
		}
	}
}

func checkLoadBalancing(d *decoder, ptr string, conf map[string]any, _ ConfPosition, _ TargetRef) {
	lb := mapOf(conf, "loadBalancer")
	switch str(lb, "type") {
	case "RingHash":
		rh := mapOf(lb, "ringHash")
		d.hashPolicies(ptr+"/loadBalancer/ringHash/hashPolicies", listOf(rh, "hashPolicies"))
		if uint32Of(rh, "minRingSize") > 0 && uint32Of(rh, "maxRingSize") > 0 && uint32Of(rh, "minRingSize") > uint32Of(rh, "maxRingSize") {
			d.add(ptr+"/loadBalancer/ringHash/minRingSize", CodeOutOfRange, "make minRingSize at most maxRingSize", "minRingSize is above maxRingSize")
		}
	case "Maglev":
		d.hashPolicies(ptr+"/loadBalancer/maglev/hashPolicies", listOf(mapOf(lb, "maglev"), "hashPolicies"))
	case "LeastRequest":
		if v, ok := d.number(ptr+"/loadBalancer/leastRequest", mapOf(lb, "leastRequest"), "activeRequestBias"); ok && v < 0 {
			d.add(ptr+"/loadBalancer/leastRequest/activeRequestBias", CodeOutOfRange, "0 or more", "activeRequestBias has to be greater or equal than 0")
		}
	}
	d.hashPolicies(ptr+"/hashPolicies", listOf(conf, "hashPolicies"))
	for _, t := range []string{"ringHash", "maglev"} {
		if len(listOf(mapOf(lb, t), "hashPolicies")) > 0 && len(listOf(conf, "hashPolicies")) > 0 {
			d.add(ptr+"/loadBalancer/"+t+"/hashPolicies", CodeInvalidValue, "keep one list of hash policies", "hashPolicies already specified in the root level")
		}
	}
}

// loadBalancingGRPCDrops: gRPC-Go balances round robin, least request
// (gRFC A48) and ring hash with xxHash (gRFC A42), hashing on headers.
func loadBalancingGRPCDrops(conf map[string]any, _ ConfPosition) []string {
	var out []string
	lb := mapOf(conf, "loadBalancer")
	switch str(lb, "type") {
	case "Random":
		out = append(out, "loadBalancer Random (round robin instead)")
	case "Maglev":
		out = append(out, "loadBalancer Maglev (ring hash instead)")
	case "LeastRequest":
		if _, ok := mapOf(lb, "leastRequest")["activeRequestBias"]; ok {
			out = append(out, "leastRequest.activeRequestBias")
		}
	case "RingHash":
		if str(mapOf(lb, "ringHash"), "hashFunction") == "MurmurHash2" {
			out = append(out, "ringHash.hashFunction MurmurHash2 (xxHash instead)")
		}
	}
	var hps []any
	hps = append(hps, listOf(conf, "hashPolicies")...)
	hps = append(hps, listOf(mapOf(lb, "ringHash"), "hashPolicies")...)
	hps = append(hps, listOf(mapOf(lb, "maglev"), "hashPolicies")...)
	for _, raw := range hps {
		hp, _ := raw.(map[string]any)
		if t := str(hp, "type"); t != "Header" {
			out = append(out, "hash policy "+t)
		}
	}
	return out
}
