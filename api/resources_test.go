package api_test

import (
	"net/http"
	"os"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/gitmesh/gitmesh/api"
	"github.com/gitmesh/gitmesh/reconcile"
	"github.com/gitmesh/gitmesh/schema/schematest"
)

// policyTree has both Dataplane forms, both TrafficPermission forms, a Mesh
// with every optional section and one with a provided CA.
var policyTree = fstest.MapFS{
	"meshes/default.yaml": {Data: []byte(`type: Mesh
name: default
mtls:
  enabled: true
  ca:
    builtin: {}
logging:
  defaultBackend: file
  backends:
    - name: file
      file:
        path: /var/log/envoy/access.log
    - name: logstash
      format: '%START_TIME% %KUMA_SOURCE_SERVICE%'
      tcp:
        address: logstash.internal:5000
tracing:
  defaultBackend: zipkin
  backends:
    - name: zipkin
      sampling: 12.5
      zipkin:
        url: http://zipkin.internal:9411/api/v2/spans
        traceId128bit: true
metrics:
  prometheus:
    port: 5670
    path: /metrics
    tags:
      team: platform
`)},
	"meshes/payments.yaml": {Data: []byte(`type: Mesh
name: payments
mtls:
  enabled: true
  ca:
    provided:
      cert: {file: /etc/gitmesh/payments-ca.crt}
      key: {file: /etc/gitmesh/payments-ca.key}
`)},
	"dataplanes/backend.yaml": {Data: []byte(`# Kuma 0.2 form
type: Dataplane
mesh: default
name: backend-01
networking:
  inbound:
    - interface: 10.0.0.21:10081:8081
      tags:
        service: backend
        protocol: http
  outbound:
    - interface: :20002
      service: redis
    - interface: 10.0.0.21:20003
      service: web
---
# Kuma 0.4 form, one inbound on an address of its own
type: Dataplane
mesh: default
name: backend-02
networking:
  address: 10.0.0.22
  inbound:
    - port: 10081
      servicePort: 8081
      tags:
        kuma.io/service: backend
        kuma.io/protocol: http
        version: v2
    - port: 19901
      address: 10.0.1.22
      tags:
        service: backend-admin
  outbound:
    - port: 20002
      service: redis
`)},
	"dataplanes/redis.yaml": {Data: []byte(`type: Dataplane
mesh: default
name: redis-01
networking:
  address: 10.0.0.30
  inbound:
    - port: 16379
      servicePort: 6379
      tags:
        service: redis
`)},
	"dataplanes/web.yaml": {Data: []byte(`type: Dataplane
mesh: default
name: web-01
labels:
  app: web
networking:
  address: 10.0.0.10
  inbound:
    - port: 10080
      servicePort: 8080
      tags:
        service: web
`)},
	"dataplanes/ledger.yaml": {Data: []byte(`type: Dataplane
mesh: payments
name: ledger-01
networking:
  address: 10.1.0.5
  inbound:
    - port: 10090
      servicePort: 9090
      tags:
        service: ledger
`)},
	"permissions/web-to-backend.yaml": {Data: []byte(`type: TrafficPermission
mesh: default
name: web-to-backend
sources:
  - match:
      service: web
destinations:
  - match:
      service: backend
`)},
	"permissions/mtp.yaml": {Data: []byte(`type: MeshTrafficPermission
mesh: default
name: backend-from-web
labels:
  team: payments
spec:
  targetRef: {kind: MeshService, name: backend}
  from:
    - targetRef: {kind: MeshService, name: web}
      default: {action: Allow}
---
type: MeshTrafficPermission
mesh: default
name: redis-rules
spec:
  targetRef: {kind: MeshService, name: redis}
  rules:
    - default:
        allow:
          - spiffeID: {type: Prefix, value: spiffe://default/back}
`)},
	"routes/backend.yaml": {Data: []byte(`type: MeshHTTPRoute
mesh: default
name: backend-canary
labels: {team: payments}
spec:
  targetRef: {kind: MeshService, name: web}
  to:
    - targetRef: {kind: MeshService, name: backend}
      rules:
        - matches:
            - path: {type: PathPrefix, value: /api}
              headers: [{type: Exact, name: x-canary, value: "yes"}]
          default:
            filters:
              - type: RequestHeaderModifier
                requestHeaderModifier: {set: [{name: x-route, value: canary}]}
              - type: RequestMirror
                requestMirror: {percentage: 5, backendRef: {kind: MeshService, name: redis}}
            backendRefs:
              - {kind: MeshServiceSubset, name: backend, tags: {version: v2}, weight: 10}
              - {kind: MeshService, name: backend, weight: 90}
---
type: MeshTCPRoute
mesh: default
name: redis-split
spec:
  to:
    - targetRef: {kind: MeshService, name: redis}
      rules:
        - default:
            backendRefs: [{kind: MeshServiceSubset, name: redis, tags: {role: primary}}]
`)},
	"policies/timeouts.yaml": {Data: []byte(`type: MeshTimeout
mesh: default
name: web-timeouts
spec:
  targetRef: {kind: MeshService, name: web}
  to:
    - targetRef: {kind: MeshService, name: backend}
      default: {connectionTimeout: 2s, http: {requestTimeout: 1s}}
---
type: MeshTimeout
mesh: default
name: redis-inbound
spec:
  targetRef: {kind: MeshService, name: redis}
  rules:
    - default: {idleTimeout: 30m}
`)},
	"policies/health.yaml": {Data: []byte(`type: MeshHealthCheck
mesh: default
name: web-checks
spec:
  targetRef: {kind: MeshService, name: web}
  to:
    - targetRef: {kind: MeshService, name: backend}
      default:
        interval: 10s
        healthyPanicThreshold: "62.5"
        http: {path: /health, expectedStatuses: [200]}
`)},
	"policies/ratelimits.yaml": {Data: []byte(`type: MeshRateLimit
mesh: default
name: redis-limits
spec:
  targetRef: {kind: MeshService, name: redis}
  rules:
    - default:
        local:
          tcp: {connectionRate: {num: 50, interval: 1s}}
`)},
	"permissions/to-redis.yaml": {Data: []byte(`# Kuma 0.2 form with two rules
type: TrafficPermission
mesh: default
name: to-redis
rules:
  - sources:
      - match:
          service: backend
    destinations:
      - match:
          service: redis
  - sources:
      - match:
          service: '*'
          team: cache
    destinations:
      - match:
          service: redis
`)},
}

