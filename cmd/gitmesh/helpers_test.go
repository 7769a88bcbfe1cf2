package main

import (
	"bytes"
	"context"
	"os"
	"sync"
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

// syncBuffer is a bytes.Buffer safe for a writer and readers in other
// goroutines (a daemon's log).
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
