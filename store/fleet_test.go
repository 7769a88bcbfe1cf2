package store_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/gitmesh/gitmesh/store"
	"github.com/gitmesh/gitmesh/store/pgtest"
)

func openFleet(t *testing.T, url, id string) *store.Fleet {
	t.Helper()
	return store.NewFleet(openPostgres(t, url), id)
}

func openPostgres(t *testing.T, url string) *store.Postgres {
	t.Helper()
	p, err := store.OpenPostgres(context.Background(), store.PostgresOptions{URL: url, Key: testKey(), Migrate: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// TestFleetLeaseFencesWrites: one holder at a time; a holder whose lease
// lapsed and was taken cannot write, even if it does not know yet.
func TestFleetLeaseFencesWrites(t *testing.T) {
	srv := pgtest.Start(t)
	ctx := context.Background()
	a, b := openFleet(t, srv.URL(), "a"), openFleet(t, srv.URL(), "b")
	const ttl = 600 * time.Millisecond
	la, err := a.Campaign(ctx, ttl)
	if err != nil || !la.Held || la.Holder != "a" {
		t.Fatalf("a's campaign: %+v, %v", la, err)
	}
	lb, err := b.Campaign(ctx, ttl)
	if err != nil || lb.Held || lb.Holder != "a" || lb.Epoch != la.Epoch {
		t.Fatalf("b's campaign while a holds the lease: %+v, %v", lb, err)
	}
	if err := b.Store().Put(ctx, "state.json", []byte("b"), store.Private); !errors.Is(err, store.ErrFenced) {
		t.Fatalf("b wrote without the lease: %v", err)
	}
	if err := a.Store().Put(ctx, "state.json", []byte("a"), store.Private); err != nil {
		t.Fatal(err)
	}
	// Renewal keeps the epoch.
	if again, err := a.Campaign(ctx, ttl); err != nil || !again.Held || again.Epoch != la.Epoch {
		t.Fatalf("renewal: %+v, %v", again, err)
	}
	// a stops renewing; once the lease lapses b takes it with a new epoch.
	time.Sleep(ttl + 100*time.Millisecond)
	lb, err = b.Campaign(ctx, ttl)
	if err != nil || !lb.Held || lb.Epoch != la.Epoch+1 {
		t.Fatalf("b's campaign after a's lease lapsed: %+v, %v", lb, err)
	}
	if _, leading := a.Leading(); leading {
		t.Fatal("a still thinks it leads after its lease lapsed")
	}
	if err := a.Store().PutRecords(ctx, store.Record{ID: 9, Data: []byte(`{}`)}); !errors.Is(err, store.ErrFenced) {
		t.Fatalf("a wrote history after losing the lease: %v", err)
	}
	if err := b.Store().Put(ctx, "state.json", []byte("b"), store.Private); err != nil {
		t.Fatal(err)
	}
	if got, _ := a.Store().Get(ctx, "state.json"); string(got) != "b" {
		t.Fatalf("state.json: %q, want b's", got)
	}
	// Another process under b's id (b started again, or a second one
	// given the same id) does not share b's lease.
	b2 := openFleet(t, srv.URL(), "b")
	if l, err := b2.Campaign(ctx, ttl); err != nil || l.Held {
		t.Fatalf("a second process under b's id took b's lease: %+v, %v", l, err)
	}
	if err := b.Heartbeat(ctx, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if err := b2.Heartbeat(ctx, []byte(`{}`)); err != nil {
		t.Fatalf("a replica started again under its id cannot take over its row: %v", err)
	}
	if err := b.Heartbeat(ctx, []byte(`{}`)); !errors.Is(err, store.ErrDuplicateReplica) {
		t.Fatalf("two processes heartbeat under one id unnoticed: %v", err)
	}
	// Resigning hands the lease over at once.
	if err := b.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	if la, err = a.Campaign(ctx, ttl); err != nil || !la.Held || la.Epoch != lb.Epoch+1 {
		t.Fatalf("a's campaign after b resigned: %+v, %v", la, err)
	}
}

// TestFleetNotificationsAndRequests: writes notify every replica when they
// commit; a request submitted by one is claimed and completed by the
// decider, and one abandoned before it is claimed never runs.
func TestFleetNotificationsAndRequests(t *testing.T) {
	srv := pgtest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, b := openFleet(t, srv.URL(), "a"), openFleet(t, srv.URL(), "b")
	notes := b.Listen(ctx, nil)
	next := func(kind string) store.Notification {
		t.Helper()
		timeout := time.After(5 * time.Second)
		for {
			select {
			case n := <-notes:
				if n.Kind == kind {
					return n
				}
			case <-timeout:
				t.Fatalf("no %s notification", kind)
			}
		}
	}
	next(store.NoteResync)
	if _, err := a.Campaign(ctx, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := a.Store().Put(ctx, "state.json", []byte("{}"), store.Private); err != nil {
		t.Fatal(err)
	}
	if n := next(store.NoteState); n.Replica != "a" || n.Arg != "state.json" {
		t.Fatalf("state notification: %+v", n)
	}
	id, err := b.Submit(ctx, "rollback", []byte(`{"commit":"abc"}`))
	if err != nil {
		t.Fatal(err)
	}
	gone, err := b.Submit(ctx, "resume", []byte(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := b.Abandon(ctx, gone); err != nil || !ok {
		t.Fatalf("abandon: %v, %v", ok, err)
	}
	if _, err := b.Claim(ctx); !errors.Is(err, store.ErrFenced) {
		t.Fatalf("a replica without the lease claimed requests: %v", err)
	}
	reqs, err := a.Claim(ctx)
	if err != nil || len(reqs) != 1 || reqs[0].ID != id || reqs[0].Op != "rollback" || reqs[0].Replica != "b" {
		t.Fatalf("claim: %+v, %v", reqs, err)
	}
	if ok, _ := b.Abandon(ctx, id); ok {
		t.Fatal("abandoned a request the decider had taken")
	}
	if _, done, _ := b.Result(ctx, id); done {
		t.Fatal("done before it was completed")
	}
	if err := a.Complete(ctx, id, []byte(`{"ok":true}`)); err != nil {
		t.Fatal(err)
	}
	next(store.NoteDone)
	res, done, err := b.Result(ctx, id)
	if err != nil || !done || !bytes.Contains(res, []byte(`"ok"`)) {
		t.Fatalf("result: %s %v %v", res, done, err)
	}
	if again, err := a.Claim(ctx); err != nil || len(again) != 0 {
		t.Fatalf("claimed again: %+v %v", again, err)
	}

	if err := a.Heartbeat(ctx, []byte(`{"x":1}`)); err != nil {
		t.Fatal(err)
	}
	if err := b.Heartbeat(ctx, []byte(`{"x":2}`)); err != nil {
		t.Fatal(err)
	}
	rs, err := a.Replicas(ctx, time.Minute)
	if err != nil || len(rs) != 2 || rs[0].ID != "a" || rs[1].ID != "b" {
		t.Fatalf("replicas: %+v %v", rs, err)
	}

	// The listener comes back after the server restarts, and says so.
	srv.Stop(t)
	srv.Restart(t)
	next(store.NoteResync)
}

// TestSwapAgreesOnOneDocument: two makers of one document agree on the
// first one stored; a swap from a stale read is refused.
func TestSwapAgreesOnOneDocument(t *testing.T) {
	srv := pgtest.Start(t)
	ctx := context.Background()
	p := openPostgres(t, srv.URL())
	got, ok, err := p.Swap(ctx, "ca/m/ca.key", nil, []byte("one"), store.Secret)
	if err != nil || !ok || string(got) != "one" {
		t.Fatalf("first swap: %q %v %v", got, ok, err)
	}
	got, ok, err = p.Swap(ctx, "ca/m/ca.key", nil, []byte("two"), store.Secret)
	if err != nil || ok || string(got) != "one" {
		t.Fatalf("second maker: %q %v %v, want the first one's", got, ok, err)
	}
	got, ok, err = p.Swap(ctx, "ca/m/ca.key", []byte("one"), []byte("three"), store.Secret)
	if err != nil || !ok || string(got) != "three" {
		t.Fatalf("renewal: %q %v %v", got, ok, err)
	}
	if got, ok, _ = p.Swap(ctx, "ca/m/ca.key", []byte("one"), []byte("four"), store.Secret); ok || string(got) != "three" {
		t.Fatalf("stale swap: %q %v", got, ok)
	}
}
