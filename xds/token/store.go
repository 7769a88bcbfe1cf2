package token

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/gitmesh/gitmesh/internal/atomicfile"
)

// Files in the state directory.
const (
	// KeyFile holds the Ed25519 signing key (PKCS #8 PEM, mode 0600).
	KeyFile = "xds-token.key"
	// RevokedFile lists revoked token ids, one a line.
	RevokedFile = "xds-token-revoked"
)

// maxRevokedBytes bounds the revocation list a Verifier reads.
const maxRevokedBytes = 4 << 20

// LoadOrCreateKey returns the signing key kept in stateDir, generating it
// (and the directory) on first use. The key file is written atomically with
// mode 0600.
func LoadOrCreateKey(stateDir string) (*Key, error) {
	key, err := LoadKey(stateDir)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return key, err
	}
	key, err = generateKey(time.Now())
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key.private)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("token signing key: %w", err)
	}
	path := filepath.Join(stateDir, KeyFile)
	if err := atomicfile.Write(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return nil, fmt.Errorf("token signing key: %w", err)
	}
	return key, nil
}

// LoadKey reads the signing key kept in stateDir; the error wraps
// fs.ErrNotExist when there is none yet.
func LoadKey(stateDir string) (*Key, error) {
	path := filepath.Join(stateDir, KeyFile)
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("token signing key: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("token signing key %s: not a PEM private key", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("token signing key %s: %w", path, err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("token signing key %s: not an Ed25519 key", path)
	}
	return newKey(priv, time.Now())
}

// Revoke adds id to the revocation list in stateDir (rewritten atomically).
// Revoking an id twice is not an error.
func Revoke(stateDir, id string) error {
	if id == "" || strings.ContainsAny(id, " \t\r\n") {
		return fmt.Errorf("revoke: %q is not a token id", id)
	}
	path := filepath.Join(stateDir, RevokedFile)
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("revoke: %w", err)
	}
	if _, ok := parseRevoked(old)[id]; ok {
		return nil
	}
	if len(old) > 0 && old[len(old)-1] != '\n' {
		old = append(old, '\n')
	}
	if err := atomicfile.Write(path, append(old, id+"\n"...), 0o600); err != nil {
		return fmt.Errorf("revoke: %w", err)
	}
	return nil
}

func parseRevoked(b []byte) map[string]struct{} {
	ids := map[string]struct{}{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); line != "" && !strings.HasPrefix(line, "#") {
			ids[line] = struct{}{}
		}
	}
	return ids
}

// Verifier checks tokens against the public key of a state directory's
// signing key and its revocation list, which it reads again whenever the
// file's size or modification time changes. Safe for concurrent use.
type Verifier struct {
	key     *Key
	revoked string
	now     func() time.Time
	mu      sync.Mutex
	stamp   revokedStamp
	ids     map[string]struct{}
}

type revokedStamp struct {
	size  int64
	mtime time.Time
	found bool
}

// NewVerifier returns a verifier for the tokens issued from stateDir,
// creating the signing key when there is none yet. now is the clock of the
// expiry check (time.Now when nil).
func NewVerifier(stateDir string, now func() time.Time) (*Verifier, error) {
	key, err := LoadOrCreateKey(stateDir)
	if err != nil {
		return nil, err
	}
	if now == nil {
		now = time.Now
	}
	v := &Verifier{key: key, revoked: filepath.Join(stateDir, RevokedFile), now: now}
	if err := v.reload(); err != nil {
		return nil, err
	}
	return v, nil
}

// Verify checks tok's signature, expiry and revocation and returns its
// claims. Errors wrap ErrMalformed, ErrSignature, ErrExpired or ErrRevoked
// and never contain the token.
func (v *Verifier) Verify(tok string) (Claims, error) {
	p, err := parse(tok)
	if err != nil {
		return Claims{}, err
	}
	if p.kid != "" && p.kid != v.key.ID {
		return Claims{}, fmt.Errorf("%w: signed with a key this control plane does not have", ErrSignature)
	}
	c, err := verify(p, v.key.private.Public().(ed25519.PublicKey), v.now())
	if err != nil {
		return Claims{}, err
	}
	if err := v.reload(); err != nil {
		// An unreadable revocation list must not let revoked tokens in.
		return Claims{}, err
	}
	v.mu.Lock()
	_, revoked := v.ids[c.ID]
	v.mu.Unlock()
	if revoked {
		return Claims{}, fmt.Errorf("%w (token id %s)", ErrRevoked, c.ID)
	}
	return c, nil
}

// reload reads the revocation list again when it changed on disk.
func (v *Verifier) reload() error {
	var st revokedStamp
	fi, err := os.Stat(v.revoked)
	switch {
	case err == nil:
		st = revokedStamp{size: fi.Size(), mtime: fi.ModTime(), found: true}
	case errors.Is(err, fs.ErrNotExist):
	default:
		return fmt.Errorf("token revocation list: %w", err)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.ids != nil && st == v.stamp {
		return nil
	}
	ids := map[string]struct{}{}
	if st.found {
		if st.size > maxRevokedBytes {
			return fmt.Errorf("token revocation list %s: larger than %d bytes", v.revoked, maxRevokedBytes)
		}
		b, err := os.ReadFile(v.revoked)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("token revocation list: %w", err)
		}
		ids = parseRevoked(b)
	}
	v.ids, v.stamp = ids, st
	return nil
}
