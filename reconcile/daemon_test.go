package reconcile

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gitmesh/gitmesh/internal/logtest"
	"github.com/gitmesh/gitmesh/reconcile/gittest"
	"github.com/gitmesh/gitmesh/reconcile/pipeline"
	"github.com/gitmesh/gitmesh/reconcile/source"
	"github.com/gitmesh/gitmesh/schema"
	"github.com/gitmesh/gitmesh/schema/schematest"
	"github.com/gitmesh/gitmesh/store"
	"github.com/gitmesh/gitmesh/xds"
	"github.com/gitmesh/gitmesh/xds/plane"
)

// fakeTarget stands in for the xDS side, a narrow seam: it records what is
// served, and the test says what the proxies answer on feedback.
type fakeTarget struct {
	mu       sync.Mutex
	commits  []string // every Apply, in order
	set      *schema.Set
	tr       *xds.Translation // of the last Apply
	fail     error            // returned by the next Apply, once
	failures int              // Applies still to fail, after fail
	feedback chan plane.Feedback
	onApply  func(commit string) // called, unlocked, by each Apply
}

func (f *fakeTarget) Apply(_ context.Context, commit string, t *xds.Translation) (plane.Result, error) {
	f.mu.Lock()
	onApply := f.onApply
	f.mu.Unlock()
	if onApply != nil {
		onApply(commit)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fail; err != nil {
		f.fail = nil
		return plane.Result{}, err
	}
	if f.failures > 0 {
		f.failures--
		return plane.Result{}, errors.New("the xDS side refuses, for now")
	}
	f.commits = append(f.commits, commit)
	f.set, f.tr = t.Set(), t
	var changed []string
	for _, n := range t.Nodes() {
		changed = append(changed, n.ID().String())
	}
	return plane.Result{Commit: commit, Changed: changed}, nil
}

func (f *fakeTarget) Renew(context.Context) (plane.Result, error) { return plane.Result{}, nil }
func (f *fakeTarget) Convergence() plane.Convergence              { return plane.Convergence{} }
func (f *fakeTarget) Feedback() <-chan plane.Feedback             { return f.feedback }

// served is the commit last applied.
func (f *fakeTarget) served() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.commits) == 0 {
		return ""
	}
	return f.commits[len(f.commits)-1]
}

// translation is the Translation of the last Apply.
func (f *fakeTarget) translation() *xds.Translation {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.tr
}

func (f *fakeTarget) applies() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.commits)
}

// policy is a valid policy directory whose one dataplane listens on port.
func policy(port int) map[string]string {
	return map[string]string{
		"policy/mesh.yaml": "type: Mesh\nname: default\n",
		"policy/web.yaml": fmt.Sprintf(`type: Dataplane
mesh: default
name: web
networking:
  address: 10.0.0.1
  inbound:
    - port: %d
      tags:
        service: web
`, port),
	}
}

// invalidPolicy has an unknown field.
var invalidPolicy = map[string]string{"policy/web.yaml": "type: Dataplane\nmesh: default\nname: web\nnetworkin: {}\n"}

// rig is a daemon following a local repository, with a fake Target.
type rig struct {
	t        *testing.T
	work     string // the repository the daemon follows
	stateDir string
	target   *fakeTarget
	d        *Daemon
	stop     func() // cancels the daemon and waits for it to return
	cancel   func() // cancels it and returns
	// url, when set, is where the daemon fetches from instead of work;
	// verifier, when set, makes the daemon verify commits.
	url      string
	verifier *source.Verifier
	metrics  *Metrics
	logger   *slog.Logger
	// fleet, when set, makes the daemon a replica on a shared store.
	fleet *store.Fleet
}

func newRig(t *testing.T, stateDir string, work string) *rig {
	t.Helper()
	if work == "" {
		work = gittest.Init(t)
	}
	if stateDir == "" {
		stateDir = t.TempDir()
	}
	return &rig{t: t, work: work, stateDir: stateDir, target: &fakeTarget{feedback: make(chan plane.Feedback, 16)}}
}