var servedCommit = reconcile.CommitInfo{Hash: "3f2a9c1e5b7d4a6f8e0c2b4d6f8a0c2e4b6d8f0a", Subject: "Let web reach backend", Author: "Ada <ada@example.com>", Time: at(0)}

func servedAPI(t *testing.T) (string, *fakeBackend) {
	t.Helper()
	base, b, _ := startAPI(t, api.Config{})
	b.serve(schematest.Load(t, policyTree), servedCommit)
	return base, b
}

func TestResourcesGolden(t *testing.T) {
	base, _ := servedAPI(t)
	for _, tc := range []struct{ path, golden string }{
		{"/meshes", "meshes.json"},
		{"/meshes/payments", "mesh-payments.json"},
		{"/meshes/default/dataplanes", "dataplanes-default.json"},
		{"/meshes/default/dataplanes/backend-02", "dataplane-backend-02.json"},
		{"/meshes/payments/dataplanes", "dataplanes-payments.json"},
		{"/meshes/default/traffic-permissions", "traffic-permissions-default.json"},
		{"/meshes/default/traffic-permissions/web-to-backend", "traffic-permission-web-to-backend.json"},
		{"/meshes/payments/traffic-permissions", "traffic-permissions-payments.json"},
		{"/meshes/default/meshtrafficpermissions", "meshtrafficpermissions-default.json"},
		{"/meshes/default/meshtrafficpermissions/redis-rules", "meshtrafficpermission-redis-rules.json"},
		{"/meshes/default/meshhttproutes", "meshhttproutes-default.json"},
		{"/meshes/default/meshhttproutes/backend-canary", "meshhttproute-backend-canary.json"},
		{"/meshes/default/meshtcproutes", "meshtcproutes-default.json"},
		{"/meshes/payments/meshhttproutes", "meshhttproutes-payments.json"},
		{"/meshes/default/meshtimeouts", "meshtimeouts-default.json"},
		{"/meshes/default/meshtimeouts/web-timeouts", "meshtimeout-web-timeouts.json"},
		{"/meshes/default/meshhealthchecks", "meshhealthchecks-default.json"},
		{"/meshes/default/meshhealthchecks/web-checks", "meshhealthcheck-web-checks.json"},
		{"/meshes/default/meshratelimits", "meshratelimits-default.json"},
		{"/meshes/default/meshratelimits/redis-limits", "meshratelimit-redis-limits.json"},
	} {
		t.Run(tc.golden, func(t *testing.T) {
			r := get(t, base+tc.path)
			r.wantJSON(t, http.StatusOK, nil)
			if got := r.header.Get(api.CommitHeader); got != string(servedCommit.Hash) {
				t.Errorf("%s = %q, want the served commit %q", api.CommitHeader, got, servedCommit.Hash)
			}
			golden(t, tc.golden, r.body)
		})
	}
}

