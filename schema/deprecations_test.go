package schema

import (
	"strings"
	"testing"
	"testing/fstest"
)

// With Deprecations, every legacy form is a warning at the field written,
// naming its successor; the tree stays valid. Without, nothing is said.
func TestDeprecations(t *testing.T) {
	tree := fstest.MapFS{"p.yaml": {Data: []byte(`type: Dataplane
name: web-1
networking:
  inbound:
    - interface: 10.0.0.1:10001:8080
      tags: {service: web, kuma.io/protocol: http}
  outbound:
    - interface: :20001
      service: web
---
type: TrafficPermission
name: legacy
rules:
  - sources: [{match: {service: web}}]
    destinations: [{match: {service: web}}]
`)}}
	for _, on := range []bool{false, true} {
		res, err := newTestLoader(t, Options{Deprecations: on}).Load(tree)
		if err != nil {
			t.Fatal(err)
		}
		if !res.Valid() {
			t.Fatalf("deprecations=%v: invalid:\n%s", on, formatFindings(res.Findings))
		}
		var got []string
		for _, f := range res.Findings {
			if f.Code == CodeDeprecated {
				got = append(got, f.Pointer)
			}
		}
		want := "/networking/inbound/0/interface /networking/inbound/0/tags/service /networking/outbound/0/interface /networking/outbound/0/service /type /rules/0"
		if !on {
			want = ""
		}
		if strings.Join(got, " ") != want {
			t.Errorf("deprecations=%v: at %q, want %q", on, got, want)
		}
	}
}

// Kuma 2.x's own deprecations of MeshHealthCheck and MeshRateLimit: the
// panic threshold (moved to MeshCircuitBreaker), from[] (now rules[]) and
// a rate limit status below 400.
func TestConfDeprecations(t *testing.T) {
	tree := fstest.MapFS{"p.yaml": {Data: []byte(`type: MeshHealthCheck
name: hc
spec:
  to:
    - targetRef: {kind: Mesh}
      default: {healthyPanicThreshold: 40, tcp: {}}
---
type: MeshRateLimit
name: rl
spec:
  targetRef: {kind: Mesh, proxyTypes: [Sidecar]}
  from:
    - targetRef: {kind: Mesh}
      default:
        local:
          http: {requestRate: {num: 5, interval: 1s}, onRateLimit: {status: 302}}
`)}}
	res, err := newTestLoader(t, Options{Deprecations: true}).Load(tree)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Valid() {
		t.Fatalf("invalid:\n%s", formatFindings(res.Findings))
	}
	var got []string
	for _, f := range res.Findings {
		if f.Code == CodeDeprecated {
			got = append(got, f.Pointer)
		}
	}
	want := "/spec/to/0/default/healthyPanicThreshold /spec/from /spec/from/0/default/local/http/onRateLimit/status"
	if strings.Join(got, " ") != want {
		t.Errorf("deprecations at %q, want %q", got, want)
	}
}
