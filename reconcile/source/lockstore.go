package source

import (
	"fmt"
	"io"
	"sync"

	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/format/index"
	"github.com/go-git/go-git/v5/plumbing/storer"
	"github.com/go-git/go-git/v5/storage"
	"github.com/go-git/go-git/v5/storage/filesystem"
)

// lockedStorer serialises every call into a go-git storer. go-git's
// filesystem storage keeps its pack indexes and open packfiles in plain maps,
// so a fetch writing a pack must not run while a TreeFS decodes objects of an
// earlier commit. Wrapping the storer itself (rather than locking in Mirror's
// methods) also covers the objects a Commit's tree reads lazily, long after
// ReadCommit has returned. Blob contents that go-git reads through their own
// file handles are read outside the lock, which is safe.
type lockedStorer struct {
	mu *sync.Mutex
	s  *filesystem.Storage
	// maxPack bounds the bytes of one received packfile; 0 is no bound.
	maxPack int64
}

var (
	_ storage.Storer           = (*lockedStorer)(nil)
	_ storer.PackfileWriter    = (*lockedStorer)(nil)
	_ storer.EncodedObjectIter = (*lockedObjectIter)(nil)
)

func newLockedStorer(s *filesystem.Storage) *lockedStorer {
	return &lockedStorer{mu: new(sync.Mutex), s: s}
}

func (l *lockedStorer) NewEncodedObject() plumbing.EncodedObject {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.s.NewEncodedObject()
}

func (l *lockedStorer) SetEncodedObject(o plumbing.EncodedObject) (plumbing.Hash, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.s.SetEncodedObject(o)
}

func (l *lockedStorer) EncodedObject(t plumbing.ObjectType, h plumbing.Hash) (plumbing.EncodedObject, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.s.EncodedObject(t, h)
}

func (l *lockedStorer) IterEncodedObjects(t plumbing.ObjectType) (storer.EncodedObjectIter, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	it, err := l.s.IterEncodedObjects(t)
	if err != nil {
		return nil, err
	}
	return &lockedObjectIter{mu: l.mu, it: it}, nil
}

func (l *lockedStorer) HasEncodedObject(h plumbing.Hash) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.s.HasEncodedObject(h)
}

func (l *lockedStorer) EncodedObjectSize(h plumbing.Hash) (int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.s.EncodedObjectSize(h)
}

// HashesWithPrefix lets go-git resolve abbreviated hashes without scanning
// every object.
func (l *lockedStorer) HashesWithPrefix(prefix []byte) ([]plumbing.Hash, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.s.HashesWithPrefix(prefix)
}

func (l *lockedStorer) AddAlternate(remote string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.s.AddAlternate(remote)
}

func (l *lockedStorer) SetReference(r *plumbing.Reference) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.s.SetReference(r)
}

func (l *lockedStorer) CheckAndSetReference(new, old *plumbing.Reference) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.s.CheckAndSetReference(new, old)
}

func (l *lockedStorer) Reference(n plumbing.ReferenceName) (*plumbing.Reference, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.s.Reference(n)
}

// IterReferences returns the filesystem storer's iterator, which reads every
// reference before it returns.
func (l *lockedStorer) IterReferences() (storer.ReferenceIter, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.s.IterReferences()
}

func (l *lockedStorer) RemoveReference(n plumbing.ReferenceName) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.s.RemoveReference(n)
}

func (l *lockedStorer) CountLooseRefs() (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.s.CountLooseRefs()
}

func (l *lockedStorer) PackRefs() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.s.PackRefs()
}

func (l *lockedStorer) SetShallow(h []plumbing.Hash) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.s.SetShallow(h)
}

func (l *lockedStorer) Shallow() ([]plumbing.Hash, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.s.Shallow()
}

func (l *lockedStorer) SetIndex(i *index.Index) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.s.SetIndex(i)
}

func (l *lockedStorer) Index() (*index.Index, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.s.Index()
}

func (l *lockedStorer) Config() (*config.Config, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.s.Config()
}

func (l *lockedStorer) SetConfig(c *config.Config) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.s.SetConfig(c)
}

// Module returns the submodule's storer unwrapped: a mirror never reads
// submodules.
func (l *lockedStorer) Module(name string) (storage.Storer, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.s.Module(name)
}

// PackfileWriter lets a fetch stream the received pack to disk. Writing goes
// to the writer's own temporary file; only closing it, which publishes the
// pack and its index to the storer, takes the lock.
func (l *lockedStorer) PackfileWriter() (io.WriteCloser, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	w, err := l.s.PackfileWriter()
	if err != nil {
		return nil, err
	}
	return &lockedPackWriter{mu: l.mu, w: w, max: l.maxPack}, nil
}

// PackTooLargeError is the error of a fetch whose packfile grew past the
// limit: the remote sent more than Limit bytes, counted as they were written.
type PackTooLargeError struct{ Limit int64 }

func (e *PackTooLargeError) Error() string {
	return fmt.Sprintf("the remote sent a packfile of more than %d bytes (the fetch limit); it was abandoned", e.Limit)
}

type lockedPackWriter struct {
	mu      *sync.Mutex
	w       io.WriteCloser
	max     int64 // 0 is no bound
	written int64
}

// Write passes p on until the pack would grow past max, then fails: the
// fetch stops reading the remote, and Close discards the partial pack.
func (w *lockedPackWriter) Write(p []byte) (int, error) {
	if w.max > 0 && w.written+int64(len(p)) > w.max {
		return 0, &PackTooLargeError{Limit: w.max}
	}
	n, err := w.w.Write(p)
	w.written += int64(n)
	return n, err
}

func (w *lockedPackWriter) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Close()
}

// lockedObjectIter takes the lock for each step, never while a ForEach
// callback runs (the callback may read the storer itself).
type lockedObjectIter struct {
	mu *sync.Mutex
	it storer.EncodedObjectIter
}

func (i *lockedObjectIter) Next() (plumbing.EncodedObject, error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.it.Next()
}

func (i *lockedObjectIter) ForEach(cb func(plumbing.EncodedObject) error) error {
	defer i.Close()
	for {
		o, err := i.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := cb(o); err != nil {
			if err == storer.ErrStop {
				return nil
			}
			return err
		}
	}
}

func (i *lockedObjectIter) Close() {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.it.Close()
}
