package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/gitmesh/gitmesh/api"
	"github.com/gitmesh/gitmesh/reconcile"
	"github.com/gitmesh/gitmesh/reconcile/gittest"
	"github.com/gitmesh/gitmesh/store"
	"github.com/gitmesh/gitmesh/store/pgtest"
	"github.com/gitmesh/gitmesh/xds/token"
)

// pgStore is a throwaway PostgreSQL server with the files serve is given:
// the URL in a file and the encryption key.
type pgStore struct {
	srv              *pgtest.Server
	urlFile, keyFile string
}

func newPGStore(t *testing.T) *pgStore {
	t.Helper()
	srv := pgtest.Start(t)
	dir := t.TempDir()
	s := &pgStore{srv: srv, urlFile: filepath.Join(dir, "store-url"), keyFile: filepath.Join(dir, "store.key")}
	key, err := store.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.urlFile, []byte(srv.URL()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.keyFile, []byte(key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *pgStore) flags() []string {
	return []string{"--store-file", s.urlFile, "--store-key-file", s.keyFile}
}

// open opens the store as serve does, closed when the test ends.
func (s *pgStore) open(t *testing.T) store.Store {
	t.Helper()
	st, err := storeFlags{file: s.urlFile, keyFile: s.keyFile}.open(context.Background(), "", migrateAtOpen)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// row reads a document as PostgreSQL holds it, sealed or not.
func (s *pgStore) row(t *testing.T, key string) (data []byte, encrypted, ok bool) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, s.srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	err = conn.QueryRow(ctx, `SELECT data, encrypted FROM gitmesh_documents WHERE key = $1`, key).Scan(&data, &encrypted)
	if err == pgx.ErrNoRows {
		return nil, false, false
	}
	if err != nil {
		t.Fatal(err)
	}
	return data, encrypted, true
}

// TestServeOnPostgresSurvivesRestart runs a real gitmesh on a real
// PostgreSQL: a rollback's pin and the history are in the store, and a
// restart with an empty state directory (a new host) comes back pinned,
// with the history and the same mesh CA.
func TestServeOnPostgresSurvivesRestart(t *testing.T) {
	pg := newPGStore(t)
	r := newRemote(t)
	c1, c2 := r.pushTwo(t)

	dir1 := t.TempDir()
	args := append([]string{"serve", "--repo", r.url, "--path", "policies", "--interval", "200ms"}, pg.flags()...)
	p := startProcess(t, append(args, "--state-dir", dir1)...)
	waitHTTPStatus(t, p.api, func(st reconcile.Status) bool { return st.Ready && string(st.Published.Hash) == c2 })
	backend := dialAddr(t, p.xds, "default.backend-01")
	waitVersionPrefix(t, backend, c2)
	if code, stdout, stderr := cli(t, p.api, dir1, "rollback", c1, "--by", "ada", "--reason", "store test"); code != exitOK {
		t.Fatalf("rollback: exit %d\n%s%s", code, stdout, stderr)
	}
	gittest.Git(t, r.work, "rm", "-q", "policies/permissions/backend-to-redis.yaml")
	c3 := r.push(t, "Stop backend from calling redis", nil)
	waitHTTPStatus(t, p.api, func(st reconcile.Status) bool {
		return st.Head != nil && string(st.Head.Hash) == c3 && st.HeadVerdict == reconcile.VerdictHeld
	})
	if _, err := os.Stat(filepath.Join(dir1, "state.json")); err == nil {
		t.Error("with a PostgreSQL store, serve wrote state.json into the state directory")
	}
	// The mesh CA's key is in the store, sealed: not its PEM.
	sealed, encrypted, ok := pg.row(t, "ca/default/ca.key")
	if !ok || !encrypted || bytes.Contains(sealed, []byte("PRIVATE KEY")) || bytes.Contains(sealed, []byte("-----")) {
		t.Fatalf("ca/default/ca.key in PostgreSQL: present %v, encrypted %v, %q", ok, encrypted, sealed[:min(len(sealed), 40)])
	}
	caCert, _, _ := pg.row(t, "ca/default/ca.crt")
	p.kill(t)

	dir2 := t.TempDir() // another host: nothing local survives
	p2 := startProcess(t, append(args, "--state-dir", dir2)...)
	st := waitHTTPStatus(t, p2.api, func(st reconcile.Status) bool {
		return st.Ready && st.Head != nil && string(st.Head.Hash) == c3 && st.HeadVerdict == reconcile.VerdictHeld
	})
	if !st.Pinned || st.Pin == nil || string(st.Pin.Commit.Hash) != c1 || st.Pin.By != "ada" || string(st.Published.Hash) != c1 {
		t.Errorf("after a restart on PostgreSQL: %+v", st)
	}
	// The admin token is the first replica's: the second has none of its
	// own, and takes the first one's.
	if _, err := os.Stat(filepath.Join(dir2, adminTokenFileName)); err == nil {
		t.Error("the second replica made an admin token of its own")
	}
	_, stdout, _ := cli(t, p2.api, dir1, "history", "--limit", "0")
	for _, want := range []string{c1[:12], c2[:12], c3[:12], "held", "rollback by ada (store test); pinned"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("history after restart lacks %q:\n%s", want, stdout)
		}
	}
	if got := strings.Count(stdout, c3[:12]+"  "); got != 1 {
		t.Errorf("the held head is recorded %d times after the restart, want once:\n%s", got, stdout)
	}
	backend2 := dialAddr(t, p2.xds, "default.backend-01")
	waitVersionPrefix(t, backend2, c1)
	if again, _, _ := pg.row(t, "ca/default/ca.crt"); !bytes.Equal(again, caCert) {
		t.Error("the restart made a new mesh CA")
	}
	if code, stdout, stderr := cli(t, p2.api, dir1, "resume", "--by", "ada"); code != exitOK {
		t.Errorf("resume on the second replica with the first one's admin token: exit %d\n%s%s", code, stdout, stderr)
	}
}

// TestServeOnPostgresFailsStatic stops PostgreSQL under a running gitmesh:
// what is served stays served, a rollback is refused with 503 and changes
// nothing; with the store back the rollback works.
func TestServeOnPostgresFailsStatic(t *testing.T) {
	pg := newPGStore(t)
	r := newRemote(t)
	c1, c2 := r.pushTwo(t)
	dir := t.TempDir()
	p := startProcess(t, append([]string{"serve", "--repo", r.url, "--path", "policies", "--state-dir", dir, "--interval", "200ms"}, pg.flags()...)...)
	waitHTTPStatus(t, p.api, func(st reconcile.Status) bool { return st.Ready && string(st.Published.Hash) == c2 })
	backend := dialAddr(t, p.xds, "default.backend-01")
	waitVersionPrefix(t, backend, c2)

	pg.srv.Stop(t)
	token, err := os.ReadFile(filepath.Join(dir, adminTokenFileName))
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, "http://"+p.api+"/rollback", strings.NewReader(`{"commit":"`+c1+`","by":"ada"}`))
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var body struct{ Error string }
	_ = json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body.Error, "state store is unreachable") ||
		!strings.Contains(body.Error, "what is served stays served") {
		t.Errorf("rollback with PostgreSQL stopped: %d %q, want 503 saying the store is unreachable", resp.StatusCode, body.Error)
	}
	code, _, stderr := cli(t, p.api, dir, "rollback", c1)
	if code == exitOK || !strings.Contains(stderr, "state store is unreachable") {
		t.Errorf("gitmesh rollback with PostgreSQL stopped: exit %d\n%s", code, stderr)
	}
	st := waitHTTPStatus(t, p.api, func(st reconcile.Status) bool { return st.Ready })
	if st.Pinned || string(st.Published.Hash) != c2 {
		t.Errorf("a refused rollback changed what is served: %+v", st)
	}
	// A new head is not published while the store is away.
	gittest.Git(t, r.work, "rm", "-q", "policies/permissions/backend-to-redis.yaml")
	c3 := r.push(t, "Stop backend from calling redis", nil)
	waitHTTPStatus(t, p.api, func(st reconcile.Status) bool {
		return st.Head != nil && string(st.Head.Hash) == c3 && strings.Contains(st.LastError, "state store is unreachable")
	})
	if v := backend.Version("type.googleapis.com/envoy.config.listener.v3.Listener"); !strings.HasPrefix(v, c2[:12]) {
		t.Errorf("with the store away the proxy was moved to %s", v)
	}

	pg.srv.Restart(t)
	if code, stdout, stderr := cli(t, p.api, dir, "rollback", c1, "--by", "ada"); code != exitOK {
		t.Fatalf("rollback with the store back: exit %d\n%s%s", code, stdout, stderr)
	}
	waitVersionPrefix(t, backend, c1)
	_, stdout, _ := cli(t, p.api, dir, "history", "--limit", "0")
	if !strings.Contains(stdout, "rollback by ada") {
		t.Errorf("history lacks the rollback:\n%s", stdout)
	}
}