// The resources are in Kuma's shape whichever form they were written in.
func TestResourcesKumaShape(t *testing.T) {
	base, _ := servedAPI(t)

	type selector struct {
		Match map[string]string `json:"match"`
	}
	var dp struct {
		Type, Mesh, Name string
		Networking       struct {
			Address string `json:"address"`
			Inbound []struct {
				Port, ServicePort int
				Address           string
				Tags              map[string]string
			} `json:"inbound"`
			Outbound []struct {
				Port    int
				Address string
				Service string
			} `json:"outbound"`
		} `json:"networking"`
		Origin struct {
			File string
			Line int
		} `json:"origin"`
	}
	get(t, base+"/meshes/default/dataplanes/backend-01").wantJSON(t, http.StatusOK, &dp)
	n := dp.Networking
	switch {
	case dp.Type != "Dataplane" || dp.Mesh != "default" || dp.Name != "backend-01":
		t.Errorf("type, mesh, name = %q, %q, %q", dp.Type, dp.Mesh, dp.Name)
	case n.Address != "10.0.0.21":
		t.Errorf("a legacy dataplane's networking.address = %q, want its inbound's 10.0.0.21", n.Address)
	case len(n.Inbound) != 1 || n.Inbound[0].Port != 10081 || n.Inbound[0].ServicePort != 8081 || n.Inbound[0].Address != "":
		t.Errorf("inbound = %+v, want port 10081, servicePort 8081, no address of its own", n.Inbound)
	case n.Inbound[0].Tags["service"] != "backend" || n.Inbound[0].Tags["protocol"] != "http":
		t.Errorf("inbound tags = %v", n.Inbound[0].Tags)
	case len(n.Outbound) != 2 || n.Outbound[0].Port != 20002 || n.Outbound[0].Address != "" || n.Outbound[0].Service != "redis":
		t.Errorf("outbound[0] = %+v, want port 20002 on the default address, service redis", n.Outbound)
	case n.Outbound[1].Address != "10.0.0.21":
		t.Errorf("outbound[1].address = %q, want 10.0.0.21", n.Outbound[1].Address)
	case dp.Origin.File != "dataplanes/backend.yaml" || dp.Origin.Line != 2:
		t.Errorf("origin = %+v, want dataplanes/backend.yaml line 2", dp.Origin)
	}

	var tp struct {
		Type, Mesh, Name string
		Sources          []selector `json:"sources"`
		Destinations     []selector `json:"destinations"`
		Rules            []struct {
			Sources      []selector `json:"sources"`
			Destinations []selector `json:"destinations"`
		} `json:"rules"`
	}
	get(t, base+"/meshes/default/traffic-permissions/web-to-backend").wantJSON(t, http.StatusOK, &tp)
	if tp.Type != "TrafficPermission" || len(tp.Sources) != 1 || tp.Sources[0].Match["service"] != "web" ||
		len(tp.Destinations) != 1 || tp.Destinations[0].Match["service"] != "backend" || tp.Rules != nil {
		t.Errorf("one-rule permission = %+v, want top-level sources and destinations", tp)
	}
	tp.Sources, tp.Destinations = nil, nil
	get(t, base+"/meshes/default/traffic-permissions/to-redis").wantJSON(t, http.StatusOK, &tp)
	if len(tp.Rules) != 2 || tp.Sources != nil || tp.Rules[1].Sources[0].Match["service"] != "*" {
		t.Errorf("two-rule permission = %+v, want rules", tp)
	}

	var mesh struct {
		Type, Name string
		MTLS       struct {
			Enabled bool `json:"enabled"`
			CA      map[string]any
		} `json:"mtls"`
	}
	get(t, base+"/meshes/default").wantJSON(t, http.StatusOK, &mesh)
	if mesh.Type != "Mesh" || mesh.Name != "default" || !mesh.MTLS.Enabled || mesh.MTLS.CA["builtin"] == nil {
		t.Errorf("mesh = %+v, want mTLS with a builtin CA", mesh)
	}
}

