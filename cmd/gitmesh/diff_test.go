package main

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/gitmesh/gitmesh/internal/golden"
	"github.com/gitmesh/gitmesh/reconcile/gittest"
	"github.com/gitmesh/gitmesh/reconcile/plan"
	"github.com/gitmesh/gitmesh/schema"
)

// The diff tests' repository keeps its policies under mesh/: web calls api,
// api calls db, an mTLS mesh with a permission for each call.
const diffPolicyDir = "mesh"

func meshYAML(mtls bool) string {
	return fmt.Sprintf("type: Mesh\nname: default\nmtls:\n  enabled: %t\n  ca:\n    builtin: {}\n", mtls)
}

// dataplaneYAML is a dataplane of service at address, listening on port
// for servicePort, calling the services of outbound from port 20001 on.
func dataplaneYAML(name, address, service string, port, servicePort int, outbound ...string) string {
	s := fmt.Sprintf(`type: Dataplane
mesh: default
name: %s
networking:
  address: %s
  inbound:
    - port: %d
      servicePort: %d
      tags:
        service: %s
`, name, address, port, servicePort, service)
	if len(outbound) > 0 {
		s += "  outbound:\n"
		for i, o := range outbound {
			s += fmt.Sprintf("    - port: %d\n      service: %s\n", 20001+i, o)
		}
	}
	return s
}

func permissionYAML(name string, destination string, sources ...string) string {
	s := fmt.Sprintf("type: TrafficPermission\nmesh: default\nname: %s\nsources:\n", name)
	for _, src := range sources {
		s += fmt.Sprintf("  - match:\n      service: %s\n", src)
	}
	return s + fmt.Sprintf("destinations:\n  - match:\n      service: %s\n", destination)
}

func basePolicies() map[string]string {
	return map[string]string{
		"README.md":                        "policies live under mesh/\n",
		"mesh/mesh.yaml":                   meshYAML(true),
		"mesh/dataplanes/web-1.yaml":       dataplaneYAML("web-1", "10.0.0.1", "web", 10001, 8080, "api"),
		"mesh/dataplanes/api-1.yaml":       dataplaneYAML("api-1", "10.0.0.2", "api", 10002, 9090, "db"),
		"mesh/dataplanes/db-1.yaml":        dataplaneYAML("db-1", "10.0.0.3", "db", 10003, 5432),
		"mesh/permissions/web-to-api.yaml": permissionYAML("web-to-api", "api", "web"),
		"mesh/permissions/api-to-db.yaml":  permissionYAML("api-to-db", "db", "api"),
	}
}

// diffRepo makes a repository whose first commit holds basePolicies and
// returns its directory and that commit.
func diffRepo(t *testing.T) (dir, base string) {
	t.Helper()
	dir = gittest.Init(t)
	return dir, gittest.Commit(t, dir, "Base policies", basePolicies())
}

// runDiffJSON runs gitmesh diff --format json in dir and decodes its plan.
func runDiffJSON(t *testing.T, dir string, revs ...string) (int, plan.Plan) {
	t.Helper()
	args := append([]string{"diff", "--repo", dir, "--path", diffPolicyDir, "--format", "json"}, revs...)
	code, out, errb := gitmesh(t, args...)
	var p plan.Plan
	if err := json.Unmarshal([]byte(out), &p); err != nil {
		t.Fatalf("exit %d, output is not JSON: %v\n%s%s", code, err, out, errb)
	}
	return code, p
}

// proxyChanges lists a plan's proxies as "node status: kind +name ~name -name ...".
func proxyChanges(p plan.Plan) []string {
	var out []string
	for _, pd := range p.Proxies {
		line := pd.Node + " " + pd.Status + ":"
		for _, k := range []struct {
			name string
			d    plan.NameDiff
		}{{"listener", pd.Listeners}, {"cluster", pd.Clusters}, {"route", pd.Routes}, {"endpoints", pd.Endpoints}, {"secret", pd.Secrets}} {
			for _, l := range []struct {
				mark  string
				names []string
			}{{"+", k.d.Added}, {"~", k.d.Changed}, {"-", k.d.Removed}} {
				for _, n := range l.names {
					line += " " + k.name + " " + l.mark + n
				}
			}
		}
		out = append(out, line)
	}
	return out
}

