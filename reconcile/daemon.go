package reconcile

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"sync"
	"time"

	"github.com/gitmesh/gitmesh/reconcile/source"
	"github.com/gitmesh/gitmesh/schema"
)

// Source is the git side: the followed branch and the commits in local
// objects.
type Source interface {
	// Head is the branch head as last fetched, known without the network.
	Head() (string, bool)
	// Sync asks the remote for the branch head and fetches it when it moved.
	Sync(ctx context.Context) (source.SyncResult, error)
	// ReadCommit reads a commit's policy directory from local objects. rev
	// is a hash, a short hash, the branch, or one of these with a ~N or ^N
	// suffix; an unknown one is source.ErrUnknownRevision.
	ReadCommit(rev, subdir string) (*source.Commit, error)
	// FirstParent is the first parent of a commit in local objects; false
	// for a root commit or an unknown one.
	FirstParent(hash string) (string, bool)
}

// Applied is what the Target did with a commit.
type Applied struct {
	Affected                    int // proxies translated again
	Changed, Unchanged, Removed int // proxies pushed, kept, dropped
	Translate, Publish          time.Duration
}

// Target is the xDS side as the loop sees it.
type Target interface {
	// Apply makes set, the validated policy of commit, what is served. diff
	// is what changed since the Set of the last successful Apply. All or
	// nothing: on error nothing served changes.
	Apply(ctx context.Context, commit string, set *schema.Set, diff schema.SetDiff) (Applied, error)
	// Renew re-issues certificates that near the end of their life.
	Renew(ctx context.Context) error
	// Convergence counts the served proxies that hold the served commit.
	Convergence() Convergence
}

// Config wires a Daemon.
type Config struct {
	Source Source
	// Repo (credentials removed), Branch and Path describe the source in
	// the status and logs.
	Repo, Branch, Path string
	// Load loads and validates a commit's tree.
	Load func(fsys fs.FS) (*schema.Result, error)
	// Verify, when set, checks a commit's signature before its tree is
	// loaded (serve --verify-commits) and returns the signer; an
	// *source.UnverifiedError keeps the commit from being published or
	// rolled back to. See source.Verifier.VerifyCommit.
	Verify func(hash string) (signer string, err error)
	Target Target
	// StateDir holds the state file and the history.
	StateDir string
	// Interval between polls of the remote (default 30s). Triggers sync at
	// once, whatever the interval.
	Interval time.Duration
	// RenewInterval is how often certificates are checked for renewal
	// (default 1m).
	RenewInterval time.Duration
	// MinBackoff and MaxBackoff bound the wait after a failed sync, which
	// doubles per failure with jitter (defaults 1s and 5m); the wait is
	// never longer than Interval.
	MinBackoff, MaxBackoff time.Duration
	HistoryLimit           int
	Logger                 *slog.Logger
	Metrics                *Metrics
	Now                    func() time.Time
}

// Daemon follows the branch and publishes its valid commits.
type Daemon struct {
	cfg     Config
	history *History
	trigger chan string

	// op serialises what changes the served state: deciding on a head,
	// restoring, rollback and resume.
	op sync.Mutex

	mu         sync.Mutex
	state      State
	status     Status
	served     *schema.Set
	servedInfo CommitInfo
	decided    string // the head whose verdict is final
	lastFail   string // commit and error of the last failure recorded
	// rejecting are the proxies that NACKed the served commit.
	rejecting map[string]bool
}