// TestStoreImportRoundTrip runs gitmesh on a state directory, imports it
// into PostgreSQL, and serves from there: same pin, history and mesh CA.
func TestStoreImportRoundTrip(t *testing.T) {
	pg := newPGStore(t)
	r := newRemote(t)
	c1, c2 := r.pushTwo(t)
	dir := t.TempDir()
	serveArgs := []string{"serve", "--repo", r.url, "--path", "policies", "--interval", "200ms"}
	p := startProcess(t, append(serveArgs, "--state-dir", dir)...)
	waitHTTPStatus(t, p.api, func(st reconcile.Status) bool { return st.Ready && string(st.Published.Hash) == c2 })
	waitVersionPrefix(t, dialAddr(t, p.xds, "default.backend-01"), c2)
	if code, stdout, stderr := cli(t, p.api, dir, "rollback", c1, "--by", "ada", "--reason", "import test"); code != exitOK {
		t.Fatalf("rollback: exit %d\n%s%s", code, stdout, stderr)
	}
	p.stop(t)
	caCert, err := os.ReadFile(filepath.Join(dir, "ca", "default", "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	// Dataplane tokens of the directory: one live, one revoked.
	live, _ := issueToken(t, dir, "default/web-01")
	revoked, _ := issueToken(t, dir, "default/backend-01")
	rc, _ := token.Parse(revoked)
	if code, _, stderr := gitmesh(t, "token", "revoke", "--jti", rc.ID, "--state-dir", dir); code != exitOK {
		t.Fatalf("token revoke: exit %d\n%s", code, stderr)
	}

	code, stdout, stderr := gitmesh(t, append([]string{"store", "import", "--state-dir", dir}, pg.flags()...)...)
	if code != exitOK || !strings.Contains(stdout, "pinned     on "+c1[:12]+" by ada") || !strings.Contains(stdout, "ca/default/ca.key") {
		t.Fatalf("store import: exit %d\n%s%s", code, stdout, stderr)
	}
	for _, want := range []string{token.KeyFile, token.IssuedFile, token.RevokedFile, api.AdminTokenDigestKey} {
		if !strings.Contains(stdout, "  "+want+"\n") {
			t.Errorf("store import does not list %s:\n%s", want, stdout)
		}
	}
	if sealed, encrypted, _ := pg.row(t, token.KeyFile); !encrypted || bytes.Contains(sealed, []byte(`"d"`)) {
		t.Error("the imported token keyring is not encrypted in PostgreSQL")
	}
	adminTok, err := os.ReadFile(filepath.Join(dir, adminTokenFileName))
	if err != nil {
		t.Fatal(err)
	}
	if digest, encrypted, _ := pg.row(t, api.AdminTokenDigestKey); encrypted || bytes.Contains(digest, bytes.TrimSpace(adminTok)) ||
		strings.TrimSpace(string(digest)) != fmt.Sprintf("%x", api.TokenDigest(bytes.TrimSpace(adminTok))) {
		t.Errorf("the admin token's digest in PostgreSQL: %q", digest)
	}
	v, err := token.NewKeeper(pg.open(t)).NewVerifier(context.Background(), token.VerifierOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(live); err != nil {
		t.Errorf("a token of the imported directory: %v", err)
	}
	if _, err := v.Verify(revoked); !errors.Is(err, token.ErrRevoked) {
		t.Errorf("a token revoked in the imported directory: %v", err)
	}
	if code, _, stderr := gitmesh(t, append([]string{"store", "import", "--state-dir", dir}, pg.flags()...)...); code != exitUsage ||
		!strings.Contains(stderr, "already holds a state") {
		t.Errorf("a second import: exit %d\n%s", code, stderr)
	}
	if code, stdout, stderr := gitmesh(t, append([]string{"store", "migrate"}, pg.flags()...)...); code != exitOK ||
		!strings.Contains(stdout, "nothing to do") {
		t.Errorf("store migrate after import: exit %d\n%s%s", code, stdout, stderr)
	}
	if sealed, encrypted, _ := pg.row(t, "ca/default/ca.key"); !encrypted || bytes.Contains(sealed, []byte("PRIVATE KEY")) {
		t.Error("the imported CA key is not encrypted in PostgreSQL")
	}

	dir2 := t.TempDir()
	p2 := startProcess(t, append(append(serveArgs, "--state-dir", dir2), pg.flags()...)...)
	st := waitHTTPStatus(t, p2.api, func(st reconcile.Status) bool { return st.Ready })
	if !st.Pinned || string(st.Pin.Commit.Hash) != c1 || st.Pin.Reason != "import test" || string(st.Published.Hash) != c1 {
		t.Errorf("serving the imported store: %+v", st)
	}
	// The imported directory's admin token is the store's.
	_, stdout, _ = cli(t, p2.api, dir, "history", "--limit", "0")
	for _, want := range []string{c1[:12], c2[:12], "rollback by ada (import test); pinned"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("history from the imported store lacks %q:\n%s", want, stdout)
		}
	}
	waitVersionPrefix(t, dialAddr(t, p2.xds, "default.backend-01"), c1)
	if got, _, _ := pg.row(t, "ca/default/ca.crt"); !bytes.Equal(got, caCert) {
		t.Error("serving the imported store made a new mesh CA")
	}
}

// TestStoreFlagsKeepCredentialsOffTheCommandLine: a password in --store is
// refused, and so is a PostgreSQL store without a key.
func TestStoreFlagsKeepCredentialsOffTheCommandLine(t *testing.T) {
	code, _, stderr := gitmesh(t, "serve", "--repo", t.TempDir(), "--state-dir", t.TempDir(),
		"--store", "postgres://gitmesh:hunter2@127.0.0.1:1/gitmesh", "--store-key-file", writeSecret(t, strings.Repeat("ab", 32)))
	if code != exitUsage || !strings.Contains(stderr, "carries a password") || strings.Contains(stderr, "hunter2") {
		t.Errorf("--store with a password: exit %d\n%s", code, stderr)
	}
	code, _, stderr = gitmesh(t, "store", "migrate", "--store", "postgres://gitmesh@127.0.0.1:1/gitmesh")
	if code != exitUsage || !strings.Contains(stderr, "--store-key-file") {
		t.Errorf("a PostgreSQL store without a key: exit %d\n%s", code, stderr)
	}
}
