package ads

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"

	"golang.org/x/sync/errgroup"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/gitmesh/gitmesh/xds"
)

// SecretsFunc returns the SDS secrets of a proxy whose mesh has mTLS (one
// with Identities) and a version identifying that material. The version must
// change whenever the material does (a renewed certificate) and must not
// change otherwise, since a new version is pushed to the proxy.
type SecretsFunc func(p *xds.Proxy) (secrets []types.Resource, version string, err error)

// PublishResult says what a successful Publish did, each list sorted by
// node id.
type PublishResult struct {
	Commit string
	// Changed are the proxies whose snapshot was set: new proxies and those
	// whose Hash or secret version changed. Only their clients get a push.
	Changed []string
	// Unchanged kept their snapshot, versions included.
	Unchanged []string
	// Removed were published before and are absent now.
	Removed []string
}

// published is what the server holds for one proxy.
type published struct {
	flavor        xds.Flavor // of the translation: its snapshot's key is snapshotKey(node, flavor)
	unsupported   []string   // what the flavour drops of the node's policies (xds.Proxy.Unsupported)
	hash          string
	commit        string            // the commit at which hash was first published
	versions      map[string]string // of each non-secret type
	typeHashes    map[string]string // what each type's version was made from
	typeCommits   map[string]string // the commit at which each type's hash was first published
	secretVersion string
	types         []string        // type URLs of the snapshot, sorted
	empty         map[string]bool // the types of the snapshot that hold no resource
}

// Publish makes proxies, the translation of one commit, the whole served
// state. It is all or nothing: it first builds the snapshot of every proxy
// that changed (its Resources, plus the secrets of SecretsFunc when it has
// Identities) and checks it (its resources with xds.Check, unless it
// passed that check when it was built: see xds.Proxy.Checked; its secrets for
// validity, unique names and each of Proxy.SecretNames present; and
// Snapshot.Consistent); if any check fails or ctx ends, it returns an error
// naming the proxy and nothing that is served changes. Then it sets the
// snapshots of the changed proxies. The snapshot cache may fail to set one
// (it stores the snapshot, then fails answering a watch): every proxy set
// by the call is then put back on its previous snapshot (or has it cleared
// when it had none; its streams keep what they were sent and wait for the
// next one), the server keeps the previous commit, and the error names the
// proxy. Only then does it drop the snapshots of proxies no longer present
// (a removed proxy still connected keeps its last config until its streams
// close).
//
// Versions: every non-secret type of a proxy carries
// <commit[:12]>-<hash[:12]>, where hash is the proxy's TypeHashes entry for
// the type (its Hash when it has none) and commit the one at which that
// hash was first published. A proxy whose Hash does not change keeps its
// versions and gets no push, and one whose endpoints alone change is sent
// its endpoints alone. The secret type carries the version of SecretsFunc.
// Two replicas publishing the same commits serve the same versions.
//
// Flavours: each proxy is served to the streams of its node that declare
// its Flavor (see Server.FlavorOf; an empty Flavor is FlavorEnvoy, any
// other than FlavorEnvoy and FlavorGRPC an error), and to those alone. A
// stream of the node declaring another flavour gets no response: its
// watches stay open and it keeps what it had, until a proxy of its flavour
// is published for the node (by PublishProxy, or the next Publish), and it
// is never sent another flavour's resources. So the first response a node
// ever gets is in its own flavour, even when it connects before the layer
// above has learned what it runs. The snapshot a node's former flavour was
// served from is dropped once no stream of that flavour is open.
//
// proxies must not be modified afterwards: their resources are served as
// they are. secrets may be nil when no proxy has Identities. Calls are
// serialised; concurrent streams see either the old or the new snapshot of
// each proxy.
func (s *Server) Publish(ctx context.Context, commit string, proxies []*xds.Proxy, secrets SecretsFunc) (PublishResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	res, err := s.publishSome(ctx, commit, proxies, secrets)
	if err != nil {
		return res, err
	}
	present := make(map[string]bool, len(proxies))
	for _, p := range proxies {
		present[p.NodeID] = true
	}
	for _, node := range slices.Sorted(maps.Keys(s.published)) {
		if present[node] {
			continue
		}
		delete(s.published, node)
		s.clearUnused(node)
		if f, peer, ok := s.tracker.connectedAs(node); ok {
			s.noteUndeclared(node, f, peer)
		}
		res.Removed = append(res.Removed, node)
	}
	return res, nil
}