// The policy repository of the quick start reads back whole.
func TestResourcesOfPolicyRepository(t *testing.T) {
	set := schematest.Load(t, os.DirFS("../policies"))
	base, b, _ := startAPI(t, api.Config{})
	b.serve(set, servedCommit)
	for _, m := range set.Meshes {
		var dps struct {
			Total int `json:"total"`
			Items []struct {
				Name       string `json:"name"`
				Networking struct {
					Address string `json:"address"`
					Inbound []struct {
						Port int               `json:"port"`
						Tags map[string]string `json:"tags"`
					} `json:"inbound"`
				} `json:"networking"`
			} `json:"items"`
			Next *string `json:"next"`
		}
		get(t, base+"/meshes/"+m.Name+"/dataplanes").wantJSON(t, http.StatusOK, &dps)
		want := set.DataplanesIn(m.Name)
		if dps.Total != len(want) || len(dps.Items) != len(want) || dps.Next != nil {
			t.Fatalf("mesh %s: total %d, %d items, next %v; want %d and no next", m.Name, dps.Total, len(dps.Items), dps.Next, len(want))
		}
		for i, dp := range dps.Items {
			if dp.Name != want[i].Name || dp.Networking.Address == "" || len(dp.Networking.Inbound) == 0 {
				t.Errorf("item %d = %+v", i, dp)
			}
			for _, in := range dp.Networking.Inbound {
				if in.Port == 0 || in.Tags["service"] == "" {
					t.Errorf("%s: inbound %+v lacks a port or a service tag", dp.Name, in)
				}
			}
		}
	}
}

func TestResourcesPaging(t *testing.T) {
	base, _ := servedAPI(t)
	type page struct {
		Total int `json:"total"`
		Items []struct {
			Name string `json:"name"`
		} `json:"items"`
		Next *string `json:"next"`
	}
	var names []string
	url := base + "/meshes/default/dataplanes?size=3"
	for pages := 0; url != ""; pages++ {
		if pages > 5 {
			t.Fatal("paging does not end")
		}
		var p page
		get(t, url).wantJSON(t, http.StatusOK, &p)
		if p.Total != 4 {
			t.Fatalf("total = %d, want 4", p.Total)
		}
		for _, it := range p.Items {
			names = append(names, it.Name)
		}
		url = ""
		if p.Next != nil {
			url = *p.Next
			if !strings.HasPrefix(url, base+"/meshes/default/dataplanes?") {
				t.Fatalf("next = %q, want an absolute URL of the same list", url)
			}
		}
	}
	if got, want := strings.Join(names, ","), "backend-01,backend-02,redis-01,web-01"; got != want {
		t.Errorf("pages hold %s, want %s", got, want)
	}

	var past page
	get(t, base+"/meshes/default/dataplanes?offset=100").wantJSON(t, http.StatusOK, &past)
	if past.Total != 4 || len(past.Items) != 0 || past.Next != nil {
		t.Errorf("past the end: %+v, want total 4 and no items", past)
	}
	for _, q := range []string{"size=0", "size=x", "size=10001", "offset=-1", "offset=x"} {
		get(t, base+"/meshes?"+q).wantError(t, http.StatusBadRequest, strings.Split(q, "=")[0])
	}
}

func TestResourcesNotFound(t *testing.T) {
	base, _ := servedAPI(t)
	for path, want := range map[string]string{
		"/meshes/nope":                             `mesh "nope" not found`,
		"/meshes/nope/dataplanes":                  `mesh "nope" not found`,
		"/meshes/nope/dataplanes/web-01":           `mesh "nope" not found`,
		"/meshes/payments/dataplanes/web-01":       `dataplane "web-01" not found in mesh "payments"`,
		"/meshes/nope/traffic-permissions":         `mesh "nope" not found`,
		"/meshes/default/traffic-permissions/nope": `traffic permission "nope" not found in mesh "default"`,
		"/meshes/default/traffic-routes":           "no such endpoint",
		"/meshes/default/dataplanes/web-01/extra":  "no such endpoint",
		"/nothing-here":                            "no such endpoint",
		"/meshes/Default%20Mesh/dataplanes":        `mesh "Default Mesh" not found`,
	} {
		t.Run(path, func(t *testing.T) {
			get(t, base+path).wantError(t, http.StatusNotFound, want)
		})
	}
}

func TestResourcesBeforeServing(t *testing.T) {
	base, _, _ := startAPI(t, api.Config{})
	for _, path := range []string{"/meshes", "/meshes/default", "/meshes/default/dataplanes",
		"/meshes/default/dataplanes/web-01", "/meshes/default/traffic-permissions", "/meshes/default/traffic-permissions/x"} {
		get(t, base+path).wantError(t, http.StatusServiceUnavailable, "no commit is served yet")
	}
}

// The default mesh exists without being declared, as in Kuma, and lists
// with neither mTLS nor an origin.
func TestImplicitDefaultMesh(t *testing.T) {
	set := schematest.Load(t, fstest.MapFS{"web.yaml": policyTree["dataplanes/web.yaml"]})
	base, b, _ := startAPI(t, api.Config{})
	b.serve(set, servedCommit)
	r := get(t, base+"/meshes/default")
	r.wantJSON(t, http.StatusOK, nil)
	if got, want := string(r.body), "{\n  \"type\": \"Mesh\",\n  \"name\": \"default\"\n}\n"; got != want {
		t.Errorf("implicit default mesh = %s, want %s", got, want)
	}
}
