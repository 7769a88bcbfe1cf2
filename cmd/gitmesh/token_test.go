package main

import (
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gitmesh/gitmesh/reconcile/gittest"
	"github.com/gitmesh/gitmesh/xds/servertls"
	"github.com/gitmesh/gitmesh/xds/token"
)

// issueToken runs gitmesh token issue and returns the token and its kid.
func issueToken(t *testing.T, state, dataplane string, args ...string) (tok, kid string) {
	t.Helper()
	code, out, stderr := gitmesh(t, append([]string{"token", "issue", "--dataplane", dataplane, "--state-dir", state}, args...)...)
	if code != exitOK {
		t.Fatalf("token issue: exit %d: %s", code, stderr)
	}
	tok = strings.TrimSpace(out)
	kid, err := token.KeyID(tok)
	if err != nil || kid == "" || !strings.Contains(stderr, "signed with key "+kid) {
		t.Fatalf("token issue: kid %q, %v; stderr %s", kid, err, stderr)
	}
	return tok, kid
}

// rotateKey runs gitmesh token rotate-key and returns its stderr and the
// new kid it names.
func rotateKey(t *testing.T, state string, args ...string) (stderr, kid string) {
	t.Helper()
	code, out, stderr := gitmesh(t, append([]string{"token", "rotate-key", "--state-dir", state}, args...)...)
	if code != exitOK || out != "" {
		t.Fatalf("rotate-key: exit %d, stdout %q: %s", code, out, stderr)
	}
	m := regexp.MustCompile(`new signing key (\S+):`).FindStringSubmatch(stderr)
	if m == nil {
		t.Fatalf("rotate-key names no new kid: %s", stderr)
	}
	return stderr, m[1]
}

// keyMaterial is every private key of the keyring, as the JWK "d" member.
func keyMaterial(t *testing.T, state string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(state, token.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Keys []struct{ JWK struct{ D string } }
	}
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, k := range f.Keys {
		if k.JWK.D == "" {
			t.Fatalf("a key without d in %s", b)
		}
		out = append(out, k.JWK.D)
	}
	return out
}

