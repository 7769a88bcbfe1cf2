package ca

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/gitmesh/gitmesh/internal/atomicfile"
)

// The certificates an Authority issues are kept, with their keys, in
// <StateDir>/ca/<mesh>/issued.pem (0600, in the CA's 0700 directory), so that
// a restarted control plane hands every proxy the certificate it already
// holds until that certificate's renewal time: a restart rotates nothing.
//
// The file is a log of PEM records, appended to and synced by Flush:
//
//	CERTIFICATE with headers Node (the node id) and CA (the fingerprint of
//	the CA that issued it), followed by its PRIVATE KEY with header Node;
//	FORGOTTEN with header Node: the node's certificate is no longer kept.
//
// A later record of a node replaces an earlier one. Flush rewrites the file
// whole (atomically) when it holds more than twice the records still live,
// or when it ends in a torn record (a crash while appending). Records are
// read when a mesh's first certificate is asked for, and parsed one node at
// a time when that node is; those of another CA or expired are dropped.
const issuedFile = "issued.pem"

// PEM block types and headers of the file.
const (
	blockCert      = "CERTIFICATE"
	blockKey       = "PRIVATE KEY"
	blockForgotten = "FORGOTTEN"
	headerNode     = "Node"
	headerCA       = "CA"
)

// compactSlack is how many dead records a file may hold beyond the live
// ones before Flush rewrites it (besides the doubling rule).
const compactSlack = 64

// keptStore is the file of one mesh.
type keptStore struct {
	mesh, path string
	raw        map[string]keptRecord // node -> read from the file, not asked for yet
	pending    []keptRecord          // to append at the next Flush
	records    int                   // records in the file
	rewrite    bool                  // the file must be rewritten whole
}

// keptRecord is one record: a certificate (cert and key DER) issued by the
// CA of fingerprint ca, or, with cert nil, a node forgotten.
type keptRecord struct {
	node, ca  string
	cert, key []byte
}

// fingerprint names a CA certificate in the file.
func fingerprint(caCert *x509.Certificate) string {
	sum := sha256.Sum256(caCert.Raw)
	return hex.EncodeToString(sum[:])
}

// store returns the kept store of mesh, reading its file the first time;
// nil without a state directory. Called with keptMu held.
func (a *Authority) store(mesh string) *keptStore {
	if a.StateDir == "" || !meshName.MatchString(mesh) {
		return nil
	}
	if s := a.stores[mesh]; s != nil {
		return s
	}
	s := &keptStore{mesh: mesh, path: filepath.Join(builtinDir(a.StateDir, mesh), issuedFile), raw: map[string]keptRecord{}}
	if err := s.read(); err != nil {
		// Unreadable: the certificates are issued anew and the file is
		// replaced at the next Flush.
		a.warn("cannot read the certificates kept for mesh "+mesh+"; they are issued again", err)
		s.raw, s.records, s.rewrite = map[string]keptRecord{}, 0, true
	}
	if a.stores == nil {
		a.stores = map[string]*keptStore{}
	}
	a.stores[mesh] = s
	return s
}

// read loads the records of s's file; a missing file holds none.
func (s *keptStore) read() error {
	fi, err := os.Lstat(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", s.path)
	}
	data, err := os.ReadFile(s.path)
	if err != nil {
		return err
	}
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			if len(bytes.TrimSpace(rest)) > 0 {
				s.rewrite = true // a torn record at the end
			}
			return nil
		}
		s.records++
		node := b.Headers[headerNode]
		switch b.Type {
		case blockForgotten:
			delete(s.raw, node)
		case blockCert:
			var k *pem.Block
			k, rest = pem.Decode(rest)
			if k == nil || k.Type != blockKey || k.Headers[headerNode] != node || node == "" {
				s.rewrite = true
				if k == nil {
					return nil
				}
				continue
			}
			s.raw[node] = keptRecord{node: node, ca: b.Headers[headerCA], cert: b.Bytes, key: k.Bytes}
		default:
			s.rewrite = true
		}
	}
}

// encode appends the PEM text of r to buf.
func (r keptRecord) encode(buf *bytes.Buffer) {
	if r.cert == nil {
		_ = pem.Encode(buf, &pem.Block{Type: blockForgotten, Headers: map[string]string{headerNode: r.node}})
		return
	}
	_ = pem.Encode(buf, &pem.Block{Type: blockCert, Headers: map[string]string{headerNode: r.node, headerCA: r.ca}, Bytes: r.cert})
	_ = pem.Encode(buf, &pem.Block{Type: blockKey, Headers: map[string]string{headerNode: r.node}, Bytes: r.key})
}

// kept returns the certificate kept in the state directory for node, issued
// by ca, once: the record is dropped from memory whether it is usable or
// not. Nil when there is none, or it is not usable.
func (a *Authority) kept(mesh, node string, ca *CA) *Certificate {
	a.keptMu.Lock()
	s := a.store(mesh)
	var r keptRecord
	ok := false
	if s != nil {
		r, ok = s.raw[node]
		delete(s.raw, node)
	}
	a.keptMu.Unlock()
	if !ok || r.ca != ca.fingerprint {
		return nil
	}
	c, err := certificateOf(mesh, node, ca, r)
	if err != nil {
		a.warn("the certificate kept for "+node+" is not usable; it is issued again", err)
		return nil
	}
	return c
}

