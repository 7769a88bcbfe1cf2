package xds

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"testing/fstest"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/gitmesh/gitmesh/schema"
	"github.com/gitmesh/gitmesh/schema/schematest"
)

// TestBuildFollowsHealthCheckAndRateLimitEdits edits MeshHealthChecks
// (clusters) and MeshRateLimits (inbounds), and the dataplanes they
// select, one step at a time, and checks that each incremental Build makes
// exactly the proxies a fresh one does. A health check that starts or
// stops naming the gRPC service db changes db's cluster (HTTP/2 or not) in
// every proxy that holds it.
func TestBuildFollowsHealthCheckAndRateLimitEdits(t *testing.T) {
	rnd := rand.New(rand.NewPCG(5, 6))
	files := fstest.MapFS{"mesh.yaml": {Data: []byte("type: Mesh\nname: prod\nmtls:\n  enabledBackend: ca\n  backends: [{name: ca, type: builtin}]\n")}}
	pick := func(list ...string) string { return list[rnd.IntN(len(list))] }
	provider := func(i int) string {
		svc, proto := []string{"backend", "db", "cache"}[i%3], []string{"http", "grpc", "tcp"}[i%3]
		return fmt.Sprintf("type: Dataplane\nmesh: prod\nname: %s-%d\nlabels: {team: %s}\nnetworking:\n  address: 10.1.%d.%d\n  inbound:\n"+
			"    - port: 8080\n      tags: {kuma.io/service: %s, kuma.io/protocol: %s}\n", svc, i, pick("a", "b"), i, 1+rnd.IntN(200), svc, proto)
	}
	client := func(i int) string {
		return fmt.Sprintf("type: Dataplane\nmesh: prod\nname: web-%d\nlabels: {team: t%d}\nnetworking:\n  address: 10.2.0.%d\n  inbound:\n"+
			"    - port: 8080\n      tags: {kuma.io/service: web, kuma.io/protocol: http}\n  outbound:\n"+
			"    - port: 10001\n      tags: {kuma.io/service: backend}\n    - port: 10002\n      tags: {kuma.io/service: db}\n"+
			"    - port: 10003\n      tags: {kuma.io/service: cache}\n", i, i%2, i)
	}
	healthCheck := func(n int) string {
		return fmt.Sprintf(`type: MeshHealthCheck
name: hc-%d
mesh: prod
spec:
  targetRef: %s
  to:
    - targetRef: %s
      default:
        interval: %ds
        healthyPanicThreshold: %d
        %s
`, n, pick("{kind: Mesh}", "{kind: MeshService, name: web}", "{kind: Dataplane, labels: {team: t1}}"),
			pick("{kind: Mesh}", "{kind: MeshService, name: backend}", "{kind: MeshService, name: db}", "{kind: MeshService, name: cache}"),
			1+rnd.IntN(5), rnd.IntN(101), pick("http: {path: /health}", "grpc: {serviceName: db}", "tcp: {}", "tcp: {disabled: true}\n        http: {disabled: true}"))
	}
	rateLimit := func(n int) string {
		return fmt.Sprintf(`type: MeshRateLimit
name: rl-%d
mesh: prod
spec:
  targetRef: %s
  rules:
    - default:
        local:
          %s
`, n, pick("{kind: Mesh, proxyTypes: [Sidecar]}", "{kind: MeshService, name: backend}", "{kind: MeshService, name: cache}", "{kind: Dataplane, labels: {team: a}}"),
			pick(fmt.Sprintf("http: {requestRate: {num: %d, interval: 1s}}", 1+rnd.IntN(100)),
				fmt.Sprintf("tcp: {connectionRate: {num: %d, interval: 1s}}", 1+rnd.IntN(100)),
				"{http: {disabled: true}, tcp: {disabled: true}}"))
	}
	for i := range 6 {
		files[fmt.Sprintf("provider-%d.yaml", i)] = &fstest.MapFile{Data: []byte(provider(i))}
	}
	for i := range 3 {
		files[fmt.Sprintf("web-%d.yaml", i)] = &fstest.MapFile{Data: []byte(client(i))}
	}
	b := NewBuilder(BuilderOptions{})
	set := schematest.Load(t, files)
	tr, _, failures, err := b.Build(context.Background(), set, schema.DiffSets(nil, set), nil)
	if err != nil || len(failures) > 0 {
		t.Fatal(failures, err)
	}
	checked, limited := 0, 0
	for step := range 60 {
		switch k := rnd.IntN(5); k {
		case 0, 1:
			name := fmt.Sprintf("hc-%d.yaml", rnd.IntN(2))
			if files[name] != nil && rnd.IntN(3) == 0 {
				delete(files, name)
			} else {
				files[name] = &fstest.MapFile{Data: []byte(healthCheck(step))}
			}
		case 2, 3:
			name := fmt.Sprintf("rl-%d.yaml", rnd.IntN(2))
			if files[name] != nil && rnd.IntN(3) == 0 {
				delete(files, name)
			} else {
				files[name] = &fstest.MapFile{Data: []byte(rateLimit(step))}
			}
		default:
			i := rnd.IntN(6)
			files[fmt.Sprintf("provider-%d.yaml", i)] = &fstest.MapFile{Data: []byte(provider(i))}
		}
		set, tr = buildStep(t, b, step, files, set, tr)
		if len(set.PoliciesOfType(schema.TypeMeshHealthCheck, "prod")) > 0 {
			checked++
		}
		if len(set.PoliciesOfType(schema.TypeMeshRateLimit, "prod")) > 0 {
			limited++
		}
	}
	if checked < 20 || limited < 20 {
		t.Errorf("health checks in %d steps, rate limits in %d, of 60: the test hardly covers them", checked, limited)
	}
}

