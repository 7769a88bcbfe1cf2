package store_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gitmesh/gitmesh/store"
	"github.com/gitmesh/gitmesh/store/pgtest"
)

// increment adds one to the counter document key under the lock: a
// read-modify-write that loses updates unless the lock serialises it.
func increment(ctx context.Context, l store.Locker, key string) error {
	return l.WithLock(ctx, "counter", func(ctx context.Context) error {
		b, err := l.Get(ctx, key)
		n := 0
		switch {
		case errors.Is(err, store.ErrNotFound):
		case err != nil:
			return err
		default:
			if n, err = strconv.Atoi(string(b)); err != nil {
				return err
			}
		}
		// Give another writer every chance to interleave.
		time.Sleep(time.Millisecond)
		return l.Put(ctx, key, []byte(strconv.Itoa(n+1)), store.Private)
	})
}

// hammer runs n increments on each of the lockers at once and checks none
// was lost.
func hammer(t *testing.T, n int, lockers ...store.Locker) {
	t.Helper()
	ctx := context.Background()
	var wg sync.WaitGroup
	for _, l := range lockers {
		for range n {
			wg.Go(func() {
				if err := increment(ctx, l, "counter"); err != nil {
					t.Error(err)
				}
			})
		}
	}
	wg.Wait()
	b, err := lockers[0].Get(ctx, "counter")
	if err != nil {
		t.Fatal(err)
	}
	if want := strconv.Itoa(n * len(lockers)); string(b) != want {
		t.Errorf("counter %s after %s increments: writers lost each other's change", b, want)
	}
}

func TestDirLockSerialisesWriters(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	d := store.Dir{Path: dir}
	// Two values of one directory lock each other out like two processes.
	hammer(t, 10, d, store.Dir{Path: dir})
	fi, err := os.Stat(filepath.Join(dir, "counter.lock"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("lock file: %v, %v; want counter.lock, 0600", fi, err)
	}
	for _, bad := range []string{"", "a/b", "..", `a\b`} {
		if err := d.WithLock(context.Background(), bad, func(context.Context) error { return nil }); err == nil {
			t.Errorf("lock name %q accepted", bad)
		}
	}
}

// TestPostgresLockSerialisesWriters: two handles of one database (two
// replicas), each with more concurrent writers than its pool has
// connections, lose no update; a holder keeps the other handle waiting;
// f's error is WithLock's and releases the lock.
func TestPostgresLockSerialisesWriters(t *testing.T) {
	srv := pgtest.Start(t)
	ctx := context.Background()
	a, b := openPostgres(t, srv.URL()), openPostgres(t, srv.URL())
	hammer(t, 12, a, b)

	held, release := make(chan struct{}), make(chan struct{})
	unhold := sync.OnceFunc(func() { close(release) })
	defer unhold() // a failure below must not leave the pool busy
	go func() {
		_ = a.WithLock(ctx, "counter", func(context.Context) error {
			close(held)
			<-release
			return nil
		})
	}()
	<-held
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	ran := false
	err := b.WithLock(short, "counter", func(context.Context) error { ran = true; return nil })
	if err == nil || ran {
		t.Fatalf("the other replica took a held lock: %v, ran %v", err, ran)
	}
	// Another name is not held.
	if err := b.WithLock(ctx, "other", func(context.Context) error { return nil }); err != nil {
		t.Fatalf("another lock: %v", err)
	}
	unhold()
	if err := b.WithLock(ctx, "counter", func(context.Context) error { return nil }); err != nil {
		t.Fatalf("the lock once released: %v", err)
	}

	boom := errors.New("boom")
	if err := a.WithLock(ctx, "counter", func(context.Context) error { return boom }); !errors.Is(err, boom) {
		t.Errorf("f's error: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- b.WithLock(ctx, "counter", func(context.Context) error { return nil }) }()
	select {
	case err := <-done:
		if err != nil {
			t.Error(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the lock stayed held after f failed")
	}
}
