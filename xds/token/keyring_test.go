package token

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// clock is a settable clock for Verifiers.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) set(t time.Time) { c.mu.Lock(); c.t = t; c.mu.Unlock() }

func issueAt(t *testing.T, dir, name string, now time.Time, ttl time.Duration) (string, *Key) {
	t.Helper()
	id, err := NewID()
	if err != nil {
		t.Fatal(err)
	}
	tok, key, err := IssueRecorded(dir, Claims{Mesh: "demo", Name: name, IssuedAt: now.Unix(), Expires: now.Add(ttl).Unix(), ID: id}, now)
	if err != nil {
		t.Fatal(err)
	}
	if kid, err := KeyID(tok); err != nil || kid != key.ID {
		t.Fatalf("token kid %q, signed by %s: %v", kid, key.ID, err)
	}
	return tok, key
}

func kids(keys []Key) []string {
	var out []string
	for _, k := range keys {
		out = append(out, k.ID)
	}
	return out
}

func TestTokenKeyRotation(t *testing.T) {
	dir := t.TempDir()
	t0 := time.Unix(1_800_000_000, 0).UTC()
	clk := &clock{t: t0}
	v, err := NewVerifier(dir, clk.now)
	if err != nil {
		t.Fatal(err)
	}
	tokA, k1 := issueAt(t, dir, "web-1", t0, 2*time.Hour)
	if k1.LastExpiry != t0.Add(2*time.Hour) {
		t.Errorf("LastExpiry %v, want the token's exp", k1.LastExpiry)
	}

	r, err := RotateKey(dir, t0, RotateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r.New.ID == k1.ID || len(r.Dropped) != 0 || len(r.Kept) != 1 || r.Kept[0].ID != k1.ID || !r.Kept[0].LastExpiry.Equal(k1.LastExpiry) {
		t.Fatalf("first rotation: new %s, kept %v, dropped %v", r.New.ID, kids(r.Kept), kids(r.Dropped))
	}
	k2 := r.New
	tokB, signer := issueAt(t, dir, "web-2", t0, 10*time.Hour)
	if signer.ID != k2.ID {
		t.Errorf("new token signed by %s, want the new key %s", signer.ID, k2.ID)
	}
	if cur, err := LoadOrCreateKey(dir); err != nil || cur.ID != k2.ID {
		t.Errorf("LoadOrCreateKey after rotation: %v, %v", cur, err)
	}
	// The running Verifier takes both: the old key's token until it
	// expires, the new key's without a restart.
	for name, tok := range map[string]string{"old key": tokA, "new key": tokB} {
		if _, err := v.Verify(tok); err != nil {
			t.Errorf("%s after rotate-key: %v", name, err)
		}
	}

	// Once k1's last token has expired, the next rotation drops it; k2
	// stays while its token lives.
	t2 := t0.Add(2 * time.Hour)
	r, err = RotateKey(dir, t2, RotateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := kids(r.Dropped); len(got) != 1 || got[0] != k1.ID {
		t.Errorf("dropped %v, want [%s]", got, k1.ID)
	}
	if got := kids(r.Kept); len(got) != 1 || got[0] != k2.ID {
		t.Errorf("kept %v, want [%s]", got, k2.ID)
	}
	// A token of the pruned key is refused, even by a clock at which it
	// had not expired yet: the key is gone.
	clk.set(t0.Add(time.Hour))
	if _, err := v.Verify(tokA); !errors.Is(err, ErrSignature) || !strings.Contains(err.Error(), k1.ID) {
		t.Errorf("token of a pruned key: %v", err)
	}
	if _, err := v.Verify(tokB); err != nil {
		t.Errorf("token of a kept key: %v", err)
	}
	// A key that signed nothing is dropped by the next rotation.
	k3 := r.New
	r, err = RotateKey(dir, t2, RotateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := kids(r.Dropped); len(got) != 1 || got[0] != k3.ID {
		t.Errorf("dropped %v, want the unused key %s", got, k3.ID)
	}
	kr, err := readKeyring(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(kr.keys) != 2 || kr.keys[0].ID != k2.ID || kr.signing != r.New.ID {
		t.Errorf("keyring %v signing %s", kr.keys, kr.signing)
	}
	checkModes(t, dir)
}

// TestTokenVerifierReloadsKeyring: a running Verifier reads the keyring
// again when it is replaced, and when a token names a kid it does not know
// even if the file looks unchanged.
func TestTokenVerifierReloadsKeyring(t *testing.T) {
	dir := t.TempDir()
	v, err := NewVerifier(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if _, err := RotateKey(dir, now, RotateOptions{}); err != nil {
		t.Fatal(err)
	}
	tok, _ := issueAt(t, dir, "web-1", now, time.Hour)
	if _, err := v.Verify(tok); err != nil {
		t.Fatalf("token of the rotated-in key: %v", err)
	}

	// A rotation the file's stamp does not show (a coarse clock, the same
	// size): the unknown kid makes the Verifier read the keyring anyway.
	v.mu.Lock()
	stale := v.keys
	v.mu.Unlock()
	if _, err := RotateKey(dir, now, RotateOptions{}); err != nil {
		t.Fatal(err)
	}
	tok, _ = issueAt(t, dir, "web-1", now, time.Hour)
	st, err := statStamp(filepath.Join(dir, KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	v.mu.Lock()
	v.keys, v.keyStamp, v.lastForced = stale, st, time.Time{}
	v.mu.Unlock()
	if _, err := v.Verify(tok); err != nil {
		t.Fatalf("unknown kid after an unseen rotation: %v", err)
	}
	// Another unknown kid right after does not read the disk again.
	v.mu.Lock()
	forced := v.lastForced
	v.mu.Unlock()
	other, err := generateKey(now)
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := Issue(other, Claims{Mesh: "demo", Name: "web-1", IssuedAt: now.Unix(), Expires: now.Add(time.Hour).Unix(), ID: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(foreign); !errors.Is(err, ErrSignature) {
		t.Errorf("token of a foreign key: %v", err)
	}
	v.mu.Lock()
	if !v.lastForced.Equal(forced) {
		t.Error("a second unknown kid within a second read the keyring again")
	}
	v.mu.Unlock()

	// A keyring that cannot be read lets no token in, and the error names
	// the file, not the directory.
	if err := os.WriteFile(filepath.Join(dir, KeyFile), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = v.Verify(tok)
	if err == nil || !strings.Contains(err.Error(), KeyFile) || strings.Contains(err.Error(), dir) {
		t.Errorf("corrupt keyring: %v", err)
	}
}

func TestTokenLegacyKeyTakenIntoKeyring(t *testing.T) {
	dir := t.TempDir()
	legacyPath := writeLegacyKey(t, dir)
	legacyPEM, err := os.ReadFile(legacyPath)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(1_800_000_000, 0).UTC()
	clk := &clock{t: t0}
	v, err := NewVerifier(dir, clk.now)
	if err != nil {
		t.Fatal(err)
	}
	kr, err := readKeyring(dir)
	if err != nil {
		t.Fatal(err)
	}
	legacyKID, _ := thumbprint(legacyKey().Public().(ed25519.PublicKey))
	if len(kr.keys) != 1 || kr.signing != legacyKID || !kr.keys[0].Legacy {
		t.Fatalf("keyring after the first start: %v (signing %s), want the legacy key %s", kr.keys, kr.signing, legacyKID)
	}
	// The earlier version's file stays as it was, for a downgrade.
	if b, err := os.ReadFile(legacyPath); err != nil || !bytes.Equal(b, legacyPEM) {
		t.Errorf("%s changed: %v", LegacyKeyFile, err)
	}
	if _, err := v.Verify(legacyToken); err != nil {
		t.Fatalf("legacy token: %v", err)
	}

	// Rotation keeps the legacy key: the expiry of tokens without kid is
	// not known.
	withKID, _ := issueAt(t, dir, "web-2", t0, time.Hour)
	r, err := RotateKey(dir, t0.Add(2*time.Hour), RotateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Kept) != 1 || !r.Kept[0].Legacy || len(r.Dropped) != 0 || r.LegacyEnded != nil {
		t.Errorf("rotation of a legacy keyring: kept %v, dropped %v", r.Kept, r.Dropped)
	}
	if _, err := v.Verify(legacyToken); err != nil {
		t.Errorf("legacy token after rotate-key: %v", err)
	}
	// A kid-less token is checked against the legacy key only, not the
	// new signing key.
	cur, err := LoadOrCreateKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	signed := strings.Split(legacyToken, ".")[0] + "." + strings.Split(mustIssue(t, cur), ".")[1]
	noKID := signed + "." + base64.RawURLEncoding.EncodeToString(ed25519.Sign(cur.private, []byte(signed)))
	if _, err := v.Verify(noKID); !errors.Is(err, ErrSignature) {
		t.Errorf("kid-less token of the new key: %v", err)
	}

	// --drop-legacy: tokens without kid are refused from then on; the key
	// goes as its recorded tokens have all expired.
	r, err = RotateKey(dir, t0.Add(2*time.Hour), RotateOptions{DropLegacy: true})
	if err != nil {
		t.Fatal(err)
	}
	if r.LegacyEnded == nil || r.LegacyEnded.ID != legacyKID || len(r.Dropped) != 2 {
		t.Errorf("drop legacy: ended %v, dropped %v", r.LegacyEnded, kids(r.Dropped))
	}
	if _, err := v.Verify(legacyToken); !errors.Is(err, ErrSignature) {
		t.Errorf("legacy token after --drop-legacy: %v", err)
	}
	clk.set(t0.Add(time.Minute))
	if _, err := v.Verify(withKID); !errors.Is(err, ErrSignature) {
		t.Errorf("token of the dropped legacy key: %v", err)
	}
	// The legacy file is not taken in again.
	if _, err := LoadOrCreateKey(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := NewVerifier(dir, clk.now); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(legacyToken); !errors.Is(err, ErrSignature) {
		t.Errorf("legacy token after a restart: %v", err)
	}
}

func TestTokenLegacyKeyKeptForItsRecordedTokens(t *testing.T) {
	dir := t.TempDir()
	writeLegacyKey(t, dir)
	t0 := time.Unix(1_800_000_000, 0).UTC()
	v, err := NewVerifier(dir, func() time.Time { return t0 })
	if err != nil {
		t.Fatal(err)
	}
	tok, key := issueAt(t, dir, "web-1", t0, time.Hour)
	if !key.Legacy {
		t.Fatalf("the legacy key signs until the first rotation: %v", key)
	}
	r, err := RotateKey(dir, t0, RotateOptions{DropLegacy: true})
	if err != nil {
		t.Fatal(err)
	}
	if r.LegacyEnded == nil || len(r.Kept) != 1 || r.Kept[0].Legacy {
		t.Errorf("kept %v, ended %v", r.Kept, r.LegacyEnded)
	}
	if _, err := v.Verify(tok); err != nil {
		t.Errorf("recorded token of the legacy key: %v", err)
	}
	if _, err := v.Verify(legacyToken); !errors.Is(err, ErrSignature) {
		t.Errorf("kid-less token: %v", err)
	}
}

// TestTokenIssueConcurrently: commands issuing at once keep every record;
// the key's LastExpiry is the latest exp of all.
func TestTokenIssueConcurrently(t *testing.T) {
	dir := t.TempDir()
	now := time.Unix(1_800_000_000, 0).UTC()
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			c := Claims{Mesh: "demo", Name: "web", IssuedAt: now.Unix(), Expires: now.Add(time.Duration(i+1) * time.Hour).Unix(), ID: "t" + string(rune('a'+i))}
			if _, _, err := IssueRecorded(dir, c, now); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	key, err := LoadOrCreateKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	if want := now.Add(16 * time.Hour); !key.LastExpiry.Equal(want) {
		t.Errorf("LastExpiry %v, want %v", key.LastExpiry, want)
	}
}

func TestTokenKeyringFormat(t *testing.T) {
	dir := t.TempDir()
	key, err := LoadOrCreateKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Signing string
		Keys    []struct {
			KID     string
			Created time.Time
			JWK     map[string]string
		}
	}
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	if f.Signing != key.ID || len(f.Keys) != 1 || f.Keys[0].KID != key.ID || f.Keys[0].Created.IsZero() {
		t.Fatalf("keyring %s", b)
	}
	jwk := f.Keys[0].JWK
	if jwk["kty"] != "OKP" || jwk["crv"] != "Ed25519" || jwk["kid"] != key.ID || jwk["alg"] != "EdDSA" || jwk["d"] == "" {
		t.Errorf("jwk %v", jwk)
	}
	// A kid that is not the key's thumbprint is refused.
	other := "x"
	if key.ID[0] == 'x' {
		other = "y"
	}
	bad := bytes.Replace(b, []byte(`"kid": "`+key.ID), []byte(`"kid": "`+other+key.ID[1:]), 1)
	if err := os.WriteFile(filepath.Join(dir, KeyFile), bad, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateKey(dir); err == nil || !strings.Contains(err.Error(), "thumbprint") {
		t.Errorf("tampered kid in the keyring: %v", err)
	}
	checkModes(t, dir)
}

// checkModes: every token file of dir is 0600.
func checkModes(t *testing.T, dir string) {
	t.Helper()
	for _, name := range []string{KeyFile, RevokedFile, LockFile, IssuedFile} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if errors.Is(err, os.ErrNotExist) && name != KeyFile && name != LockFile {
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %o, want 600", name, fi.Mode().Perm())
		}
	}
}

func mustIssue(t *testing.T, key *Key) string {
	t.Helper()
	now := time.Now()
	tok, err := Issue(key, Claims{Mesh: "demo", Name: "web-1", IssuedAt: now.Unix(), Expires: now.Add(time.Hour).Unix(), ID: "m"})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}
