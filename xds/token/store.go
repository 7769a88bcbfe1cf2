package token

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/gitmesh/gitmesh/internal/atomicfile"
)

// Files in the state directory, all mode 0600; in another store (see
// Keeper), the documents of the same names, the keyring sealed.
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
	// LockFile serializes the commands that change the files above (empty):
	// the state directory's lock lockName (see store.Dir.WithLock).
	LockFile = lockName + ".lock"
)

// lockName is the store lock (store.Locker) under which the keyring and
// the lists are changed.
const lockName = "xds-token"

// maxRevokedBytes bounds the revocation list a Verifier reads.
const maxRevokedBytes = 4 << 20

// Revoke adds id to the revocation list in stateDir (rewritten atomically).
// Revoking an id twice is not an error.
func Revoke(stateDir, id string) error {
	return dirKeeper(stateDir).Revoke(context.Background(), id)
}

// Revoke adds id to the revocation list: in a state directory the file
// rewritten atomically, in another store its document. Revoking an id
// twice is not an error.
func (k *Keeper) Revoke(ctx context.Context, id string) error {
	if id == "" || strings.ContainsAny(id, " \t\r\n") {
		return fmt.Errorf("revoke: %q is not a token id", id)
	}
	return k.locked(ctx, "revoke", func(ctx context.Context) error {
		old, err := k.readRevoked(ctx)
		if err != nil {
			return fmt.Errorf("revoke: %w", err)
		}
		if _, ok := parseRevoked(old)[id]; ok {
			return nil
		}
		if len(old) > 0 && old[len(old)-1] != '\n' {
			old = append(old, '\n')
		}
		if err := k.write(ctx, atomicfile.File{Name: RevokedFile, Data: append(old, id+"\n"...), Perm: 0o600}); err != nil {
			return fmt.Errorf("revoke: %w", err)
		}
		return nil
	})
}

// readRevoked reads the revocation list as it is kept (nothing when there
// is none).
func (k *Keeper) readRevoked(ctx context.Context) ([]byte, error) {
	if k.local {
		b, err := os.ReadFile(filepath.Join(k.dir, RevokedFile))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		return b, nil
	}
	b, err := k.read(ctx, RevokedFile, "token revocation list")
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return b, err
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
