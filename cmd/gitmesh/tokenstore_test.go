package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gitmesh/gitmesh/api"
	"github.com/gitmesh/gitmesh/internal/logtest"
	"github.com/gitmesh/gitmesh/xds/token"
)

// TestTokenCommandsOnPostgresStore: gitmesh token issue, rotate-key and
// revoke with --store-file and --store-key-file keep the keyring and the
// lists in PostgreSQL, not in the state directory; a verifier on the store,
// as serve --xds-auth token builds one, takes the tokens issued, a key
// rotated in, and refuses a revoked token within seconds.
func TestTokenCommandsOnPostgresStore(t *testing.T) {
	pg := newPGStore(t)
	state := filepath.Join(t.TempDir(), "state")
	tok, kid := issueToken(t, state, "default/web-01", pg.flags()...)
	for _, name := range []string{token.KeyFile, token.IssuedFile, token.LockFile} {
		if _, err := os.Stat(filepath.Join(state, name)); err == nil {
			t.Errorf("with a PostgreSQL store, token issue wrote %s into the state directory", name)
		}
	}
	sealed, encrypted, ok := pg.row(t, token.KeyFile)
	if !ok || !encrypted || bytes.Contains(sealed, []byte(`"d"`)) || bytes.Contains(sealed, []byte(kid)) {
		t.Fatalf("%s in PostgreSQL: present %v, encrypted %v", token.KeyFile, ok, encrypted)
	}

	sec, err := serveSecurity{xdsAuth: xdsAuthToken}.build(t.TempDir(), pg.open(t), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	v, err := token.NewKeeper(pg.open(t)).NewVerifier(context.Background(), token.VerifierOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if c, err := v.Verify(tok); err != nil || c.Node() != "default.web-01" {
		t.Fatalf("a verifier on the store: %+v, %v", c, err)
	}
	if sec.auth == nil {
		t.Fatal("--xds-auth token built no authenticator")
	}

	out, newKID := rotateKey(t, state, pg.flags()...)
	if newKID == kid || !strings.Contains(out, "kept key "+kid) {
		t.Errorf("rotate-key on the store: %s", out)
	}
	tok2, kid2 := issueToken(t, state, "default/web-02", pg.flags()...)
	if kid2 != newKID {
		t.Errorf("token after rotate-key signed with %s, want %s", kid2, newKID)
	}
	if _, err := v.Verify(tok2); err != nil {
		t.Errorf("token of the key rotated in: %v", err)
	}

	tokenFile := filepath.Join(t.TempDir(), "web-01.token")
	if err := os.WriteFile(tokenFile, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := gitmesh(t, append([]string{"token", "revoke", "--token-file", tokenFile}, pg.flags()...)...)
	if code != exitOK || stderr != "" || !strings.Contains(stdout, "(node default.web-01, expires ") {
		t.Fatalf("token revoke on the store: exit %d, %q, %q", code, stdout, stderr)
	}
	start := time.Now()
	for {
		_, err := v.Verify(tok)
		if errors.Is(err, token.ErrRevoked) {
			break
		}
		if time.Since(start) > 3*time.Second {
			t.Fatalf("the revoked token is still accepted after %v: %v", time.Since(start), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := v.Verify(tok2); err != nil {
		t.Errorf("another token after the revocation: %v", err)
	}
	code, _, stderr = gitmesh(t, append([]string{"token", "revoke", "--jti", "feedface"}, pg.flags()...)...)
	if code != exitOK || !strings.Contains(stderr, "has no record of issuing token id feedface") ||
		!strings.Contains(stderr, "remove its line from the store's document "+token.RevokedFile) {
		t.Errorf("revoke of an unknown id on the store: exit %d\n%s", code, stderr)
	}
	if list, encrypted, _ := pg.row(t, token.RevokedFile); encrypted || !strings.HasSuffix(string(list), "\nfeedface\n") {
		t.Errorf("%s in PostgreSQL: %q, encrypted %v", token.RevokedFile, list, encrypted)
	}

	if code, _, stderr := gitmesh(t, "token", "issue", "--dataplane", "default/web-01", "--state-dir", state, "--store-key-file", pg.keyFile); code != exitUsage ||
		!strings.Contains(stderr, "need --store or --store-file") {
		t.Errorf("--store-key-file without a store: exit %d\n%s", code, stderr)
	}
}

// TestStoreSharesAdminTokenDigest: on a PostgreSQL store, the first
// replica without an admin token given makes one and puts its digest in
// the store; the others accept that digest and make none; a token given
// by file is used as it is, with a warning when it differs. Replicas
// starting at once agree. The token is never stored nor logged.
func TestStoreSharesAdminTokenDigest(t *testing.T) {
	pg := newPGStore(t)
	ctx := context.Background()
	logs := &logtest.Buffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	dir1, dir2, dir3 := t.TempDir(), t.TempDir(), t.TempDir()

	a1, err := adminToken(ctx, serveOptions{stateDir: dir1}, pg.open(t), log)
	if err != nil {
		t.Fatal(err)
	}
	path1 := filepath.Join(dir1, adminTokenFileName)
	tok1, err := os.ReadFile(path1)
	if err != nil || a1.file != path1 || a1.given {
		t.Fatalf("first replica: %+v, %v", a1, err)
	}
	if fi, _ := os.Stat(path1); fi.Mode().Perm() != 0o600 {
		t.Errorf("%s: mode %v", path1, fi.Mode().Perm())
	}
	tok1 = bytes.TrimSpace(tok1)
	if a1.digest != api.TokenDigest(tok1) {
		t.Error("the first replica does not accept its own token")
	}
	doc, encrypted, ok := pg.row(t, api.AdminTokenDigestKey)
	if !ok || encrypted || strings.TrimSpace(string(doc)) != fmt.Sprintf("%x", api.TokenDigest(tok1)) || bytes.Contains(doc, tok1) {
		t.Fatalf("%s in PostgreSQL: %q, encrypted %v", api.AdminTokenDigestKey, doc, encrypted)
	}

	a2, err := adminToken(ctx, serveOptions{stateDir: dir2}, pg.open(t), log)
	if err != nil || a2.digest != a1.digest || a2.file != "" {
		t.Fatalf("second replica: %+v, %v; want the first one's digest and no file", a2, err)
	}
	if _, err := os.Stat(filepath.Join(dir2, adminTokenFileName)); err == nil {
		t.Error("the second replica made a token of its own")
	}
	// Restarting the first replica keeps its file and the shared digest.
	if again, err := adminToken(ctx, serveOptions{stateDir: dir1}, pg.open(t), log); err != nil || again.digest != a1.digest || again.file != path1 {
		t.Errorf("first replica again: %+v, %v", again, err)
	}

	// A replica with a token file of its own (made before the store was
	// shared): the store's token wins, and it says so.
	if err := os.WriteFile(filepath.Join(dir3, adminTokenFileName), []byte("stale-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a3, err := adminToken(ctx, serveOptions{stateDir: dir3}, pg.open(t), log)
	if err != nil || a3.digest != a1.digest || a3.file != "" || !strings.Contains(logs.String(), "admin token file is not the token the replicas of the store accept") {
		t.Errorf("replica with a stale token file: %+v, %v\n%s", a3, err, logs)
	}

	// A token given by file: its digest, and a warning that replicas
	// disagree.
	a4, err := adminToken(ctx, serveOptions{stateDir: dir2, adminTokenFile: writeSecret(t, "given-admin-token")}, pg.open(t), log)
	if err != nil || !a4.given || a4.digest != api.TokenDigest([]byte("given-admin-token")) ||
		!strings.Contains(logs.String(), "replicas of this store do not all accept the same admin token") {
		t.Errorf("token given by file: %+v, %v\n%s", a4, err, logs)
	}
	if got, _, _ := pg.row(t, api.AdminTokenDigestKey); !bytes.Equal(got, doc) {
		t.Error("a token given by file replaced the shared digest")
	}
	if l := logs.String(); strings.Contains(l, string(tok1)) || strings.Contains(l, "given-admin-token") || strings.Contains(l, "stale-token") {
		t.Errorf("a token reached the log:\n%s", l)
	}

	// Replicas starting together on a fresh store: one token for all.
	fresh := newPGStore(t)
	var wg sync.WaitGroup
	got := make([]adminAuth, 4)
	for i := range got {
		st := fresh.open(t)
		dir := t.TempDir()
		wg.Go(func() {
			a, err := adminToken(ctx, serveOptions{stateDir: dir}, st, log)
			if err != nil {
				t.Error(err)
			}
			got[i] = a
		})
	}
	wg.Wait()
	files := 0
	for _, a := range got {
		if a.digest != got[0].digest {
			t.Errorf("replicas starting together accept different tokens: %x, %x", a.digest, got[0].digest)
		}
		if a.file != "" {
			files++
		}
	}
	if files != 1 {
		t.Errorf("%d replicas made an admin token, want one", files)
	}
}