// start opens the mirror and runs a daemon on it.
func (r *rig) start() {
	t := r.t
	t.Helper()
	url := r.work
	if r.url != "" {
		url = r.url
	}
	m, err := source.OpenMirror(source.MirrorConfig{URL: url, Branch: "main", Dir: filepath.Join(r.stateDir, "repo.git")})
	if err != nil {
		t.Fatal(err)
	}
	p, err := pipeline.New(pipeline.Options{Cache: true})
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		Source: m, Repo: url, Branch: "main", Path: "policy", Target: r.target, StateDir: r.stateDir, Interval: time.Hour,
		Pipeline: p, Metrics: r.metrics, Logger: r.logger,
	}
	if r.fleet != nil {
		cfg.Fleet, cfg.Store, cfg.LeaseDuration = r.fleet, r.fleet.Store(), 2*time.Second
	}
	if r.verifier != nil {
		cfg.Verify = func(hash source.Hash) (string, error) { return r.verifier.VerifyCommit(m.Repository(), string(hash)) }
	}
	r.d, err = New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.d.Run(ctx) }()
	r.cancel = cancel
	r.stop = func() { cancel(); <-done }
	t.Cleanup(r.stop)
}

// commit commits files and makes the daemon sync, returning the hash.
func (r *rig) commit(msg string, files map[string]string) string {
	r.t.Helper()
	h := gittest.Commit(r.t, r.work, msg, files)
	if r.d != nil {
		r.d.Trigger("test")
	}
	return h
}

