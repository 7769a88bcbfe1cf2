package reconcile

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/gitmesh/gitmesh/reconcile/pipeline"
	"github.com/gitmesh/gitmesh/reconcile/source"
	"github.com/gitmesh/gitmesh/schema"
	"github.com/gitmesh/gitmesh/store"
	"github.com/gitmesh/gitmesh/xds"
)

// restore serves what the state file says was served (the pinned commit,
// else the published one), read from local objects, so proxies get their
// configuration even when the remote is down. Its signature is not checked
// again: with Verify set, only verified commits are published or pinned, and
// the state file is the daemon's own. (A commit published before Verify was
// set is served until a verified one replaces it; the head's verdict shows
// it unverified.) It returns the commit served and its lazy Result, for
// checkRestored; nil when it serves nothing.
func (d *Daemon) restore(ctx context.Context) (*source.Commit, *pipeline.Result) {
	d.op.Lock()
	defer d.op.Unlock()
	d.mu.Lock()
	st := d.state
	d.mu.Unlock()
	want := st.serves()
	if want == nil {
		return nil, nil
	}
	log := d.cfg.Logger.With("commit", want.Short())
	fail := func(msg string, err error) {
		d.mu.Lock()
		d.status.LastError = fmt.Sprintf("restore %s: %v", want.Short(), err)
		d.mu.Unlock()
		log.Error(msg, "error", err)
	}
	c, err := d.cfg.Source.ReadCommit(string(want.Hash), d.cfg.Path)
	if err != nil {
		fail("cannot restore the published commit from local objects", err)
		return nil, nil
	}
	// The commit passed every check when it was published: it is served
	// again at once, each proxy translated and checked as its node
	// connects, and checked whole afterwards (checkRestored).
	res, err := d.cfg.Pipeline.Restore(d.trees(c))
	if err == nil {
		err = invalidity(res)
	}
	if err != nil {
		fail("the published commit no longer loads", err)
		return nil, nil
	}
	info := commitInfo(c)
	info.Signer = want.Signer
	applied, err := d.cfg.Target.Apply(ctx, string(c.Hash), res.Translation)
	if err != nil {
		fail("cannot serve the published commit", err)
		return nil, nil
	}
	d.mu.Lock()
	d.served, d.servedInfo = res, info
	d.status.Published, d.status.PublishedAt, d.status.Ready = &info, st.PublishedAt, true
	if strings.HasPrefix(d.status.LastError, "restore ") {
		d.status.LastError = "" // an earlier try, before the fetch
	}
	d.mu.Unlock()
	d.cfg.Metrics.setPublished(string(c.Hash))
	log.Info("serving the published commit from local objects", "dataplanes", len(res.Translation.Nodes()),
		"proxies_served", len(applied.Changed)+len(applied.Unchanged),
		"load_ms", ms(res.Load), "translate_ms", ms(res.Translate), "publish_ms", ms(applied.Publish))
	return c, res
}

// invalidity is the error of a Result with errors: their count and the
// first; nil for a valid one.
func invalidity(res *pipeline.Result) error {
	if res.Valid() {
		return nil
	}
	errs, _ := res.Count()
	return fmt.Errorf("%d errors; first: %s", errs, errorsFirst(res.Findings)[0].Error())
}

