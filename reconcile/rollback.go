package reconcile

import (
	"context"
	"errors"
	"fmt"

	"github.com/gitmesh/gitmesh/reconcile/pipeline"
	"github.com/gitmesh/gitmesh/reconcile/source"
	"github.com/gitmesh/gitmesh/schema"
	"github.com/gitmesh/gitmesh/store"
)

// Errors of Rollback and Resume. Both are refusals: nothing changed.
var (
	// ErrUnknownCommit: the revision names no commit in the local
	// repository.
	ErrUnknownCommit = errors.New("unknown commit")
	// ErrNotPinned: Resume when no rollback holds the mesh.
	ErrNotPinned = errors.New("the mesh is not pinned")
)

// InvalidCommitError refuses a rollback to a commit that cannot be served.
type InvalidCommitError struct {
	Commit CommitInfo
	// Errors counts the commit's errors; Findings are the first of its
	// findings, errors first. Reason is set instead when the commit could not
	// be read as a policy tree at all (no policy directory, no policy file).
	Errors   int
	Findings []schema.Finding
	Reason   string
}

func (e *InvalidCommitError) Error() string {
	if e.Reason != "" {
		return fmt.Sprintf("commit %s cannot be served: %s", e.Commit.Short(), e.Reason)
	}
	noun := "errors"
	if e.Errors == 1 {
		noun = "error"
	}
	msg := fmt.Sprintf("commit %s is invalid: %d %s", e.Commit.Short(), e.Errors, noun)
	if len(e.Findings) > 0 {
		msg += "; first: " + e.Findings[0].Error()
	}
	return msg
}

// UnverifiedCommitError refuses a commit whose signature is not accepted
// while commits are verified (serve --verify-commits): unsigned, signed by a
// key not in the keyring, or a bad signature.
type UnverifiedCommitError struct {
	Commit CommitInfo
	Reason string // source.ReasonUnsigned, source.ReasonUnknownKey or source.ReasonBadSignature
	Err    *source.UnverifiedError
}

func (e *UnverifiedCommitError) Error() string { return e.Err.Error() }

func (e *UnverifiedCommitError) Unwrap() error { return e.Err }

// isRefusal tells a refused operation (nothing was tried) from a failed
// one.
func isRefusal(err error) bool {
	var invalid *InvalidCommitError
	var unverified *UnverifiedCommitError
	return errors.Is(err, ErrUnknownCommit) || errors.Is(err, ErrNotPinned) || errors.As(err, &invalid) ||
		errors.As(err, &unverified) || errors.As(err, new(*StoreUnavailableError))
}

// StoreUnavailableError refuses a rollback or resume while the state store
// cannot be reached: the pin could not be kept, so nothing is tried and
// what is served stays served. It wraps store.ErrUnavailable.
type StoreUnavailableError struct {
	Op  string
	Err error
}

func (e *StoreUnavailableError) Error() string {
	return fmt.Sprintf("%s refused: %v; what is served stays served, try again once the store is back", e.Op, e.Err)
}

func (e *StoreUnavailableError) Unwrap() error { return e.Err }

// storeReachable refuses op while the store cannot be reached.
func (d *Daemon) storeReachable(ctx context.Context, op string) error {
	if err := d.cfg.Store.Ping(ctx); err != nil {
		if errors.Is(err, store.ErrUnavailable) {
			return &StoreUnavailableError{Op: op, Err: err}
		}
		return err
	}
	return nil
}

// maxResumeWalk bounds how far back Resume looks from the head for a valid
// commit.
const maxResumeWalk = 100

