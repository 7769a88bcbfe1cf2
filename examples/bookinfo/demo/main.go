// Command demo shows bookinfo following commits: it makes a git repository
// of examples/bookinfo/policies, runs `gitmesh serve` on it, and starts the
// six bookinfo processes as proxyless gRPC applications (each with `gitmesh
// certs` and a `gitmesh bootstrap --grpc` bootstrap). Then three acts:
//
//   - Routing: it commits the MeshHTTPRoutes of examples/bookinfo/routes one
//     after the other (reviews v1 90% and v2 10%, then half and half, then v3
//     only, then the end user jason to v3 and everyone else 90/10), and
//     after each prints which reviews version answered how many of the
//     pages productpage served.
//   - Resilience: with every page on reviews v3 (which calls ratings), it
//     commits the policies of examples/bookinfo/resilience one after the
//     other (ratings aborting half its calls, reviews retrying them,
//     ratings answering 2 s late, reviews giving up after 300 ms), and after
//     each prints how the pages' calls to ratings ended and how long a page
//     took.
//   - Permissions: it prints a line per page while it commits a change, an
//     invalid commit, a rollback and a resume.
//
// `make demo` builds the binaries and runs it. It stops by itself.
//
// Usage: demo [-bin DIR] [-dir DIR] [-pause DURATION] [-pages N]
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/gitmesh/gitmesh/examples/bookinfo/app"
	"github.com/gitmesh/gitmesh/reconcile"
)

// Ports of the demo: the control plane's, and productpage's page.
const (
	xdsAddress  = "127.0.0.1:15678"
	apiAddress  = "127.0.0.1:15681"
	pageAddress = "127.0.0.1:9080"
)

type demo struct {
	bin, dir, repo string
	pause          time.Duration
	pages          int
	procs          []*exec.Cmd
	logs           *os.File
}

