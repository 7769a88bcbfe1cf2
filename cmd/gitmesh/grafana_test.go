package main

import (
	"encoding/json"
	"errors"
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/gitmesh/gitmesh/reconcile/gittest"
	"github.com/gitmesh/gitmesh/xds/adstest"
)

// promQuery is what a PromQL expression reads: the metrics it selects and
// the labels it names (in matchers, by/without/on/ignoring clauses, and a
// Grafana legend's {{label}}).
type promQuery struct {
	Expr    string
	Metrics []string
	Labels  []string
}

var (
	promString   = regexp.MustCompile("\"(?:[^\"\\\\]|\\\\.)*\"|'(?:[^'\\\\]|\\\\.)*'|`[^`]*`")
	promRange    = regexp.MustCompile(`\[[^\]]*\]`)
	promMatchers = regexp.MustCompile(`\{([^}]*)\}`)
	promMatcher  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)`)
	promGrouping = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)`)
	promIdent    = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
	legendLabel  = regexp.MustCompile(`\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}`)
	labelValues  = regexp.MustCompile(`^\s*label_values\((.*),\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*$`)
)

// promKeywords are the identifiers of PromQL that are no metric.
var promKeywords = map[string]bool{"and": true, "or": true, "unless": true, "bool": true, "offset": true,
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
	"inf": true, "nan": true, "Inf": true, "NaN": true}

// parsePromQL finds the metrics and labels of expr: strings and ranges are
// dropped, label matchers and grouping clauses give labels, and what is
// left that is an identifier not followed by "(" (a function) nor a
// keyword is a metric name.
func parsePromQL(expr string) promQuery {
	q := promQuery{Expr: expr}
	if m := labelValues.FindStringSubmatch(expr); m != nil { // Grafana's label_values(selector, label)
		q = parsePromQL(m[1])
		q.Expr = expr
		q.Labels = append(q.Labels, m[2])
		return q
	}
	s := promString.ReplaceAllString(expr, `""`)
	s = promRange.ReplaceAllString(s, " ")
	for _, m := range promMatchers.FindAllStringSubmatch(s, -1) {
		for _, l := range promMatcher.FindAllStringSubmatch(m[1], -1) {
			q.Labels = append(q.Labels, l[1])
		}
	}
	s = promMatchers.ReplaceAllString(s, " ")
	for _, m := range promGrouping.FindAllStringSubmatch(s, -1) {
		for _, l := range strings.Split(m[1], ",") {
			if l = strings.TrimSpace(l); l != "" {
				q.Labels = append(q.Labels, l)
			}
		}
	}
	s = promGrouping.ReplaceAllString(s, " ")
	for _, loc := range promIdent.FindAllStringIndex(s, -1) {
		id := s[loc[0]:loc[1]]
		if loc[0] > 0 && (isPromWordByte(s[loc[0]-1]) || s[loc[0]-1] == '.') {
			continue // within a number such as 1e3 or a duration such as 5m
		}
		if promKeywords[id] || strings.HasPrefix(strings.TrimLeft(s[loc[1]:], " \t\n"), "(") {
			continue
		}
		q.Metrics = append(q.Metrics, id)
	}
	return q
}