// Rollback publishes the commit rev names and pins the mesh on it: commits
// that come later are fetched, checked and recorded as held, not published,
// until Resume. rev may be any commit in the local repository (every commit
// ever fetched from the branch), as a hash, a short hash or the branch with
// a ~N suffix. An unknown revision (ErrUnknownCommit), a commit that does
// not validate (*InvalidCommitError) or, while commits are verified, one
// whose signature is not accepted (*UnverifiedCommitError) is refused and
// nothing changes. The pin is in the state file before Rollback returns; if
// it cannot be written, what was served is served again and Rollback fails.
func (d *Daemon) Rollback(ctx context.Context, rev, by, reason string) (Record, error) {
	var rec Record
	var err error
	if d.deciding() {
		rec, err = d.rollback(ctx, rev, by, reason, 0)
	} else {
		rec, err = d.forward(ctx, OpRollback, rev, by, reason)
	}
	d.cfg.Metrics.operation(OpRollback, err)
	if err != nil {
		d.cfg.Logger.Warn("rollback refused or failed", "revision", rev, "by", by, "error", err)
	}
	return rec, err
}

// rollback is Rollback; request is the id of the request another replica
// handed over (0 for one asked of this replica), kept in the record.
func (d *Daemon) rollback(ctx context.Context, rev, by, reason string, request int64) (Record, error) {
	if rev == "" {
		return Record{}, fmt.Errorf("%w: no commit given", ErrUnknownCommit)
	}
	d.op.Lock()
	defer d.op.Unlock()
	if err := d.storeReachable(ctx, OpRollback); err != nil {
		return Record{}, err
	}
	rec := Record{Trigger: OpRollback, By: by, Reason: reason, Pinned: true, Request: request}
	res, diff, err := d.load(ctx, rev, &rec)
	if err != nil {
		return Record{}, err
	}
	pin := &Pin{Commit: rec.Commit, At: d.cfg.Now(), By: by, Reason: reason}
	pub, err := d.publish(ctx, &rec, res, diff, func(st *State) { st.Pin = pin })
	if err != nil {
		return Record{}, fmt.Errorf("rollback to %s: %w", rec.Commit.Short(), err)
	}
	o := outcome{Record: rec, record: true, published: pub}
	d.conclude(o)
	return o.Record, nil
}

// load reads rev from local objects, verifies its signature (when commits
// are verified) and judges its tree, filling in rec: the Result to publish,
// and what it changes against what is served. Going back to the commit
// served before takes its Result as it was, without running the pipeline.
// Its errors are refusals (ErrUnknownCommit, *InvalidCommitError,
// *UnverifiedCommitError) or a failure to load. Called with op held.
func (d *Daemon) load(ctx context.Context, rev string, rec *Record) (*pipeline.Result, schema.SetDiff, error) {
	c, err := d.cfg.Source.ReadCommit(rev, d.cfg.Path)
	if errors.Is(err, source.ErrUnknownRevision) && d.fl != nil {
		// Asked through another replica, which fetched it first.
		if _, serr := d.cfg.Source.Sync(ctx); serr == nil {
			c, err = d.cfg.Source.ReadCommit(rev, d.cfg.Path)
		}
	}
	if errors.Is(err, source.ErrUnknownRevision) {
		if _, fetched := d.cfg.Source.Head(); !fetched {
			return nil, schema.SetDiff{}, fmt.Errorf("%w %q: branch %s has not been fetched yet; try again once `gitmesh status` shows a head",
				ErrUnknownCommit, rev, d.cfg.Branch)
		}
		return nil, schema.SetDiff{}, fmt.Errorf("%w %q: it is not among the commits fetched from branch %s", ErrUnknownCommit, rev, d.cfg.Branch)
	}
	if err != nil {
		return nil, schema.SetDiff{}, &InvalidCommitError{Commit: CommitInfo{Hash: source.Hash(rev)}, Errors: 1, Reason: err.Error()}
	}
	rec.Commit = commitInfo(c)
	if err := d.verify(&rec.Commit); err != nil {
		return nil, schema.SetDiff{}, err
	}
	d.mu.Lock()
	served, previous, previousInfo := d.served, d.previous, d.previousInfo
	d.mu.Unlock()
	if previous != nil && previousInfo.Hash == c.Hash {
		rec.Errors, rec.Warnings = previous.Count()
		return previous, schema.DiffSets(setOf(served), previous.Set), nil
	}
	res, err := d.judge(ctx, c, served, rec)
	if err != nil {
		return nil, schema.SetDiff{}, err
	}
	if !res.Valid() || empty(res, d.cfg.AllowEmpty) {
		return nil, schema.SetDiff{}, &InvalidCommitError{Commit: rec.Commit, Errors: rec.Errors, Findings: rec.Findings, Reason: reasonOf(rec)}
	}
	return res, res.Diff, nil
}

