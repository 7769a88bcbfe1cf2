package main

import (
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/gitmesh/gitmesh/reconcile/gittest"
)

// chromiumPath finds the Chromium the console tests drive: GITMESH_CHROMIUM,
// or chromium on the PATH. Without one the test fails saying how to get it.
func chromiumPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("GITMESH_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("the console tests need Chromium: apt-get install -y chromium (Debian, Ubuntu), " +
		"or set GITMESH_CHROMIUM to a Chrome or Chromium binary; .ci/run installs it")
	return ""
}

// browser is a headless Chromium page.
type browser struct {
	t       *testing.T
	ctx     context.Context
	shots   string
	alerted atomic.Bool
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.Flag("headless", true), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.NoFirstRun,
		chromedp.WindowSize(1280, 860),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 90*time.Second)
	t.Cleanup(func() { cancelTimeout(); cancelCtx(); cancelAlloc() })
	b := &browser{t: t, ctx: ctx, shots: os.Getenv("GITMESH_SCREENSHOTS")}
	if b.shots == "" {
		b.shots = t.TempDir()
	}
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start Chromium: %v", err)
	}
	// A dialog (alert) would mean a page ran script it was given as data.
	dialogs := chromedp.Events(ctx, page.JavascriptDialogOpening)
	go func() {
		for _, err := range dialogs {
			if err != nil {
				return
			}
			b.alerted.Store(true)
			_, _ = chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true})
		}
	}()
	return b
}

func (b *browser) run(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.fail(what, err)
	}
}

// fail ends the test with err and the text of the page.
func (b *browser) fail(what string, err error) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	text, _ := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("body")))
	b.t.Fatalf("%s: %v\npage:\n%s", what, err, text)
}

// value runs a with a bound and returns its value.
func value[T any](b *browser, what string, a chromedp.Action[T]) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		b.fail(what, err)
	}
	return v
}

// until waits for the JavaScript expression cond to be true.
func (b *browser) until(what, cond string) {
	b.t.Helper()
	value(b, "waiting for "+what, chromedp.Poll[bool](cond, chromedp.WithPollingTimeout(15*time.Second)))
}

// click clicks the first element sel matches, found and clicked in one
// step: a live update may render the view again between a query and a
// click of the element it found.
func (b *browser) click(what, sel string) {
	b.t.Helper()
	b.until(what, js(`document.querySelector(%q) !== null`, sel))
	if !value(b, what, chromedp.Evaluate[bool](js(`(() => { const e = document.querySelector(%q); if (!e) return false; e.click(); return true; })()`, sel))) {
		b.fail(what, fmt.Errorf("no element %s", sel))
	}
}

// text is the text of the first element sel matches, read in one step:
// the page may render the view again at any time.
func (b *browser) text(sel string) string {
	b.t.Helper()
	return value(b, "text of "+sel, chromedp.Evaluate[string](js(`document.querySelector(%q)?.textContent ?? ""`, sel)))
}

// answer fills in the console's modal and presses its OK button.
func (b *browser) answer(token, reason string) {
	b.t.Helper()
	steps := []chromedp.Action[chromedp.Void]{chromedp.WaitVisible(chromedp.CSS("#modal-ok")),
		chromedp.SetValue(chromedp.CSS("#modal-token"), token)}
	if reason != "" {
		steps = append(steps, chromedp.SetValue(chromedp.CSS("#modal-reason"), reason))
	}
	b.run("answer the modal", append(steps, chromedp.Click(chromedp.CSS("#modal-ok")))...)
}

