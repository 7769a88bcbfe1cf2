package token

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestIssueVerifyRevoke(t *testing.T) {
	dir := t.TempDir()
	now := time.Unix(1_800_000_000, 0)
	v, err := NewVerifier(dir, func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	key, err := LoadKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	c := Claims{Mesh: "demo", Name: "web-1", IssuedAt: now.Unix(), Expires: now.Add(time.Hour).Unix(), ID: "a1"}
	tok, err := Issue(key, c)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(tok, ".") != 2 {
		t.Fatalf("token %q is not three parts", tok)
	}
	if got, err := v.Verify(tok); err != nil || got != c {
		t.Fatalf("Verify: %+v, %v", got, err)
	}
	// A changed claim breaks the signature.
	parts := strings.Split(tok, ".")
	other, _ := Issue(key, Claims{Mesh: "demo", Name: "web-2", IssuedAt: c.IssuedAt, Expires: c.Expires, ID: "a2"})
	forged := parts[0] + "." + strings.Split(other, ".")[1] + "." + parts[2]
	if _, err := v.Verify(forged); !errors.Is(err, ErrSignature) {
		t.Errorf("forged: %v", err)
	}
	now = now.Add(time.Hour)
	if _, err := v.Verify(tok); !errors.Is(err, ErrExpired) {
		t.Errorf("expired: %v", err)
	}
	now = now.Add(-time.Minute)
	if err := Revoke(dir, "a1"); err != nil {
		t.Fatal(err)
	}
	if err := Revoke(dir, "a1"); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(tok); !errors.Is(err, ErrRevoked) {
		t.Errorf("revoked: %v", err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, RevokedFile))
	if string(b) != "a1\n" {
		t.Errorf("revocation list %q", b)
	}
	if fi, _ := os.Stat(filepath.Join(dir, KeyFile)); fi.Mode().Perm() != 0o600 {
		t.Errorf("key mode %o", fi.Mode().Perm())
	}
	for _, bad := range []string{"", "a.b", "a.b.c", strings.Repeat("x", 5000)} {
		if _, err := Parse(bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("Parse(%.10q): %v", bad, err)
		}
	}
}
