package plane

import (
	"context"
	"time"

	"github.com/gitmesh/gitmesh/xds/ads"
)

// Rejection is a proxy's NACK of what it was served.
type Rejection struct {
	// Commit is the commit whose translation the proxy rejected: the
	// plane's served commit when the NACK came or, for a proxy already put
	// back on an earlier commit, that commit.
	Commit  string
	Node    string
	TypeURL string
	Version string // the rejected version
	Error   string // the proxy's error_detail
	At      time.Time
	// RevertedTo is the commit whose translation the proxy was put back on
	// ("" when RollbackOnNACK is off, or the proxy never accepted a whole
	// commit in the flavour it is served, or it was already reverted for
	// this commit).
	RevertedTo string
	// RevertErr says why the proxy could not be put back (its earlier
	// translation failed a check, its secrets could not be issued, Run
	// ended); RevertedTo is then "". Nil otherwise.
	RevertErr error
}

// Run follows the server's ACKs and NACKs until ctx ends: it counts them
// (Metrics), notes which translation each proxy accepted whole, puts a
// proxy that rejects what it is served back on its accepted translation
// (RollbackOnNACK), translates a node again when it turns out to run another
// flavour than it was translated for, and follows convergence, calling
// OnNACK, OnFlavor and OnConverged. Events the subscription drops are made
// up for by a periodic look at the proxies still pending and, after a lost
// flavour change, at every node's flavour. Run one at a time.
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
				p.reportFlavors(p.reflavor(ctx, nil))
			}
		}
		if p.cfg.OnConverged == nil {
			p.conv.takeCompleted()
			continue
		}
		for _, c := range p.conv.takeCompleted() {
			p.cfg.OnConverged(c)
		}
	}
}

// answered handles one ACK, NACK or flavour change.
func (p *Plane) answered(ctx context.Context, e ads.Event) {
	switch e.Kind {
	case ads.FlavorChanged:
		p.reportFlavors(p.reflavor(ctx, []string{e.NodeID}))
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
	}
	if p.cfg.OnNACK != nil {
		p.cfg.OnNACK(r)
	}
}

// noteAccepted records the translation node is served as accepted when
// the node has ACKed all of it.
func (p *Plane) noteAccepted(node string) {
	p.served.Lock()
	defer p.served.Unlock()
	p.noteAcceptedLocked(node)
}

// noteAcceptedLocked is noteAccepted with p.served held. A node put back
// on an earlier translation is not served p.proxies' and is skipped.
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
		p.accepted[node] = translation{p.commit, px}
	}
}

// rejected turns a NACK of what the node is served into a Rejection, putting
// the node back on its accepted translation when the Config asks for it;
// false for a stale NACK (of a version no longer served).
func (p *Plane) rejected(ctx context.Context, e ads.Event) (Rejection, bool) {
	p.served.Lock()
	defer p.served.Unlock()
	px := p.proxies[e.NodeID]
	if px == nil || e.Version == "" {
		return Rejection{}, false
	}
	st, ok := p.cfg.Server.StatusOf(e.NodeID)
	if !ok || publishedVersion(st, e.TypeURL) != e.Version {
		return Rejection{}, false
	}
	r := Rejection{Commit: p.commit, Node: e.NodeID, TypeURL: e.TypeURL, Version: e.Version, Error: e.Error, At: e.At}
	if back, ok := p.reverted[e.NodeID]; ok {
		// Already put back for this commit: leave it until the next one.
		if st.Hash == back.proxy.Hash {
			r.Commit = back.commit // it rejects the translation it was put back on
		}
		return r, true
	}
	back, ok := p.accepted[e.NodeID]
	// A translation of another flavour is no way back: the node does not
	// run that flavour (any more).
	if !p.cfg.RollbackOnNACK || !ok || back.proxy.Hash == px.Hash || back.proxy.Flavor != px.Flavor {
		return r, true
	}
	if _, err := p.cfg.Server.PublishProxy(ctx, back.commit, back.proxy, p.secrets(p.set)); err != nil {
		r.RevertErr = err
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