func (b *browser) screenshot(name string) {
	b.t.Helper()
	png := value(b, "screenshot", chromedp.CaptureScreenshot())
	if err := os.WriteFile(filepath.Join(b.shots, name+".png"), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

func js(format string, args ...any) string { return fmt.Sprintf(format, args...) }

// The forge of TestConsole, and a policy file whose name is hostile (it
// comes from a commit), with an unknown field on line 8.
const (
	consoleForge = "https://forge.example.com/platform/mesh/blob/{commit}/{path}#L{line}"
	oddFile      = `policies/odd "<>?#&.yaml`
	oddPolicy    = "type: Dataplane\nmesh: default\nname: odd-01\nnetworking:\n  address: 10.0.0.99\n  inbound:\n    - port: 10099\n" +
		"      servicPort: 8099\n      tags:\n        service: odd\n"
)

// forgeURL is what the console should link a file and line of commit to:
// the path's segments encoded as JavaScript's encodeURIComponent does.
func forgeURL(commit, path string, line int) string {
	segments := strings.Split(path, "/")
	for i, seg := range segments {
		var b strings.Builder
		for _, c := range []byte(seg) {
			if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-_.!~*'()", c) >= 0 {
				b.WriteByte(c)
			} else {
				fmt.Fprintf(&b, "%%%02X", c)
			}
		}
		segments[i] = b.String()
	}
	return strings.NewReplacer("{commit}", commit, "{path}", strings.Join(segments, "/"), "{line}", strconv.Itoa(line)).Replace(consoleForge)
}

// TestConsole drives the web console in headless Chromium against a daemon
// following a git daemon, with a proxy on an ADS stream: tokens, the
// overview, an invalid push with its findings linked to the forge, a
// hostile subject, the permission matrix, the plan of a commit, a rollback
// and a resume from the page, the proxies with their certificates.
func TestConsole(t *testing.T) {
	b := newBrowser(t)
	r := newRemote(t)
	c1 := r.push(t, "Initial policies", policyFiles(t))
	stateDir := t.TempDir()
	const adminToken, readToken = "admin-token-for-the-console", "read-token-for-the-console"
	s := startServe(t, serveOptions{repo: r.url, path: "policies", stateDir: stateDir, webhookSecretFile: writeSecret(t, webhookSecret),
		adminTokenFile: writeSecret(t, adminToken), readTokenFile: writeSecret(t, readToken), authReads: true, repoWebURL: consoleForge})
	backend := s.dial(t, "default.backend-01")
	waitVersionPrefix(t, backend, c1)

	// Reads need a token: a wrong one is refused, the read token opens.
	b.run("open the console", chromedp.Navigate(s.api("/ui/")))
	b.answer("not-a-token", "")
	b.until("the refusal", `document.querySelector("#modal-text").textContent.includes("refused")`)
	b.answer(readToken, "")
	b.until("the head", js(`(document.querySelector("#head")||{}).textContent?.includes(%q)`, c1[:12]))
	b.until("the branch", `document.querySelector("#branch")?.textContent === "main"`)
	b.until("the live stream", `document.querySelector("#live").textContent === "live"`)
	b.screenshot("overview")

	// The matrix: web may call backend.
	b.run("open the matrix", chromedp.Navigate(s.api("/ui/#/mesh/default")))
	cell := `document.querySelector('#matrix td[data-from="web"][data-to="backend"]')`
	b.until("web → backend allowed", cell+`?.dataset.verdict === "allowed"`)

	// An invalid push shows up live, with its findings, each file and line
	// a link into the forge, the hostile file name encoded.
	typos := typoInWeb(t)
	typos[oddFile] = oddPolicy
	bad := r.push(t, "Typo in web's inbound", typos)
	s.hook(t, webhookSecret)
	b.run("open the history", chromedp.Navigate(s.api("/ui/#/history")))
	row := js(`document.querySelector('#history tr[data-commit=%q]')`, bad)
	b.until("the invalid commit", row+`?.dataset.verdict === "invalid"`)
	if got := b.text(js(`#history tr[data-commit=%q]`, bad)); !strings.Contains(got, "policies/dataplanes/web.yaml:8") || !strings.Contains(got, "servicePrt") {
		t.Errorf("the invalid commit's row lacks its finding: %q", got)
	}
	links := func(sel string) map[string]string {
		t.Helper()
		return value(b, "the links of "+sel, chromedp.Evaluate[map[string]string](js(`Object.fromEntries([...document.querySelectorAll(%q)].map((a) =>
			[a.textContent, a.getAttribute("href") + " " + a.rel + " " + a.target]))`, sel)))
	}
	wantLinks := map[string]string{
		"policies/dataplanes/web.yaml:8:7": forgeURL(bad, "policies/dataplanes/web.yaml", 8) + " noopener noreferrer _blank",
		oddFile + ":8:7":                   forgeURL(bad, oddFile, 8) + " noopener noreferrer _blank",
	}
	if got := links(js(`#history tr[data-commit=%q] ul.findings a`, bad)); !maps.Equal(got, wantLinks) {
		t.Errorf("the findings' links: %q, want %q", got, wantLinks)
	}
	// What the page makes of paths and templates that could leave the
	// file's place: the path is encoded segment by segment, and no
	// address is made for dot segments or a template of another scheme.
	for _, tc := range []struct{ tmpl, path, want string }{
		{consoleForge, "../../x?y#z.yaml", ""},
		{consoleForge, "policies/../../x.yaml", ""},
		{consoleForge, "policies//x.yaml", ""},
		{consoleForge, "policies/%2e%2e/x?y#z.yaml", forgeURL(bad, "policies/%2e%2e/x?y#z.yaml", 3)},
		{consoleForge, `p/a "<>\b.yaml`, forgeURL(bad, `p/a "<>\b.yaml`, 3)},
		{"javascript:alert(1)//{commit}/{path}", "x.yaml", ""},
		{"https://{commit}.example.com/{path}", "x.yaml", ""},
		{"", "x.yaml", ""}, // no --repo-web-url: file:line stays text
	} {
		got := value(b, "forgeURL", chromedp.Evaluate[string](js(`window.gitmeshConsole.forgeURL(%q, %q, %q, 3) ?? ""`, tc.tmpl, bad, tc.path)))
		if got != tc.want {
			t.Errorf("the console's address of %q with %q: %q, want %q", tc.path, tc.tmpl, got, tc.want)
		}
	}
	if b.alerted.Load() {
		t.Error("a template or path ran script")
	}

	// A commit whose subject is HTML, which also takes web's permission
	// away: text on the page, and the matrix changes.
	hostile := "<img src=x onerror=alert(1)>"
	files := policyFiles(t)
	gittest.WriteFiles(t, r.work, map[string]string{"policies/dataplanes/web.yaml": files["policies/dataplanes/web.yaml"]})
	gittest.Git(t, r.work, "rm", "-q", "policies/permissions/web-to-backend.yaml", oddFile)
	gittest.Git(t, r.work, "add", "-A")
	c3 := r.push(t, hostile, nil)
	s.hook(t, webhookSecret)
	waitVersionPrefix(t, backend, c3)
	row = js(`document.querySelector('#history tr[data-commit=%q]')`, c3)
	b.until("the hostile commit", row+`?.dataset.verdict === "published"`)
	imgs := value(b, "count images", chromedp.Evaluate[int](`document.querySelectorAll("img").length`))
	body := b.text("#history")
	if imgs != 0 || !strings.Contains(body, hostile) || b.alerted.Load() {
		t.Errorf("the subject %q was not shown as text: %d img elements, alert %v, text %q", hostile, imgs, b.alerted.Load(), body)
	}
	b.run("open the matrix", chromedp.Navigate(s.api("/ui/#/mesh/default")))
	b.until("web → backend denied", cell+`?.dataset.verdict === "denied"`)
	b.until("backend → redis allowed", `document.querySelector('#matrix td[data-from="backend"][data-to="redis"]')?.dataset.verdict === "allowed"`)
	b.click("select a cell", `#matrix td[data-from="backend"][data-to="redis"]`)
	b.until("the deciding policy", `document.querySelector("#cell-detail").textContent.includes("backend-to-redis")`)
	b.screenshot("mesh")

	// Roll back to the first commit from the history: a wrong token and
	// the read token are refused, the admin token does it.
	b.run("open the history", chromedp.Navigate(s.api("/ui/#/history")))
	button := js(`#history button.rollback[data-commit=%q]`, c1)
	b.until("the rollback button", js(`!!document.querySelector(%q)`, button))
	b.click("roll back", button)
	b.answer("wrong-admin-token", "test")
	b.until("the wrong token refused", `document.querySelector("#modal-error").textContent.includes("Refused: invalid token")`)
	b.answer(readToken, "test")
	b.until("the read token refused", `document.querySelector("#modal-error").textContent.includes("may only read")`)
	if st := s.app.daemon.Status(); st.Pinned {
		t.Fatal("a refused rollback pinned the mesh")
	}
	b.answer(adminToken, "web cannot reach backend")
	waitVersionPrefix(t, backend, c1)
	b.until("the pin banner", `!document.querySelector("#banner").hidden && document.querySelector("#banner").textContent.includes("web cannot reach backend")`)
	b.screenshot("history")

	// The invalid commit's findings on its page, linked too.
	b.run("open the invalid commit", chromedp.Navigate(s.api("/ui/#/commit/"+bad)))
	b.until("its findings", `document.querySelectorAll("ul.findings a.forge").length >= 2`)
	if got := links("ul.findings a.forge"); !maps.Equal(got, wantLinks) {
		t.Errorf("the commit's findings' links: %q, want %q", got, wantLinks)
	}

	// The plan of the hostile commit against what is served now.
	b.run("open the commit", chromedp.Navigate(s.api("/ui/#/commit/"+c3)))
	b.until("the plan", `document.querySelector("#plan-resources")?.textContent.includes("TrafficPermission default/web-to-backend")`)
	b.screenshot("commit")

	// The proxies and a dataplane: backend-01's certificate, its SAN and
	// when it expires (an hour from its issue: not soon).
	b.run("open the proxies", chromedp.Navigate(s.api("/ui/#/proxies")))
	proxy := `document.querySelector('#proxies tr[data-node="default.backend-01"]')`
	b.until("the proxy", proxy+`?.textContent.includes("yes")`)
	b.until("its SAN", proxy+`?.querySelector("td.sans")?.textContent === "spiffe://default/backend"`)
	b.until("its expiry", proxy+`?.querySelector(".expiry")?.dataset.expiry === "ok"`)
	notAfter := value(b, "the certificate's expiry", chromedp.Evaluate[string](`fetch("/proxies", {headers: {Authorization: "Bearer `+readToken+`"}}).
		then((r) => r.json()).then((l) => l.items.find((p) => p.nodeId === "default.backend-01").certificate.notAfter)`, chromedp.EvalAwaitPromise))
	if at, err := time.Parse(time.RFC3339, notAfter); err != nil || time.Until(at) < 50*time.Minute || time.Until(at) > 61*time.Minute {
		t.Errorf("backend-01's certificate expires at %q (%v), want about an hour from now (--cert-validity 1h)", notAfter, err)
	}
	if got := b.text(`#proxies tr[data-node="default.backend-01"] .expiry`); !strings.Contains(got, "in ") {
		t.Errorf("the expiry shown: %q, want the time left", got)
	}
	// The marks: an hour-long certificate with 10 minutes left expires
	// soon, one with 23 hours of 90 days left too, one with 23 of 24 hours
	// left is being renewed in time, and a past one has expired.
	for _, tc := range []struct{ from, to, want string }{
		{"2026-03-14T11:00:00Z", "2026-03-14T12:10:00Z", "soon"},
		{"2026-01-01T00:00:00Z", "2026-03-15T11:00:00Z", "soon"},
		{"2026-03-14T11:00:00Z", "2026-03-15T11:00:00Z", "ok"},
		{"2026-03-13T00:00:00Z", "2026-03-14T11:59:00Z", "expired"},
	} {
		got := value(b, "expiry", chromedp.Evaluate[string](js(`window.gitmeshConsole.expiry(%q, %q, Date.parse("2026-03-14T12:00:00Z")).state`, tc.from, tc.to)))
		if got != tc.want {
			t.Errorf("a certificate from %s to %s at 12:00: %s, want %s", tc.from, tc.to, got, tc.want)
		}
	}
	b.screenshot("proxies")
	// Sorted by expiry, filtered by SAN.
	b.click("sort by expiry", `#proxies th:nth-child(6)`)
	b.until("sorted by expiry", `document.querySelector("#proxies th:nth-child(6)")?.className.includes("sorted-asc") && `+proxy+`?.querySelector(".expiry") !== null`)
	filter := func(text string) {
		t.Helper()
		value(b, "filter "+text, chromedp.Evaluate[bool](js(`(() => { const i = document.querySelector("#proxy-filter"); i.value = %q;
			return i.dispatchEvent(new Event("input")); })()`, text)))
	}
	filter("spiffe://other/")
	b.until("no proxy has that SAN", `document.querySelectorAll("#proxies tr[data-node]").length === 0`)
	filter("spiffe://default/backend")
	b.until("the proxy with the SAN", proxy+` !== null`)
	filter("")
	b.run("open the dataplane", chromedp.Navigate(s.api("/ui/#/dataplane/default/backend-01")))
	b.until("the inbound's policy", `document.querySelector("#inbounds")?.textContent.includes("web-to-backend")`)
	b.click("show its gRPC resources", "#show-grpc")
	b.until("the rendered resources", `document.querySelector("#resources")?.textContent.includes('"flavor": "grpc"')`)

	// Resume from the banner: the admin token is still in the page.
	b.click("resume", "#resume")
	b.answer(adminToken, "fixed")
	waitVersionPrefix(t, backend, c3)
	b.until("the banner gone", `document.querySelector("#banner").hidden`)
}