// checkRestored translates and checks whole c, the commit restore served
// lazily as res, while it is still what is served: the Result then stands
// for it (the next commit's translation reuses it, as after a publish). A
// commit that no longer passes (a newer gitmesh judging it otherwise) stays
// served, proxy by proxy as they pass, and the error is reported; the next
// commit is judged as always.
func (d *Daemon) checkRestored(ctx context.Context, c *source.Commit, res *pipeline.Result) {
	d.op.Lock()
	defer d.op.Unlock()
	d.mu.Lock()
	served, info := d.served, d.servedInfo
	d.mu.Unlock()
	if served != res {
		return // a later publish or rollback replaced it
	}
	log := d.cfg.Logger.With("commit", info.Short())
	full, err := d.cfg.Pipeline.Run(ctx, d.trees(c), nil)
	if ctx.Err() != nil {
		return
	}
	if err == nil {
		err = invalidity(full)
	}
	if err != nil {
		d.mu.Lock()
		d.status.LastError = fmt.Sprintf("check %s: %v", info.Short(), err)
		d.mu.Unlock()
		log.Error("the served commit no longer passes its checks; it stays served, each proxy as it passes", "error", err)
		return
	}
	d.mu.Lock()
	if d.served == res {
		d.served = full
	}
	d.mu.Unlock()
	log.Info("checked the restored commit whole", "dataplanes", len(full.Translation.Nodes()), "translate_ms", ms(full.Translate))
}

// trees is the policy tree of c as the pipeline reads it, file names
// relative to the repository.
func (d *Daemon) trees(c *source.Commit) []schema.Tree {
	return []schema.Tree{{FS: c.Tree, Prefix: cleanPath(d.cfg.Path)}}
}

// fetch asks the remote for the branch, timed; a failure is concluded
// (status, metrics, log) here.
func (d *Daemon) fetch(ctx context.Context, trigger string) (source.SyncResult, time.Duration, error) {
	start := d.cfg.Now()
	sr, err := d.cfg.Source.Sync(ctx)
	fetch := d.cfg.Now().Sub(start)
	d.cfg.Metrics.stage(StageFetch, fetch)
	if err != nil && ctx.Err() == nil {
		d.conclude(outcome{result: ResultFetchError, lastError: err.Error()})
		d.cfg.Logger.Warn("sync failed", "trigger", trigger, "error", err, "fetch_ms", ms(fetch))
	}
	return sr, fetch, err
}

// sync fetches the branch and decides on its head. An error means the sync
// should be retried (with backoff); an invalid commit is not an error.
func (d *Daemon) sync(ctx context.Context, trigger string) error {
	sr, fetch, err := d.fetch(ctx, trigger)
	if err != nil {
		return err
	}
	if sr.Forced {
		d.cfg.Metrics.forced()
		d.cfg.Logger.Warn("branch history was rewritten", "previous", sr.Previous.Short(), "head", sr.Head.Short())
	}
	d.mu.Lock()
	unchanged := sr.Head == d.decided
	d.mu.Unlock()
	if unchanged {
		d.conclude(outcome{result: ResultUnchanged, unchanged: true})
		return nil
	}
	d.op.Lock()
	defer d.op.Unlock()
	o := d.decide(ctx, sr, trigger, fetch)
	if o.retry != nil && errors.Is(o.retry, store.ErrFenced) {
		// Another replica took the lease meanwhile: its decision is
		// served when it comes.
		d.cfg.Logger.Warn("lost the decider's lease while deciding; nothing was published", "commit", sr.Head.Short())
		return nil
	}
	if o.Verdict == VerdictFailed && ctx.Err() != nil {
		// Stopped midway (the daemon is shutting down): the commit did not
		// fail, and the next start decides on it again.
		d.cfg.Logger.Info("stopped before deciding on the head", "commit", sr.Head.Short())
		return ctx.Err()
	}
	d.conclude(o)
	return o.retry
}