// waitHead waits until the daemon has decided on head and returns its status.
func (r *rig) waitHead(head string, verdict Verdict) Status {
	r.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := r.d.Status()
		if st.Head != nil && string(st.Head.Hash) == head && st.HeadVerdict == verdict {
			return st
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("head %s never got verdict %s; status %+v", head[:12], verdict, st)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestRollbackFiftyCommitsBackAndResume(t *testing.T) {
	t.Parallel()
	r := newRig(t, "", "")
	var commits []string
	for i := range 60 {
		commits = append(commits, gittest.Commit(t, r.work, fmt.Sprintf("port %d", 8000+i), policy(8000+i)))
	}
	r.start()
	r.waitHead(commits[59], VerdictPublished)

	target := commits[9] // fifty commits before the head
	rec, err := r.d.Rollback(context.Background(), target[:9], "alice", "incident 42")
	if err != nil {
		t.Fatal(err)
	}
	if string(rec.Commit.Hash) != target || rec.Verdict != VerdictPublished || !rec.Pinned || rec.By != "alice" || rec.Trigger != OpRollback {
		t.Errorf("rollback record = %+v", rec)
	}
	if got := r.target.served(); got != target {
		t.Fatalf("served %s, want the rollback target %s", got, target)
	}
	if port := r.target.set.Dataplanes[0].Inbound[0].Port; port != 8009 {
		t.Errorf("served port %d, want 8009", port)
	}
	st := r.d.Status()
	if !st.Pinned || st.Pin == nil || string(st.Pin.Commit.Hash) != target || st.Pin.By != "alice" || string(st.Published.Hash) != target {
		t.Errorf("status after rollback = %+v", st)
	}
	if st.HeadVerdict != VerdictHeld {
		t.Errorf("head verdict %q, want held", st.HeadVerdict)
	}
	saved, err := LoadState(r.stateDir)
	if err != nil || saved.Pin == nil || string(saved.Pin.Commit.Hash) != target || string(saved.Published.Hash) != target {
		t.Fatalf("state file after rollback: %+v %v", saved, err)
	}

	// A new commit is fetched and checked, not published.
	next := r.commit("port 9000", policy(9000))
	r.waitHead(next, VerdictHeld)
	if got := r.target.served(); got != target {
		t.Errorf("a commit was published while pinned: %s", got)
	}
	if h := r.d.History(); string(h[0].Commit.Hash) != next || h[0].Verdict != VerdictHeld {
		t.Errorf("newest record %+v, want %s held", h[0], next[:12])
	}

	rec, err = r.d.Resume(context.Background(), "alice", "")
	if err != nil {
		t.Fatal(err)
	}
	if string(rec.Commit.Hash) != next || r.target.served() != next {
		t.Errorf("resume published %s (served %s), want the head %s", rec.Commit.Short(), r.target.served(), next)
	}
	if st := r.d.Status(); st.Pinned || st.Pin != nil || st.HeadVerdict != VerdictPublished {
		t.Errorf("status after resume = %+v", st)
	}
	if saved, _ := LoadState(r.stateDir); saved.Pin != nil || string(saved.Published.Hash) != next {
		t.Errorf("state file after resume: %+v", saved)
	}
	if _, err := r.d.Resume(context.Background(), "alice", ""); !errors.Is(err, ErrNotPinned) {
		t.Errorf("resume without a pin: %v, want ErrNotPinned", err)
	}
}

func TestRollbackRefusesUnknownAndInvalidCommits(t *testing.T) {
	t.Parallel()
	r := newRig(t, "", "")
	good := gittest.Commit(t, r.work, "good", policy(8080))
	bad := gittest.Commit(t, r.work, "bad", invalidPolicy)
	gittest.Git(t, r.work, "rm", "-q", "-r", ".")
	empty := gittest.Commit(t, r.work, "no policy", map[string]string{"sub/README": "nothing"})
	head := gittest.Commit(t, r.work, "good again", policy(8081))
	r.start()
	r.waitHead(head, VerdictPublished)
	applies, history := r.target.applies(), len(r.d.History())
	stateBefore, _ := os.ReadFile(StateFile(r.stateDir))

	for _, tc := range []struct {
		rev  string
		want string
	}{
		{"0123456789abcdef0123456789abcdef01234567", "unknown commit"},
		{"no-such-branch", "unknown commit"},
		{"", "no commit given"},
		{bad, "is invalid: 2 errors; first: policy/web.yaml:1:1"},
		{empty[:10], "cannot be served"},
	} {
		_, err := r.d.Rollback(context.Background(), tc.rev, "bob", "")
		if err == nil || !strings.Contains(err.Error(), tc.want) || !isRefusal(err) {
			t.Errorf("rollback to %q: %v, want a refusal containing %q", tc.rev, err, tc.want)
		}
	}
	var invalid *InvalidCommitError
	if _, err := r.d.Rollback(context.Background(), bad, "bob", ""); !errors.As(err, &invalid) || invalid.Errors != 2 || len(invalid.Findings) != 2 {
		t.Errorf("invalid commit error = %#v", err)
	}
	if r.target.applies() != applies || len(r.d.History()) != history || r.d.Status().Pinned {
		t.Error("a refused rollback changed what is served, the history or the pin")
	}
	if after, _ := os.ReadFile(StateFile(r.stateDir)); string(after) != string(stateBefore) {
		t.Errorf("a refused rollback rewrote the state file:\n%s", after)
	}
	// The good commit, by the branch name with a suffix.
	if rec, err := r.d.Rollback(context.Background(), "main~3", "bob", ""); err != nil || string(rec.Commit.Hash) != good {
		t.Errorf("rollback to main~3: %v, %+v; want %s", err, rec.Commit, good[:12])
	}
}

func TestPinSurvivesRestart(t *testing.T) {
	t.Parallel()
	r := newRig(t, "", "")
	first := gittest.Commit(t, r.work, "first", policy(8080))
	second := gittest.Commit(t, r.work, "second", policy(8081))
	r.start()
	r.waitHead(second, VerdictPublished)
	if _, err := r.d.Rollback(context.Background(), first, "carol", "bad deploy"); err != nil {
		t.Fatal(err)
	}
	r.stop()

	// The remote moves while the daemon is down.
	third := gittest.Commit(t, r.work, "third", policy(8082))
	again := newRig(t, r.stateDir, r.work)
	again.start()
	again.waitHead(third, VerdictHeld)
	if got := again.target.commits; len(got) != 1 || got[0] != first {
		t.Errorf("after a restart the daemon applied %v, want only the pinned %s", got, first[:12])
	}
	st := again.d.Status()
	if !st.Pinned || st.Pin.By != "carol" || st.Pin.Reason != "bad deploy" || string(st.Published.Hash) != first {
		t.Errorf("status after restart = %+v", st)
	}
	if h := again.d.History(); len(h) < 3 || h[0].Verdict != VerdictHeld || h[1].Trigger != OpRollback {
		t.Errorf("history after restart: %+v", h)
	}
}

func TestRollbackRacingPush(t *testing.T) {
	t.Parallel()
	r := newRig(t, "", "")
	target := gittest.Commit(t, r.work, "target", policy(7000))
	head := gittest.Commit(t, r.work, "head", policy(7001))
	r.start()
	r.waitHead(head, VerdictPublished)
	for i := range 8 {
		var wg sync.WaitGroup
		var pushed string
		wg.Go(func() { pushed = r.commit(fmt.Sprintf("push %d", i), policy(7100+i)) })
		_, err := r.d.Rollback(context.Background(), target, "dave", "")
		wg.Wait()
		if err != nil {
			t.Fatal(err)
		}
		// Whichever came first, the pin wins: the push is held.
		r.d.Trigger("test")
		r.waitHead(pushed, VerdictHeld)
		if got := r.target.served(); got != target {
			t.Fatalf("round %d: served %s, want the pinned %s", i, got[:12], target[:12])
		}
		if _, err := r.d.Resume(context.Background(), "dave", ""); err != nil {
			t.Fatal(err)
		}
		if got := r.target.served(); got != pushed {
			t.Fatalf("round %d: resume served %s, want the head %s", i, got[:12], pushed[:12])
		}
	}
}

func TestResumePublishesNewestValidCommit(t *testing.T) {
	t.Parallel()
	r := newRig(t, "", "")
	first := gittest.Commit(t, r.work, "first", policy(8080))
	r.start()
	r.waitHead(first, VerdictPublished)
	if _, err := r.d.Rollback(context.Background(), first, "erin", ""); err != nil {
		t.Fatal(err)
	}
	valid := r.commit("valid", policy(8081))
	r.waitHead(valid, VerdictHeld)
	bad := r.commit("broken", invalidPolicy)
	r.waitHead(bad, VerdictInvalid)

	rec, err := r.d.Resume(context.Background(), "erin", "")
	if err != nil {
		t.Fatal(err)
	}
	if string(rec.Commit.Hash) != valid || r.target.served() != valid {
		t.Errorf("resume published %s, want the newest valid commit %s", rec.Commit.Short(), valid[:12])
	}
	if st := r.d.Status(); st.Pinned || st.HeadVerdict != VerdictInvalid {
		t.Errorf("status after resume: %+v", st)
	}
}

func TestRollbackUndoneWhenThePinCannotBeSaved(t *testing.T) {
	t.Parallel()
	r := newRig(t, "", "")
	first := gittest.Commit(t, r.work, "first", policy(8080))
	second := gittest.Commit(t, r.work, "second", policy(8081))
	r.start()
	r.waitHead(second, VerdictPublished)
	// A directory where the state file is makes every save fail.
	state := StateFile(r.stateDir)
	if err := os.Remove(state); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(state, "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := r.d.Rollback(context.Background(), first, "frank", ""); err == nil || !strings.Contains(err.Error(), "nothing changed") {
		t.Fatalf("rollback with an unwritable state file: %v", err)
	}
	if got := r.target.served(); got != second {
		t.Errorf("served %s after a failed rollback, want %s again", got[:12], second[:12])
	}
	if st := r.d.Status(); st.Pinned || string(st.Published.Hash) != second {
		t.Errorf("status after a failed rollback: %+v", st)
	}
}

func TestRejectedAndConvergedMarkHistory(t *testing.T) {
	t.Parallel()
	r := newRig(t, "", "")
	first := gittest.Commit(t, r.work, "first", policy(8080))
	r.start()
	r.waitHead(first, VerdictPublished)
	at := time.Now()
	nack := plane.Rejection{Commit: first, Node: "default.web", Type: "type.googleapis.com/envoy.config.listener.v3.Listener",
		Version: first[:12] + "-abc", Error: "bad listener", At: at}
	r.target.feedback <- plane.Feedback{Rejection: &nack}
	r.target.feedback <- plane.Feedback{Rejection: &nack} // the same NACK again counts once
	r.target.feedback <- plane.Feedback{Converged: &plane.Converged{Commit: first, Proxies: 3, Seconds: 0.25}}
	r.target.feedback <- plane.Feedback{Converged: &plane.Converged{Commit: first, Proxies: 3, Seconds: 9}} // a renewal: kept the first
	waitFor(t, "the feedback in the history", func() bool {
		h := r.d.History()
		return h[0].Verdict == VerdictRejected && h[0].Convergence != nil && len(r.target.feedback) == 0
	})

	h := r.d.History()
	if h[0].Verdict != VerdictRejected || h[0].RejectedProxies != 1 || len(h[0].Rejections) != 1 || h[0].Rejections[0].Error != "bad listener" {
		t.Errorf("record after a NACK: %+v", h[0])
	}
	if c := h[0].Convergence; c == nil || c.Proxies != 3 || c.Seconds != 0.25 {
		t.Errorf("convergence %+v", c)
	}
	if st := r.d.Status(); len(st.Rejections) != 1 || st.Rejections[0].Node != "default.web" {
		t.Errorf("status rejections %+v", st.Rejections)
	}
	// Persisted: a new daemon on the same state directory reads it back.
	r.stop()
	again := mustOpenHistory(t, r.stateDir, 0)
	if got := again.Records()[0]; got.Verdict != VerdictRejected || got.Convergence == nil {
		t.Errorf("reloaded record %+v", got)
	}
	// A new publish clears the status list.
	r2 := newRig(t, r.stateDir, r.work)
	r2.start()
	second := r2.commit("second", policy(8081))
	r2.waitHead(second, VerdictPublished)
	if st := r2.d.Status(); len(st.Rejections) != 0 {
		t.Errorf("rejections of an older commit in the status: %+v", st.Rejections)
	}
}

// waitFor polls cond until it holds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestRestartRecordsAnInvalidHeadOnce: a restart looks at the head again,
// and a head it had already found invalid is not recorded a second time.
func TestRestartRecordsAnInvalidHeadOnce(t *testing.T) {
	t.Parallel()
	r := newRig(t, "", "")
	good := gittest.Commit(t, r.work, "good", policy(8080))
	r.start()
	r.waitHead(good, VerdictPublished)
	bad := r.commit("broken", invalidPolicy)
	r.waitHead(bad, VerdictInvalid)
	r.stop()

	again := newRig(t, r.stateDir, r.work)
	again.start()
	st := again.waitHead(bad, VerdictInvalid)
	if st.Published == nil || string(st.Published.Hash) != good || !strings.Contains(st.LastError, "invalid") {
		t.Errorf("status after restart %+v, want %s served and the head's error", st, good[:12])
	}
	n := 0
	for _, rec := range again.d.History() {
		if string(rec.Commit.Hash) == bad {
			n++
		}
	}
	if n != 1 {
		t.Errorf("the invalid head is recorded %d times after a restart, want once", n)
	}
	// A new decision after the start is recorded as usual.
	fixed := again.commit("fixed", policy(8081))
	again.waitHead(fixed, VerdictPublished)
	if h := again.d.History(); string(h[0].Commit.Hash) != fixed {
		t.Errorf("newest record %s, want %s", h[0].Commit.Short(), fixed[:12])
	}
}

// untranslatablePolicy does not translate (see schematest.Untranslatable).
var untranslatablePolicy = map[string]string{"policy/odd.yaml": schematest.Untranslatable}

// TestRestartServesAtOnceThenChecksWhole: a restart serves the published
// commit again without translating it first (each proxy is made as it is
// asked for), then translates and checks it whole, and that Result stands
// for it. A published commit this gitmesh would not publish (here written
// into the state file, as an older version could have published it) stays
// served, proxy by proxy as they pass, and the failure is reported.
func TestRestartServesAtOnceThenChecksWhole(t *testing.T) {
	t.Parallel()
	var logs logtest.Buffer
	r := newRig(t, "", "")
	good := gittest.Commit(t, r.work, "good", policy(8080))
	r.start()
	r.waitHead(good, VerdictPublished)
	r.stop()

	again := newRig(t, r.stateDir, r.work)
	again.start()
	waitFor(t, "the restored commit checked whole", func() bool {
		res, info, ok := again.d.Served()
		return ok && string(info.Hash) == good && !res.Lazy && res.Translation != nil
	})
	if n := again.target.applies(); n != 1 {
		t.Errorf("%d applies after the restart, want 1 (the check publishes nothing)", n)
	}
	if tr := again.target.translation(); tr.Proxy("default.web", xds.FlavorEnvoy) == nil || tr.LateFailures() != 0 {
		t.Errorf("the restored translation does not make web's proxy")
	}
	// Another daemon judges the next commit, found invalid, and fetches it
	// into the mirror; then an older gitmesh is said to have published it.
	bad := again.commit("odd", untranslatablePolicy)
	again.waitHead(bad, VerdictInvalid)
	again.stop()
	st, err := LoadState(r.stateDir)
	if err != nil {
		t.Fatal(err)
	}
	st.Published = &CommitInfo{Hash: source.Hash(bad), Subject: "odd"}
	if err := SaveState(r.stateDir, st); err != nil {
		t.Fatal(err)
	}
	third := newRig(t, r.stateDir, r.work)
	third.logger = slog.New(slog.NewTextHandler(&logs, nil))
	third.start()
	waitFor(t, "the check of the restored commit failing", func() bool {
		return strings.Contains(logs.String(), "the served commit no longer passes its checks")
	})
	res, info, ok := third.d.Served()
	if !ok || string(info.Hash) != bad || !res.Lazy {
		t.Fatalf("served %s (lazy %v), want the published %s, still served", info.Short(), ok && res.Lazy, bad[:12])
	}
	if st := third.d.Status(); !strings.Contains(st.LastError, "translation") && !strings.Contains(st.LastError, "translate") {
		t.Errorf("last error %q does not say the commit no longer translates", st.LastError)
	}
	tr := third.target.translation()
	if tr.Proxy("default.web", xds.FlavorEnvoy) == nil {
		t.Error("a proxy that passes is not served")
	}
	if tr.Proxy("default.web-02", xds.FlavorEnvoy) != nil || tr.LateFailures() == 0 {
		t.Error("a proxy that fails its translation is served")
	}
}

// TestFeedbackWhileAnOperationRuns: the proxies' NACKs are recorded while a
// sync, rollback or resume holds the operation lock, not after it.
func TestFeedbackWhileAnOperationRuns(t *testing.T) {
	t.Parallel()
	r := newRig(t, "", "")
	first := gittest.Commit(t, r.work, "first", policy(8080))
	r.start()
	r.waitHead(first, VerdictPublished)
	r.d.op.Lock() // a long operation under way
	defer r.d.op.Unlock()
	nack := plane.Rejection{Commit: first, Node: "default.web", Type: "type.googleapis.com/envoy.config.listener.v3.Listener",
		Version: first[:12] + "-abc", Error: "bad listener", At: time.Now()}
	r.target.feedback <- plane.Feedback{Rejection: &nack}
	waitFor(t, "the NACK recorded while the operation runs", func() bool {
		return r.d.History()[0].Verdict == VerdictRejected && len(r.d.Status().Rejections) == 1
	})
}

// TestFeedbackOfACommitBeingPublished: a proxy can NACK a commit before its
// publish has returned; the NACK waits for the commit's record, and lands
// on it, not on an older record of the same commit.
func TestFeedbackOfACommitBeingPublished(t *testing.T) {
	t.Parallel()
	r := newRig(t, "", "")
	first := gittest.Commit(t, r.work, "first", policy(8080))
	r.start()
	r.waitHead(first, VerdictPublished)
	second := r.commit("second", policy(8081))
	r.waitHead(second, VerdictPublished)
	// Rolling back to first publishes it again: its NACK arrives while the
	// rollback's Apply runs.
	r.target.mu.Lock()
	r.target.onApply = func(commit string) {
		nack := plane.Rejection{Commit: commit, Node: "default.web", Type: "type.googleapis.com/envoy.config.listener.v3.Listener",
			Version: commit[:12] + "-abc", Error: "bad listener", At: time.Now()}
		r.target.feedback <- plane.Feedback{Rejection: &nack}
		time.Sleep(50 * time.Millisecond) // the daemon drains it while Apply runs
	}
	r.target.mu.Unlock()
	if _, err := r.d.Rollback(context.Background(), first, "ada", ""); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the NACK on the rollback's record", func() bool {
		h := r.d.History()
		return h[0].Trigger == OpRollback && h[0].Verdict == VerdictRejected
	})
	for _, rec := range r.d.History()[1:] {
		if len(rec.Rejections) > 0 {
			t.Errorf("an older record got the NACK: %+v", rec)
		}
	}
}