// TestTokenRotateKeyWhileServing: gitmesh serve takes the tokens of a key
// rotated in while it runs, and goes on taking those of the old key.
func TestTokenRotateKeyWhileServing(t *testing.T) {
	work := gittest.Init(t)
	gittest.Commit(t, work, "Policies", policyFiles(t))
	state := t.TempDir()
	s := startServe(t, serveOptions{repo: work, path: "policies", stateDir: state,
		security: serveSecurity{xdsAuth: xdsAuthToken, tls: tlsAuto}})
	caFile := filepath.Join(state, servertls.CAFile)
	certs := func(tok string) (int, string) {
		tokenFile := filepath.Join(t.TempDir(), "web-01.token")
		if err := os.WriteFile(tokenFile, []byte(tok+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		code, _, stderr := gitmesh(t, "certs", "--dataplane", "default/web-01", "--xds-address", s.app.xdsLis.Addr().String(),
			"--dir", filepath.Join(t.TempDir(), "certs"), "--once", "--timeout", "2s", "--token-file", tokenFile, "--ca-file", caFile)
		return code, stderr
	}
	oldTok, oldKID := issueToken(t, state, "default/web-01")
	for deadline := time.Now().Add(certsWait); ; {
		code, stderr := certs(oldTok)
		if code == exitOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("certs before the rotation: exit %d: %s", code, stderr)
		}
		time.Sleep(100 * time.Millisecond)
	}

	out, newKID := rotateKey(t, state)
	if newKID == oldKID || !strings.Contains(out, "kept key "+oldKID) {
		t.Errorf("rotate-key: %s", out)
	}
	newTok, kid := issueToken(t, state, "default/web-01")
	if kid != newKID {
		t.Errorf("token after rotate-key signed with %s, want %s", kid, newKID)
	}
	if code, stderr := certs(newTok); code != exitOK {
		t.Errorf("certs with a token of the new key: exit %d: %s", code, stderr)
	}
	if code, stderr := certs(oldTok); code != exitOK {
		t.Errorf("certs with a token of the old key: exit %d: %s", code, stderr)
	}
	if logs := s.logs.String(); strings.Contains(logs, newTok) || strings.Contains(logs, oldTok) {
		t.Error("the daemon logged a token")
	}
}

func TestTokenRotateKeyCommand(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state")
	tok1, kid1 := issueToken(t, state, "default/web-01", "--ttl", "1h")
	out, kid2 := rotateKey(t, state)
	if !regexp.MustCompile(`kept key ` + regexp.QuoteMeta(kid1) + `: its tokens verify until they expire, the last at \S+Z`).MatchString(out) {
		t.Errorf("first rotation: %s", out)
	}
	// kid2 signs nothing before the next rotation: it goes at once; kid1
	// stays until its token expires.
	out2, kid3 := rotateKey(t, state)
	if !strings.Contains(out2, "dropped key "+kid2+": no token was issued with it") || !strings.Contains(out2, "kept key "+kid1) {
		t.Errorf("second rotation: %s", out2)
	}
	_, kid := issueToken(t, state, "default/web-02")
	if kid != kid3 {
		t.Errorf("new token's kid %s, want %s", kid, kid3)
	}
	v, err := token.NewVerifier(state, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(tok1); err != nil {
		t.Errorf("token of the retired key: %v", err)
	}
	// Past the token's expiry kid1 is dropped, and its token refused by
	// the running verifier even on a clock at which it had not expired.
	if err := runTokenRotateKey(&strings.Builder{}, state, false, time.Now().Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(tok1); err == nil || !strings.Contains(err.Error(), "not in the keyring") {
		t.Errorf("token of a pruned key: %v", err)
	}

	for _, d := range keyMaterial(t, state) {
		if strings.Contains(out+out2, d) {
			t.Error("rotate-key printed key material")
		}
	}
	for _, name := range []string{token.KeyFile, token.LockFile} {
		fi, err := os.Stat(filepath.Join(state, name))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, %v", name, fi, err)
		}
	}
	if code, _, _ := gitmesh(t, "token", "rotate-key", "extra"); code != exitUsage {
		t.Errorf("rotate-key with an argument: exit %d", code)
	}
}

// TestTokenLegacyStateDir: a state directory of the previous version, its
// key file and a token without kid, works on: the key goes into the
// keyring and stays there, until --drop-legacy, for the kid-less tokens.
func TestTokenLegacyStateDir(t *testing.T) {
	state := t.TempDir()
	seed := sha256.Sum256([]byte("gitmesh legacy token test key"))
	der, err := x509.MarshalPKCS8PrivateKey(ed25519.NewKeyFromSeed(seed[:]))
	if err != nil {
		t.Fatal(err)
	}
	legacyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	if err := os.WriteFile(filepath.Join(state, token.LegacyKeyFile), legacyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	// Issued by the previous version for demo/web-1, expiring in 2100.
	const legacyToken = "eyJhbGciOiJFZERTQSIsInR5cCI6IkpXVCJ9." +
		"eyJtZXNoIjoiZGVtbyIsIm5hbWUiOiJ3ZWItMSIsImlhdCI6MTcwMDAwMDAwMCwiZXhwIjo0MTAyNDQ0ODAwLCJqdGkiOiJsZWdhY3ktMSJ9." +
		"u7iRan4NrwDLw4lSaLYdDaDx9iPnUGohf14G7hopkkK0nNbpoBLArAJFZh-sCliO0Hv6Lqe-tpgf3hbSW1ARDQ"

	_, legacyKID := issueToken(t, state, "demo/web-2")
	out, _ := rotateKey(t, state)
	if !strings.Contains(out, "kept key "+legacyKID+" (from "+token.LegacyKeyFile+")") {
		t.Errorf("rotation keeps the legacy key: %s", out)
	}
	v, err := token.NewVerifier(state, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c, err := v.Verify(legacyToken); err != nil || c.Node() != "demo.web-1" {
		t.Errorf("legacy token after rotate-key: %+v, %v", c, err)
	}
	out, _ = rotateKey(t, state, "--drop-legacy")
	if !strings.Contains(out, "key "+legacyKID+" no longer checks tokens without kid") {
		t.Errorf("--drop-legacy: %s", out)
	}
	if _, err := v.Verify(legacyToken); err == nil || !strings.Contains(err.Error(), "no kid") {
		t.Errorf("legacy token after --drop-legacy: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(state, token.LegacyKeyFile)); err != nil || string(b) != string(legacyPEM) {
		t.Errorf("%s was changed: %v", token.LegacyKeyFile, err)
	}
}

func TestTokenRevokeWarnsOfUnknownID(t *testing.T) {
	state := t.TempDir()
	tok, kid := issueToken(t, state, "default/web-01")
	c, err := token.Parse(tok)
	if err != nil {
		t.Fatal(err)
	}
	// An id issued here: no warning, the record is shown.
	code, out, stderr := gitmesh(t, "token", "revoke", "--jti", c.ID, "--state-dir", state)
	if code != exitOK || stderr != "" || !strings.Contains(out, "revoked token id "+c.ID+" (node default.web-01, expires ") {
		t.Errorf("revoke of an issued id: exit %d, %q, %q", code, out, stderr)
	}
	// An id never issued here: a warning, and it is revoked all the same.
	code, out, stderr = gitmesh(t, "token", "revoke", "--jti", "feedface", "--state-dir", state)
	if code != exitOK || !strings.Contains(out, "revoked token id feedface") ||
		!strings.Contains(stderr, "warning: "+state+" has no record of issuing token id feedface") ||
		!strings.Contains(stderr, "remove its line from "+filepath.Join(state, token.RevokedFile)) {
		t.Errorf("revoke of an unknown id: exit %d, %q, %q", code, out, stderr)
	}
	b, err := os.ReadFile(filepath.Join(state, token.RevokedFile))
	if err != nil || string(b) != c.ID+"\nfeedface\n" {
		t.Errorf("revocation list %q, %v", b, err)
	}
	// The ledger names the token's kid; every token file is 0600.
	b, err = os.ReadFile(filepath.Join(state, token.IssuedFile))
	if err != nil || !strings.Contains(string(b), `"jti":"`+c.ID+`","node":"default.web-01"`) || !strings.Contains(string(b), kid) {
		t.Errorf("%s: %s, %v", token.IssuedFile, b, err)
	}
	for _, name := range []string{token.KeyFile, token.IssuedFile, token.RevokedFile, token.LockFile} {
		fi, err := os.Stat(filepath.Join(state, name))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, %v", name, fi, err)
		}
	}
}
