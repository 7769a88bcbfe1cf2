package xds

import (
	"crypto/sha256"
	"encoding"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"slices"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// deterministic is the only way translation encodes protos: map entries
// (RBAC policies) sorted, so equal messages give equal bytes.
func deterministic() proto.MarshalOptions { return proto.MarshalOptions{Deterministic: true} }

// digest is the SHA-256 of m's deterministic encoding; buf is scratch space,
// returned grown for reuse.
func digest(m proto.Message, buf []byte) ([32]byte, []byte, error) {
	b, err := deterministic().MarshalAppend(buf[:0], m)
	if err != nil {
		return [32]byte{}, buf, err
	}
	return sha256.Sum256(b), b, nil
}

// hash computes Proxy.Hash from a sorted resourceSet: for each type in
// resourceTypes order, the type URL and count, then each resource's name and
// digest. Shared resources carry the digest the Index computed once.
// It also returns each resource's digest, which lets a Checker skip
// resources whose equal it validated before, the hash of each type alone,
// computed the same way, and what it takes to hash the proxy again with
// other endpoints (sections).
func (b *builder) hash(rs *resourceSet) (string, map[types.Resource][32]byte, map[string]string, *sections, error) {
	n0 := 0
	for i := range rs.byType {
		n0 += len(rs.byType[i])
	}
	digests := make(map[types.Resource][32]byte, n0)
	h := sha256.New()
	perType := make(map[string]string, numTypes)
	secs := &sections{}
	for i, typ := range resourceTypes() {
		// Only the endpoints' entries are kept (see sections).
		entries := b.entries[:0]
		if i == endpointIdx {
			entries = nil
		}
		entries = slices.Grow(entries, len(rs.byType[i]))[:len(rs.byType[i])]
		for j, r := range rs.byType[i] {
			d := r.digest
			if d == nil {
				v, buf, err := digest(r.res, b.buf)
				b.buf = buf
				if err != nil {
					return "", nil, nil, nil, fmt.Errorf("hash %s %q: %w", typeName(typ), r.name, err)
				}
				d = &v
			}
			digests[r.res] = *d
			entries[j] = entry{name: r.name, digest: *d}
		}
		if i == endpointIdx {
			// The state before the endpoints, which come last.
			state, err := h.(encoding.BinaryMarshaler).MarshalBinary()
			if err != nil {
				return "", nil, nil, nil, err
			}
			secs.before, secs.endpoints = state, entries
		}
		perType[typ] = writeSection(h, typ, entries)
		if i != endpointIdx {
			b.entries = entries
		}
	}
	return hex.EncodeToString(h.Sum(nil)), digests, perType, secs, nil
}

// writeSection writes one type's part of a proxy's hash to h, and returns
// the hash of that part alone (the type's hash).
func writeSection(h hash.Hash, typ string, entries []entry) string {
	th := sha256.New()
	w := io.MultiWriter(h, th)
	var n [8]byte
	writeString := func(s string) {
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		w.Write(n[:])
		w.Write([]byte(s))
	}
	writeString(typ)
	binary.BigEndian.PutUint64(n[:], uint64(len(entries)))
	w.Write(n[:])
	for _, e := range entries {
		writeString(e.name)
		w.Write(e.digest[:])
	}
	return hex.EncodeToString(th.Sum(nil))
}

// sections are what it takes to hash a proxy again with other endpoints:
// the hash's state after every type but the endpoints (they come last in
// resourceTypes order), and the endpoints' names and digests, sorted by
// name.
type sections struct {
	before    []byte
	endpoints []entry
}

// entry is one resource of a proxy's hash.
type entry struct {
	name   string
	digest [32]byte
}

// hash is Proxy.Hash of the proxy s describes, and the hash of its
// endpoints alone (its TypeHashes entry).
func (s *sections) hash() (string, string, error) {
	h := sha256.New()
	if err := h.(encoding.BinaryUnmarshaler).UnmarshalBinary(s.before); err != nil {
		return "", "", err
	}
	eh := writeSection(h, resource.EndpointType, s.endpoints)
	return hex.EncodeToString(h.Sum(nil)), eh, nil
}

// toAny packs m into an Any with a deterministic encoding. It fails only
// when a string field is not valid UTF-8.
func toAny(m proto.Message) (*anypb.Any, error) {
	a := &anypb.Any{}
	if err := anypb.MarshalFrom(a, m, deterministic()); err != nil {
		return nil, fmt.Errorf("encode %s: %w", m.ProtoReflect().Descriptor().FullName(), err)
	}
	return a, nil
}
