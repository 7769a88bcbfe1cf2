package source

import (
	"context"
	"testing"
	"time"

	"github.com/gitmesh/gitmesh/reconcile/gittest"
)

// TestWatchRefs commits into a local repository and waits for the watch to
// notice, for a plain branch and for one whose name needs a directory that
// does not exist yet.
func TestWatchRefs(t *testing.T) {
	work, _, _ := newRemote(t)
	m, err := OpenMirror(MirrorConfig{URL: work, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	gitDir, ok := m.LocalGitDir()
	if !ok {
		t.Fatal("no local git dir")
	}
	for _, branch := range []string{"main", "team/main"} {
		t.Run(branch, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			notified := make(chan struct{}, 1)
			done := make(chan error, 1)
			go func() {
				done <- WatchRefs(ctx, gitDir, branch, func() {
					select {
					case notified <- struct{}{}:
					default:
					}
				})
			}()
			if branch != "main" {
				gittest.Git(t, work, "checkout", "-q", "-b", branch)
			}
			// The watch starts concurrently: commit until it reports one.
			deadline := time.After(10 * time.Second)
		wait:
			for {
				gittest.Commit(t, work, "change", map[string]string{"policies/x.yaml": time.Now().String()})
				select {
				case <-notified:
					break wait
				case <-time.After(500 * time.Millisecond):
				case <-deadline:
					t.Fatal("no notification after commits")
				case err := <-done:
					t.Fatalf("WatchRefs returned: %v", err)
				}
			}
			cancel()
			if err := <-done; err != nil {
				t.Errorf("WatchRefs after cancel = %v", err)
			}
		})
	}
}
