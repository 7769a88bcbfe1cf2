package token

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gitmesh/gitmesh/internal/logtest"
	"github.com/gitmesh/gitmesh/store"
	"github.com/gitmesh/gitmesh/store/pgtest"
)

// pg is a throwaway PostgreSQL server with the schema, and the key that
// seals its secrets.
type pg struct {
	srv *pgtest.Server
	key []byte
}

func startPG(t *testing.T) *pg {
	t.Helper()
	p := &pg{srv: pgtest.Start(t), key: bytes.Repeat([]byte{9}, store.KeySize)}
	p.open(t) // migrates
	return p
}

// open is one more handle on the database, as another replica has.
func (p *pg) open(t *testing.T) *store.Postgres {
	t.Helper()
	st, err := store.OpenPostgres(context.Background(), store.PostgresOptions{URL: p.srv.URL(), Key: p.key, Migrate: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// row is a document as PostgreSQL holds it.
func (p *pg) row(t *testing.T, key string) (data []byte, encrypted bool) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, p.srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if err := conn.QueryRow(ctx, `SELECT data, encrypted FROM gitmesh_documents WHERE key = $1`, key).Scan(&data, &encrypted); err != nil {
		t.Fatalf("document %s: %v", key, err)
	}
	return data, encrypted
}

// countingStore counts the reads of a store (a Locker still, through the
// embedded *store.Postgres).
type countingStore struct {
	*store.Postgres
	gets atomic.Int64
}

func (c *countingStore) Get(ctx context.Context, key string) ([]byte, error) {
	c.gets.Add(1)
	return c.Postgres.Get(ctx, key)
}

func claims(name, id string, now time.Time, ttl time.Duration) Claims {
	return Claims{Mesh: "demo", Name: name, IssuedAt: now.Unix(), Expires: now.Add(ttl).Unix(), ID: id}
}

// eventually polls cond for up to d.
func eventually(d time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(d); ; time.Sleep(20 * time.Millisecond) {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}

// TestKeeperOnPostgres: the keyring, issued list and revocation list live
// in the store, the keyring sealed; a verifier on the store takes a key
// rotated in at once (unknown kid) and a revocation within seconds, and
// reads the store about once a second, not once per call.
func TestKeeperOnPostgres(t *testing.T) {
	db := startPG(t)
	ctx := context.Background()
	k := NewKeeper(db.open(t))
	cs := &countingStore{Postgres: db.open(t)}
	v, err := NewKeeper(cs).NewVerifier(ctx, VerifierOptions{})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tok, key, err := k.IssueRecorded(ctx, claims("web-1", "t1", now, time.Hour), now)
	if err != nil {
		t.Fatal(err)
	}
	if cur, err := k.LoadOrCreateKey(ctx); err != nil || cur.ID != key.ID || !cur.LastExpiry.Equal(time.Unix(now.Add(time.Hour).Unix(), 0)) {
		t.Fatalf("current key %v, %v; want %s with the token's expiry", cur, err, key.ID)
	}
	if c, err := v.Verify(tok); err != nil || c.Node() != "demo.web-1" {
		t.Fatalf("verify: %+v, %v", c, err)
	}

	// The keyring is sealed in PostgreSQL: no key material in the clear.
	sealed, encrypted := db.row(t, KeyFile)
	if !encrypted || bytes.Contains(sealed, []byte(`"d"`)) || bytes.Contains(sealed, []byte(key.ID)) {
		t.Errorf("%s in PostgreSQL: encrypted %v, %q", KeyFile, encrypted, sealed[:min(len(sealed), 60)])
	}
	ledger, encrypted := db.row(t, IssuedFile)
	if encrypted || !bytes.Contains(ledger, []byte(`"jti":"t1","node":"demo.web-1"`)) {
		t.Errorf("%s in PostgreSQL: encrypted %v, %s", IssuedFile, encrypted, ledger)
	}
	if rec, ok, err := k.LookupIssued(ctx, "t1"); err != nil || !ok || rec.KeyID != key.ID {
		t.Errorf("LookupIssued: %+v, %v, %v", rec, ok, err)
	}

	// Calls in a burst do not read the store each.
	before := cs.gets.Load()
	for range 500 {
		if _, err := v.Verify(tok); err != nil {
			t.Fatal(err)
		}
	}
	if n := cs.gets.Load() - before; n > 4 {
		t.Errorf("500 verifications read the store %d times", n)
	}

	// A key rotated in through another handle: its token verifies at once.
	r, err := k.RotateKey(ctx, now, RotateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tok2, key2, err := k.IssueRecorded(ctx, claims("web-2", "t2", now, time.Hour), now)
	if err != nil || key2.ID != r.New.ID {
		t.Fatalf("issue after rotation: %v, %v", key2, err)
	}
	if _, err := v.Verify(tok2); err != nil {
		t.Errorf("token of the rotated-in key: %v", err)
	}
	if _, err := v.Verify(tok); err != nil {
		t.Errorf("token of the kept key: %v", err)
	}

	// A revocation through another handle is refused within seconds.
	if err := k.Revoke(ctx, "t1"); err != nil {
		t.Fatal(err)
	}
	if err := k.Revoke(ctx, "t1"); err != nil {
		t.Fatalf("second revocation: %v", err)
	}
	if revoked, enc := db.row(t, RevokedFile); enc || string(revoked) != "t1\n" {
		t.Errorf("%s in PostgreSQL: %q, encrypted %v", RevokedFile, revoked, enc)
	}
	if !eventually(3*time.Second, func() bool { _, err := v.Verify(tok); return errors.Is(err, ErrRevoked) }) {
		t.Error("a revoked token is still accepted after 3 s")
	}
	if _, err := v.Verify(tok2); err != nil {
		t.Errorf("another token after the revocation: %v", err)
	}

	// A keyring that does not parse lets no token in, as in a state
	// directory.
	if err := k.st.Put(ctx, KeyFile, []byte("{"), store.Secret); err != nil {
		t.Fatal(err)
	}
	if !eventually(3*time.Second, func() bool { _, err := v.Verify(tok2); return err != nil && strings.Contains(err.Error(), KeyFile) }) {
		t.Error("a corrupt keyring in the store still lets tokens in")
	}
}

// TestVerifiersOfTwoReplicasRefuseARevocation: two verifiers on one store,
// each through its own handle, both refuse a token revoked through a third
// (gitmesh token revoke on another host).
func TestVerifiersOfTwoReplicasRefuseARevocation(t *testing.T) {
	db := startPG(t)
	ctx := context.Background()
	v1, err := NewKeeper(db.open(t)).NewVerifier(ctx, VerifierOptions{})
	if err != nil {
		t.Fatal(err)
	}
	v2, err := NewKeeper(db.open(t)).NewVerifier(ctx, VerifierOptions{})
	if err != nil {
		t.Fatal(err)
	}
	admin := NewKeeper(db.open(t))
	now := time.Now()
	tok, _, err := admin.IssueRecorded(ctx, claims("web-1", "gone", now, time.Hour), now)
	if err != nil {
		t.Fatal(err)
	}
	other, _, err := admin.IssueRecorded(ctx, claims("web-2", "kept", now, time.Hour), now)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range []*Verifier{v1, v2} {
		if _, err := v.Verify(tok); err != nil {
			t.Fatalf("replica %d before the revocation: %v", i+1, err)
		}
	}
	if err := admin.Revoke(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for i, v := range []*Verifier{v1, v2} {
		if !eventually(3*time.Second, func() bool { _, err := v.Verify(tok); return errors.Is(err, ErrRevoked) }) {
			t.Errorf("replica %d still accepts the revoked token %v after the revocation", i+1, time.Since(start))
		}
		if _, err := v.Verify(other); err != nil {
			t.Errorf("replica %d refuses another token: %v", i+1, err)
		}
	}
}

// TestKeeperIssueConcurrentlyOnPostgres: replicas and commands issuing at
// once through several handles keep every record and the latest expiry.
func TestKeeperIssueConcurrentlyOnPostgres(t *testing.T) {
	db := startPG(t)
	ctx := context.Background()
	keepers := []*Keeper{NewKeeper(db.open(t)), NewKeeper(db.open(t))}
	now := time.Unix(1_800_000_000, 0).UTC()
	var wg sync.WaitGroup
	for i := range 12 {
		wg.Go(func() {
			c := claims("web", "t"+string(rune('a'+i)), now, time.Duration(i+1)*time.Hour)
			if _, _, err := keepers[i%2].IssueRecorded(ctx, c, now); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	key, err := keepers[0].LoadOrCreateKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := now.Add(12 * time.Hour); !key.LastExpiry.Equal(want) {
		t.Errorf("LastExpiry %v, want %v", key.LastExpiry, want)
	}
	issued, err := keepers[1].issued(ctx)
	if err != nil || len(issued) != 12 {
		t.Errorf("%d records, %v; want 12", len(issued), err)
	}
}

// TestVerifierFailsStatic: with PostgreSQL stopped, a verifier goes on
// checking tokens against what it read last, and says so once; with it
// back, it sees revocations again.
func TestVerifierFailsStatic(t *testing.T) {
	db := startPG(t)
	ctx := context.Background()
	logs := &logtest.Buffer{}
	v, err := NewKeeper(db.open(t)).NewVerifier(ctx, VerifierOptions{Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	v.mu.Lock()
	v.every = 100 * time.Millisecond
	v.mu.Unlock()
	k := NewKeeper(db.open(t))
	now := time.Now()
	good, _, err := k.IssueRecorded(ctx, claims("web-1", "good", now, time.Hour), now)
	if err != nil {
		t.Fatal(err)
	}
	bad, _, err := k.IssueRecorded(ctx, claims("web-2", "bad", now, time.Hour), now)
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Revoke(ctx, "bad"); err != nil {
		t.Fatal(err)
	}
	if !eventually(3*time.Second, func() bool { _, err := v.Verify(bad); return errors.Is(err, ErrRevoked) }) {
		t.Fatal("revocation not seen")
	}

	db.srv.Stop(t)
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if _, err := v.Verify(good); err != nil {
			t.Fatalf("with the store stopped, a good token: %v", err)
		}
		if _, err := v.Verify(bad); !errors.Is(err, ErrRevoked) {
			t.Fatalf("with the store stopped, a revoked token: %v", err)
		}
	}
	if n := strings.Count(logs.String(), "cannot read the token keyring"); n != 1 {
		t.Errorf("the unreachable store was logged %d times, want once:\n%s", n, logs)
	}
	if strings.Contains(logs.String(), good) {
		t.Error("a token was logged")
	}

	db.srv.Restart(t)
	if err := k.Revoke(ctx, "good"); err != nil {
		t.Fatal(err)
	}
	if !eventually(5*time.Second, func() bool { _, err := v.Verify(good); return errors.Is(err, ErrRevoked) }) {
		t.Error("with the store back, a new revocation is not seen")
	}
	if !strings.Contains(logs.String(), "read from the store again") {
		t.Errorf("the store's return is not logged:\n%s", logs)
	}
}

// TestKeeperImportsAStateDirectory: a state directory's keyring, issued
// and revoked lists go into the store; its tokens verify there, its
// revocations hold; a store with another keyring is left alone.
func TestKeeperImportsAStateDirectory(t *testing.T) {
	db := startPG(t)
	ctx := context.Background()
	dir := t.TempDir()
	now := time.Now()
	tok, key := issueAt(t, dir, "web-1", now, time.Hour)
	gone, _ := issueAt(t, dir, "web-2", now, time.Hour)
	c, _ := Parse(gone)
	if err := Revoke(dir, c.ID); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, dir)

	k := NewKeeper(db.open(t))
	wrote, err := k.Import(ctx, dir, false)
	if err != nil || strings.Join(wrote, " ") != RevokedFile+" "+IssuedFile+" "+KeyFile {
		t.Fatalf("import: %v, %v", wrote, err)
	}
	if after := snapshot(t, dir); after != before {
		t.Error("import changed the state directory")
	}
	v, err := k.NewVerifier(ctx, VerifierOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(tok); err != nil {
		t.Errorf("a token of the imported directory: %v", err)
	}
	if _, err := v.Verify(gone); !errors.Is(err, ErrRevoked) {
		t.Errorf("a token revoked in the imported directory: %v", err)
	}
	if cur, err := k.LoadOrCreateKey(ctx); err != nil || cur.ID != key.ID {
		t.Errorf("signing key after import: %v, %v; want %s", cur, err, key.ID)
	}
	// The same directory again: nothing to write.
	if wrote, err := k.Import(ctx, dir, false); err != nil || len(wrote) != 0 {
		t.Errorf("second import: %v, %v", wrote, err)
	}
	// Another directory's keyring is refused unless replaced; its
	// revocations are added to the store's either way.
	dir2 := t.TempDir()
	issueAt(t, dir2, "web-3", now, time.Hour)
	if err := Revoke(dir2, "other"); err != nil {
		t.Fatal(err)
	}
	if _, err := k.Import(ctx, dir2, false); !errors.Is(err, ErrKeyringExists) {
		t.Errorf("import of another keyring: %v", err)
	}
	if _, err := k.Import(ctx, dir2, true); err != nil {
		t.Fatal(err)
	}
	revoked, _ := k.readRevoked(ctx)
	if string(revoked) != c.ID+"\nother\n" {
		t.Errorf("revocations after two imports: %q", revoked)
	}

	// A directory of an earlier version: its key file becomes the keyring.
	dir3 := t.TempDir()
	writeLegacyKey(t, dir3)
	k3 := NewKeeper(startPG(t).open(t))
	if _, err := k3.Import(ctx, dir3, false); err != nil {
		t.Fatal(err)
	}
	v3, err := k3.NewVerifier(ctx, VerifierOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v3.Verify(legacyToken); err != nil {
		t.Errorf("a token of the earlier version after import: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir3, KeyFile)); err == nil {
		t.Error("import wrote a keyring into the directory it read")
	}
}

// snapshot is every file of dir with its content.
func snapshot(t *testing.T, dir string) string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, e := range entries {
		data, _ := os.ReadFile(filepath.Join(dir, e.Name()))
		b.WriteString(e.Name() + "\n" + string(data) + "\n")
	}
	return b.String()
}
