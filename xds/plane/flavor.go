package plane

import (
	"context"
	"slices"
)

// reflavor serves each of nodes (every served node when nil) whose proxy is
// not of the flavour the server says it runs the served translation's proxy
// of that flavour, published to that node alone: a gRPC application
// connecting for the first time, or a node moving from Envoy to gRPC or
// back. Every flavour a node may run is translated and checked with its
// commit, so this translates nothing. A node put back on an earlier commit
// after a NACK is given the served commit: the flavour change is a new
// proxy, not a rollback. Nodes that match cost a look under the lock only.
func (p *Plane) reflavor(ctx context.Context, nodes []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tr == nil {
		return
	}
	var stale []string
	check := func(node string) {
		if px := p.proxies[node]; px != nil && px.Flavor != p.flavorOf(node) {
			stale = append(stale, node)
		}
	}
	if nodes == nil {
		for node := range p.proxies {
			check(node)
		}
	} else {
		for _, node := range nodes {
			check(node)
		}
	}
	if len(stale) == 0 {
		return
	}
	slices.Sort(stale)
	start := p.cfg.Now()
	var changed []string
	for _, node := range stale {
		old := p.proxies[node]
		to := p.flavorOf(node)
		px := p.tr.Proxy(node, to)
		if px == nil {
			p.log.Warn("node runs a flavour its dataplane is not translated for; serving it the one it is",
				"node", node, "runs", to, "served", old.Flavor)
			continue
		}
		if _, err := p.cfg.Server.PublishProxy(ctx, p.commit, px, p.secrets(p.tr.Set())); err != nil {
			p.log.Error("cannot serve the node its flavour", "node", node, "flavor", to, "error", err)
			continue
		}
		p.proxies[node] = px
		delete(p.reverted, node)
		if a, ok := p.accepted[node]; ok && a.proxy.Flavor != px.Flavor {
			delete(p.accepted, node)
		}
		changed = append(changed, node)
		p.log.Info("node served its flavour", "node", node, "from", old.Flavor, "to", to, "commit", short(p.commit))
	}
	if len(changed) > 0 {
		p.conv.renewed(p.commit, changed, start)
	}
}
