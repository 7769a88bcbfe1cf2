package api_test

import (
	"bufio"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/gitmesh/gitmesh/api"
	"github.com/gitmesh/gitmesh/schema/schematest"
)

// TestConsoleFiles: the console's files are served with a CSP that allows
// no inline script or style and no other origin, and need no token.
func TestConsoleFiles(t *testing.T) {
	base, _, _ := startAPI(t, api.Config{AuthReads: true, AdminToken: []byte("admin")})
	for path, typ := range map[string]string{"/ui/": "text/html", "/ui/app.js": "text/javascript", "/ui/app.css": "text/css"} {
		r := get(t, base+path)
		if r.code != http.StatusOK || !strings.HasPrefix(r.header.Get("Content-Type"), typ) {
			t.Errorf("%s: %d %s", path, r.code, r.header.Get("Content-Type"))
		}
		for h, want := range map[string]string{"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer"} {
			if got := r.header.Get(h); got != want {
				t.Errorf("%s: %s %q, want %q", path, h, got, want)
			}
		}
		csp := r.header.Get("Content-Security-Policy")
		for _, want := range []string{"default-src 'self'", "frame-ancestors 'none'", "script-src 'self'", "style-src 'self'"} {
			if !strings.Contains(csp, want) {
				t.Errorf("%s: CSP %q lacks %q", path, csp, want)
			}
		}
		if strings.Contains(csp, "unsafe") {
			t.Errorf("%s: CSP %q allows unsafe sources", path, csp)
		}
	}
	page := string(get(t, base+"/ui/").body)
	for _, bad := range []string{"<style", "style=", "onclick", "http://", "https://"} {
		if strings.Contains(page, bad) {
			t.Errorf("index.html holds %q: inline code or another origin", bad)
		}
	}
	if strings.Contains(page, "<script>") || !strings.Contains(page, `<script src="app.js" defer></script>`) {
		t.Error("index.html should load app.js only")
	}
	if r := get(t, base+"/status"); r.code != http.StatusUnauthorized {
		t.Errorf("/status without a token: %d", r.code)
	}
	if r := get(t, base+"/events"); r.code != http.StatusUnauthorized {
		t.Errorf("/events without a token: %d", r.code)
	}
}

// TestConsoleScriptUsesNoHTMLSinks: the console writes data as text only.
func TestConsoleScriptUsesNoHTMLSinks(t *testing.T) {
	js, err := os.ReadFile("ui/app.js")
	if err != nil {
		t.Fatal(err)
	}
	for _, sink := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function", "setAttribute(\"style"} {
		if strings.Contains(string(js), sink) {
			t.Errorf("app.js uses %s", sink)
		}
	}
}

// TestEventsStream: the first event comes at once, as a server-sent event.
func TestEventsStream(t *testing.T) {
	base, _, _ := startAPI(t, api.Config{})
	resp, err := http.Get(base + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("%d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if sc.Text() == "event: change" {
			return
		}
	}
	t.Fatalf("no change event: %v", sc.Err())
}

// TestMatrix: the bundled policies' permission matrix, cell by cell.
func TestMatrix(t *testing.T) {
	base, b, _ := startAPI(t, api.Config{})
	b.serve(schematest.Load(t, os.DirFS("../policies")), servedCommit)
	var m struct {
		MTLS     bool     `json:"mtls"`
		Services []string `json:"services"`
		Cells    []struct {
			From, To, Verdict string
			Policies          []struct{ Name, File string }
		} `json:"cells"`
	}
	get(t, base+"/meshes/default/matrix").wantJSON(t, http.StatusOK, &m)
	if !m.MTLS || strings.Join(m.Services, ",") != "backend,redis,web" {
		t.Fatalf("matrix: %+v", m)
	}
	want := map[string]string{"web>backend": "allowed", "backend>redis": "allowed", "web>redis": "denied", "redis>web": "denied"}
	for _, c := range m.Cells {
		if v, ok := want[c.From+">"+c.To]; ok && v != c.Verdict {
			t.Errorf("%s → %s: %s, want %s", c.From, c.To, c.Verdict, v)
		}
		if c.From == "web" && c.To == "backend" && (len(c.Policies) != 1 || c.Policies[0].Name != "web-to-backend" || c.Policies[0].File == "") {
			t.Errorf("web → backend decided by %+v", c.Policies)
		}
	}
	get(t, base+"/meshes/nope/matrix").wantError(t, http.StatusNotFound, `mesh "nope" not found`)
	get(t, base+"/diff").wantError(t, http.StatusNotFound, "diff is not available")
}

// The resources of one dataplane, as gitmesh render --format json prints
// them, for either flavour.
func TestDataplaneResources(t *testing.T) {
	base, b, _ := startAPI(t, api.Config{})
	b.serve(schematest.Load(t, os.DirFS("../policies")), servedCommit)
	for _, flavor := range []string{"", "envoy", "grpc"} {
		var doc struct {
			Node, Flavor, Hash string
			Listeners          []map[string]any
		}
		get(t, base+"/meshes/default/dataplanes/web-01/resources?flavor="+flavor).wantJSON(t, http.StatusOK, &doc)
		want := flavor
		if want == "" {
			want = "envoy"
		}
		if doc.Node != "default.web-01" || doc.Flavor != want || len(doc.Hash) != 64 || len(doc.Listeners) == 0 {
			t.Errorf("flavor %q: %+v", flavor, doc)
		}
	}
	get(t, base+"/meshes/default/dataplanes/web-01/resources?flavor=istio").wantError(t, http.StatusBadRequest, `flavor "istio"`)
	get(t, base+"/meshes/default/dataplanes/nope/resources").wantError(t, http.StatusNotFound, `dataplane "nope" not found`)
}
