package main

import (
	"bytes"
	"context"
	"testing"

	"github.com/gitmesh/gitmesh/reconcile/gittest"
)

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
