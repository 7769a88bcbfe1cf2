package reconcile

import (
	"context"
	"errors"
	"fmt"

	"github.com/gitmesh/gitmesh/reconcile/source"
	"github.com/gitmesh/gitmesh/schema"
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
	// be read as a policy tree at all (no policy directory).
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
		errors.As(err, &unverified)
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
// nothing changes. The pin
// is in the state file before Rollback returns; if it cannot be written,
// what was served is served again and Rollback fails.
func (d *Daemon) Rollback(ctx context.Context, rev, by, reason string) (Record, error) {
	rec, err := d.rollback(ctx, rev, by, reason)
	d.cfg.Metrics.operation(OpRollback, err)
	if err != nil {
		d.cfg.Logger.Warn("rollback refused or failed", "revision", rev, "by", by, "error", err)
	}
	return rec, err
}

func (d *Daemon) rollback(ctx context.Context, rev, by, reason string) (Record, error) {
	if rev == "" {
		return Record{}, fmt.Errorf("%w: no commit given", ErrUnknownCommit)
	}
	d.op.Lock()
	defer d.op.Unlock()
	start := d.cfg.Now()
	info, res, err := d.load(rev)
	if err != nil {
		return Record{}, err
	}
	load := d.cfg.Now().Sub(start)
	d.cfg.Metrics.stage(StageLoad, load)
	if !res.Valid() {
		errs, _ := res.Count()
		return Record{}, &InvalidCommitError{Commit: info, Errors: errs, Findings: errorsFirst(res.Findings)}
	}
	rec := Record{Commit: info, Trigger: OpRollback, By: by, Reason: reason, Pinned: true,
		Durations: map[string]float64{StageLoad: ms(load)}}
	rec.Errors, rec.Warnings = res.Count()
	pin := &Pin{Commit: info, At: d.cfg.Now(), By: by, Reason: reason}
	if err := d.publish(ctx, &rec, res.Set, func(st *State) { st.Pin = pin }); err != nil {
		return Record{}, fmt.Errorf("rollback to %s: %w", info.Short(), err)
	}
	rec.At = d.cfg.Now()
	d.mu.Lock()
	if d.status.Head != nil && d.status.Head.Hash != info.Hash && d.status.HeadVerdict == VerdictPublished {
		d.status.HeadVerdict = VerdictHeld
	}
	d.mu.Unlock()
	d.record(rec)
	return rec, nil
}

// load reads rev from local objects, verifies its signature (when commits
// are verified) and validates its tree. Its errors are refusals
// (ErrUnknownCommit, *InvalidCommitError, *UnverifiedCommitError) or a
// failure to load.
func (d *Daemon) load(rev string) (CommitInfo, *schema.Result, error) {
	c, err := d.cfg.Source.ReadCommit(rev, d.cfg.Path)
	if errors.Is(err, source.ErrUnknownRevision) {
		if _, fetched := d.cfg.Source.Head(); !fetched {
			return CommitInfo{}, nil, fmt.Errorf("%w %q: branch %s has not been fetched yet; try again once `gitmesh status` shows a head",
				ErrUnknownCommit, rev, d.cfg.Branch)
		}
		return CommitInfo{}, nil, fmt.Errorf("%w %q: it is not among the commits fetched from branch %s", ErrUnknownCommit, rev, d.cfg.Branch)
	}
	if err != nil {
		return CommitInfo{}, nil, &InvalidCommitError{Commit: CommitInfo{Hash: rev}, Errors: 1, Reason: err.Error()}
	}
	info := commitInfo(c)
	if err := d.verify(&info); err != nil {
		return CommitInfo{}, nil, err
	}
	res, err := d.cfg.Load(c.Tree)
	if err != nil {
		return CommitInfo{}, nil, fmt.Errorf("load %s: %w", c.Hash, err)
	}
	return info, res, nil
}

// Resume lifts the pin and follows the branch again: the newest valid (and,
// when commits are verified, verified) commit of the branch (the head, or the newest of its first-parent
// ancestors that validates, back to the pinned commit) is published, and the
// state file no longer holds a pin. It returns the record of that publish;
// when the served commit stays, the record says so with no Diff. Resume
// without a pin is ErrNotPinned.
func (d *Daemon) Resume(ctx context.Context, by, reason string) (Record, error) {
	rec, err := d.resume(ctx, by, reason)
	d.cfg.Metrics.operation(OpResume, err)
	if err != nil {
		d.cfg.Logger.Warn("resume refused or failed", "by", by, "error", err)
	}
	return rec, err
}

func (d *Daemon) resume(ctx context.Context, by, reason string) (Record, error) {
	d.op.Lock()
	defer d.op.Unlock()
	d.mu.Lock()
	pinned := d.state.Pin != nil
	servedInfo := d.servedInfo
	d.mu.Unlock()
	if !pinned {
		return Record{}, ErrNotPinned
	}
	unpin := func(st *State) { st.Pin = nil }
	rec := Record{Trigger: OpResume, By: by, Reason: reason}
	info, res := d.newestValid(servedInfo.Hash)
	if res == nil || info.Hash == servedInfo.Hash {
		// Nothing newer validates: keep what is served, without the pin.
		d.mu.Lock()
		next := d.state
		d.mu.Unlock()
		unpin(&next)
		if err := SaveState(d.cfg.StateDir, next); err != nil {
			return Record{}, fmt.Errorf("resume: %w", err)
		}
		d.mu.Lock()
		d.state = next
		d.status.Pinned, d.status.Pin = false, nil
		d.mu.Unlock()
		d.cfg.Metrics.setPinned(false)
		rec.Commit, rec.Verdict, rec.At = servedInfo, VerdictPublished, d.cfg.Now()
		d.record(rec)
		return rec, nil
	}
	rec.Commit = info
	rec.Errors, rec.Warnings = res.Count()
	if err := d.publish(ctx, &rec, res.Set, unpin); err != nil {
		return Record{}, fmt.Errorf("resume at %s: %w", rec.Commit.Short(), err)
	}
	rec.At = d.cfg.Now()
	d.mu.Lock()
	if d.status.Head != nil && d.status.Head.Hash == rec.Commit.Hash {
		d.status.HeadVerdict = VerdictPublished
	}
	d.mu.Unlock()
	d.record(rec)
	return rec, nil
}

// newestValid walks the branch from its head along first parents, at most
// maxResumeWalk commits and not past stop, and returns the first commit that
// validates (and, when commits are verified, whose signature is accepted);
// a nil Result when none does.
func (d *Daemon) newestValid(stop string) (CommitInfo, *schema.Result) {
	hash, ok := d.cfg.Source.Head()
	for i := 0; ok && i < maxResumeWalk; i++ {
		if hash == stop {
			return CommitInfo{}, nil
		}
		info, res, err := d.load(hash)
		if err == nil && res.Valid() {
			return info, res
		}
		hash, ok = d.cfg.Source.FirstParent(hash)
	}
	return CommitInfo{}, nil
}