// decide judges the head and publishes it unless it is invalid or the mesh
// is pinned. Called with op held.
func (d *Daemon) decide(ctx context.Context, sr source.SyncResult, trigger string, fetch time.Duration) outcome {
	rec := Record{Commit: CommitInfo{Hash: sr.Head}, Trigger: trigger, Durations: map[Stage]float64{StageFetch: ms(fetch)}}
	if sr.Forced {
		rec.Forced, rec.Previous = true, sr.Previous
	}
	o := outcome{Record: rec, head: true, record: true}
	c, err := d.cfg.Source.ReadCommit(string(sr.Head), d.cfg.Path)
	if err != nil {
		// The commit itself is the problem (no policy directory, say).
		o.Verdict, o.Errors, o.Error = VerdictInvalid, 1, err.Error()
		return o.invalid(err.Error())
	}
	o.Commit = commitInfo(c)
	// Verified before the status points at the commit: it sets the signer.
	verr := d.verify(&o.Commit)
	d.mu.Lock()
	d.status.Head, d.status.HeadVerdict = &o.Commit, VerdictPending
	served := d.served
	d.mu.Unlock()
	if verr != nil {
		var unverified *UnverifiedCommitError
		if errors.As(verr, &unverified) {
			d.cfg.Metrics.unverified(unverified.Reason)
			o.Verdict, o.Error, o.result = VerdictUnverified, verr.Error(), ResultUnverified
			o.lastError = verr.Error()
			return o
		}
		return o.failed(verr)
	}

	res, err := d.judge(ctx, c, served, &o.Record)
	if err != nil {
		return o.failed(err)
	}
	if !res.Valid() || empty(res, d.cfg.AllowEmpty) {
		return o.invalid(invalidMessage(o.Record))
	}

	d.mu.Lock()
	pinned := d.state.Pin != nil
	alreadyServed := d.served != nil && d.servedInfo.Hash == o.Commit.Hash
	d.mu.Unlock()
	switch {
	case pinned:
		o.Verdict, o.result = VerdictHeld, ResultHeld
		return o
	case alreadyServed:
		// Restored at start (or taken over from another replica): nothing
		// new to record, unless the history lacks its publish (a crash
		// between the state's write and the history's).
		o.Verdict, o.result = VerdictPublished, ResultUnchanged
		o.record = !d.publishRecorded(o.Commit.Hash)
		return o
	}
	// What is published must be what the store says was decided: while it
	// cannot be reached the served commit stays, and the head is retried.
	if err := d.cfg.Store.Ping(ctx); err != nil {
		return o.failed(fmt.Errorf("not published: %w", err))
	}
	pub, err := d.publish(ctx, &o.Record, res, res.Diff, nil)
	if err != nil {
		return o.failed(err)
	}
	o.published, o.result = pub, ResultPublished
	return o
}

// judge runs the pipeline on c's tree against prev (the Result served) and
// fills in rec's counts, findings and durations. A commit with no policy
// file gets an error there too (unless AllowEmpty).
func (d *Daemon) judge(ctx context.Context, c *source.Commit, prev *pipeline.Result, rec *Record) (*pipeline.Result, error) {
	res, err := d.cfg.Pipeline.Run(ctx, d.trees(c), prev)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", c.Hash.Short(), err)
	}
	d.cfg.Metrics.stage(StageLoad, res.Load)
	if rec.Durations == nil {
		rec.Durations = map[Stage]float64{}
	}
	rec.Durations[StageLoad] = ms(res.Load)
	if res.Set != nil {
		d.cfg.Metrics.stage(StageDiff, res.Compare)
		d.cfg.Metrics.stage(StageTranslate, res.Translate)
		rec.Durations[StageDiff], rec.Durations[StageTranslate] = ms(res.Compare), ms(res.Translate)
		rec.Translated = res.Stats.Translated
	}
	rec.Errors, rec.Warnings = res.Count()
	rec.Findings = errorsFirst(res.Findings)
	if empty(res, d.cfg.AllowEmpty) {
		rec.Errors++
		rec.Error = fmt.Sprintf("no policy file (*.yaml, *.yml) under %s: nothing would be served; serve --allow-empty publishes an empty commit",
			orRoot(d.cfg.Path))
	}
	return res, nil
}

// empty reports whether res holds no policy file, nor any finding about
// files that could not be read, and that is not allowed.
func empty(res *pipeline.Result, allowed bool) bool {
	return res.Files == 0 && len(res.Findings) == 0 && !allowed
}

// invalidMessage is the status's last error for an invalid record.
func invalidMessage(rec Record) string {
	if len(rec.Findings) == 0 && rec.Error != "" {
		return fmt.Sprintf("commit %s is invalid: %s", rec.Commit.Short(), rec.Error)
	}
	return (&InvalidCommitError{Commit: rec.Commit, Errors: rec.Errors, Findings: rec.Findings}).Error()
}

