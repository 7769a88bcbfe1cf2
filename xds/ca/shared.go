package ca

import (
	"bytes"
	"context"
	"encoding/pem"
	"errors"
	"net/url"
	"regexp"
	"time"

	"github.com/gitmesh/gitmesh/store"
)

// On a store shared by replicas (PostgreSQL), every replica must hand a
// node the same certificate, or a proxy moving from one replica to another
// would be pushed a new one (and replicas would serve different secret
// versions for one commit). The node's certificate is then kept in the
// store, one document per node, "ca/<mesh>/issued/<node>.pem" (sealed,
// holding the key), in the format of issued.pem; a replica that needs a
// node's certificate takes the one there while it fits, and a replica that
// signs a new one stores it only if no other replica stored one since it
// looked (store.Swapper): all serve the first stored.

// nodeKey is the characters a node id may have to name a document.
var nodeKey = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// sharedKey is the store key of node's certificate; false when it cannot
// name one.
func sharedKey(mesh, node string) (string, bool) {
	if !meshName.MatchString(mesh) || !nodeKey.MatchString(node) {
		return "", false
	}
	return "ca/" + mesh + "/issued/" + node + ".pem", true
}

// issueShared returns the certificate for node kept in the shared store
// when it fits, else signs one and stores it, unless another replica stored
// one that fits meanwhile, which it returns instead.
func (a *Authority) issueShared(sw store.Swapper, key string, ca *CA, mesh, nodeID string, identities []string, uris []*url.URL, now time.Time) (*Certificate, error) {
	ctx := context.Background()
	old, err := a.Store.Get(ctx, key)
	switch {
	case errors.Is(err, store.ErrNotFound):
		old = nil
	case err != nil:
		// The store is away: a certificate of this replica's own serves
		// until it is back (renewed then, at the latest).
		a.warn("cannot read the certificate of "+nodeID+" from the store; this replica issues its own", err)
		return a.sign(ca, mesh, nodeID, identities, uris, now)
	default:
		if c := decodeShared(mesh, nodeID, ca, old); c.fits(identities, ca, now) {
			return c, nil
		}
	}
	c, err := a.sign(ca, mesh, nodeID, identities, uris, now)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	c.record().encode(&buf)
	current, swapped, err := sw.Swap(ctx, key, old, buf.Bytes(), store.Secret)
	switch {
	case err != nil:
		a.warn("cannot keep the certificate of "+nodeID+" in the store; other replicas issue their own", err)
	case !swapped:
		if theirs := decodeShared(mesh, nodeID, ca, current); theirs.fits(identities, ca, now) {
			return theirs, nil
		}
	}
	return c, nil
}

// decodeShared is the certificate of a shared document; nil when it holds
// none of ca's for node.
func decodeShared(mesh, node string, ca *CA, doc []byte) *Certificate {
	b, rest := pem.Decode(doc)
	if b == nil || b.Type != blockCert || b.Headers[headerNode] != node || b.Headers[headerCA] != ca.fingerprint {
		return nil
	}
	k, _ := pem.Decode(rest)
	if k == nil || k.Type != blockKey || k.Headers[headerNode] != node {
		return nil
	}
	c, err := certificateOf(mesh, node, ca, keptRecord{node: node, ca: ca.fingerprint, cert: b.Bytes, key: k.Bytes})
	if err != nil {
		return nil
	}
	return c
}
