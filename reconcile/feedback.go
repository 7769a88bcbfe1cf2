package reconcile

// maxRejections bounds the rejections a history record and the status
// list; the count goes on.
const maxRejections = 50

// maxStatusRejections bounds the rejections the status shows.
const maxStatusRejections = 10

// Rejected records a proxy's NACK of what r.Commit published: the commit's
// history record gets the verdict rejected and lists the proxy with its
// error, and the status lists it while the commit is served. A proxy that
// rejects the same version again is recorded once. It waits for a publish
// under way, so it must not be called from inside Target.Apply.
func (d *Daemon) Rejected(r Rejection) {
	// A proxy can answer before the publish that sent it the commit has
	// returned and been recorded: wait for it.
	d.op.Lock()
	defer d.op.Unlock()
	d.mu.Lock()
	current := r.Commit == d.servedInfo.Hash
	rejecting := 0
	if current {
		if d.rejecting == nil {
			d.rejecting = map[string]bool{}
		}
		d.rejecting[r.Node] = true
		rejecting = len(d.rejecting)
		if !hasRejection(d.status.Rejections, r) && len(d.status.Rejections) < maxStatusRejections {
			d.status.Rejections = append(d.status.Rejections, r)
		}
	}
	d.mu.Unlock()

	rec, changed, err := d.history.Update(publishedRecordOf(r.Commit), func(rec *Record) bool {
		if hasRejection(rec.Rejections, r) {
			return false
		}
		rec.Verdict = VerdictRejected
		if len(rec.Rejections) < maxRejections {
			rec.Rejections = append(rec.Rejections, r)
		}
		rec.RejectedProxies = max(rejecting, distinctNodes(rec.Rejections))
		return true
	})
	if err != nil {
		d.cfg.Logger.Error("history not written", "error", err)
	}
	if !changed {
		return
	}
	d.cfg.Metrics.rejected()
	if current {
		d.cfg.Metrics.setRejecting(rejecting)
	}
	attrs := []any{"commit", rec.Commit.Short(), "node", r.Node, "type", r.Type, "version", r.Version, "error", r.Error,
		"rejecting_proxies", rec.RejectedProxies}
	if r.RevertedTo != "" {
		attrs = append(attrs, "reverted_to", short(r.RevertedTo))
	}
	d.cfg.Logger.Warn("commit rejected by a proxy", attrs...)
}

// Converged records in the history how long the publish of c.Commit took to
// reach the connected proxies it changed. Only the first convergence of a
// publish is kept (a certificate renewal re-publishes the same commit).
func (d *Daemon) Converged(c Converged) {
	d.op.Lock()
	defer d.op.Unlock()
	_, _, err := d.history.Update(publishedRecordOf(c.Commit), func(rec *Record) bool {
		if rec.Convergence != nil {
			return false
		}
		rec.Convergence = &Converged{Proxies: c.Proxies, Seconds: c.Seconds}
		return true
	})
	if err != nil {
		d.cfg.Logger.Error("history not written", "error", err)
	}
}

// publishedRecordOf matches the records that published commit.
func publishedRecordOf(commit string) func(*Record) bool {
	return func(rec *Record) bool {
		return rec.Commit.Hash == commit && (rec.Verdict == VerdictPublished || rec.Verdict == VerdictRejected)
	}
}

func hasRejection(list []Rejection, r Rejection) bool {
	for _, x := range list {
		if x.Node == r.Node && x.Type == r.Type && x.Version == r.Version {
			return true
		}
	}
	return false
}

// distinctNodes counts the proxies in list.
func distinctNodes(list []Rejection) int {
	seen := map[string]bool{}
	for _, x := range list {
		seen[x.Node] = true
	}
	return len(seen)
}