func main() {
	d := &demo{}
	flag.StringVar(&d.bin, "bin", "bin", "directory of gitmesh and the four bookinfo binaries")
	flag.StringVar(&d.dir, "dir", ".run/bookinfo", "working directory of the demo (repository, state, certificates, logs)")
	flag.DurationVar(&d.pause, "pause", 6*time.Second, "how long to watch after each step of the permissions act")
	flag.IntVar(&d.pages, "pages", 200, "how many pages to load after each step of the routing act")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := d.run(ctx)
	stop()
	d.stopAll()
	if err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func (d *demo) run(ctx context.Context) error {
	if err := os.RemoveAll(d.dir); err != nil {
		return err
	}
	d.repo = filepath.Join(d.dir, "repo")
	if err := os.MkdirAll(d.repo, 0o755); err != nil {
		return err
	}
	logs, err := os.Create(filepath.Join(d.dir, "processes.log"))
	if err != nil {
		return err
	}
	d.logs = logs
	if err := d.git("init", "-q", "-b", "main"); err != nil {
		return err
	}
	if err := exec.Command("cp", "-R", "examples/bookinfo/policies", filepath.Join(d.repo, "policies")).Run(); err != nil {
		return fmt.Errorf("copy the policies (run from the project root): %w", err)
	}
	if err := d.commit("Bookinfo: mTLS, productpage→details, productpage→reviews, reviews→ratings", "add", "-A"); err != nil {
		return err
	}
	first, _ := d.head()

	state := filepath.Join(d.dir, "state")
	d.say("Starting gitmesh serve on %s (logs in %s)", d.repo, logs.Name())
	if err := d.start(nil, d.gitmesh(), "serve", "--repo", d.repo, "--path", "policies", "--state-dir", state,
		"--xds-address", xdsAddress, "--api-address", apiAddress); err != nil {
		return err
	}
	for _, dp := range app.Dataplanes {
		certs := filepath.Join(d.dir, "certs", dp.Name)
		if err := d.start(nil, d.gitmesh(), "certs", "--dataplane", "bookinfo/"+dp.Name, "--xds-address", xdsAddress, "--dir", certs); err != nil {
			return err
		}
		out, err := exec.Command(d.gitmesh(), "bootstrap", "--grpc", "--dataplane", "bookinfo/"+dp.Name,
			"--xds-address", xdsAddress, "--cert-dir", certs).Output()
		if err != nil {
			return fmt.Errorf("bootstrap %s: %w", dp.Name, err)
		}
		boot := filepath.Join(d.dir, dp.Name+".json")
		if err := os.WriteFile(boot, out, 0o600); err != nil {
			return err
		}
		if err := waitFile(ctx, filepath.Join(certs, "cert.pem")); err != nil {
			return fmt.Errorf("certificates of %s: %w", dp.Name, err)
		}
		args := []string{"--listen", fmt.Sprintf("127.0.0.1:%d", dp.Port), "--version", dp.Version}
		if dp.Service == "productpage" {
			args = append(args, "--http", pageAddress)
		}
		if err := d.start([]string{"GRPC_XDS_BOOTSTRAP=" + boot}, filepath.Join(d.bin, dp.Service), args...); err != nil {
			return err
		}
	}
	d.say("Six proxyless gRPC processes up; productpage on http://%s/", pageAddress)
	if err := d.waitVersions(ctx); err != nil {
		return err
	}
	if err := d.routing(ctx); err != nil {
		return err
	}
	if err := d.resilience(ctx); err != nil {
		return err
	}

	d.say("Permissions. Every line below is one page of productpage (http://%s/)", pageAddress)
	watch, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go d.watch(watch)

	steps := []struct {
		say string
		do  func() error
	}{
		{"Commit: remove the permission productpage→reviews", func() error {
			return d.commit("Stop productpage from calling reviews", "rm", "-q", "policies/permissions/productpage-to-reviews.yaml")
		}},
		{"Commit an invalid change (a typo in a field): nothing changes", func() error {
			f := filepath.Join(d.repo, "policies/permissions/productpage-to-details.yaml")
			b, err := os.ReadFile(f)
			if err != nil {
				return err
			}
			if err := os.WriteFile(f, []byte(strings.Replace(string(b), "destinations", "destination", 1)), 0o644); err != nil {
				return err
			}
			return d.commit("Typo", "add", "-A")
		}},
		{"gitmesh rollback to the first commit: access comes back", func() error {
			return d.cli("rollback", first[:12], "--reason", "productpage lost reviews", "--by", "demo")
		}},
		{"gitmesh resume: the branch's newest valid commit applies again", func() error {
			return d.cli("resume", "--by", "demo")
		}},
	}
	if err := sleep(ctx, d.pause); err != nil {
		return err
	}
	for _, s := range steps {
		d.say("%s", s.say)
		if err := s.do(); err != nil {
			return err
		}
		if err := sleep(ctx, d.pause); err != nil {
			return err
		}
	}
	stopWatch()
	d.say("Done. `%s history --api-address %s` shows what happened.", d.gitmesh(), apiAddress)
	return d.cli("history")
}

// routeSteps are the routing act: each commits a MeshHTTPRoute of
// examples/bookinfo/routes as policies/routes/reviews.yaml, then loads
// pages as each of users (the end user, "" for none).
var routeSteps = []struct {
	say, file string
	users     []string
}{
	{"Commit a MeshHTTPRoute: productpage's calls to reviews go 90% to v1, 10% to v2", "split-90-10.yaml", []string{""}},
	{"Commit: half to v1, half to v2", "split-50-50.yaml", []string{""}},
	{"Commit: all to v3 (weights 0, 0 and 100)", "v3-only.yaml", []string{""}},
	{"Commit: the end user jason's calls to v3, everyone else's 90% to v1, 10% to v2", "jason-to-v3.yaml", []string{"jason", ""}},
}

// routing runs the routing act: the share of each reviews version without
// a route, then after each of routeSteps.
func (d *demo) routing(ctx context.Context) error {
	d.say("Routing. No route yet: productpage's calls to reviews go round the three versions")
	if err := d.shares(ctx, ""); err != nil {
		return err
	}
	for _, s := range routeSteps {
		d.say("%s", s.say)
		b, err := os.ReadFile(filepath.Join("examples/bookinfo/routes", s.file))
		if err != nil {
			return err
		}
		dst := filepath.Join(d.repo, "policies/routes/reviews.yaml")
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(dst, b, 0o644); err != nil {
			return err
		}
		if err := d.commit("Route reviews: "+strings.TrimSuffix(s.file, ".yaml"), "add", "-A"); err != nil {
			return err
		}
		head, err := d.head()
		if err != nil {
			return err
		}
		if err := d.waitApplied(ctx, head); err != nil {
			return err
		}
		for _, u := range s.users {
			if err := d.shares(ctx, u); err != nil {
				return err
			}
		}
	}
	return nil
}

// resilienceSteps are the resilience act: each puts a policy of
// examples/bookinfo/resilience in the repository (as file) and takes the
// files of drop out.
var resilienceSteps = []struct {
	say, file, as string
	drop          []string
	// after explains what the pages show.
	after string
}{
	{"Commit a MeshFaultInjection: ratings aborts half of its calls (HTTP 503, gRPC UNAVAILABLE)", "ratings-aborts.yaml", "ratings-faults.yaml", nil, ""},
	{"Commit a MeshRetry: reviews retries a call to ratings that fails with UNAVAILABLE, up to 3 times", "reviews-retries.yaml", "reviews-retries.yaml", nil,
		"A gRPC server cannot inject faults, so reviews' gRPC client injects them for ratings (gRFC A33), before its retries:\n" +
			"  the retries do not absorb an injected abort here. (An Envoy sidecar injects them on ratings' inbound, where they are retried.)"},
	{"Commit: ratings answers 2 s late instead (and reviews' retries go)", "ratings-delays.yaml", "ratings-faults.yaml", []string{"reviews-retries.yaml"},
		"productpage gives up on reviews after 1 s."},
	{"Commit a MeshTimeout: reviews gives up on ratings after 300 ms", "reviews-timeout.yaml", "reviews-timeout.yaml", nil,
		"The injected delay comes before the deadline the route sets, in gRPC as for the retries: the timeout does not cut it short.\n" +
			"  (On Envoy, the delay is ratings' and the 300 ms are reviews': the call would fail at 300 ms.)"},
}

// resilience runs the resilience act: every page on reviews v3, then each
// of resilienceSteps, printing after each how the calls to ratings ended.
func (d *demo) resilience(ctx context.Context) error {
	d.say("Resilience. Every page on reviews v3, which calls ratings")
	write := func(src, dst string) error {
		b, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		return os.WriteFile(dst, b, 0o644)
	}
	apply := func(msg string) error {
		if err := d.commit(msg, "add", "-A"); err != nil {
			return err
		}
		head, err := d.head()
		if err != nil {
			return err
		}
		return d.waitApplied(ctx, head)
	}
	if err := write("examples/bookinfo/routes/v3-only.yaml", filepath.Join(d.repo, "policies/routes/reviews.yaml")); err != nil {
		return err
	}
	if err := apply("Route reviews: v3 only"); err != nil {
		return err
	}
	if err := d.ratings(ctx); err != nil {
		return err
	}
	dir := filepath.Join(d.repo, "policies/resilience")
	for _, s := range resilienceSteps {
		d.say("%s", s.say)
		for _, f := range s.drop {
			if err := os.Remove(filepath.Join(dir, f)); err != nil {
				return err
			}
		}
		if err := write(filepath.Join("examples/bookinfo/resilience", s.file), filepath.Join(dir, s.as)); err != nil {
			return err
		}
		if err := apply("Resilience: " + strings.TrimSuffix(s.file, ".yaml")); err != nil {
			return err
		}
		if err := d.ratings(ctx); err != nil {
			return err
		}
		if s.after != "" {
			fmt.Println("  " + s.after)
		}
	}
	// The permissions act starts from the branch without these.
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	return apply("Resilience: done")
}

// ratings loads d.pages/4 pages and prints, in one line, how their calls
// to ratings ended and how long a page took on average.
func (d *demo) ratings(ctx context.Context) error {
	n := max(d.pages/4, 1)
	count := map[string]int{}
	var total time.Duration
	for range n {
		if err := ctx.Err(); err != nil {
			return err
		}
		start := time.Now()
		p, err := page("")
		total += time.Since(start)
		switch {
		case err != nil:
			count["no page"]++
		case len(p.Calls) < 2 || !p.Calls[1].OK:
			count["reviews failed"]++
		case len(p.Calls[1].Reply.Calls) == 0:
			count["no call to ratings"]++
		case p.Calls[1].Reply.Calls[0].OK:
			count["stars"]++
		default:
			count["ratings "+p.Calls[1].Reply.Calls[0].Code]++
		}
	}
	line := fmt.Sprintf("  %d pages:", n)
	for _, k := range []string{"stars", "ratings Unavailable", "ratings DeadlineExceeded", "no call to ratings", "reviews failed", "no page"} {
		if c, ok := count[k]; ok || k == "stars" {
			line += fmt.Sprintf("  %s %5.1f%%", k, float64(c)*100/float64(n))
			delete(count, k)
		}
	}
	for k, c := range count {
		line += fmt.Sprintf("  %s %5.1f%%", k, float64(c)*100/float64(n))
	}
	fmt.Printf("%s   %v a page\n", line, (total / time.Duration(n)).Round(time.Millisecond))
	return nil
}

// waitApplied waits until commit is published and every proxy has ACKed
// it, then a moment more: an ACK does not mean that the calls have
// switched yet.
func (d *demo) waitApplied(ctx context.Context, commit string) error {
	client := &http.Client{Timeout: 3 * time.Second}
	var st reconcile.Status
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		st = reconcile.Status{}
		if resp, err := client.Get("http://" + apiAddress + "/status"); err == nil {
			_ = json.NewDecoder(resp.Body).Decode(&st)
			resp.Body.Close()
		}
		if st.Head != nil && string(st.Head.Hash) == commit && st.HeadVerdict == reconcile.VerdictInvalid {
			return fmt.Errorf("commit %s is invalid: `%s validate` says why", commit[:12], d.gitmesh())
		}
		c := st.Convergence
		if st.Published != nil && string(st.Published.Hash) == commit && c.Acked == c.Proxies && c.Nacked == 0 {
			fmt.Printf("  published %s, ACKed by all %d proxies\n", commit[:12], c.Acked)
			return sleep(ctx, 300*time.Millisecond)
		}
		if err := sleep(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
	return fmt.Errorf("commit %s not taken by every proxy within 30s: %+v", commit[:12], st.Convergence)
}

// waitVersions waits until productpage has reached every version of
// reviews (each needs its xDS configuration and certificates first).
func (d *demo) waitVersions(ctx context.Context) error {
	seen := map[string]bool{}
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); {
		if p, err := page(""); err == nil && len(p.Calls) == 2 && p.Calls[0].OK && p.Calls[1].OK {
			seen[p.Calls[1].Reply.Version] = true
			if len(seen) == 3 {
				return nil
			}
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
	return fmt.Errorf("productpage did not reach all three reviews versions within 60s (logs in %s)", d.logs.Name())
}

// shares loads d.pages pages as user and prints the share of each reviews
// version in one line.
func (d *demo) shares(ctx context.Context, user string) error {
	count := map[string]int{}
	for range d.pages {
		if err := ctx.Err(); err != nil {
			return err
		}
		p, err := page(user)
		switch {
		case err != nil:
			count["no page"]++
		case len(p.Calls) < 2 || !p.Calls[1].OK:
			count["failed"]++
		default:
			count[p.Calls[1].Reply.Version]++
		}
	}
	who := "everyone"
	if user != "" {
		who = "user " + user
	}
	line := fmt.Sprintf("  %d pages for %-12s", d.pages, who+":")
	for _, v := range []string{"v1", "v2", "v3", "failed", "no page"} {
		if n, ok := count[v]; ok || strings.HasPrefix(v, "v") {
			line += fmt.Sprintf("  %s %5.1f%%", v, float64(n)*100/float64(d.pages))
		}
	}
	fmt.Println(line)
	return nil
}

// page loads productpage's page as user ("" for none).
func page(user string) (*app.Reply, error) {
	u := "http://" + pageAddress + "/api/page"
	if user != "" {
		u += "?user=" + url.QueryEscape(user)
	}
	resp, err := pageClient.Get(u)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var p app.Reply
	return &p, json.NewDecoder(resp.Body).Decode(&p)
}

var pageClient = &http.Client{Timeout: 3 * time.Second}

// watch prints a line per page until ctx ends.
func (d *demo) watch(ctx context.Context) {
	for ctx.Err() == nil {
		line := "productpage: not answering"
		if p, err := page(""); err == nil {
			line = app.Summary(p)
		}
		fmt.Printf("  %s  %s\n", time.Now().Format("15:04:05.0"), line)
		_ = sleep(ctx, 500*time.Millisecond)
	}
}

func (d *demo) gitmesh() string { return filepath.Join(d.bin, "gitmesh") }

func (d *demo) say(format string, args ...any) {
	fmt.Printf("\n== %s\n", fmt.Sprintf(format, args...))
}

// start runs a background process whose output goes to the log.
func (d *demo) start(env []string, name string, args ...string) error {
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = d.logs, d.logs
	if err := cmd.Start(); err != nil {
		return err
	}
	d.procs = append(d.procs, cmd)
	return nil
}

func (d *demo) stopAll() {
	for i := len(d.procs) - 1; i >= 0; i-- {
		p := d.procs[i]
		_ = p.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = p.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(3 * time.Second):
			_ = p.Process.Kill()
		}
	}
}

// cli runs a gitmesh client command against the demo's daemon.
func (d *demo) cli(args ...string) error {
	args = append(args, "--api-address", apiAddress, "--token-file", filepath.Join(d.dir, "state", "admin-token"))
	cmd := exec.Command(d.gitmesh(), args...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	return cmd.Run()
}

func (d *demo) git(args ...string) error {
	cmd := exec.Command("git", append([]string{"-C", d.repo, "-c", "user.name=demo", "-c", "user.email=demo@gitmesh.io",
		"-c", "commit.gpgsign=false"}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// commit runs git args (add, rm ...) then commits.
func (d *demo) commit(msg string, args ...string) error {
	if err := d.git(args...); err != nil {
		return err
	}
	return d.git("commit", "-q", "-m", msg)
}

func (d *demo) head() (string, error) {
	out, err := exec.Command("git", "-C", d.repo, "rev-parse", "HEAD").Output()
	return strings.TrimSpace(string(out)), err
}

func waitFile(ctx context.Context, path string) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		if err := sleep(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
	return fmt.Errorf("%s not written within 30s", path)
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}