func isPromWordByte(c byte) bool {
	return c == '_' || c == ':' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

// exposition reads the Prometheus text format: each sample's name with the
// labels it carries on some sample.
func exposition(t *testing.T, text string) map[string]map[string]bool {
	t.Helper()
	out := map[string]map[string]bool{}
	for _, line := range strings.Split(text, "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		end := strings.IndexAny(line, "{ ")
		if end < 0 {
			t.Fatalf("metrics line %q", line)
		}
		name := line[:end]
		if out[name] == nil {
			out[name] = map[string]bool{}
		}
		if line[end] != '{' {
			continue
		}
		rest := line[end+1:]
		for len(rest) > 0 && rest[0] != '}' {
			eq := strings.Index(rest, `="`)
			if eq < 0 {
				t.Fatalf("metrics line %q: labels", line)
			}
			out[name][strings.TrimLeft(rest[:eq], ", ")] = true
			i := eq + 2
			for ; i < len(rest) && rest[i] != '"'; i++ {
				if rest[i] == '\\' {
					i++
				}
			}
			rest = strings.TrimLeft(rest[i+1:], ",")
		}
	}
	return out
}

// dashboardQueries are every PromQL expression of a Grafana dashboard,
// panels of collapsed rows and the template variables' queries included,
// with the legend's labels added to each.
func dashboardQueries(t *testing.T, dash map[string]any) []promQuery {
	t.Helper()
	var out []promQuery
	var panels func(ps []any)
	panels = func(ps []any) {
		for _, p := range ps {
			p := p.(map[string]any)
			if nested, ok := p["panels"].([]any); ok {
				panels(nested)
			}
			if p["type"] != "row" {
				checkDatasource(t, "panel "+str(p["title"]), p["datasource"])
			}
			targets, _ := p["targets"].([]any)
			if p["type"] != "row" && len(targets) == 0 {
				t.Errorf("panel %q has no query", p["title"])
			}
			for _, tg := range targets {
				tg := tg.(map[string]any)
				checkDatasource(t, "a query of panel "+str(p["title"]), tg["datasource"])
				q := parsePromQL(str(tg["expr"]))
				for _, m := range legendLabel.FindAllStringSubmatch(str(tg["legendFormat"]), -1) {
					q.Labels = append(q.Labels, m[1])
				}
				out = append(out, q)
			}
		}
	}
	ps, _ := dash["panels"].([]any)
	panels(ps)
	templating, _ := dash["templating"].(map[string]any)
	vars, _ := templating["list"].([]any)
	for _, v := range vars {
		v := v.(map[string]any)
		if v["type"] != "query" {
			continue
		}
		checkDatasource(t, "variable "+str(v["name"]), v["datasource"])
		expr := v["query"]
		if m, ok := expr.(map[string]any); ok {
			expr = m["query"]
		}
		out = append(out, parsePromQL(str(expr)))
	}
	return out
}

func str(v any) string { s, _ := v.(string); return s }

// checkDatasource wants the dashboard's Prometheus variable, so that the
// dashboard imports into any Grafana.
func checkDatasource(t *testing.T, what string, ds any) {
	t.Helper()
	m, _ := ds.(map[string]any)
	if m["type"] != "prometheus" || m["uid"] != "${datasource}" {
		t.Errorf("%s: datasource %v; want {type: prometheus, uid: ${datasource}}", what, ds)
	}
}

// TestGrafanaDashboard checks examples/grafana/gitmesh.json: a dashboard
// Grafana imports (schema version, a Prometheus data source variable)
// whose every query names metrics and labels that a running gitmesh serve
// exposes on /metrics, once it has published, been ACKed and been NACKed.
func TestGrafanaDashboard(t *testing.T) {
	b, err := os.ReadFile(repoRoot + "/examples/grafana/gitmesh.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash map[string]any
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("gitmesh.json: %v", err)
	}
	if v, _ := dash["schemaVersion"].(float64); v < 36 || v > 41 {
		t.Errorf("schemaVersion %v; want one of Grafana 9 to 11 (about 39)", dash["schemaVersion"])
	}
	if dash["uid"] != "gitmesh" || dash["title"] == "" {
		t.Errorf("uid %v, title %v", dash["uid"], dash["title"])
	}
	templating, _ := dash["templating"].(map[string]any)
	vars, _ := templating["list"].([]any)
	if i := slices.IndexFunc(vars, func(v any) bool {
		m, _ := v.(map[string]any)
		return m["name"] == "datasource" && m["type"] == "datasource" && m["query"] == "prometheus"
	}); i < 0 {
		t.Error("no datasource variable of type prometheus named datasource")
	}
	queries := dashboardQueries(t, dash)
	used := map[string]bool{}
	for _, q := range queries {
		if len(q.Metrics) == 0 {
			t.Errorf("%q: no metric found in it", q.Expr)
		}
		for _, m := range q.Metrics {
			used[m] = true
		}
	}
	// What the dashboard is for: each of these is queried.
	for _, m := range []string{"gitmesh_sync_attempts_total", "gitmesh_stage_duration_seconds_bucket",
		"gitmesh_convergence_seconds_bucket", "gitmesh_pinned", "gitmesh_xds_nacks_total",
		"gitmesh_proxy_rejections_total", "gitmesh_connected_proxies", "gitmesh_head_invalid",
		"gitmesh_last_good_sync_timestamp_seconds"} {
		if !used[m] {
			t.Errorf("the dashboard does not query %s", m)
		}
	}

	// A daemon that has published, been ACKed, NACKed, and so counted
	// everything.
	r := newRemote(t)
	c1 := r.push(t, "Initial policies", policyFiles(t))
	s := startServe(t, serveOptions{repo: r.url, path: "policies", stateDir: t.TempDir(), webhookSecretFile: writeSecret(t, webhookSecret)})
	backend := dialAddrWith(t, s.app.xdsLis.Addr().String(), "default.backend-01", adstest.Options{Reject: func(resp *discoverygrpc.DiscoveryResponse) error {
		if resp.TypeUrl == resource.ListenerType && !strings.HasPrefix(resp.VersionInfo, c1[:12]) {
			return errors.New("listener refused by this proxy")
		}
		return nil
	}})
	s.waitCommit(t, backend, c1)
	gittest.Git(t, r.work, "rm", "-q", "policies/permissions/web-to-backend.yaml")
	r.push(t, "Stop web from calling backend", nil)
	s.hook(t, webhookSecret)
	deadline := time.Now().Add(15 * time.Second)
	for backend.NACKs() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the proxy never NACKed the second commit")
		}
		time.Sleep(20 * time.Millisecond)
	}
	var exposed map[string]map[string]bool
	for {
		exposed = exposition(t, s.metrics(t))
		if exposed["gitmesh_xds_nacks_total"] != nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}

	// Labels Prometheus adds as it scrapes.
	scrape := map[string]bool{"job": true, "instance": true}
	for _, q := range queries {
		labels := map[string]bool{}
		for _, m := range q.Metrics {
			l, ok := exposed[m]
			if !ok {
				t.Errorf("%q: %s is not on /metrics", q.Expr, m)
			}
			for k := range l {
				labels[k] = true
			}
		}
		for _, l := range q.Labels {
			if !labels[l] && !scrape[l] {
				have := slices.Sorted(maps.Keys(labels))
				t.Errorf("%q: label %s is on none of %v (their labels: %v)", q.Expr, l, q.Metrics, have)
			}
		}
	}
}

// TestParsePromQL: the metrics and labels found in the kinds of expression
// the dashboard uses.
func TestParsePromQL(t *testing.T) {
	for _, tc := range []struct {
		expr            string
		metrics, labels []string
	}{
		{`sum by (result) (increase(gitmesh_sync_attempts_total{job=~"$job"}[$__rate_interval]))`,
			[]string{"gitmesh_sync_attempts_total"}, []string{"job", "result"}},
		{`histogram_quantile(0.95, sum by (le, stage) (rate(a_bucket{x="{y}"}[5m]))) / on(stage) b_count offset 1h`,
			[]string{"a_bucket", "b_count"}, []string{"x", "le", "stage", "stage"}},
		{`time() - max(c > 0) and 1e3 < d`, []string{"c", "d"}, nil},
		{`label_values(gitmesh_pinned{job=~"$job"}, instance)`, []string{"gitmesh_pinned"}, []string{"job", "instance"}},
	} {
		q := parsePromQL(tc.expr)
		if !slices.Equal(q.Metrics, tc.metrics) || !slices.Equal(q.Labels, tc.labels) {
			t.Errorf("%s: metrics %v labels %v; want %v %v", tc.expr, q.Metrics, q.Labels, tc.metrics, tc.labels)
		}
	}
}
