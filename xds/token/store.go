package token

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/gitmesh/gitmesh/internal/atomicfile"
)

// Files in the state directory, all mode 0600.
const (
	// KeyFile is the keyring: every signing key (kid, Ed25519 private key
	// as a JWK, creation time, latest expiry of its tokens) and which one
	// signs new tokens. Written atomically.
	KeyFile = "xds-token-keys.json"
	// LegacyKeyFile is the single signing key of earlier versions (PKCS #8
	// PEM). It is taken into the keyring when there is none yet, and left
	// in place so that an earlier version still finds it.
	LegacyKeyFile = "xds-token.key"
	// IssuedFile records the tokens issued here (jti, node, expiry, kid)
	// until IssuedRetention after they expire.
	IssuedFile = "xds-token-issued.json"
	// RevokedFile lists revoked token ids, one a line.
	RevokedFile = "xds-token-revoked"
	// LockFile serializes the commands that change the files above (empty).
	LockFile = "xds-token.lock"
)

// maxRevokedBytes bounds the revocation list a Verifier reads.
const maxRevokedBytes = 4 << 20

// lock takes the state directory's token lock (creating the directory),
// so that two commands changing the keyring or the lists at once do not
// lose each other's change; it blocks while another holds it. Readers (a
// Verifier) need no lock: every file is replaced by an atomic rename.
func lock(stateDir string) (unlock func(), err error) {
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(stateDir, LockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", f.Name(), err)
	}
	return func() { f.Close() }, nil // closing releases the lock
}

// Revoke adds id to the revocation list in stateDir (rewritten atomically).
// Revoking an id twice is not an error.
func Revoke(stateDir, id string) error {
	if id == "" || strings.ContainsAny(id, " \t\r\n") {
		return fmt.Errorf("revoke: %q is not a token id", id)
	}
	unlock, err := lock(stateDir)
	if err != nil {
		return fmt.Errorf("revoke: %w", err)
	}
	defer unlock()
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
