package main

import (
	"bytes"
	"context"
	"os"
	"testing"

	"github.com/gitmesh/gitmesh/reconcile/gittest"
)

// TestMain lets a test run this binary as the gitmesh command itself, in a
// process of its own that it can kill, or as a bookinfo service.
func TestMain(m *testing.M) {
	if os.Getenv("GITMESH_TEST_RUN_MAIN") == "1" {
		main()
		return
	}
	if runBookinfoService() {
		return
	}
	os.Exit(m.Run())
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
