package reconcile

import (
	"context"
	"errors"
	"log/slog"
	"path"
	"path/filepath"

	"github.com/gitmesh/gitmesh/store"
)

// An outcome is what one sync, restore, rollback or resume decided. The
// status, the metrics, the log line and the history record all derive from
// it, in conclude and nowhere else.
type outcome struct {
	Record
	// result is the sync's label of gitmesh_sync_attempts_total; "" for a
	// rollback or a resume, which count in gitmesh_operations_total.
	result string
	// unchanged: the head did not move; only the sync's time is new.
	unchanged bool
	// head: the record is about the branch head, whose verdict it becomes
	// in the status.
	head bool
	// record: the outcome is added to the history (and logged).
	record bool
	// lastError is the status's last error ("" clears it).
	lastError string
	// published is set when something was published: it becomes what is
	// served. state is set when the state file changed without a publish
	// (a resume that keeps what is served).
	published *publication
	state     *State
	// retry is the error that makes the sync be retried (with backoff).
	retry error
}

// invalid makes o an invalid commit: settled, nothing published.
func (o outcome) invalid(lastError string) outcome {
	o.Verdict, o.result, o.lastError = VerdictInvalid, ResultInvalid, lastError
	return o
}

// failed makes o a failure to be retried: nothing served changed.
func (o outcome) failed(err error) outcome {
	o.Verdict, o.Error, o.result, o.lastError, o.retry = VerdictFailed, err.Error(), ResultFailed, err.Error(), err
	return o
}

// conclude makes o the daemon's state: what is served, the status, the
// metrics, the history and the log. The history comes first, so that
// whoever sees a verdict in the status finds its record.
func (d *Daemon) conclude(o outcome) {
	now := d.cfg.Now()
	o.At = now
	d.mu.Lock()
	// A failure is recorded once, however often it is retried.
	if o.Verdict == VerdictFailed {
		key := string(o.Commit.Hash) + "\x00" + o.Error
		o.record = o.record && d.lastFail != key
		d.lastFail = key
	}
	if o.record && d.fresh && o.head && d.alreadyRecorded(o.Record) {
		o.record = false // a restart's first look at a head it had decided on
	}
	if o.head || o.published != nil {
		d.fresh = false
	}
	d.mu.Unlock()
	if o.record {
		d.record(o.Record)
	}

	d.mu.Lock()
	d.status.LastSync = now
	switch {
	case o.unchanged:
		if v := d.status.HeadVerdict; v != VerdictInvalid && v != VerdictUnverified {
			d.status.LastError, d.status.LastGoodSync = "", now
		}
	case o.result == ResultFetchError:
		d.status.LastError = o.lastError
	default:
		d.status.LastError = o.lastError
		if o.Verdict.good() {
			d.status.LastGoodSync = now
		}
	}
	good := d.status.LastGoodSync == now
	if o.head {
		d.status.Head, d.status.HeadVerdict = &o.Commit, o.Verdict
		if o.Verdict.final() {
			d.decided, d.lastFail = o.Commit.Hash, ""
		}
	}
	if p := o.published; p != nil {
		if d.served != nil && d.servedInfo.Hash != p.info.Hash {
			d.previous, d.previousInfo = d.served, d.servedInfo
		}
		d.served, d.servedInfo, d.state, d.rejecting = p.result, p.info, p.state, nil
		d.status.Published, d.status.PublishedAt, d.status.Ready = &p.info, p.at, true
		d.status.Rejections = nil
		// A rollback or resume publishes another commit than the head it
		// leaves: the head is published when it is that commit, held when
		// a pin now keeps it from being so.
		if h := d.status.Head; !o.head && h != nil {
			switch {
			case h.Hash == p.info.Hash:
				d.status.HeadVerdict = VerdictPublished
			case p.state.Pin != nil && d.status.HeadVerdict == VerdictPublished:
				d.status.HeadVerdict = VerdictHeld
			}
		}
	}
	if o.state != nil {
		d.state = *o.state
	}
	pinned := d.state.Pin != nil
	d.status.Pinned, d.status.Pin = pinned, d.state.Pin
	d.mu.Unlock()

	m := d.cfg.Metrics
	if o.result != "" {
		m.attempt(o.result)
	}
	if o.head {
		m.setHead(string(o.Commit.Hash), o.Verdict == VerdictInvalid || o.Verdict == VerdictUnverified)
	}
	if good {
		m.goodSync(now)
	}
	m.setPinned(pinned)
	if p := o.published; p != nil {
		m.setPublished(string(p.info.Hash))
		m.setRejecting(0)
		d.releaseParked()
	}
}

// alreadyRecorded reports whether the history's newest record of rec's
// commit has rec's verdict and counts: a restart sees it again. Called with
// mu held.
func (d *Daemon) alreadyRecorded(rec Record) bool {
	for _, r := range d.history.Records() {
		if r.Commit.Hash != rec.Commit.Hash {
			continue
		}
		return r.Verdict == rec.Verdict && r.Errors == rec.Errors && r.Error == rec.Error
	}
	return false
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
			"affected_proxies", rec.Diff.Affected, "translated_proxies", rec.Translated)
	}
	if rec.Verdict == VerdictPublished {
		attrs = append(attrs, "proxies_pushed", rec.Changed, "proxies_unchanged", rec.Unchanged, "proxies_removed", rec.Removed)
	}
	for _, st := range Stages {
		if v, ok := rec.Durations[st]; ok {
			attrs = append(attrs, string(st)+"_ms", v)
		}
	}
	if rec.Forced {
		attrs = append(attrs, "forced", true, "previous", rec.Previous.Short())
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
	d.cfg.Logger.Log(context.Background(), level, "commit "+string(rec.Verdict), attrs...)
	if _, err := d.history.Add(rec); err != nil {
		d.historyNotWritten(err)
	}
}

// cleanPath is a policy path as findings and trees name it: slash-separated
// and clean, "" for the root.
func cleanPath(p string) string {
	if p == "" {
		return ""
	}
	return path.Clean(filepath.ToSlash(p))
}

// orRoot names a policy path for people.
func orRoot(p string) string {
	if p = cleanPath(p); p == "" || p == "." {
		return "the repository's root"
	}
	return p + "/"
}

// historyNotWritten logs a failure to write the history; a replica that
// does not decide is not meant to write it (store.ErrFenced).
func (d *Daemon) historyNotWritten(err error) {
	if errors.Is(err, store.ErrFenced) {
		d.cfg.Logger.Debug("history not written: another replica decides", "error", err)
		return
	}
	d.cfg.Logger.Error("history not written", "error", err)
}