// publication is what a publish made the served state.
type publication struct {
	info   CommitInfo
	result *pipeline.Result
	state  State
	at     time.Time
}

// publish applies res, the Result of rec.Commit, fills in rec (diff is what
// res changes against what is served) and writes the state file with change
// applied to it. Called with op held. Nothing of the
// daemon's own state changes here: conclude makes the publication what is
// served.
//
// Without change, a state file that cannot be written is logged: what is
// served stays (a restart would serve the previous commit). With change (a
// pin set or lifted), what is served must agree with the state file, so the
// publish is undone and an error returned.
func (d *Daemon) publish(ctx context.Context, rec *Record, res *pipeline.Result, diff schema.SetDiff, change func(*State)) (*publication, error) {
	d.mu.Lock()
	served, next := d.served, d.state
	d.publishing = string(rec.Commit.Hash)
	d.mu.Unlock()
	published := false
	defer func() {
		if !published {
			d.mu.Lock()
			d.publishing, d.parked = "", nil
			d.mu.Unlock()
		}
	}()

	applied, err := d.cfg.Target.Apply(ctx, string(rec.Commit.Hash), res.Translation)
	if err != nil {
		return nil, fmt.Errorf("publish %s: %w", rec.Commit.Short(), err)
	}
	d.cfg.Metrics.stage(StagePublish, applied.Publish)
	if rec.Durations == nil {
		rec.Durations = map[Stage]float64{}
	}
	rec.Durations[StagePublish] = ms(applied.Publish)
	rec.Verdict = VerdictPublished
	// Affected are the dataplanes whose configuration changes, connected or
	// not; Changed, Unchanged and Removed count what was served.
	var was *xds.Translation
	if served != nil {
		was = served.Translation
	}
	rec.Diff = &DiffSummary{SetDiff: diff, Affected: res.Translation.Affected(was)}
	rec.Changed, rec.Unchanged, rec.Removed = len(applied.Changed), len(applied.Unchanged), len(applied.Removed)

	now := d.cfg.Now()
	next.Published, next.PublishedAt = &rec.Commit, now
	if change != nil || d.fl != nil {
		// With a pin set or lifted, or replicas that serve what the state
		// says, what is served must agree with the state.
		if change != nil {
			change(&next)
		}
		if err := SaveStateTo(ctx, d.cfg.Store, next); err != nil {
			return nil, d.undo(ctx, served, fmt.Errorf("%w; nothing changed", err))
		}
	} else if err := SaveStateTo(ctx, d.cfg.Store, next); err != nil {
		d.cfg.Logger.Error("published, but the state file was not written; a restart may serve an older commit", "error", err)
	}
	published = true
	return &publication{info: rec.Commit, result: res, state: next, at: now}, nil
}

// undo serves prev again after a translation was applied but cannot be
// kept, and returns cause (with the undo's own failure, if any).
func (d *Daemon) undo(ctx context.Context, prev *pipeline.Result, cause error) error {
	if prev == nil {
		return cause
	}
	d.mu.Lock()
	info := d.servedInfo
	d.mu.Unlock()
	// Serving prev again must not be cut short with ctx.
	if _, err := d.cfg.Target.Apply(context.WithoutCancel(ctx), string(info.Hash), prev.Translation); err != nil {
		d.cfg.Logger.Error("cannot serve the previous commit again", "commit", info.Short(), "error", err)
		return fmt.Errorf("%w; serving %s again also failed: %v", cause, info.Short(), err)
	}
	return cause
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

// publishRecorded reports whether the history holds a publish of hash.
func (d *Daemon) publishRecorded(hash source.Hash) bool {
	for _, r := range d.history.Records() {
		if r.Commit.Hash == hash && (r.Verdict == VerdictPublished || r.Verdict == VerdictRejected) {
			return true
		}
	}
	return false
}