// MeshHealthCheck and MeshCircuitBreaker both set a cluster's healthy
// panic threshold; as in Kuma, which applies MeshCircuitBreaker after
// MeshHealthCheck, the circuit breaker's value wins, and the health
// check's fail-traffic-on-panic and checks stay.
func TestCircuitBreakerPanicThresholdWins(t *testing.T) {
	mesh := `type: Dataplane
mesh: default
name: web-1
networking:
  address: 10.0.0.1
  inbound:
    - port: 8080
      tags: {kuma.io/service: web, kuma.io/protocol: http}
  outbound:
    - port: 10001
      tags: {kuma.io/service: backend}
---
type: Dataplane
mesh: default
name: backend-1
networking:
  address: 10.0.0.2
  inbound:
    - port: 8080
      tags: {kuma.io/service: backend, kuma.io/protocol: http}
---
type: MeshHealthCheck
name: checks
mesh: default
spec:
  to:
    - targetRef: {kind: Mesh}
      default: {healthyPanicThreshold: 30, failTrafficOnPanic: true, http: {path: /health}}
`
	breaker := `---
type: MeshCircuitBreaker
name: breakers
mesh: default
spec:
  to:
    - targetRef: {kind: Mesh}
      default: {outlierDetection: {healthyPanicThreshold: "12.5", detectors: {totalFailures: {consecutive: 5}}}}
`
	for _, tc := range []struct {
		policies string
		want     float64
	}{{mesh, 30}, {mesh + breaker, 12.5}} {
		set := schematest.Load(t, fstest.MapFS{"p.yaml": {Data: []byte(tc.policies)}})
		proxies, err := Translate(set, Options{Flavor: FlavorEnvoy})
		if err != nil {
			t.Fatal(err)
		}
		var cl *clusterv3.Cluster
		for _, p := range proxies {
			if p.NodeID != "default.web-1" {
				continue
			}
			for _, r := range p.Resources[resource.ClusterType] {
				if c := r.(*clusterv3.Cluster); c.GetName() == "backend" {
					cl = c
				}
			}
		}
		if cl == nil {
			t.Fatal("web-1 has no cluster backend")
		}
		lb := cl.GetCommonLbConfig()
		if got := lb.GetHealthyPanicThreshold().GetValue(); got != tc.want {
			t.Errorf("panic threshold %v, want %v", got, tc.want)
		}
		if !lb.GetZoneAwareLbConfig().GetFailTrafficOnPanic() || len(cl.GetHealthChecks()) != 1 {
			t.Errorf("fail traffic on panic %v, %d health checks: want true, 1", lb.GetZoneAwareLbConfig().GetFailTrafficOnPanic(), len(cl.GetHealthChecks()))
		}
	}
}
