package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

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