// TestStopMidwayRecordsNothing: a daemon stopped while it publishes a
// commit neither records nor logs the commit as failed; the next start
// publishes it.
func TestStopMidwayRecordsNothing(t *testing.T) {
	t.Parallel()
	r := newRig(t, "", "")
	logs := &logtest.Buffer{}
	r.logger = slog.New(slog.NewJSONHandler(logs, nil))
	first := gittest.Commit(t, r.work, "first", policy(8080))
	r.start()
	r.waitHead(first, VerdictPublished)
	started, release := make(chan struct{}), make(chan struct{})
	r.target.mu.Lock()
	r.target.fail = context.Canceled // what the plane returns when stopped
	r.target.onApply = func(string) { close(started); <-release }
	r.target.mu.Unlock()
	second := r.commit("second", policy(8081))
	<-started
	r.cancel()
	close(release)
	r.stop()
	for _, rec := range r.d.History() {
		if rec.Verdict == VerdictFailed {
			t.Errorf("a stop is recorded as a failure: %+v", rec)
		}
	}
	if strings.Contains(logs.String(), `"level":"ERROR"`) {
		t.Errorf("a stop is logged as an error:\n%s", logs)
	}

	r2 := newRig(t, r.stateDir, r.work)
	r2.start()
	r2.waitHead(second, VerdictPublished)
	if h := r2.d.History(); len(h) != 2 || string(h[0].Commit.Hash) != second || string(h[1].Commit.Hash) != first {
		t.Errorf("history after the restart: %+v", h)
	}
}