// certificateOf is the Certificate of a record of ca.
func certificateOf(mesh, node string, ca *CA, r keptRecord) (*Certificate, error) {
	cert, err := x509.ParseCertificate(r.cert)
	if err != nil {
		return nil, err
	}
	key, err := x509.ParsePKCS8PrivateKey(r.key)
	if err != nil {
		return nil, err
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("unsupported private key type %T", key)
	}
	if !keyMatches(signer, cert) {
		return nil, errors.New("the key does not match the certificate")
	}
	if !bytes.Equal(cert.RawIssuer, ca.Cert.RawSubject) {
		return nil, errors.New("the certificate is not issued by the mesh CA")
	}
	ids := make([]string, len(cert.URIs))
	for i, u := range cert.URIs {
		ids[i] = u.String()
	}
	return newCertificate(mesh, node, ids, cert, r.key, ca), nil
}

// keep records c to be appended to the file at the next Flush.
func (a *Authority) keep(c *Certificate) {
	a.keptMu.Lock()
	defer a.keptMu.Unlock()
	if s := a.store(c.mesh); s != nil {
		s.pending = append(s.pending, c.record())
	}
}

// record is c as the file keeps it.
func (c *Certificate) record() keptRecord {
	return keptRecord{node: c.NodeID, ca: c.caFingerprint, cert: c.Cert.Raw, key: c.keyDER}
}

// forgetKept records that node's certificate is no longer kept.
func (a *Authority) forgetKept(mesh, node string) {
	a.keptMu.Lock()
	defer a.keptMu.Unlock()
	for m, s := range a.stores {
		delete(s.raw, node)
		if m == mesh {
			s.pending = append(s.pending, keptRecord{node: node})
		}
	}
}

// Flush writes the certificates issued and forgotten since the last Flush
// to the state directory (appended, then synced). Call it after publishing
// what it issued; a certificate issued but never flushed is issued anew
// after a restart. An error leaves the records to the next Flush.
func (a *Authority) Flush() error {
	a.flushMu.Lock()
	defer a.flushMu.Unlock()
	type work struct {
		s       *keptStore
		pending []keptRecord
		rewrite bool
	}
	var todo []work
	a.keptMu.Lock()
	for _, m := range slices.Sorted(maps.Keys(a.stores)) {
		s := a.stores[m]
		if len(s.pending) == 0 && !s.rewrite {
			continue
		}
		live := len(s.raw) + a.issuedIn(m)
		rewrite := s.rewrite || s.records+len(s.pending) > 2*live+compactSlack
		todo = append(todo, work{s, s.pending, rewrite})
		s.pending, s.rewrite = nil, false
	}
	a.keptMu.Unlock()

	var errs []error
	for _, w := range todo {
		var err error
		if w.rewrite {
			err = a.rewrite(w.s)
		} else if err = appendRecords(w.s.path, w.pending); err == nil {
			a.keptMu.Lock()
			w.s.records += len(w.pending)
			a.keptMu.Unlock()
		}
		if err != nil {
			a.keptMu.Lock()
			w.s.pending = append(w.pending, w.s.pending...)
			w.s.rewrite = w.s.rewrite || w.rewrite
			a.keptMu.Unlock()
			errs = append(errs, fmt.Errorf("keep the certificates of mesh %s: %w", w.s.mesh, err))
		}
	}
	return errors.Join(errs...)
}

// issuedIn counts the certificates of mesh held in memory. Called with
// keptMu held; takes mu.
func (a *Authority) issuedIn(mesh string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, c := range a.issued {
		if c.mesh == mesh {
			n++
		}
	}
	return n
}

// rewrite replaces s's file with its live records: those not asked for
// yet and the certificates of its mesh in memory.
func (a *Authority) rewrite(s *keptStore) error {
	var live []keptRecord
	a.keptMu.Lock()
	for _, r := range s.raw {
		live = append(live, r)
	}
	a.keptMu.Unlock()
	a.mu.Lock()
	for _, c := range a.issued {
		if c.mesh == s.mesh {
			live = append(live, c.record())
		}
	}
	a.mu.Unlock()
	slices.SortFunc(live, func(x, y keptRecord) int { return strings.Compare(x.node, y.node) })
	var buf bytes.Buffer
	for _, r := range live {
		r.encode(&buf)
	}
	// atomicfile makes the directory (0700) when it is missing.
	if err := atomicfile.Write(s.path, buf.Bytes(), 0o600); err != nil {
		return err
	}
	a.keptMu.Lock()
	s.records = len(live)
	a.keptMu.Unlock()
	return nil
}

// appendRecords appends records to the file at path and syncs it.
func appendRecords(path string, records []keptRecord) (err error) {
	if len(records) == 0 {
		return nil
	}
	var buf bytes.Buffer
	for _, r := range records {
		r.encode(&buf)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	_, statErr := os.Lstat(path)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	if _, err := f.Write(buf.Bytes()); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if errors.Is(statErr, fs.ErrNotExist) {
		// A new file: make its name durable too.
		if d, err := os.Open(dir); err == nil {
			err = d.Sync()
			d.Close()
			if err != nil {
				return err
			}
		}
	}
	return nil
}
