package token

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"

	"github.com/gitmesh/gitmesh/internal/atomicfile"
	"github.com/gitmesh/gitmesh/store"
)

// Keeper keeps the token state of a control plane, the keyring, the issued
// list and the revocation list, in a store. In a state directory
// (store.Dir) they are the files KeyFile, IssuedFile and RevokedFile,
// changed under the flock of LockFile, exactly as the functions of this
// package taking a state directory keep them. In another store (PostgreSQL,
// shared by replicas) they are the documents of the same names: the
// keyring Secret (sealed at rest), the lists Private; changes are
// serialised by the store's lock (store.Locker), so that replicas and
// commands writing at once do not lose each other's change.
//
// Safe for concurrent use.
type Keeper struct {
	st    store.Store
	local bool   // st is a state directory
	dir   string // its path
}

// NewKeeper keeps the token state in st.
func NewKeeper(st store.Store) *Keeper {
	switch d := st.(type) {
	case store.Dir:
		return &Keeper{st: st, local: true, dir: d.Path}
	case *store.Dir:
		return &Keeper{st: st, local: true, dir: d.Path}
	}
	return &Keeper{st: st}
}

// dirKeeper is the Keeper of a state directory.
func dirKeeper(stateDir string) *Keeper { return NewKeeper(store.Dir{Path: stateDir}) }

// Store is where the token state is kept.
func (k *Keeper) Store() store.Store { return k.st }

// Describe names where the token state is kept, for messages.
func (k *Keeper) Describe() string { return k.st.Describe() }

// locked runs f under the token lock of the store; a failure to take the
// lock is prefixed with what, f's errors are returned as they are.
func (k *Keeper) locked(ctx context.Context, what string, f func(ctx context.Context) error) error {
	l, ok := k.st.(store.Locker)
	if !ok {
		return fmt.Errorf("%s: %s cannot serialise the writers of the token keyring", what, k.st.Describe())
	}
	var ferr error
	err := l.WithLock(ctx, lockName, func(ctx context.Context) error {
		ferr = f(ctx)
		return ferr
	})
	if ferr != nil {
		return ferr
	}
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// read is the document name of a store that is not a state directory; the
// error wraps fs.ErrNotExist when there is none, and names the document,
// never a file path (a Verifier's errors reach clients).
func (k *Keeper) read(ctx context.Context, name, what string) ([]byte, error) {
	b, err := k.st.Get(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("%s %s: %w", what, name, fs.ErrNotExist)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return b, nil
}

// write replaces files: in a state directory atomically, all written
// before any is renamed into place (atomicfile.WriteFiles); in another
// store one document after the other, in the order given, the keyring as a
// Secret.
func (k *Keeper) write(ctx context.Context, files ...atomicfile.File) error {
	if k.local {
		if len(files) == 1 {
			return atomicfile.Write(filepath.Join(k.dir, files[0].Name), files[0].Data, files[0].Perm)
		}
		return atomicfile.WriteFiles(k.dir, files...)
	}
	for _, f := range files {
		class := store.Private
		if f.Name == KeyFile {
			class = store.Secret
		}
		if err := k.st.Put(ctx, f.Name, f.Data, class); err != nil {
			return err
		}
	}
	return nil
}
