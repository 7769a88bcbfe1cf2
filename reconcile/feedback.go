package reconcile

import (
	"context"

	"github.com/gitmesh/gitmesh/xds/plane"
)

// maxRejections bounds the rejections a history record keeps; the count
// goes on.
const maxRejections = 50

// maxStatusRejections bounds the rejections the status shows.
const maxStatusRejections = 10

// maxFeedbackBatch bounds the feedback handled in one go: a burst of NACKs
// costs one history write per commit, not one per NACK.
const maxFeedbackBatch = 256

// drainFeedback handles what the proxies say about what was published until
// ctx ends. It takes the daemon's short lock only, never op: a NACK is
// recorded while a sync, rollback or resume runs.
func (d *Daemon) drainFeedback(ctx context.Context) {
	for {
		var batch []plane.Feedback
		select {
		case <-ctx.Done():
			return
		case f := <-d.cfg.Target.Feedback():
			batch = append(batch, f)
		}
	more:
		for len(batch) < maxFeedbackBatch {
			select {
			case f := <-d.cfg.Target.Feedback():
				batch = append(batch, f)
			default:
				break more
			}
		}
		d.feedback(batch)
	}
}

// feedback records a batch. Feedback about the commit being published is
// parked until its record exists: a proxy can answer before Apply returns.
func (d *Daemon) feedback(batch []plane.Feedback) {
	d.mu.Lock()
	var now []plane.Feedback
	for _, f := range batch {
		if d.publishing != "" && commitOf(f) == d.publishing {
			d.parked = append(d.parked, f)
			continue
		}
		now = append(now, f)
	}
	d.mu.Unlock()
	d.handle(now)
}

// releaseParked handles the feedback parked while a publish was under way,
// once its outcome is concluded.
func (d *Daemon) releaseParked() {
	d.mu.Lock()
	parked := d.parked
	d.publishing, d.parked = "", nil
	d.mu.Unlock()
	d.handle(parked)
}

func commitOf(f plane.Feedback) string {
	if f.Rejection != nil {
		return f.Rejection.Commit
	}
	return f.Converged.Commit
}

// handle records rejections and convergences, grouped by commit so that
// each commit's history record is written once.
func (d *Daemon) handle(batch []plane.Feedback) {
	if len(batch) == 0 {
		return
	}
	type group struct {
		rejections []plane.Rejection
		converged  *plane.Converged
	}
	groups := map[string]*group{}
	var order []string
	for _, f := range batch {
		c := commitOf(f)
		g := groups[c]
		if g == nil {
			g = &group{}
			groups[c] = g
			order = append(order, c)
		}
		if f.Rejection != nil {
			g.rejections = append(g.rejections, *f.Rejection)
		}
		if f.Converged != nil && g.converged == nil {
			g.converged = f.Converged
		}
	}
	for _, c := range order {
		g := groups[c]
		d.rejected(c, g.rejections)
		if g.converged != nil {
			d.converged(*g.converged)
		}
	}
}

// rejected records proxies' NACKs of what commit published: the commit's
// history record gets the verdict rejected and lists the proxies with their
// errors, and the status lists them while the commit is served. A proxy
// that rejects the same version again is recorded once.
func (d *Daemon) rejected(commit string, rs []plane.Rejection) {
	if len(rs) == 0 {
		return
	}
	if d.fl != nil && !d.deciding() {
		// The history is the decider's to write.
		d.handOver(opRejected, opRequest{Commit: commit, Rejections: rs})
	}
	d.mu.Lock()
	current := commit == string(d.servedInfo.Hash)
	rejecting := 0
	if current {
		if d.rejecting == nil {
			d.rejecting = map[string]bool{}
		}
		for _, r := range rs {
			d.rejecting[r.Node] = true
			if !hasRejection(d.status.Rejections, r) && len(d.status.Rejections) < maxStatusRejections {
				d.status.Rejections = append(d.status.Rejections, r)
			}
		}
		rejecting = len(d.rejecting)
	}
	d.mu.Unlock()

	var added []plane.Rejection
	rec, changed, err := d.history.Update(publishedRecordOf(commit), func(rec *Record) bool {
		added = added[:0]
		for _, r := range rs {
			if hasRejection(rec.Rejections, r) || hasRejection(added, r) {
				continue
			}
			added = append(added, r)
			if len(rec.Rejections) < maxRejections {
				rec.Rejections = append(rec.Rejections, r)
			}
		}
		if len(added) == 0 {
			return false
		}
		rec.Verdict = VerdictRejected
		rec.RejectedProxies = max(rejecting, distinctNodes(rec.Rejections))
		return true
	})
	if err != nil {
		d.historyNotWritten(err)
	}
	if !changed {
		return
	}
	if current {
		d.cfg.Metrics.setRejecting(rejecting)
	}
	for _, r := range added {
		d.cfg.Metrics.rejected()
		attrs := []any{"commit", rec.Commit.Short(), "node", r.Node, "type", r.Type, "version", r.Version, "error", r.Error,
			"rejecting_proxies", rec.RejectedProxies}
		if r.RevertedTo != "" {
			attrs = append(attrs, "reverted_to", short(r.RevertedTo))
		}
		d.cfg.Logger.Warn("commit rejected by a proxy", attrs...)
	}
}

// converged records in the history how long the publish of c.Commit took to
// reach the connected proxies it changed. Only the first convergence of a
// publish is kept (a certificate renewal publishes the same commit again).
func (d *Daemon) converged(c plane.Converged) {
	_, _, err := d.history.Update(publishedRecordOf(c.Commit), func(rec *Record) bool {
		if rec.Convergence != nil {
			return false
		}
		rec.Convergence = &plane.Converged{Proxies: c.Proxies, Seconds: c.Seconds}
		return true
	})
	if err != nil {
		d.historyNotWritten(err)
	}
}

// publishedRecordOf matches the records that published commit.
func publishedRecordOf(commit string) func(*Record) bool {
	return func(rec *Record) bool {
		return string(rec.Commit.Hash) == commit && (rec.Verdict == VerdictPublished || rec.Verdict == VerdictRejected)
	}
}

func hasRejection(list []plane.Rejection, r plane.Rejection) bool {
	for _, x := range list {
		if x.Node == r.Node && x.Type == r.Type && x.Version == r.Version {
			return true
		}
	}
	return false
}

// distinctNodes counts the proxies in list.
func distinctNodes(list []plane.Rejection) int {
	seen := map[string]bool{}
	for _, x := range list {
		seen[x.Node] = true
	}
	return len(seen)
}

func short(commit string) string { return commit[:min(len(commit), 12)] }
