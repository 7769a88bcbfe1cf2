package gittest

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// Signer is an OpenPGP key made for a test that signs commits: with the
// real git CLI and gpg (in a GNUPGHOME of its own) when gpg is installed,
// else with go-git.
type Signer struct {
	Entity    *openpgp.Entity
	gnupgHome string // "" when gpg is not installed
}

// NewSigner makes an OpenPGP key for name <email> and, when gpg is
// installed, imports it into a new GNUPGHOME whose agent stops when the test
// ends.
func NewSigner(t testing.TB, name, email string) *Signer {
	t.Helper()
	// Ed25519: with RSA keys made here and imported into gpg 2.2, about one
	// key in a hundred gave signatures that gpg itself calls BAD.
	e, err := openpgp.NewEntity(name, "", email, &packet.Config{Algorithm: packet.PubKeyAlgoEdDSA})
	if err != nil {
		t.Fatal(err)
	}
	s := &Signer{Entity: e}
	if _, err := exec.LookPath("gpg"); err != nil {
		return s
	}
	// A short path: gpg-agent's socket lives there, and socket paths are
	// limited to about 100 bytes.
	home, err := os.MkdirTemp("", "gpg")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(home, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		kill := exec.Command("gpgconf", "--kill", "gpg-agent")
		kill.Env = append(os.Environ(), "GNUPGHOME="+home)
		_ = kill.Run()
		_ = os.RemoveAll(home)
	})
	var priv bytes.Buffer
	if err := e.SerializePrivate(&priv, nil); err != nil {
		t.Fatal(err)
	}
	imp := exec.Command("gpg", "--batch", "--quiet", "--import")
	imp.Env = append(os.Environ(), "GNUPGHOME="+home)
	imp.Stdin = &priv
	if out, err := imp.CombinedOutput(); err != nil {
		t.Fatalf("gpg --import: %v\n%s", err, out)
	}
	s.gnupgHome = home
	return s
}

// KeyID is the key's id, 16 upper-case hex digits.
func (s *Signer) KeyID() string { return s.Entity.PrimaryKey.KeyIdString() }

// ArmoredPublicKey is the public key as `gpg --export --armor` writes it.
func (s *Signer) ArmoredPublicKey(t testing.TB) string {
	t.Helper()
	var buf bytes.Buffer
	w, err := armor.Encode(&buf, openpgp.PublicKeyType, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Entity.Serialize(w); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.String() + "\n"
}

// Keyring writes the signers' armored public keys to a new file and returns
// its path.
func Keyring(t testing.TB, signers ...*Signer) string {
	t.Helper()
	var b strings.Builder
	for _, s := range signers {
		b.WriteString(s.ArmoredPublicKey(t))
	}
	p := filepath.Join(t.TempDir(), "keyring.asc")
	if err := os.WriteFile(p, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// Commit is gittest.Commit with the commit signed by s.
func (s *Signer) Commit(t testing.TB, dir, message string, files map[string]string) string {
	t.Helper()
	WriteFiles(t, dir, files)
	Git(t, dir, "add", "-A")
	if s.gnupgHome == "" {
		repo, err := git.PlainOpen(dir)
		if err != nil {
			t.Fatal(err)
		}
		wt, err := repo.Worktree()
		if err != nil {
			t.Fatal(err)
		}
		sig := &object.Signature{Name: "Ada", Email: "ada@example.com", When: time.Now()}
		h, err := wt.Commit(message, &git.CommitOptions{SignKey: s.Entity, Author: sig, Committer: sig, AllowEmptyCommits: true})
		if err != nil {
			t.Fatal(err)
		}
		return h.String()
	}
	cmd := exec.Command("git", "-c", "gpg.program=gpg", "-c", "user.signingkey="+s.KeyID(),
		"commit", "-q", "--allow-empty", "-S", "-m", message)
	cmd.Dir = dir
	cmd.Env = append(Env(), "GNUPGHOME="+s.gnupgHome)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("git commit -S: %v\n%s", err, out)
	}
	return Git(t, dir, "rev-parse", "HEAD")
}
