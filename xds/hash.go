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
// resources whose equal it validated before.
// The third result is the hash of each type alone, computed the same way.
func (b *builder) hash(rs *resourceSet) (string, map[types.Resource][32]byte, map[string]string, error) {
	h := sha256.New()
	perType := make(map[string]string, numTypes)
	n0 := 0
	for i := range rs.byType {
		n0 += len(rs.byType[i])
	}
	digests := make(map[types.Resource][32]byte, n0)
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
		binary.BigEndian.PutUint64(n[:], uint64(len(rs.byType[i])))
		w.Write(n[:])
		for _, r := range rs.byType[i] {
			writeString(r.name)
			if r.digest != nil {
				w.Write(r.digest[:])
				digests[r.res] = *r.digest
				continue
			}
			d, buf, err := digest(r.res, b.buf)
			b.buf = buf
			if err != nil {
				return "", nil, nil, fmt.Errorf("hash %s %q: %w", typeName(typ), r.name, err)
			}
			w.Write(d[:])
			digests[r.res] = d
		}
		perType[typ] = hex.EncodeToString(th.Sum(nil))
	}
	return hex.EncodeToString(h.Sum(nil)), digests, perType, nil
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
