package source

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-git/go-git/v5/plumbing"

	"github.com/gitmesh/gitmesh/reconcile/gittest"
)

func TestVerifierAcceptsSignedAndRefusesTheRest(t *testing.T) {
	t.Parallel()
	alice := gittest.NewSigner(t, "Alice", "alice@example.com")
	mallory := gittest.NewSigner(t, "Mallory", "mallory@example.com")
	bob := gittest.NewSigner(t, "Bob", "bob@example.com")
	v, err := NewVerifier(gittest.Keyring(t, alice, bob)) // two armored blocks in one file
	if err != nil {
		t.Fatal(err)
	}
	if len(v.Keys()) != 2 {
		t.Errorf("keys %v, want alice's and bob's", v.Keys())
	}

	work := gittest.Init(t)
	unsigned := gittest.Commit(t, work, "unsigned", map[string]string{"a": "1"})
	byAlice := alice.Commit(t, work, "signed by alice", map[string]string{"a": "2"})
	byBob := bob.Commit(t, work, "signed by bob", map[string]string{"a": "3"})
	byMallory := mallory.Commit(t, work, "signed by mallory", map[string]string{"a": "4"})
	repo, err := OpenRepository(work)
	if err != nil {
		t.Fatal(err)
	}

	for hash, want := range map[string]string{byAlice: "Alice <alice@example.com> (key " + alice.KeyID() + ")",
		byBob: "Bob <bob@example.com> (key " + bob.KeyID() + ")"} {
		signer, err := v.VerifyCommit(repo, hash)
		if err != nil || signer != want {
			t.Errorf("verify %s: %q, %v; want %q", hash[:12], signer, err, want)
		}
	}

	_, err = v.VerifyCommit(repo, unsigned)
	var uv *UnverifiedError
	if !errors.Is(err, ErrUnsigned) || !errors.As(err, &uv) || uv.Reason != ReasonUnsigned || !strings.Contains(err.Error(), "is not signed") {
		t.Errorf("unsigned commit: %v", err)
	}
	_, err = v.VerifyCommit(repo, byMallory)
	if !errors.Is(err, ErrUnknownKey) || !errors.As(err, &uv) || uv.KeyID != mallory.KeyID() ||
		!strings.Contains(err.Error(), "signed by unknown key "+mallory.KeyID()) {
		t.Errorf("commit by a key not in the keyring: %v", err)
	}

	// A signature over other bytes: the same signature on a changed commit.
	c, err := repo.CommitObject(plumbing.NewHash(byAlice))
	if err != nil {
		t.Fatal(err)
	}
	c.Message = "signed by alice, then changed\n"
	if _, err := v.Verify(c); !errors.Is(err, ErrBadSignature) || !strings.Contains(err.Error(), "bad signature (key "+alice.KeyID()+")") {
		t.Errorf("tampered commit: %v", err)
	}
	c.PGPSignature = "-----BEGIN SSH SIGNATURE-----\nabc\n-----END SSH SIGNATURE-----\n"
	if _, err := v.Verify(c); !errors.Is(err, ErrBadSignature) || !strings.Contains(err.Error(), "not an OpenPGP signature") {
		t.Errorf("SSH signature: %v", err)
	}
}

func TestNewVerifierNamesTheFileWithoutAKey(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for name, content := range map[string]string{
		"empty.asc":   "",
		"garbage.asc": "not a key\n",
		"broken.asc":  "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nAAAA\n-----END PGP PUBLIC KEY BLOCK-----\n",
	} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := NewVerifier(p); err == nil || !strings.Contains(err.Error(), p) {
			t.Errorf("keyring %s: %v, want an error naming the file", name, err)
		}
	}
	if _, err := NewVerifier(filepath.Join(dir, "missing.asc")); err == nil || !strings.Contains(err.Error(), "missing.asc") {
		t.Errorf("missing keyring: %v", err)
	}
}
