package source

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
)

// watchDebounce is how long WatchRefs gathers the rest of a burst of
// changes (git renames the ref's lock file over it, may rewrite
// packed-refs) after it has called notify for the first.
const watchDebounce = 50 * time.Millisecond

// WatchRefs calls notify soon after branch may have moved in the local
// repository whose git directory is gitDir (see Mirror.LocalGitDir): a
// commit, a push into it, a reset, `git pack-refs`. It watches the loose ref
// refs/heads/<branch> (and the directories its name needs, such as
// refs/heads/team for team/main, as they appear), packed-refs, and the
// reftable directory of repositories that use one. The first change calls
// notify at once (git writes a ref whole, by renaming its lock file over
// it, so the branch has moved when the event arrives); the changes of the
// next 50ms or so are gathered into one more call. notify runs on
// WatchRefs' goroutine and may be called for changes that leave the branch
// where it was, so it should just trigger a Sync. WatchRefs returns nil
// when ctx ends, or an error if it cannot watch.
func WatchRefs(ctx context.Context, gitDir, branch string, notify func()) error {
	if branch == "" || strings.HasPrefix(branch, "/") || strings.Contains(branch, "..") {
		return fmt.Errorf("watch refs: invalid branch name %q", branch)
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch refs in %s: %w", gitDir, err)
	}
	defer w.Close()

	heads := filepath.Join(gitDir, "refs", "heads")
	ref := filepath.Join(heads, filepath.FromSlash(branch))
	packed := filepath.Join(gitDir, "packed-refs")
	reftable := filepath.Join(gitDir, "reftable")

	// The directories to watch: the git directory itself (packed-refs is
	// replaced by a rename there) and every directory from refs/heads down
	// to the one holding the branch's ref.
	dirs := []string{gitDir, heads}
	for d := filepath.Dir(ref); d != heads && strings.HasPrefix(d, heads); d = filepath.Dir(d) {
		dirs = append(dirs, d)
	}
	isDir := make(map[string]bool, len(dirs))
	for _, d := range dirs {
		isDir[d] = true
	}
	if err := w.Add(gitDir); err != nil {
		return fmt.Errorf("watch refs in %s: %w", gitDir, err)
	}
	// addExisting watches the directories on the ref's path that exist now;
	// the others are added when their parent reports them created.
	addExisting := func() {
		for _, d := range append(dirs[1:], reftable) {
			if st, err := os.Stat(d); err == nil && st.IsDir() {
				_ = w.Add(d) // watching twice is a no-op; a race with removal is caught by its parent's event
			}
		}
	}
	addExisting()

	timer := time.NewTimer(time.Hour)
	timer.Stop()
	// armed: within the window after a call; pending: a change came in it.
	armed, pending := false, false
	schedule := func() {
		if armed {
			pending = true
			return
		}
		notify()
		armed = true
		timer.Reset(watchDebounce)
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return errors.New("watch refs: watcher closed")
			}
			switch {
			case ev.Name == ref, ev.Name == packed:
				schedule()
			case isDir[ev.Name], ev.Name == reftable:
				// A directory on the ref's path appeared or went: watch what
				// is there now, and look, since the ref may have been
				// written before the watch was in place.
				addExisting()
				schedule()
			case strings.HasPrefix(ev.Name, reftable+string(filepath.Separator)):
				schedule()
			}
		case err, ok := <-w.Errors:
			if !ok {
				return errors.New("watch refs: watcher closed")
			}
			if errors.Is(err, fsnotify.ErrEventOverflow) {
				schedule() // events were lost; one of them may have been ours
				continue
			}
			return fmt.Errorf("watch refs in %s: %w", gitDir, err)
		case <-timer.C:
			armed = false
			if pending {
				pending = false
				schedule()
			}
		}
	}
}