func TestDiffNoChange(t *testing.T) {
	t.Parallel()
	dir, base := diffRepo(t)
	// A file outside the policy directory and a moved resource change no
	// resource.
	gittest.Git(t, dir, "mv", "mesh/dataplanes/db-1.yaml", "mesh/db.yaml")
	gittest.Commit(t, dir, "Move db-1", map[string]string{"README.md": "reworded\n"})

	code, out, errb := gitmesh(t, "diff", "--repo", dir, "--path", diffPolicyDir, base)
	if code != exitOK {
		t.Fatalf("exit %d\n%s%s", code, out, errb)
	}
	for _, want := range []string{"no change", "0 resources changed (0 added, 0 changed, 0 removed); 0 proxies affected"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	code, got := runDiffJSON(t, dir, base, "main")
	if code != exitOK || got.Changed() || len(got.Proxies) != 0 || got.Resources.Added == nil {
		t.Errorf("exit %d, plan %+v", code, got)
	}
	code, out, _ = gitmesh(t, "diff", "--repo", dir, "--path", diffPolicyDir, "--format", "markdown", "HEAD", "HEAD")
	if code != exitOK || !strings.Contains(out, "No change") {
		t.Errorf("exit %d\n%s", code, out)
	}
}

func TestDiffInboundPort(t *testing.T) {
	t.Parallel()
	dir, base := diffRepo(t)
	gittest.Commit(t, dir, "Move web", map[string]string{
		"mesh/dataplanes/web-1.yaml": dataplaneYAML("web-1", "10.0.0.1", "web", 10011, 8081, "api"),
	})
	code, got := runDiffJSON(t, dir, base)
	if code != exitFailed {
		t.Errorf("exit %d, want 1", code)
	}
	want := []plan.ChangedResource{{Key: schema.Key{Type: schema.TypeDataplane, Mesh: "default", Name: "web-1"}, Fields: []schema.FieldChange{
		{Path: "networking.inbound[0].port", Old: 10001.0, New: 10011.0},
		{Path: "networking.inbound[0].servicePort", Old: 8080.0, New: 8081.0},
	}}}
	if diff := cmp.Diff(want, got.Resources.Changed); diff != "" {
		t.Errorf("resources (-want +got):\n%s", diff)
	}
	// Nothing calls web: only web-1 itself changes.
	wantProxies := []string{"default.web-1 changed: listener +inbound:10.0.0.1:10011 listener -inbound:10.0.0.1:10001 cluster +localhost:8081 cluster -localhost:8080"}
	if diff := cmp.Diff(wantProxies, proxyChanges(got)); diff != "" {
		t.Errorf("proxies (-want +got):\n%s", diff)
	}
	if got.Summary != (plan.Summary{Resources: 1, Changed: 1, Proxies: 1}) {
		t.Errorf("summary %+v", got.Summary)
	}
}

func TestDiffPermissionRemoved(t *testing.T) {
	t.Parallel()
	dir, base := diffRepo(t)
	gittest.Git(t, dir, "rm", "-q", "mesh/permissions/web-to-api.yaml")
	gittest.Commit(t, dir, "Stop web calling api", nil)

	code, got := runDiffJSON(t, dir, base, "HEAD")
	if code != exitFailed {
		t.Errorf("exit %d, want 1", code)
	}
	wantRemoved := []schema.Key{{Type: schema.TypeTrafficPermission, Mesh: "default", Name: "web-to-api"}}
	if diff := cmp.Diff(wantRemoved, got.Resources.Removed); diff != "" {
		t.Errorf("removed (-want +got):\n%s", diff)
	}
	// The RBAC filter of the destination's inbound listener, nothing else.
	want := []string{"default.api-1 changed: listener ~inbound:10.0.0.2:10002"}
	if diff := cmp.Diff(want, proxyChanges(got)); diff != "" {
		t.Errorf("proxies (-want +got):\n%s", diff)
	}
}

func TestDiffDataplaneAdded(t *testing.T) {
	t.Parallel()
	dir, base := diffRepo(t)
	gittest.Commit(t, dir, "Scale api", map[string]string{
		"mesh/dataplanes/api-2.yaml": dataplaneYAML("api-2", "10.0.0.4", "api", 10002, 9090, "db"),
	})
	code, got := runDiffJSON(t, dir, base)
	if code != exitFailed {
		t.Errorf("exit %d, want 1", code)
	}
	// web-1 calls api: its endpoints for api now hold api-2 too.
	want := []string{
		"default.api-2 added: listener +inbound:10.0.0.4:10002 listener +outbound:127.0.0.1:20001 cluster +db cluster +localhost:9090 endpoints +db secret +identity_cert secret +mesh_ca",
		"default.web-1 changed: endpoints ~api",
	}
	if diff := cmp.Diff(want, proxyChanges(got)); diff != "" {
		t.Errorf("proxies (-want +got):\n%s", diff)
	}
	if ids := got.Proxies[0].Identities; ids == nil || len(ids.Old) != 0 || cmp.Diff([]string{"spiffe://default/api"}, ids.New) != "" {
		t.Errorf("identities of the new proxy: %+v", ids)
	}

	// The other way round, the proxy is removed.
	code, out, _ := gitmesh(t, "diff", "--repo", dir, "--path", diffPolicyDir, "HEAD", base)
	if code != exitFailed || !strings.Contains(out, "  - default.api-2  removed: listeners 2, clusters 2, endpoints 1, secrets 2\n") {
		t.Errorf("exit %d\n%s", code, out)
	}
}

func TestDiffMTLSToggled(t *testing.T) {
	t.Parallel()
	dir, base := diffRepo(t)
	gittest.Commit(t, dir, "Turn mTLS off", map[string]string{"mesh/mesh.yaml": meshYAML(false)})

	code, out, errb := gitmesh(t, "diff", "--repo", dir, "--path", diffPolicyDir, "HEAD", base)
	if code != exitFailed {
		t.Fatalf("exit %d\n%s%s", code, out, errb)
	}
	for _, want := range []string{
		"  ~ Mesh  default\n      ~ mtls.enabled: false → true\n",
		"  ~ default.web-1\n",
		"      + secret     identity_cert  SANs spiffe://default/web\n      + secret     mesh_ca\n",
		"3 proxies affected",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}

	_, got := runDiffJSON(t, dir, base)
	for _, pd := range got.Proxies {
		if diff := cmp.Diff([]string{"identity_cert", "mesh_ca"}, pd.Secrets.Removed); diff != "" || pd.Status != plan.StatusChanged {
			t.Errorf("%s: status %s, secrets %+v", pd.Node, pd.Status, pd.Secrets)
		}
		if len(pd.Listeners.Changed) != 1 {
			t.Errorf("%s: inbound listener unchanged without mTLS: %+v", pd.Node, pd.Listeners)
		}
	}
}

func TestDiffChangeReachingNoProxy(t *testing.T) {
	t.Parallel()
	dir, base := diffRepo(t)
	gittest.Commit(t, dir, "Log to a file", map[string]string{
		"mesh/mesh.yaml": meshYAML(true) + "logging:\n  backends:\n    - name: file\n      file:\n        path: /var/log/access.log\n",
	})
	code, out, errb := gitmesh(t, "diff", "--repo", dir, "--path", diffPolicyDir, base)
	if code != exitFailed {
		t.Fatalf("exit %d\n%s%s", code, out, errb)
	}
	for _, want := range []string{
		`      + logging: {"backends":[{"file":{"path":"/var/log/access.log"},"name":"file"}]}`,
		"  (3 proxies translated again: their resources do not change)\n",
		"1 resource changed (0 added, 1 changed, 0 removed); 0 proxies affected\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestDiffIdentitySANs(t *testing.T) {
	t.Parallel()
	dir, base := diffRepo(t)
	web := `type: Dataplane
mesh: default
name: web-1
networking:
  address: 10.0.0.1
  inbound:
    - port: 10001
      servicePort: 8080
      tags:
        service: web
    - port: 10009
      servicePort: 9000
      tags:
        service: admin
  outbound:
    - port: 20001
      service: api
`
	gittest.Commit(t, dir, "web serves admin too", map[string]string{"mesh/dataplanes/web-1.yaml": web})

	code, out, errb := gitmesh(t, "diff", "--repo", dir, "--path", diffPolicyDir, base)
	if code != exitFailed {
		t.Fatalf("exit %d\n%s%s", code, out, errb)
	}
	for _, want := range []string{
		`      + networking.inbound[1]: {"port":10009,"servicePort":9000,"tags":{"service":"admin"}}`,
		"      ~ secret     identity_cert  SANs spiffe://default/web → spiffe://default/admin, spiffe://default/web\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestDiffInvalidSide(t *testing.T) {
	t.Parallel()
	dir, base := diffRepo(t)
	head := gittest.Commit(t, dir, "Break web", map[string]string{"mesh/dataplanes/web-1.yaml": brokenDataplane})

	code, out, errb := gitmesh(t, "diff", "--repo", dir, "--path", diffPolicyDir, base)
	if code != exitUsage || out != "" {
		t.Fatalf("exit %d, stdout %q; want 2 and nothing", code, out)
	}
	for _, want := range []string{
		"gitmesh: HEAD " + head[:12] + " (Break web) is invalid:\n",
		"mesh/dataplanes/web-1.yaml:7:7: error[unknown-field]: unknown field \"servicePrt\"",
	} {
		if !strings.Contains(errb, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errb)
		}
	}
	code, _, errb = gitmesh(t, "diff", "--repo", dir, "--path", diffPolicyDir, head, base)
	if code != exitUsage || !strings.HasPrefix(errb, "gitmesh: BASE "+head[:12]) {
		t.Errorf("invalid BASE: exit %d\n%s", code, errb)
	}
}

func TestDiffUsageErrors(t *testing.T) {
	t.Parallel()
	dir, _ := diffRepo(t)
	for name, tc := range map[string]struct {
		args []string
		want string
	}{
		"unknown base":   {[]string{"no-such-branch"}, `BASE: unknown revision "no-such-branch"`},
		"unknown head":   {[]string{"HEAD", "v9.9"}, `HEAD: unknown revision "v9.9"`},
		"unknown format": {[]string{"--format", "html", "HEAD"}, `unknown --format "html"`},
		"no revision":    {nil, "accepts between 1 and 2 arg(s)"},
		"three":          {[]string{"HEAD", "HEAD", "HEAD"}, "accepts between 1 and 2 arg(s)"},
		"missing path":   {[]string{"--path", "nope", "HEAD"}, `has no directory "nope"`},
		"not a repo":     {[]string{"--repo", t.TempDir(), "HEAD"}, "open git repository"},
	} {
		t.Run(name, func(t *testing.T) {
			args := append([]string{"diff", "--repo", dir}, tc.args...)
			code, out, errb := gitmesh(t, args...)
			if code != exitUsage || out != "" || !strings.Contains(errb, tc.want) {
				t.Errorf("exit %d, stdout %q, stderr %q; want 2 and %q", code, out, errb, tc.want)
			}
		})
	}
}

// TestDiffGolden prints one change of several kinds in every format: web
// moves its application port, api gets a second instance, and the web-to-api
// permission a second source.
func TestDiffGolden(t *testing.T) {
	t.Parallel()
	dir, base := diffRepo(t)
	head := gittest.Commit(t, dir, "Scale api | let db call it", map[string]string{
		"mesh/dataplanes/web-1.yaml":       dataplaneYAML("web-1", "10.0.0.1", "web", 10001, 8081, "api"),
		"mesh/dataplanes/api-2.yaml":       dataplaneYAML("api-2", "10.0.0.4", "api", 10002, 9090, "db"),
		"mesh/permissions/web-to-api.yaml": permissionYAML("web-to-api", "api", "web", "db"),
	})
	// Commits differ from run to run (their dates do): name them.
	normalise := strings.NewReplacer(base, "{base}", head, "{head}", base[:12], "{base}", head[:12], "{head}").Replace
	for format, file := range map[string]string{"text": "change.txt", "json": "change.json", "markdown": "change.md"} {
		t.Run(format, func(t *testing.T) {
			code, out, errb := gitmesh(t, "diff", "--repo", dir, "--path", diffPolicyDir, "--format", format, base, head)
			if code != exitFailed {
				t.Fatalf("exit %d\n%s%s", code, out, errb)
			}
			if format == "json" && !json.Valid([]byte(out)) {
				t.Fatalf("not JSON:\n%s", out)
			}
			golden.Check(t, filepath.Join("testdata", "diff", file), []byte(normalise(out)))
		})
	}
}
