package store

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
)

// Locker is a Store that serialises read-modify-write sequences: while f
// runs under the lock name, no other holder of that name (in this process
// or another, on this host or, for PostgreSQL, any host) runs; so a Get, a
// change and a Put in f do not lose another writer's change. Readers need
// no lock: every Put replaces a document whole.
//
// A lock rather than a compare-and-swap of one document: a change may span
// documents (a token's record and its key's latest expiry), create one
// that is absent (the first replica's admin token), and keep the Get and
// Put the callers have; a lock needs no version column either, so no
// schema change. The documents f writes are not committed together: each
// Put is atomic on its own, and f orders them so that a crash between two
// leaves a state that is safe to read.
type Locker interface {
	Store
	// WithLock runs f while holding the lock name, waiting for it as long
	// as ctx allows (a state directory's lock waits regardless). f's error
	// is WithLock's.
	WithLock(ctx context.Context, name string, f func(ctx context.Context) error) error
}

// lockName reports whether name may name a lock: a file name, no path.
func lockName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, `/\`) {
		return fmt.Errorf("lock name %q: want a plain name", name)
	}
	return nil
}

// WithLock holds an exclusive flock(2) on the file <name>.lock of the state
// directory (created 0600, the directory 0700 when missing) while f runs.
// The lock goes with the process: a crash never leaves it held.
func (d Dir) WithLock(ctx context.Context, name string, f func(ctx context.Context) error) error {
	if err := lockName(name); err != nil {
		return err
	}
	unlock, err := fileLock(d.Path, name+".lock")
	if err != nil {
		return err
	}
	defer unlock()
	return f(ctx)
}

// fileLock takes an exclusive flock(2) on the file name of dir (creating
// dir 0700 and the file 0600 when missing), blocking while another holds
// it. Closing the file, which unlock does, releases it.
func fileLock(dir, name string) (unlock func(), err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", f.Name(), err)
	}
	return func() { f.Close() }, nil
}

// advisoryClass is the first key of gitmesh's two-key advisory locks
// ("gm"); the one-key space, where the migrations' lock is, does not
// overlap the two-key one.
const advisoryClass = 0x676d

// lockWait bounds the wait for a PostgreSQL lock when ctx has no deadline
// of its own: a holder that hangs is an error within seconds, not a hung
// command.
const lockWait = 4 * opTimeout

// gates serialise, within this process, the holders of one lock of one
// Postgres store, so that waiters do not take every connection of the pool
// while the holder's f needs one for its Get and Put.
var gates sync.Map // gateKey → chan struct{} (one slot)

type gateKey struct {
	p    *Postgres
	name string
}

// WithLock runs f inside a transaction holding the advisory lock of name
// (pg_advisory_xact_lock): other processes asking for it wait until the
// transaction ends, and a process that dies, or loses its connection,
// releases it. f's Gets and Puts go through the store as usual, on other
// connections of the pool; the transaction only carries the lock.
func (p *Postgres) WithLock(ctx context.Context, name string, f func(ctx context.Context) error) error {
	if err := lockName(name); err != nil {
		return err
	}
	waitCtx := ctx
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		waitCtx, cancel = context.WithTimeout(ctx, lockWait)
		defer cancel()
	}
	g, _ := gates.LoadOrStore(gateKey{p, name}, make(chan struct{}, 1))
	gate := g.(chan struct{})
	select {
	case gate <- struct{}{}:
	case <-waitCtx.Done():
		return fmt.Errorf("lock %s: %w", name, &unavailable{err: waitCtx.Err()})
	}
	defer func() { <-gate }()

	tx, err := p.pool.Begin(waitCtx)
	if err != nil {
		return fmt.Errorf("lock %s: %w", name, p.classify(err))
	}
	defer func() {
		// A no-op once committed; else it ends the transaction, and with it
		// the lock.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), opTimeout)
		defer cancel()
		_ = tx.Rollback(rctx)
	}()
	if _, err := tx.Exec(waitCtx, `SELECT pg_advisory_xact_lock($1, $2)`, int32(advisoryClass), lockID(name)); err != nil {
		return fmt.Errorf("lock %s: %w", name, p.classify(err))
	}
	if err := f(ctx); err != nil {
		return err
	}
	// f's writes are in whatever the commit says: the transaction wrote
	// nothing, and if its connection is lost the lock went with it.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), opTimeout)
	defer cancel()
	_ = tx.Commit(cctx)
	return nil
}

// lockID is the second key of name's advisory lock: a 32-bit hash (two
// names that collide only wait for each other).
func lockID(name string) int32 {
	h := fnv.New32a()
	h.Write([]byte(name))
	return int32(h.Sum32())
}

var (
	_ Locker = Dir{}
	_ Locker = (*Postgres)(nil)
)