// New opens the state directory (creating it, 0700) and reads the state and
// history; it touches neither the network nor the Target.
func New(cfg Config) (*Daemon, error) {
	if cfg.Source == nil || cfg.Target == nil || cfg.Load == nil {
		return nil, errors.New("reconcile: Source, Target and Load are required")
	}
	if cfg.StateDir == "" {
		return nil, errors.New("reconcile: no state directory")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 30 * time.Second
	}
	if cfg.RenewInterval <= 0 {
		cfg.RenewInterval = time.Minute
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = time.Second
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 5 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	st, err := LoadState(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	h, err := OpenHistory(cfg.StateDir, cfg.HistoryLimit)
	if err != nil {
		return nil, err
	}
	d := &Daemon{cfg: cfg, history: h, trigger: make(chan string, 1), state: st}
	d.status = Status{Repo: cfg.Repo, Branch: cfg.Branch, Path: cfg.Path, Pinned: st.Pin != nil, Pin: st.Pin}
	if head, ok := cfg.Source.Head(); ok {
		d.status.Head = &CommitInfo{Hash: head}
	}
	cfg.Metrics.setPinned(st.Pin != nil)
	return d, nil
}

// Trigger asks for a sync now. It never blocks: triggers that come while one
// is pending are one.
func (d *Daemon) Trigger(reason string) {
	select {
	case d.trigger <- reason:
	default:
	}
}

// Run serves the last published commit from local objects, then follows the
// branch until ctx ends.
func (d *Daemon) Run(ctx context.Context) error {
	d.restore(ctx)
	timer := time.NewTimer(0)
	defer timer.Stop()
	renew := time.NewTicker(d.cfg.RenewInterval)
	defer renew.Stop()
	failures := 0
	reason := "start"
	for {
		select {
		case <-ctx.Done():
			return nil
		case r := <-d.trigger:
			reason = r
		case <-timer.C:
			if reason == "" {
				reason = "interval"
			}
		case <-renew.C:
			if err := d.cfg.Target.Renew(ctx); err != nil && ctx.Err() == nil {
				d.cfg.Logger.Error("certificate renewal failed", "error", err)
			}
			continue
		}
		err := d.sync(ctx, reason)
		reason = ""
		if ctx.Err() != nil {
			return nil
		}
		delay := d.cfg.Interval
		if err != nil {
			failures++
			delay = min(delay, backoff(failures, d.cfg.MinBackoff, d.cfg.MaxBackoff))
		} else {
			failures = 0
		}
		timer.Reset(delay)
	}
}

// backoff is the wait after the n-th failure in a row: min·2^(n-1), at most
// max, with ±20% jitter so replicas do not retry in step.
func backoff(n int, lo, hi time.Duration) time.Duration {
	d := lo
	for i := 1; i < n && d < hi; i++ {
		d *= 2
	}
	d = min(d, hi)
	jitter := time.Duration(float64(d) * 0.2 * (2*rand.Float64() - 1))
	return max(d+jitter, time.Millisecond)
}

// restore serves what the state file says was served (the pinned commit,
// else the published one), read from local objects, so proxies get their
// configuration even when the remote is down. Its signature is not checked
// again: with Verify set, only verified commits are published or pinned, and
// the state file is the daemon's own. (A commit published before Verify was
// set is served until a verified one replaces it; the head's verdict shows
// it unverified.)
func (d *Daemon) restore(ctx context.Context) {
	d.op.Lock()
	defer d.op.Unlock()
	d.mu.Lock()
	st := d.state
	d.mu.Unlock()
	var want *CommitInfo
	switch {
	case st.Pin != nil:
		want = &st.Pin.Commit
	case st.Published != nil:
		want = st.Published
	default:
		return
	}
	log := d.cfg.Logger.With("commit", want.Short())
	c, err := d.cfg.Source.ReadCommit(want.Hash, d.cfg.Path)
	if err != nil {
		d.setError(fmt.Sprintf("restore %s: %v", want.Short(), err))
		log.Error("cannot restore the published commit from local objects", "error", err)
		return
	}
	res, err := d.cfg.Load(c.Tree)
	if err != nil || !res.Valid() {
		if err == nil {
			err = fmt.Errorf("%d errors", len(res.Findings))
		}
		d.setError(fmt.Sprintf("restore %s: %v", want.Short(), err))
		log.Error("the published commit no longer loads", "error", err)
		return
	}
	applied, err := d.cfg.Target.Apply(ctx, c.Hash, res.Set, schema.DiffSets(nil, res.Set))
	if err != nil {
		d.setError(fmt.Sprintf("restore %s: %v", want.Short(), err))
		log.Error("cannot serve the published commit", "error", err)
		return
	}
	info := commitInfo(c)
	d.mu.Lock()
	d.served, d.servedInfo = res.Set, info
	d.status.Published, d.status.PublishedAt, d.status.Ready = &info, st.PublishedAt, true
	d.mu.Unlock()
	d.cfg.Metrics.setPublished(c.Hash)
	log.Info("serving the published commit from local objects", "proxies", applied.Changed+applied.Unchanged,
		"translate_ms", ms(applied.Translate), "publish_ms", ms(applied.Publish))
}

// sync fetches the branch and decides on its head. An error means the sync
// should be retried (with backoff); an invalid commit is not an error.
func (d *Daemon) sync(ctx context.Context, reason string) error {
	start := d.cfg.Now()
	res, err := d.cfg.Source.Sync(ctx)
	fetch := d.cfg.Now().Sub(start)
	d.cfg.Metrics.stage(StageFetch, fetch)
	if err != nil {
		if ctx.Err() != nil {
			return err
		}
		d.cfg.Metrics.attempt(ResultFetchError)
		d.mu.Lock()
		d.status.LastError, d.status.LastSync = err.Error(), d.cfg.Now()
		d.mu.Unlock()
		d.cfg.Logger.Warn("sync failed", "trigger", reason, "error", err, "fetch_ms", ms(fetch))
		return err
	}
	if res.Forced {
		d.cfg.Metrics.forced()
		d.cfg.Logger.Warn("branch history was rewritten", "previous", short(res.Previous), "head", short(res.Head))
	}
	d.mu.Lock()
	unchanged := res.Head == d.decided
	if unchanged {
		now := d.cfg.Now()
		d.status.LastSync = now
		if v := d.status.HeadVerdict; v != VerdictInvalid && v != VerdictUnverified {
			d.status.LastError, d.status.LastGoodSync = "", now
			d.cfg.Metrics.goodSync(now)
		}
	}
	d.mu.Unlock()
	if unchanged {
		d.cfg.Metrics.attempt(ResultUnchanged)
		return nil
	}
	d.op.Lock()
	defer d.op.Unlock()
	return d.decide(ctx, res, reason, fetch)
}

// decide validates the head and publishes it unless it is invalid or the
// mesh is pinned.
func (d *Daemon) decide(ctx context.Context, sr source.SyncResult, reason string, fetch time.Duration) error {
	head := sr.Head
	rec := Record{Commit: CommitInfo{Hash: head}, Trigger: reason, Durations: map[string]float64{StageFetch: ms(fetch)}}
	if sr.Forced {
		rec.Forced, rec.Previous = true, sr.Previous
	}
	c, err := d.cfg.Source.ReadCommit(head, d.cfg.Path)
	if err != nil {
		// The commit itself is the problem (no policy directory, say).
		rec.Errors = 1
		rec.Error = err.Error()
		return d.invalid(rec, err.Error())
	}
	rec.Commit = commitInfo(c)
	// Verified before the status points at rec.Commit: it sets the signer.
	verr := d.verify(&rec.Commit)
	d.mu.Lock()
	d.status.Head, d.status.HeadVerdict = &rec.Commit, VerdictPending
	d.mu.Unlock()
	if verr != nil {
		var unverified *UnverifiedCommitError
		if errors.As(verr, &unverified) {
			return d.unverified(rec, unverified)
		}
		return d.fail(rec, verr)
	}

	start := d.cfg.Now()
	res, err := d.cfg.Load(c.Tree)
	load := d.cfg.Now().Sub(start)
	d.cfg.Metrics.stage(StageLoad, load)
	rec.Durations[StageLoad] = ms(load)
	if err != nil {
		return d.fail(rec, fmt.Errorf("load %s: %w", rec.Commit.Short(), err))
	}
	rec.Errors, rec.Warnings = res.Count()
	rec.Findings = errorsFirst(res.Findings)
	if !res.Valid() {
		invalid := &InvalidCommitError{Commit: rec.Commit, Errors: rec.Errors, Findings: rec.Findings}
		return d.invalid(rec, invalid.Error())
	}

	d.mu.Lock()
	pinned := d.state.Pin != nil
	served, servedInfo := d.served, d.servedInfo
	d.mu.Unlock()
	if pinned {
		rec.Verdict = VerdictHeld
		d.settle(rec, ResultHeld, "", false)
		return nil
	}
	if served != nil && servedInfo.Hash == head {
		// Already served (restored at start): nothing new to record.
		rec.Verdict = VerdictPublished
		d.settleStatus(rec, ResultUnchanged, "", false)
		return nil
	}

	if err := d.publish(ctx, &rec, res.Set, nil); err != nil {
		return d.fail(rec, err)
	}
	d.settle(rec, ResultPublished, "", false)
	return nil
}

// publish makes set, the validated tree of rec.Commit, what is served,
// fills in rec and writes the state file with change applied to it. Called
// with op held.
//
// Without change, a state file that cannot be written is logged: what is
// served stays (a restart would serve the previous commit). With change (a
// pin set or lifted), what is served must agree with the state file, so the
// publish is undone and an error returned.
func (d *Daemon) publish(ctx context.Context, rec *Record, set *schema.Set, change func(*State)) error {
	d.mu.Lock()
	served, servedInfo, next := d.served, d.servedInfo, d.state
	d.mu.Unlock()

	start := d.cfg.Now()
	diff := schema.DiffSets(served, set)
	dd := d.cfg.Now().Sub(start)
	d.cfg.Metrics.stage(StageDiff, dd)
	if rec.Durations == nil {
		rec.Durations = map[string]float64{}
	}
	rec.Durations[StageDiff] = ms(dd)
	applied, err := d.cfg.Target.Apply(ctx, rec.Commit.Hash, set, diff)
	if err != nil {
		return fmt.Errorf("publish %s: %w", rec.Commit.Short(), err)
	}
	d.cfg.Metrics.stage(StageTranslate, applied.Translate)
	d.cfg.Metrics.stage(StagePublish, applied.Publish)
	rec.Durations[StageTranslate], rec.Durations[StagePublish] = ms(applied.Translate), ms(applied.Publish)
	rec.Verdict = VerdictPublished
	rec.Diff = &DiffSummary{SetDiff: diff, Affected: applied.Affected}
	rec.Changed, rec.Unchanged, rec.Removed = applied.Changed, applied.Unchanged, applied.Removed

	now := d.cfg.Now()
	next.Published, next.PublishedAt = &rec.Commit, now
	if change != nil {
		change(&next)
		if err := SaveState(d.cfg.StateDir, next); err != nil {
			return d.undo(ctx, served, servedInfo, set, fmt.Errorf("%w; nothing changed", err))
		}
	}
	d.mu.Lock()
	d.served, d.servedInfo, d.state, d.rejecting = set, rec.Commit, next, nil
	d.status.Published, d.status.PublishedAt, d.status.Ready = &rec.Commit, now, true
	d.status.Pinned, d.status.Pin, d.status.Rejections = next.Pin != nil, next.Pin, nil
	d.mu.Unlock()
	d.cfg.Metrics.setPublished(rec.Commit.Hash)
	d.cfg.Metrics.setPinned(next.Pin != nil)
	d.cfg.Metrics.setRejecting(0)
	if change == nil {
		if err := SaveState(d.cfg.StateDir, next); err != nil {
			d.cfg.Logger.Error("published, but the state file was not written; a restart may serve an older commit", "error", err)
		}
	}
	return nil
}

// undo serves prev again after set was applied but cannot be kept, and
// returns cause (with the undo's own failure, if any).
func (d *Daemon) undo(ctx context.Context, prev *schema.Set, prevInfo CommitInfo, set *schema.Set, cause error) error {
	if prev == nil {
		return cause
	}
	// Serving prev again must not be cut short with ctx.
	if _, err := d.cfg.Target.Apply(context.WithoutCancel(ctx), prevInfo.Hash, prev, schema.DiffSets(set, prev)); err != nil {
		d.cfg.Logger.Error("cannot serve the previous commit again", "commit", prevInfo.Short(), "error", err)
		return fmt.Errorf("%w; serving %s again also failed: %v", cause, prevInfo.Short(), err)
	}
	return cause
}

// invalid settles a commit that cannot be published.
func (d *Daemon) invalid(rec Record, lastError string) error {
	rec.Verdict = VerdictInvalid
	d.settle(rec, ResultInvalid, lastError, true)
	return nil
}

// verify checks the signature of info's commit when commits are verified,
// and sets info.Signer. A signature that is not accepted is an
// *UnverifiedCommitError; any other error is a failure to read the commit.
func (d *Daemon) verify(info *CommitInfo) error {
	if d.cfg.Verify == nil {
		return nil
	}
	signer, err := d.cfg.Verify(info.Hash)
	var uv *source.UnverifiedError
	switch {
	case errors.As(err, &uv):
		return &UnverifiedCommitError{Commit: *info, Reason: uv.Reason, Err: uv}
	case err != nil:
		return fmt.Errorf("verify %s: %w", info.Short(), err)
	}
	info.Signer = signer
	return nil
}

// unverified settles a head whose signature is not accepted: recorded and
// counted, not published.
func (d *Daemon) unverified(rec Record, err *UnverifiedCommitError) error {
	rec.Verdict, rec.Error = VerdictUnverified, err.Error()
	d.cfg.Metrics.unverified(err.Reason)
	d.settle(rec, ResultUnverified, err.Error(), true)
	return nil
}

// settle records a final verdict on the head, in the status and the
// history.
func (d *Daemon) settle(rec Record, result, lastError string, invalid bool) {
	rec.At = d.settleStatus(rec, result, lastError, invalid)
	d.record(rec)
}

// settleStatus makes rec's verdict the head's in the status and metrics and
// returns when.
func (d *Daemon) settleStatus(rec Record, result, lastError string, invalid bool) time.Time {
	now := d.cfg.Now()
	d.mu.Lock()
	d.decided, d.status.HeadVerdict = rec.Commit.Hash, rec.Verdict
	d.status.LastError, d.status.LastSync = lastError, now
	if !invalid {
		d.status.LastGoodSync = now
	}
	d.lastFail = ""
	d.mu.Unlock()
	d.cfg.Metrics.setHead(rec.Commit.Hash, invalid)
	if !invalid {
		d.cfg.Metrics.goodSync(now)
	}
	d.cfg.Metrics.attempt(result)
	return now
}

// fail records a failure to be retried: nothing served changed.
func (d *Daemon) fail(rec Record, err error) error {
	rec.Verdict, rec.Error, rec.At = VerdictFailed, err.Error(), d.cfg.Now()
	d.cfg.Metrics.attempt(ResultFailed)
	key := rec.Commit.Hash + "\x00" + rec.Error
	d.mu.Lock()
	d.status.LastError, d.status.LastSync = err.Error(), rec.At
	repeat := d.lastFail == key
	d.lastFail = key
	d.mu.Unlock()
	if !repeat {
		d.record(rec)
	}
	return err
}

// record logs the outcome of a commit in one line and adds it to the
// history.
func (d *Daemon) record(rec Record) {
	attrs := []any{
		"commit", rec.Commit.Short(), "author", rec.Commit.Author, "subject", rec.Commit.Subject,
		"result", rec.Verdict, "trigger", rec.Trigger, "errors", rec.Errors, "warnings", rec.Warnings,
	}
	if rec.Diff != nil {
		attrs = append(attrs, "added", len(rec.Diff.Added), "changed", len(rec.Diff.Changed), "removed", len(rec.Diff.Removed),
			"affected_proxies", rec.Diff.Affected)
	}
	if rec.Verdict == VerdictPublished {
		attrs = append(attrs, "proxies_pushed", rec.Changed, "proxies_unchanged", rec.Unchanged, "proxies_removed", rec.Removed)
	}
	for _, st := range []string{StageFetch, StageLoad, StageDiff, StageTranslate, StagePublish} {
		if v, ok := rec.Durations[st]; ok {
			attrs = append(attrs, st+"_ms", v)
		}
	}
	if rec.Forced {
		attrs = append(attrs, "forced", true, "previous", short(rec.Previous))
	}
	level := slog.LevelInfo
	switch rec.Verdict {
	case VerdictInvalid:
		level = slog.LevelWarn
		if len(rec.Findings) > 0 {
			attrs = append(attrs, "first_error", rec.Findings[0].Error())
		} else if rec.Error != "" {
			attrs = append(attrs, "error", rec.Error)
		}
	case VerdictFailed:
		level = slog.LevelError
		attrs = append(attrs, "error", rec.Error)
	case VerdictUnverified:
		level = slog.LevelWarn
		attrs = append(attrs, "error", rec.Error)
	}
	if rec.Commit.Signer != "" {
		attrs = append(attrs, "signer", rec.Commit.Signer)
	}
	if rec.By != "" {
		attrs = append(attrs, "by", rec.By)
	}
	if rec.Reason != "" {
		attrs = append(attrs, "reason", rec.Reason)
	}
	d.cfg.Logger.Log(context.Background(), level, "commit "+rec.Verdict, attrs...)
	if _, err := d.history.Add(rec); err != nil {
		d.cfg.Logger.Error("history not written", "error", err)
	}
}

func (d *Daemon) setError(msg string) {
	d.mu.Lock()
	d.status.LastError = msg
	d.mu.Unlock()
}

// Status is the daemon's status now.
func (d *Daemon) Status() Status {
	d.mu.Lock()
	st := d.status
	d.mu.Unlock()
	st.Convergence = d.cfg.Target.Convergence()
	return st
}

// History is every commit decided on, newest first.
func (d *Daemon) History() []Record { return d.history.Records() }

// Served returns the served Set and its commit; ok is false until a commit
// is served.
func (d *Daemon) Served() (*schema.Set, CommitInfo, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.served, d.servedInfo, d.served != nil
}

func commitInfo(c *source.Commit) CommitInfo {
	return CommitInfo{Hash: c.Hash, Author: c.Author, Subject: c.Subject, Time: c.Time}
}

// errorsFirst orders findings errors first, keeping their order otherwise.
func errorsFirst(fs []schema.Finding) []schema.Finding {
	out := make([]schema.Finding, 0, len(fs))
	for _, f := range fs {
		if f.IsError() {
			out = append(out, f)
		}
	}
	for _, f := range fs {
		if !f.IsError() {
			out = append(out, f)
		}
	}
	return out
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func short(h string) string { return (CommitInfo{Hash: h}).Short() }