// reasonOf is the reason of an invalid commit that has no finding to show.
func reasonOf(rec *Record) string {
	if len(rec.Findings) == 0 || !rec.Findings[0].IsError() {
		return rec.Error
	}
	return ""
}

func setOf(r *pipeline.Result) *schema.Set {
	if r == nil {
		return nil
	}
	return r.Set
}

// Resume lifts the pin and follows the branch again: the newest valid (and,
// when commits are verified, verified) commit of the branch (the head, or
// the newest of its first-parent ancestors that validates, back to the
// pinned commit) is published, and the state file no longer holds a pin.
// It returns the record of that publish; when the served commit stays, the
// record says so with no Diff. Resume without a pin is ErrNotPinned.
func (d *Daemon) Resume(ctx context.Context, by, reason string) (Record, error) {
	var rec Record
	var err error
	if d.deciding() {
		rec, err = d.resume(ctx, by, reason, 0)
	} else {
		rec, err = d.forward(ctx, OpResume, "", by, reason)
	}
	d.cfg.Metrics.operation(OpResume, err)
	if err != nil {
		d.cfg.Logger.Warn("resume refused or failed", "by", by, "error", err)
	}
	return rec, err
}

// resume is Resume; request as for rollback.
func (d *Daemon) resume(ctx context.Context, by, reason string, request int64) (Record, error) {
	d.op.Lock()
	defer d.op.Unlock()
	if err := d.storeReachable(ctx, OpResume); err != nil {
		return Record{}, err
	}
	d.mu.Lock()
	pinned := d.state.Pin != nil
	servedInfo := d.servedInfo
	d.mu.Unlock()
	if !pinned {
		return Record{}, ErrNotPinned
	}
	unpin := func(st *State) { st.Pin = nil }
	rec, res, diff := d.newestValid(ctx, servedInfo.Hash, Record{Trigger: OpResume, By: by, Reason: reason, Request: request})
	if res == nil {
		// Nothing newer validates: keep what is served, without the pin.
		d.mu.Lock()
		next := d.state
		d.mu.Unlock()
		unpin(&next)
		if err := SaveStateTo(ctx, d.cfg.Store, next); err != nil {
			return Record{}, fmt.Errorf("resume: %w", err)
		}
		o := outcome{Record: Record{Commit: servedInfo, Verdict: VerdictPublished, Trigger: OpResume, By: by, Reason: reason, Request: request},
			record: true, state: &next}
		d.conclude(o)
		return o.Record, nil
	}
	pub, err := d.publish(ctx, &rec, res, diff, unpin)
	if err != nil {
		return Record{}, fmt.Errorf("resume at %s: %w", rec.Commit.Short(), err)
	}
	o := outcome{Record: rec, record: true, published: pub}
	d.conclude(o)
	return o.Record, nil
}

// newestValid walks the branch from its head along first parents, at most
// maxResumeWalk commits and not past stop, and returns the first commit that
// validates (and, when commits are verified, whose signature is accepted)
// with its Result and what it changes; a nil Result when none does, or when
// it is stop itself.
func (d *Daemon) newestValid(ctx context.Context, stop source.Hash, base Record) (Record, *pipeline.Result, schema.SetDiff) {
	hash, ok := d.cfg.Source.Head()
	for i := 0; ok && i < maxResumeWalk; i++ {
		if hash == stop {
			return base, nil, schema.SetDiff{}
		}
		rec := base
		res, diff, err := d.load(ctx, string(hash), &rec)
		if err == nil {
			return rec, res, diff
		}
		hash, ok = d.cfg.Source.FirstParent(hash)
	}
	return base, nil, schema.SetDiff{}
}
