package xds

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
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
// computed the same way, and the names and digests it hashed (sections).
func (b *builder) hash(rs *resourceSet) (string, map[types.Resource][32]byte, map[string]string, *sections, error) {
	n0 := 0
	for i := range rs.byType {
		n0 += len(rs.byType[i])
	}
	digests := make(map[types.Resource][32]byte, n0)
	secs := new(sections)
	for i, typ := range resourceTypes() {
		secs[i] = make([]entry, len(rs.byType[i]))
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
			secs[i][j] = entry{name: r.name, digest: *d}
		}
	}
	h, perType := secs.hash()
	return h, digests, perType, secs, nil
}

// sections are what a proxy's hash is computed from: per type, in
// resourceTypes order, each resource's name and digest, sorted by name.
type sections [numTypes][]entry

// entry is one resource of sections.
type entry struct {
	name   string
	digest [32]byte
}

// hash is Proxy.Hash and Proxy.TypeHashes of the resources s describes.
func (s *sections) hash() (string, map[string]string) {
	h := sha256.New()
	perType := make(map[string]string, numTypes)
	var n [8]byte
	th := sha256.New()
	for i, typ := range resourceTypes() {
		th.Reset()
		w := io.MultiWriter(h, th)
		writeString := func(s string) {
			binary.BigEndian.PutUint64(n[:], uint64(len(s)))
			w.Write(n[:])
			w.Write([]byte(s))
		}
		writeString(typ)
		binary.BigEndian.PutUint64(n[:], uint64(len(s[i])))
		w.Write(n[:])
		for _, e := range s[i] {
			writeString(e.name)
			w.Write(e.digest[:])
		}
		perType[typ] = hex.EncodeToString(th.Sum(nil))
	}
	return hex.EncodeToString(h.Sum(nil)), perType
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
