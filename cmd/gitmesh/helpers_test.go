package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
	"testing"

	"github.com/gitmesh/gitmesh/reconcile/gittest"
)

// TestMain lets a test run this binary as the gitmesh command itself, in a
// process of its own that it can kill, or as a bookinfo service.
func TestMain(m *testing.M) {
	if os.Getenv("GITMESH_TEST_RUN_MAIN") == "1" {
		stop := childProfile()
		ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
		cancel()
		stop()
		os.Exit(code)
	}
	if runBookinfoService() {
		return
	}
	os.Exit(m.Run())
}

// childProfile writes the CPU profile of a gitmesh process a benchmark
// started to the file GITMESH_BENCH_CHILD_CPUPROFILE names, until the
// returned func is called.
func childProfile() func() {
	f := os.Getenv("GITMESH_BENCH_CHILD_CPUPROFILE")
	if f == "" {
		return func() {}
	}
	out, err := os.Create(f)
	if err == nil {
		err = pprof.StartCPUProfile(out)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "cpu profile:", err)
		os.Exit(2)
	}
	return func() { pprof.StopCPUProfile(); out.Close() }
}

// gitmesh runs one command line in-process and returns its exit code and
// output.
func gitmesh(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

var (
	git        = gittest.Git
	writeFiles = gittest.WriteFiles
)
