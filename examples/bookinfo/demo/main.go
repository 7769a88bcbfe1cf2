// Command demo shows bookinfo following commits: it makes a git repository
// of examples/bookinfo/policies, runs `gitmesh serve` on it, starts the six
// bookinfo processes as proxyless gRPC applications (each with `gitmesh
// certs` and a `gitmesh bootstrap --grpc` bootstrap), and prints a line per
// page productpage serves while it commits a change, an invalid commit, a
// rollback and a resume. `make demo` builds the binaries and runs it.
//
// Usage: demo [-bin DIR] [-dir DIR] [-pause DURATION]
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/gitmesh/gitmesh/examples/bookinfo/app"
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
	procs          []*exec.Cmd
	logs           *os.File
}

func main() {
	d := &demo{}
	flag.StringVar(&d.bin, "bin", "bin", "directory of gitmesh and the four bookinfo binaries")
	flag.StringVar(&d.dir, "dir", ".run/bookinfo", "working directory of the demo (repository, state, certificates, logs)")
	flag.DurationVar(&d.pause, "pause", 6*time.Second, "how long to watch after each step")
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
	d.say("Six proxyless gRPC processes up. Every line below is one page of productpage (http://%s/)", pageAddress)

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

// watch prints a line per page until ctx ends.
func (d *demo) watch(ctx context.Context) {
	client := &http.Client{Timeout: 3 * time.Second}
	for ctx.Err() == nil {
		line := "productpage: not answering yet"
		if resp, err := client.Get("http://" + pageAddress + "/api/page"); err == nil {
			var p app.Reply
			if json.NewDecoder(resp.Body).Decode(&p) == nil {
				line = app.Summary(&p)
			}
			resp.Body.Close()
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
