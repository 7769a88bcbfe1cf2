package reconcile

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/gitmesh/gitmesh/reconcile/gittest"
	"github.com/gitmesh/gitmesh/reconcile/source"
)

// signedRig is a rig that verifies commits against alice's key and fetches
// from a bare repository served by git daemon, which its work repository
// pushes to.
type signedRig struct {
	*rig
	alice, mallory *gittest.Signer
	bare           string
}

func newSignedRig(t *testing.T) *signedRig {
	t.Helper()
	r := &signedRig{rig: newRig(t, "", ""), bare: gittest.Bare(t),
		alice: gittest.NewSigner(t, "Alice", "alice@example.com"), mallory: gittest.NewSigner(t, "Mallory", "mallory@example.com")}
	v, err := source.NewVerifier(gittest.Keyring(t, r.alice))
	if err != nil {
		t.Fatal(err)
	}
	r.verifier = v
	r.url = gittest.Daemon(t, filepath.Dir(r.bare)) + "repo.git"
	r.metrics = NewMetrics(prometheus.NewRegistry())
	return r
}

// push pushes the work repository to the served one, makes the daemon sync
// (once it runs) and returns hash.
func (r *signedRig) push(hash string) string {
	r.t.Helper()
	gittest.Push(r.t, r.work, r.bare)
	if r.d != nil {
		r.d.Trigger("test")
	}
	return hash
}

func TestVerifyCommitsPublishesOnlySignedCommits(t *testing.T) {
	t.Parallel()
	r := newSignedRig(t)
	first := r.push(r.alice.Commit(t, r.work, "first", policy(8080)))
	r.start()
	st := r.waitHead(first, VerdictPublished)
	wantSigner := "Alice <alice@example.com> (key " + r.alice.KeyID() + ")"
	if st.Published == nil || st.Published.Signer != wantSigner {
		t.Errorf("published %+v, want signer %q", st.Published, wantSigner)
	}
	if h := r.d.History(); h[0].Commit.Signer != wantSigner {
		t.Errorf("record %+v, want signer %q", h[0].Commit, wantSigner)
	}

	for _, tc := range []struct {
		name, reason, lastError string
		// commit makes the case's commit: each is pushed once the one
		// before has its verdict, or the daemon may never see it as head.
		commit func() string
	}{
		{"unsigned", source.ReasonUnsigned, "is not signed", func() string { return gittest.Commit(t, r.work, "unsigned", policy(8081)) }},
		{"unknown key", source.ReasonUnknownKey, "is signed by unknown key " + r.mallory.KeyID(),
			func() string { return r.mallory.Commit(t, r.work, "by mallory", policy(8082)) }},
	} {
		tc := struct{ name, hash, reason, lastError string }{tc.name, r.push(tc.commit()), tc.reason, tc.lastError}
		st := r.waitHead(tc.hash, VerdictUnverified)
		if !strings.Contains(st.LastError, tc.lastError) || string(st.Published.Hash) != first {
			t.Errorf("%s: status %+v, want %q and %s still published", tc.name, st, tc.lastError, first[:12])
		}
		if got := r.target.served(); got != first {
			t.Errorf("%s: served %s, want %s", tc.name, got[:12], first[:12])
		}
		rec := r.d.History()[0]
		if string(rec.Commit.Hash) != tc.hash || rec.Verdict != VerdictUnverified || !strings.Contains(rec.Error, tc.lastError) {
			t.Errorf("%s: record %+v", tc.name, rec)
		}
		if n := testutil.ToFloat64(r.metrics.unverifieds.WithLabelValues(tc.reason)); n != 1 {
			t.Errorf("%s: gitmesh_unverified_commits_total{reason=%q} = %v, want 1", tc.name, tc.reason, n)
		}
	}
	if r.target.applies() != 1 {
		t.Errorf("%d applies, want only the first commit's", r.target.applies())
	}

	signed := r.push(r.alice.Commit(t, r.work, "signed again", policy(8083)))
	r.waitHead(signed, VerdictPublished)
	if got := r.target.served(); got != signed {
		t.Errorf("served %s, want the signed head %s", got[:12], signed[:12])
	}
}

func TestVerifyCommitsRefusesRollbackAndResumeSkips(t *testing.T) {
	t.Parallel()
	r := newSignedRig(t)
	good := r.alice.Commit(t, r.work, "good", policy(8080))
	unsigned := gittest.Commit(t, r.work, "unsigned", policy(8081))
	head := r.push(r.alice.Commit(t, r.work, "head", policy(8082)))
	r.start()
	r.waitHead(head, VerdictPublished)
	applies, history := r.target.applies(), len(r.d.History())

	_, err := r.d.Rollback(context.Background(), unsigned, "bob", "")
	var uv *UnverifiedCommitError
	if !errors.As(err, &uv) || string(uv.Commit.Hash) != unsigned || !errors.Is(err, source.ErrUnsigned) || !isRefusal(err) ||
		!strings.Contains(err.Error(), "is not signed") {
		t.Fatalf("rollback to an unsigned commit: %v", err)
	}
	if r.target.applies() != applies || len(r.d.History()) != history || r.d.Status().Pinned {
		t.Error("a refused rollback changed what is served, the history or the pin")
	}

	rec, err := r.d.Rollback(context.Background(), good, "bob", "")
	if err != nil || rec.Commit.Signer == "" || r.target.served() != good {
		t.Fatalf("rollback to a signed commit: %v, %+v", err, rec.Commit)
	}
	// While pinned: a signed commit is held, an unsigned head is unverified.
	held := r.push(r.alice.Commit(t, r.work, "held", policy(8083)))
	r.waitHead(held, VerdictHeld)
	newest := r.push(gittest.Commit(t, r.work, "unsigned head", policy(8084)))
	r.waitHead(newest, VerdictUnverified)

	rec, err = r.d.Resume(context.Background(), "bob", "")
	if err != nil || string(rec.Commit.Hash) != held || r.target.served() != held {
		t.Errorf("resume published %s (%v), want the newest verified commit %s", rec.Commit.Short(), err, held[:12])
	}
	if st := r.d.Status(); st.Pinned || st.HeadVerdict != VerdictUnverified {
		t.Errorf("status after resume: %+v", st)
	}
}
