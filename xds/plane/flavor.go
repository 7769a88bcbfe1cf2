package plane

import (
	"context"
	"fmt"
	"slices"

	"github.com/gitmesh/gitmesh/xds"
)

// FlavorChange is a node translated again, at the served commit, because it
// runs another flavour than it was translated for: its streams said so after
// the commit was applied (a gRPC application connecting for the first time,
// or a node moving from Envoy to gRPC or back).
type FlavorChange struct {
	Commit   string // the served commit
	Node     string
	From, To xds.Flavor
	// Err says why the node could not be given its translation for To (the
	// translation failed, or a check of its resources, or its secrets, or
	// Run ended); it keeps the translation for From, and the next Apply
	// translates it for To again. Nil otherwise.
	Err error
}

// reflavor translates again, at the served commit, each of nodes (every
// served node when nil) whose translation is not for the flavour the server
// says it runs, and publishes it to that node alone. A node put back on an
// earlier commit after a NACK (RollbackOnNACK) is given the served commit:
// the flavour change is a new translation, not a rollback. Nodes that match
// cost a look under the served lock only.
func (p *Plane) reflavor(ctx context.Context, nodes []string) []FlavorChange {
	p.served.Lock()
	stale := p.staleFlavorsLocked(nodes)
	p.served.Unlock()
	if len(stale) == 0 {
		return nil
	}
	// Same locks as Apply: an Apply under way may have read the node's
	// former flavour, and the index and Set are those it publishes with.
	p.mu.Lock()
	defer p.mu.Unlock()
	p.served.Lock()
	defer p.served.Unlock()
	start := p.cfg.Now()
	var out []FlavorChange
	var changed []string
	for _, node := range p.staleFlavorsLocked(stale) {
		old := p.proxies[node]
		c := FlavorChange{Commit: p.commit, Node: node, From: old.Flavor, To: p.flavorOf(node)}
		c.Err = p.republishLocked(ctx, old, c.To)
		out = append(out, c)
		if c.Err == nil {
			changed = append(changed, node)
		}
	}
	if len(changed) > 0 {
		p.conv.renewed(p.commit, changed, start)
	}
	return out
}

// staleFlavorsLocked returns, sorted, the nodes among nodes (every served
// node when nil) whose translation is not for their flavour. Called with
// served held.
func (p *Plane) staleFlavorsLocked(nodes []string) []string {
	var stale []string
	check := func(node string, px *xds.Proxy) {
		if px != nil && px.Flavor != p.flavorOf(node) {
			stale = append(stale, node)
		}
	}
	if nodes == nil {
		for node, px := range p.proxies {
			check(node, px)
		}
	} else {
		for _, node := range nodes {
			check(node, p.proxies[node])
		}
	}
	slices.Sort(stale)
	return stale
}

// republishLocked translates old's dataplane at the served commit for
// flavour f, publishes it to old's node alone and makes it the node's
// translation. Called with mu and served held.
func (p *Plane) republishLocked(ctx context.Context, old *xds.Proxy, f xds.Flavor) error {
	node := old.NodeID
	dp := p.set.Dataplane(old.Mesh, old.Dataplane)
	if dp == nil {
		return fmt.Errorf("translate %s: not in the served commit", node) // cannot happen: old is its translation
	}
	px, err := p.translateFor(p.idx, dp, f)
	if err != nil {
		return err
	}
	if _, err := p.cfg.Server.PublishProxy(ctx, p.commit, px, p.secrets(p.set)); err != nil {
		return err
	}
	p.proxies[node] = px
	delete(p.reverted, node)
	if a, ok := p.accepted[node]; ok && a.proxy.Flavor != px.Flavor {
		delete(p.accepted, node)
	}
	return nil
}

// reportFlavors calls OnFlavor for each change.
func (p *Plane) reportFlavors(changes []FlavorChange) {
	if p.cfg.OnFlavor == nil {
		return
	}
	for _, c := range changes {
		p.cfg.OnFlavor(c)
	}
}
