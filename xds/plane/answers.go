package plane

import (
	"context"
	"time"

	"github.com/gitmesh/gitmesh/xds/ads"
)

// Run follows the server's ACKs and NACKs until ctx ends: it counts them
// (Metrics), notes which proxy each node accepted whole, puts a node that
// rejects what it is served back on its accepted proxy (RollbackOnNACK),
// serves a node the proxy of its flavour when its streams turn out to run
// another flavour than it was served, follows convergence, and sends what
// it learns on Feedback. Events the subscription drops are made up for by a
// periodic look at the proxies still pending and, after a lost flavour
// change, at every node's flavour. Run one at a time.
func (p *Plane) Run(ctx context.Context) {
	events, cancel := p.cfg.Server.Subscribe()
	defer cancel()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	// flavorChanges is the server's count of flavour changes when Run last
	// looked at every node.
	var flavorChanges uint64
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-events:
			if !ok {
				return
			}
			p.answered(ctx, e)
		case <-p.conv.wake:
		case <-tick.C:
			now := p.cfg.Now()
			for _, node := range p.conv.pendingNodes() {
				p.noteAccepted(node)
				p.conv.check(node, now)
			}
			if n := p.cfg.Server.FlavorChanges(); n != flavorChanges {
				flavorChanges = n
				p.reflavor(ctx, nil)
			}
		}
		for _, c := range p.conv.takeCompleted() {
			if !p.send(ctx, Feedback{Converged: &c}) {
				return
			}
		}
	}
}

// send delivers f unless ctx ends first.
func (p *Plane) send(ctx context.Context, f Feedback) bool {
	select {
	case p.feedback <- f:
		return true
	case <-ctx.Done():
		return false
	}
}

// answered handles one ACK, NACK or flavour change.
func (p *Plane) answered(ctx context.Context, e ads.Event) {
	switch e.Kind {
	case ads.FlavorChanged:
		p.reflavor(ctx, []string{e.NodeID})
		return
	case ads.ACK:
		if m := p.cfg.Metrics; m != nil {
			m.acks.WithLabelValues(typeName(e.TypeURL)).Inc()
		}
		p.noteAccepted(e.NodeID)
		p.conv.check(e.NodeID, e.At)
		return
	case ads.NACK:
		if m := p.cfg.Metrics; m != nil {
			m.nacks.WithLabelValues(typeName(e.TypeURL)).Inc()
		}
	default:
		return
	}
	r, ok := p.rejected(ctx, e)
	if !ok {
		return
	}
	if r.RevertedTo != "" {
		p.conv.reverted(r.Commit, r.Node)
		p.log.Warn("proxy put back on the commit it accepted", "node", r.Node, "rejected", short(r.Commit), "reverted_to", short(r.RevertedTo))
	}
	if r.RevertError != "" {
		p.log.Error("cannot put the proxy back on the commit it accepted", "node", r.Node, "error", r.RevertError)
	}
	p.send(ctx, Feedback{Rejection: &r})
}

// noteAccepted records the proxy node is served as accepted when the node
// has ACKed all of it.
func (p *Plane) noteAccepted(node string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.noteAcceptedLocked(node)
}

// noteAcceptedLocked is noteAccepted with mu held. A node put back on an
// earlier proxy is not served p.proxies' and is skipped.
func (p *Plane) noteAcceptedLocked(node string) {
	px := p.proxies[node]
	if px == nil {
		return
	}
	if _, ok := p.reverted[node]; ok {
		return
	}
	if a, ok := p.accepted[node]; ok && a.proxy == px && a.commit == p.commit {
		return
	}
	if st, ok := p.cfg.Server.StatusOf(node); ok && st.Hash == px.Hash && st.InSync() {
		p.accepted[node] = served{p.commit, px}
	}
}

// rejected turns a NACK of what the node is served into a Rejection,
// putting the node back on its accepted proxy when the Config asks for it;
// false for a stale NACK (of a version no longer served).
func (p *Plane) rejected(ctx context.Context, e ads.Event) (Rejection, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	px := p.proxies[e.NodeID]
	if px == nil || e.Version == "" {
		return Rejection{}, false
	}
	st, ok := p.cfg.Server.StatusOf(e.NodeID)
	if !ok || publishedVersion(st, e.TypeURL) != e.Version {
		return Rejection{}, false
	}
	r := Rejection{Commit: p.commit, Node: e.NodeID, Type: e.TypeURL, Version: e.Version, Error: e.Error, At: e.At}
	if back, ok := p.reverted[e.NodeID]; ok {
		// Already put back for this commit: leave it until the next one.
		if st.Hash == back.proxy.Hash {
			r.Commit = back.commit // it rejects the proxy it was put back on
		}
		return r, true
	}
	back, ok := p.accepted[e.NodeID]
	// A proxy of another flavour is no way back: the node does not run that
	// flavour (any more).
	if !p.cfg.RollbackOnNACK || !ok || back.proxy.Hash == px.Hash || back.proxy.Flavor != px.Flavor {
		return r, true
	}
	if _, err := p.cfg.Server.PublishProxy(ctx, back.commit, back.proxy, p.secrets(p.tr.Set())); err != nil {
		r.RevertError = err.Error()
		return r, true
	}
	p.reverted[e.NodeID] = back
	r.RevertedTo = back.commit
	return r, true
}

// publishedVersion is the version of typeURL the node is served ("" when
// none).
func publishedVersion(st ads.ProxyStatus, typeURL string) string {
	for _, t := range st.Types {
		if t.TypeURL == typeURL {
			return t.Published
		}
	}
	return ""
}

// short is the first 12 characters of a commit.
func short(commit string) string { return commit[:min(len(commit), 12)] }