// TestPublishFailureSettlesTheHead: a head whose publish fails is the
// head with verdict failed (never left pending), recorded once however
// often it is retried, and published once the xDS side takes it.
func TestPublishFailureSettlesTheHead(t *testing.T) {
	t.Parallel()
	r := newRig(t, "", "")
	first := gittest.Commit(t, r.work, "first", policy(8080))
	r.start()
	r.waitHead(first, VerdictPublished)
	r.target.mu.Lock()
	r.target.failures = 3
	r.target.mu.Unlock()
	second := r.commit("second", policy(8081))
	st := r.waitHead(second, VerdictFailed)
	if !strings.Contains(st.LastError, "publish") || string(st.Published.Hash) != first {
		t.Errorf("status %+v, want the publish error and %s still served", st, first[:12])
	}
	for range 2 { // retries
		r.d.Trigger("test")
	}
	r.waitHead(second, VerdictPublished)
	n := 0
	for _, rec := range r.d.History() {
		if string(rec.Commit.Hash) == second && rec.Verdict == VerdictFailed {
			n++
		}
	}
	if n != 1 {
		t.Errorf("the failure is recorded %d times, want once", n)
	}
}

// TestRollbackLogCountsAffectedProxies: the log line of a rollback counts
// the proxies it changes, also when it goes back to the commit served
// before (no translation at all).
func TestRollbackLogCountsAffectedProxies(t *testing.T) {
	t.Parallel()
	var logs logtest.Buffer
	r := newRig(t, "", "")
	r.logger = slog.New(slog.NewJSONHandler(&logs, nil))
	first := gittest.Commit(t, r.work, "first", policy(8080))
	r.start()
	r.waitHead(first, VerdictPublished)
	second := r.commit("second", policy(8081))
	r.waitHead(second, VerdictPublished)
	if _, err := r.d.Rollback(context.Background(), first, "ada", ""); err != nil {
		t.Fatal(err)
	}
	var line struct {
		Trigger   string
		Affected  int `json:"affected_proxies"`
		Pushed    int `json:"proxies_pushed"`
		Removed   int `json:"proxies_removed"`
		Translate int `json:"translated_proxies"`
	}
	for _, l := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		if strings.Contains(l, `"trigger":"rollback"`) {
			if err := json.Unmarshal([]byte(l), &line); err != nil {
				t.Fatal(err)
			}
		}
	}
	if line.Trigger != OpRollback || line.Pushed != 1 || line.Affected != line.Pushed+line.Removed || line.Translate != 0 {
		t.Errorf("rollback log line %+v, want 1 proxy affected and pushed, none translated", line)
	}
}
