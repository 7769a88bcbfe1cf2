package source

import (
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"https://ada:s3cret@example.com/org/p.git":      "https://example.com/org/p.git",
		"https://ghp_t0ken@example.com/org/p.git":       "https://example.com/org/p.git",
		"http://example.com:8080/p.git?private_token=x": "http://example.com:8080/p.git?private_token=redacted",
		"ssh://git:s3cret@example.com:2222/org/p.git":   "ssh://git@example.com:2222/org/p.git",
		"git@example.com:org/p.git":                     "git@example.com:org/p.git",
		"git:s3cret@example.com:org/p.git":              "git@example.com:org/p.git",
		"git://example.com/p.git":                       "git://example.com/p.git",
		"/srv/git/p.git":                                "/srv/git/p.git",
		"./p":                                           "./p",
		"https://ada:s%ZZcret@example.com/p.git":        "https://example.com/p.git",
	} {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestCredentialsRedacted(t *testing.T) {
	c := Credentials{Username: "ada", Password: "pw-1", Token: "tok-2", SSHKeyFile: "/k", SSHKeyPassphrase: "pp-3"}
	var log strings.Builder
	slog.New(slog.NewTextHandler(&log, nil)).Info("x", "creds", c)
	for _, s := range []string{
		c.String(), fmt.Sprintf("%v %+v %#v %s", c, c, c, c),
		fmt.Sprintf("%+v", MirrorConfig{Credentials: c}), log.String(),
	} {
		for _, secret := range []string{"pw-1", "tok-2", "pp-3"} {
			if strings.Contains(s, secret) {
				t.Errorf("%q shows a secret", s)
			}
		}
	}
	if !strings.Contains(c.String(), `Username: "ada"`) || !strings.Contains(c.String(), "Token: set") {
		t.Errorf("String() = %s", c)
	}
}

func TestScrubError(t *testing.T) {
	base := errors.New("base")
	err := scrubError(fmt.Errorf("dial https://u:%s@x: %w", "p%40ss", base), []string{"p@ss"})
	if err.Error() != "dial https://u:xxxxx@x: base" || !errors.Is(err, base) {
		t.Errorf("scrubError = %q (is base: %v)", err, errors.Is(err, base))
	}
}

// encryptKey writes the private key in file again, encrypted.
func encryptKey(t *testing.T, file, passphrase string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ssh.ParseRawPrivateKey(b)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKeyWithPassphrase(key, "", []byte(passphrase))
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "id_encrypted")
	if err := os.WriteFile(out, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	return out
}
