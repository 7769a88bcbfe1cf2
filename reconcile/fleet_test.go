package reconcile

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"

	"github.com/gitmesh/gitmesh/store"
	"github.com/gitmesh/gitmesh/store/pgtest"
)

// TestRequestRunsOnce: an operation another replica handed over, which a
// decider already ran (its record names the request) but did not mark
// done, is answered with that record when a decider takes it again, not
// run twice.
func TestRequestRunsOnce(t *testing.T) {
	srv := pgtest.Start(t)
	pg, err := store.OpenPostgres(context.Background(), store.PostgresOptions{URL: srv.URL(), Key: bytes.Repeat([]byte{1}, store.KeySize), Migrate: true})
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()
	r := newRig(t, "", "")
	r.fleet = store.NewFleet(pg, "a")
	c1 := r.commit("first", policy(8080))
	r.start()
	waitFor(t, "the lease", r.d.deciding)
	r.waitHead(c1, VerdictPublished)
	c2 := r.commit("second", policy(8081))
	r.waitHead(c2, VerdictPublished)

	args, _ := json.Marshal(opRequest{Rev: c1, By: "ada", Reason: "once"})
	req := store.Request{ID: 41, Replica: "b", Op: OpRollback, Args: args}
	first, err := r.d.runRequest(context.Background(), req)
	if err != nil || first.Request != 41 || string(first.Commit.Hash) != c1 {
		t.Fatalf("first run: %+v, %v", first, err)
	}
	applies := r.target.applies()
	again, err := r.d.runRequest(context.Background(), req)
	if err != nil || again.ID == 0 || again.Request != 41 || again.Commit.Hash != first.Commit.Hash {
		t.Fatalf("second run: %+v, %v; want the first run's record", again, err)
	}
	if n := r.target.applies(); n != applies {
		t.Errorf("the second run published again (%d applies, then %d)", applies, n)
	}
	rollbacks := 0
	for _, rec := range r.d.History() {
		if rec.Trigger == OpRollback {
			rollbacks++
		}
	}
	if rollbacks != 1 {
		t.Errorf("%d rollback records, want 1", rollbacks)
	}
}
