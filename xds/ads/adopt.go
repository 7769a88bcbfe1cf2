package ads

import (
	"context"
	"maps"
	"strings"

	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/gitmesh/gitmesh/xds"
)

// A type's version is <commit>-<hash>, the commit the one at which the
// hash was first published by this server. Another replica, or this one
// before a restart, may have first published the same hash at an earlier
// commit, and a proxy that reconnects names that version: it holds the
// resources the hash stands for, so the snapshot takes its version and the
// proxy is not pushed what it holds. (Secrets are versioned by their
// certificate and need no such care.)

// adopt is the tracker's onResume hook: node's stream of flavour f resumed
// typeURL at version.
func (s *Server) adopt(node string, f xds.Flavor, typeURL, version string) {
	if typeURL == resource.SecretType {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	pub := s.published[node]
	if pub == nil || pub.flavor != f {
		return
	}
	cur, ok := pub.versions[typeURL]
	if !ok || cur == version {
		return
	}
	commit, hash, ok := splitVersion(version)
	if _, curHash, _ := splitVersion(cur); !ok || hash != curHash {
		return // it holds other resources: the cache sends it ours
	}
	key := snapshotKey(node, f)
	prev, err := s.cache.GetSnapshot(key)
	snap, isSnap := prev.(*cachev3.Snapshot)
	if err != nil || !isSnap {
		return
	}
	next := *snap
	i := cachev3.GetResponseType(typeURL)
	next.Resources[i] = cachev3.Resources{Version: version, Items: snap.Resources[i].Items}
	if next.VersionMap != nil {
		next.VersionMap = maps.Clone(next.VersionMap)
	}
	if err := s.cache.SetSnapshot(context.Background(), key, &next); err != nil {
		s.cfg.Logger.Warn("cannot take the version a reconnecting proxy holds", "node", node, "type", typeURL, "error", err)
		return
	}
	adopted := *pub
	adopted.versions, adopted.typeCommits = maps.Clone(pub.versions), maps.Clone(pub.typeCommits)
	adopted.versions[typeURL], adopted.typeCommits[typeURL] = version, commit
	s.published[node] = &adopted
}

// splitVersion splits a version <commit>-<hash>.
func splitVersion(v string) (commit, hash string, ok bool) {
	i := strings.LastIndexByte(v, '-')
	if i <= 0 || i == len(v)-1 {
		return "", "", false
	}
	return v[:i], v[i+1:], true
}

// resumingCache is the snapshot cache as the streams see it. A stream's
// first request of a type that names the version the snapshot has (a
// proxy reconnecting, here or from another replica, after adopt) holds
// every resource of that version: the cache is told so, and answers only
// when the snapshot changes. Without this, go-control-plane answers every
// new stream at once, whatever version it names.
type resumingCache struct {
	cachev3.SnapshotCache
}

func (c resumingCache) CreateWatch(req *cachev3.Request, sub cachev3.Subscription, value chan cachev3.Response) (func(), error) {
	if req.GetVersionInfo() != "" && req.GetResponseNonce() == "" && len(sub.ReturnedResources()) == 0 {
		if snap, err := c.GetSnapshot(nodeHash{}.ID(req.GetNode())); err == nil && snap.GetVersion(req.GetTypeUrl()) == req.GetVersionInfo() {
			held := map[string]string{}
			for name := range snap.GetResources(req.GetTypeUrl()) {
				held[name] = req.GetVersionInfo()
			}
			sub = heldSubscription{Subscription: sub, held: held}
		}
	}
	return c.SnapshotCache.CreateWatch(req, sub, value)
}

// heldSubscription is a subscription whose client holds held.
type heldSubscription struct {
	cachev3.Subscription
	held map[string]string
}

func (s heldSubscription) ReturnedResources() map[string]string { return s.held }