// PublishProxy replaces what one published node is served with p, the
// translation of commit, and leaves every other node as it is: it puts a
// single proxy back on an earlier translation (a rollback of one proxy). It
// builds, checks and versions p's snapshot exactly as Publish does, so each
// type whose hash differs from the one served gets a new version
// (<commit[:12]>-<hash[:12]>) and is pushed, and the others keep theirs. On
// error (p.NodeID not published, a failed check, ctx ended, the cache
// failing to set the snapshot, as in Publish) nothing changes.
// p may be of another flavour than the node's published proxy: it is then
// served to the node's streams of p's flavour from now on, and no longer to
// the others (see Publish).
// changed is false when the node is served p's resources and secrets
// already. The next Publish treats the node like any other: it is pushed
// unless the commit's translation of it equals p. The same rules as
// Publish's apply to p and secrets, and calls are serialised with Publish.
func (s *Server) PublishProxy(ctx context.Context, commit string, p *xds.Proxy, secrets SecretsFunc) (changed bool, err error) {
	if p == nil || p.NodeID == "" {
		return false, fmt.Errorf("publish %s: proxy has no node id", short(commit))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.published[p.NodeID] == nil {
		return false, fmt.Errorf("publish %s: proxy %s: not published", short(commit), p.NodeID)
	}
	res, err := s.publishSome(ctx, commit, []*xds.Proxy{p}, secrets)
	return len(res.Changed) > 0, err
}

// PublishProxies publishes proxies, translations of commit, for their
// nodes, published before or not, and leaves every other node as it is:
// what a node that connects is served when the layer above publishes only
// the nodes that have streams. Snapshots and versions are made as
// Publish makes them, and it is all or nothing in the same way. The
// result lists the nodes changed and unchanged; Removed is empty.
func (s *Server) PublishProxies(ctx context.Context, commit string, proxies []*xds.Proxy, secrets SecretsFunc) (PublishResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.publishSome(ctx, commit, proxies, secrets)
}

// publishSome is PublishProxies, with s.mu held.
func (s *Server) publishSome(ctx context.Context, commit string, proxies []*xds.Proxy, secrets SecretsFunc) (PublishResult, error) {
	res := PublishResult{Commit: commit}
	if commit == "" {
		return res, errors.New("publish: empty commit")
	}
	changes, unchanged, err := s.prepareAll(ctx, commit, proxies, secrets)
	if err != nil {
		return res, err
	}
	// Setting the snapshots is the last step that can fail: the cache
	// stores a snapshot, then answers the watches on it, which can fail (the
	// cache only sends on buffered watch channels, so a background context
	// never blocks, but building a delta answer can fail). Each node set
	// before a failure, the failing one included, is put back on what it
	// had, and the call changes nothing.
	if err := s.setChanged(commit, changes); err != nil {
		return res, err
	}
	// Commit point: from here on nothing fails.
	for _, c := range changes {
		s.published[c.node] = c.pub
		res.Changed = append(res.Changed, c.node)
	}
	for _, p := range proxies {
		delete(s.undeclared, p.NodeID)
	}
	for _, c := range changes {
		if c.moved {
			s.clearUnused(c.node)
		}
	}
	res.Unchanged = unchanged
	slices.Sort(res.Changed)
	slices.Sort(res.Unchanged)
	return res, nil
}

// pending is the snapshot a publish is about to set for a node.
type pending struct {
	node string
	pub  *published
	snap *cachev3.Snapshot
	// moved is set for a node new or published before in another flavour,
	// whose other snapshots may have to go.
	moved bool
}

// prepareAll prepares the snapshot of every proxy, on GOMAXPROCS workers:
// those that changed, in the order of proxies, and the nodes unchanged.
// Called with s.mu held; its errors name the commit and the proxy.
func (s *Server) prepareAll(ctx context.Context, commit string, proxies []*xds.Proxy, secrets SecretsFunc) ([]pending, []string, error) {
	present := make(map[string]bool, len(proxies))
	for i, p := range proxies {
		if p == nil || p.NodeID == "" {
			return nil, nil, fmt.Errorf("publish %s: proxy %d has no node id", short(commit), i)
		}
		if present[p.NodeID] {
			return nil, nil, fmt.Errorf("publish %s: proxy %s: listed twice", short(commit), p.NodeID)
		}
		present[p.NodeID] = true
	}
	type prepared struct {
		pub  *published
		snap *cachev3.Snapshot
	}
	out := make([]prepared, len(proxies))
	workers := min(runtime.GOMAXPROCS(0), max(len(proxies)/64, 1))
	var next atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	for range workers {
		g.Go(func() error {
			// Proxies share resources, and most of a commit's resources
			// equal the last one's: a checker validates each distinct
			// content once (for the rare proxy not checked when built).
			var checker *xds.Checker
			defer func() {
				if checker != nil {
					checker.Release()
				}
			}()
			for i := int(next.Add(1)) - 1; i < len(proxies); i = int(next.Add(1)) - 1 {
				if err := gctx.Err(); err != nil {
					return err
				}
				p := proxies[i]
				if checker == nil && !p.Checked() {
					checker = xds.NewChecker()
				}
				pub, snap, err := s.prepare(checker, commit, p, secrets)
				if err != nil {
					return err
				}
				out[i] = prepared{pub, snap}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, nil, fmt.Errorf("publish %s: %w", short(commit), err)
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, fmt.Errorf("publish %s: %w", short(commit), err)
	}
	var changes []pending
	var unchanged []string
	for i, p := range proxies {
		if out[i].snap == nil {
			unchanged = append(unchanged, p.NodeID)
			continue
		}
		prev := s.published[p.NodeID]
		changes = append(changes, pending{p.NodeID, out[i].pub, out[i].snap, prev == nil || prev.flavor != out[i].pub.flavor})
	}
	return changes, unchanged, nil
}

// setSnapshot is a snapshot to set for a node, and the one the node had
// under the same key (nil when none).
type setSnapshot struct {
	node string
	key  string
	snap cachev3.ResourceSnapshot
	prev cachev3.ResourceSnapshot
}

// setting returns the change of node's snapshot for flavour f to snap.
// Called with s.mu held, which every change of the cache holds.
func (s *Server) setting(node string, f xds.Flavor, snap cachev3.ResourceSnapshot) setSnapshot {
	key := snapshotKey(node, f)
	prev, err := s.cache.GetSnapshot(key)
	if err != nil {
		prev = nil
	}
	return setSnapshot{node: node, key: key, snap: snap, prev: prev}
}

// setChanged sets the snapshots of changes, all or none (see setAll).
func (s *Server) setChanged(commit string, changes []pending) error {
	sets := make([]setSnapshot, len(changes))
	for i, c := range changes {
		sets[i] = s.setting(c.node, c.pub.flavor, c.snap)
	}
	if err := s.setAll(sets); err != nil {
		return fmt.Errorf("publish %s: %w", short(commit), err)
	}
	return nil
}

// setAll sets every snapshot of sets, in order, or none: when one fails,
// those set so far and the failing one (which the cache stores before it
// fails answering the watches) are put back on their previous snapshot,
// or cleared when they had none, and the error names the node. Called
// with s.mu held.
func (s *Server) setAll(sets []setSnapshot) error {
	for i, c := range sets {
		err := s.cache.SetSnapshot(context.Background(), c.key, c.snap)
		if err == nil {
			continue
		}
		err = fmt.Errorf("proxy %s: set snapshot: %w", c.node, err)
		var undo []error
		for _, c := range slices.Backward(sets[:i+1]) {
			if c.prev == nil {
				// Its streams were sent nothing before: they keep what
				// this call sent them, and wait for the next snapshot.
				s.cache.ClearSnapshot(c.key)
				continue
			}
			if err := s.cache.SetSnapshot(context.Background(), c.key, c.prev); err != nil {
				undo = append(undo, fmt.Errorf("proxy %s: put back its previous snapshot: %w", c.node, err))
			}
		}
		return errors.Join(append([]error{err}, undo...)...)
	}
	return nil
}

// prepare returns the new state and checked snapshot of p, or a nil
// snapshot when p is unchanged since the last Publish. Its errors name p.
func (s *Server) prepare(checker *xds.Checker, commit string, p *xds.Proxy, secrets SecretsFunc) (*published, *cachev3.Snapshot, error) {
	if p.Hash == "" {
		return nil, nil, fmt.Errorf("proxy %s: no hash", p.NodeID)
	}
	flavor := p.Flavor
	switch flavor {
	case "":
		flavor = xds.FlavorEnvoy
	case xds.FlavorEnvoy, xds.FlavorGRPC:
	default:
		return nil, nil, fmt.Errorf("proxy %s: unknown flavour %q", p.NodeID, p.Flavor)
	}
	var secretRes []types.Resource
	var secretVersion string
	if len(p.Identities) > 0 {
		if secrets == nil {
			return nil, nil, fmt.Errorf("proxy %s: has identities but no secrets source was given", p.NodeID)
		}
		var err error
		secretRes, secretVersion, err = secrets(p)
		if err != nil {
			return nil, nil, fmt.Errorf("proxy %s: secrets: %w", p.NodeID, err)
		}
		if secretVersion == "" {
			return nil, nil, fmt.Errorf("proxy %s: secrets: empty version", p.NodeID)
		}
	}
	prev := s.published[p.NodeID]
	pub := &published{flavor: flavor, hash: p.Hash, commit: commit, secretVersion: secretVersion, unsupported: p.Unsupported}
	if len(p.Unsupported) > 0 && (prev == nil || prev.flavor != flavor || !slices.Equal(prev.unsupported, p.Unsupported)) {
		s.cfg.Logger.Warn("node is served a data plane that drops part of its policies", "node", p.NodeID, "flavor", flavor,
			"dropped", strings.Join(p.Unsupported, "; "))
	}
	if prev != nil && prev.hash == p.Hash {
		if prev.secretVersion == secretVersion && prev.flavor == flavor {
			return prev, nil, nil
		}
		pub.commit = prev.commit
	}
	n := len(p.Resources)
	pub.versions, pub.typeHashes, pub.typeCommits = make(map[string]string, n), make(map[string]string, n), make(map[string]string, n)
	for typ := range p.Resources {
		h := p.TypeHashes[typ]
		if h == "" {
			h = p.Hash
		}
		at := commit
		if prev != nil && prev.typeHashes[typ] == h {
			at = prev.typeCommits[typ]
		}
		pub.typeHashes[typ], pub.typeCommits[typ], pub.versions[typ] = h, at, short(at)+"-"+short(h)
	}

	// A proxy of a Translation passed the same check when it was built.
	if !p.Checked() {
		if err := checker.Check(p); err != nil {
			return nil, nil, err // names p already
		}
	}
	if err := checkSecrets(p, secretRes); err != nil {
		return nil, nil, fmt.Errorf("proxy %s: %w", p.NodeID, err)
	}
	resources := make(map[resource.Type][]types.Resource, len(p.Resources)+1)
	for typ, rs := range p.Resources {
		resources[typ] = rs
	}
	snap, err := cachev3.NewSnapshot("", resources)
	if err != nil {
		return nil, nil, fmt.Errorf("proxy %s: %w", p.NodeID, err)
	}
	for typ, rs := range resources {
		snap.Resources[cachev3.GetResponseType(typ)] = cachev3.NewResources(pub.versions[typ], rs)
	}
	if len(p.Identities) > 0 {
		snap.Resources[types.Secret] = cachev3.NewResources(secretVersion, secretRes)
	}
	// xds.Check ran the snapshot consistency check on the same resources
	// (where it applies: it does not follow api_listener).
	pub.types = slices.Sorted(maps.Keys(resources))
	for typ, rs := range resources {
		if len(rs) == 0 {
			if pub.empty == nil {
				pub.empty = map[string]bool{}
			}
			pub.empty[typ] = true
		}
	}
	if len(p.Identities) > 0 {
		pub.types = append(pub.types, resource.SecretType)
		slices.Sort(pub.types)
	}
	return pub, snap, nil
}

// versionOf is the version of typeURL in the proxy's snapshot.
func (p *published) versionOf(typeURL string) string {
	if !slices.Contains(p.types, typeURL) {
		return ""
	}
	if typeURL == resource.SecretType {
		return p.secretVersion
	}
	return p.versions[typeURL]
}

// short is the first 12 characters of a commit id or hash.
func short(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return s
}

// forgetIfGone drops the snapshots of node that are no longer served once
// the last stream of their flavour has closed: every flavour's when the node
// is no longer published, and a former flavour's when it is.
func (s *Server) forgetIfGone(node string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clearUnused(node)
}

// streamAttached is the tracker's onAttach hook: a stream's first request
// named its node. It runs after the tracker unlocks (the lock order is
// s.mu, then the tracker's).
func (s *Server) streamAttached(node string, f xds.Flavor, peer string) {
	fn := s.provision.Load()
	s.mu.Lock()
	unpublished := s.published[node] == nil
	if unpublished && fn == nil {
		s.noteUndeclared(node, f, peer)
	}
	s.mu.Unlock()
	if unpublished && fn != nil {
		(*fn)(node, f, peer)
	}
}

// NoteUndeclared logs, once until the node is published, that node has an
// xDS stream and no dataplane declares it, and lists it as unknown: for a
// provisioner that finds no dataplane of that name.
func (s *Server) NoteUndeclared(node string, f xds.Flavor, peer string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.published[node] == nil {
		s.noteUndeclared(node, f, peer)
	}
}

// noteUndeclared logs, once until the node is published again, that node
// has an xDS stream and no published proxy: the daemon serves it nothing
// (a typo in its bootstrap, or its Dataplane removed from git). Called with
// s.mu held.
func (s *Server) noteUndeclared(node string, f xds.Flavor, peer string) {
	if s.undeclared[node] {
		return
	}
	s.undeclared[node] = true
	s.cfg.Logger.Warn("xDS stream for a node no published dataplane declares", "node", node, "peer", peer, "flavor", f)
}

// clearUnused drops every snapshot of node but the published one (all of
// them when the node is not published) that no open stream of the node
// uses: a stream keeps its watches, and what it was last sent, until it
// closes. Called with s.mu held.
func (s *Server) clearUnused(node string) {
	var keep xds.Flavor
	if pub := s.published[node]; pub != nil {
		keep = pub.flavor
	}
	s.tracker.clearUnused(node, keep, func(f xds.Flavor) { s.cache.ClearSnapshot(snapshotKey(node, f)) })
}
