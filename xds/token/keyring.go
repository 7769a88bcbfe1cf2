package token

import (
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/gitmesh/gitmesh/internal/atomicfile"
	"github.com/gitmesh/gitmesh/store"
)

// maxKeyringBytes bounds the keyring a reader accepts; a key takes about
// 300 bytes.
const maxKeyringBytes = 1 << 20

// keyringJSON is the content of KeyFile.
type keyringJSON struct {
	// Signing is the kid of the key new tokens are signed with.
	Signing string    `json:"signing"`
	Keys    []keyJSON `json:"keys"`
}

type keyJSON struct {
	KID        string    `json:"kid"`
	Created    time.Time `json:"created"`
	LastExpiry time.Time `json:"lastExpiry,omitzero"`
	Legacy     bool      `json:"legacy,omitempty"`
	// JWK is the private key (RFC 8037 OKP, with "d"), its kid, alg EdDSA
	// and use sig.
	JWK json.RawMessage `json:"jwk"`
}

// keyring is the signing keys of a state directory, oldest first.
type keyring struct {
	signing string
	keys    []*Key
}

func (kr *keyring) find(kid string) *Key {
	for _, k := range kr.keys {
		if k.ID == kid {
			return k
		}
	}
	return nil
}

// current is the key new tokens are signed with (nil in an empty keyring).
func (kr *keyring) current() *Key { return kr.find(kr.signing) }

// legacy is the key taken over from LegacyKeyFile, if it is still trusted
// with tokens without kid.
func (kr *keyring) legacy() *Key {
	for _, k := range kr.keys {
		if k.Legacy {
			return k
		}
	}
	return nil
}

// add appends key and makes it the signing key.
func (kr *keyring) add(key *Key) {
	kr.keys = append(kr.keys, key)
	kr.signing = key.ID
}

func (kr *keyring) marshal() ([]byte, error) {
	out := keyringJSON{Signing: kr.signing, Keys: make([]keyJSON, 0, len(kr.keys))}
	for _, k := range kr.keys {
		jwk, err := jose.JSONWebKey{Key: k.private, KeyID: k.ID, Algorithm: string(jose.EdDSA), Use: "sig"}.MarshalJSON()
		if err != nil {
			return nil, err
		}
		out.Keys = append(out.Keys, keyJSON{KID: k.ID, Created: k.Created.UTC(), LastExpiry: k.LastExpiry.UTC(), Legacy: k.Legacy, JWK: jwk})
	}
	b, err := json.MarshalIndent(out, "", "  ")
	return append(b, '\n'), err
}

func unmarshalKeyring(b []byte) (*keyring, error) {
	var in keyringJSON
	if err := json.Unmarshal(b, &in); err != nil {
		return nil, err
	}
	kr := &keyring{signing: in.Signing}
	for i, kj := range in.Keys {
		var jwk jose.JSONWebKey
		if err := jwk.UnmarshalJSON(kj.JWK); err != nil {
			return nil, fmt.Errorf("key %d: %s", i, joseMessage(err))
		}
		priv, ok := jwk.Key.(ed25519.PrivateKey)
		if !ok || !jwk.Valid() {
			return nil, fmt.Errorf("key %d: not an Ed25519 private key", i)
		}
		k, err := newKey(priv, kj.Created)
		if err != nil {
			return nil, fmt.Errorf("key %d: %w", i, err)
		}
		if k.ID != kj.KID || (jwk.KeyID != "" && jwk.KeyID != kj.KID) {
			return nil, fmt.Errorf("key %d: kid %q is not the key's thumbprint %s", i, kj.KID, k.ID)
		}
		if kr.find(k.ID) != nil {
			return nil, fmt.Errorf("key %s is listed twice", k.ID)
		}
		if kj.Legacy && kr.legacy() != nil {
			return nil, fmt.Errorf("more than one legacy key")
		}
		k.LastExpiry, k.Legacy = kj.LastExpiry, kj.Legacy
		kr.keys = append(kr.keys, k)
	}
	if len(kr.keys) > 0 && kr.current() == nil {
		return nil, fmt.Errorf("the signing key %q is not in the keyring", in.Signing)
	}
	return kr, nil
}

// readKeyring reads KeyFile; the error wraps fs.ErrNotExist when there is
// none yet. Messages name the file, not the directory: a Verifier's errors
// reach clients.
func readKeyring(stateDir string) (*keyring, error) {
	f, err := os.Open(filepath.Join(stateDir, KeyFile))
	if err != nil {
		return nil, fmt.Errorf("token keyring %s: %w", KeyFile, pathless(err))
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxKeyringBytes+1))
	if err != nil {
		return nil, fmt.Errorf("token keyring %s: %w", KeyFile, pathless(err))
	}
	return parseKeyring(b)
}

// parseKeyring reads a keyring document, bounded by maxKeyringBytes.
func parseKeyring(b []byte) (*keyring, error) {
	if len(b) > maxKeyringBytes {
		return nil, fmt.Errorf("token keyring %s: larger than %d bytes", KeyFile, maxKeyringBytes)
	}
	kr, err := unmarshalKeyring(b)
	if err != nil {
		return nil, fmt.Errorf("token keyring %s: %w", KeyFile, err)
	}
	return kr, nil
}

// pathless drops the path from a file error, keeping what went wrong.
func pathless(err error) error {
	if pe, ok := errors.AsType[*fs.PathError](err); ok {
		return pe.Err
	}
	return err
}

// readLegacyKey reads LegacyKeyFile; the error wraps fs.ErrNotExist when
// there is none.
func readLegacyKey(stateDir string) (*Key, error) {
	path := filepath.Join(stateDir, LegacyKeyFile)
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("token signing key: %w", err)
	}
	fi, err := os.Stat(path)
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
	key, err := newKey(priv, fi.ModTime())
	if err != nil {
		return nil, err
	}
	key.Legacy = true
	return key, nil
}

// keyring reads the keyring of k's store; the error wraps fs.ErrNotExist
// when there is none yet.
func (k *Keeper) keyring(ctx context.Context) (*keyring, error) {
	if k.local {
		return readKeyring(k.dir)
	}
	b, err := k.read(ctx, KeyFile, "token keyring")
	if err != nil {
		return nil, err
	}
	return parseKeyring(b)
}

// legacyKey reads LegacyKeyFile of a state directory; a shared store has
// none (store import takes it into the keyring it copies).
func (k *Keeper) legacyKey() (*Key, error) {
	if k.local {
		return readLegacyKey(k.dir)
	}
	return nil, fmt.Errorf("token signing key: %w", fs.ErrNotExist)
}

// openKeyring reads the keyring, the caller holding the lock. When there
// is none yet it starts one: from LegacyKeyFile when an earlier version
// left one (the file stays, for a downgrade), else with a new key. dirty
// says the keyring must be written.
func (k *Keeper) openKeyring(ctx context.Context, now time.Time) (kr *keyring, dirty bool, err error) {
	kr, err = k.keyring(ctx)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, false, err
	}
	if err != nil {
		kr = &keyring{}
		legacy, err := k.legacyKey()
		switch {
		case err == nil:
			kr.add(legacy)
		case !errors.Is(err, fs.ErrNotExist):
			return nil, false, err
		}
		dirty = true
	}
	if kr.current() == nil {
		key, err := generateKey(now)
		if err != nil {
			return nil, false, err
		}
		kr.add(key)
		dirty = true
	}
	return kr, dirty, nil
}

func (k *Keeper) writeKeyring(ctx context.Context, kr *keyring) error {
	b, err := kr.marshal()
	if err != nil {
		return err
	}
	if err := k.write(ctx, atomicfile.File{Name: KeyFile, Data: b, Perm: 0o600}); err != nil {
		return fmt.Errorf("token keyring: %w", err)
	}
	return nil
}

// withKeyring runs f on the keyring under the lock and writes the keyring
// when f or its creation changed it (f returns whether it did).
func (k *Keeper) withKeyring(ctx context.Context, now time.Time, f func(kr *keyring) (changed bool, err error)) error {
	return k.locked(ctx, "token keyring", func(ctx context.Context) error {
		kr, dirty, err := k.openKeyring(ctx, now)
		if err != nil {
			return err
		}
		if f != nil {
			changed, err := f(kr)
			if err != nil {
				return err
			}
			dirty = dirty || changed
		}
		if dirty {
			return k.writeKeyring(ctx, kr)
		}
		return nil
	})
}

// ensureKeyring makes sure there is a keyring, taking no lock when there
// is one.
func (k *Keeper) ensureKeyring(ctx context.Context, now time.Time) error {
	if k.local {
		if _, err := os.Stat(filepath.Join(k.dir, KeyFile)); err == nil {
			return nil
		}
	} else {
		_, err := k.st.Get(ctx, KeyFile)
		if err == nil {
			return nil
		}
		if !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("token keyring: %w", err)
		}
	}
	return k.withKeyring(ctx, now, nil)
}

// LoadOrCreateKey returns the key new tokens of stateDir are signed with,
// starting the keyring (and the directory) on first use: with the key of
// an earlier version when there is one, else with a new key. The keyring
// is written atomically with mode 0600.
func LoadOrCreateKey(stateDir string) (*Key, error) {
	return dirKeeper(stateDir).LoadOrCreateKey(context.Background())
}

// LoadOrCreateKey returns the key new tokens are signed with, starting the
// keyring on first use (see the function LoadOrCreateKey).
func (k *Keeper) LoadOrCreateKey(ctx context.Context) (*Key, error) {
	var key Key
	err := k.withKeyring(ctx, time.Now(), func(kr *keyring) (bool, error) {
		key = *kr.current()
		return false, nil
	})
	if err != nil {
		return nil, err
	}
	return &key, nil
}

// IssueRecorded signs c with stateDir's current key and records the token
// before returning it: in IssuedFile (its id, node, expiry and kid), and
// as the key's LastExpiry when later than the key's, so that the key stays
// in the keyring until the token expires. It returns the token and the key
// that signed it.
func IssueRecorded(stateDir string, c Claims, now time.Time) (string, *Key, error) {
	return dirKeeper(stateDir).IssueRecorded(context.Background(), c, now)
}

// IssueRecorded signs c with the current key and records the token before
// returning it (see the function IssueRecorded). The token is returned
// only once both the record and the key's LastExpiry are written, so a
// failure between the two leaves at most a record of a token nobody has.
func (k *Keeper) IssueRecorded(ctx context.Context, c Claims, now time.Time) (string, *Key, error) {
	var tok string
	var out Key
	err := k.locked(ctx, "token keyring", func(ctx context.Context) error {
		kr, _, err := k.openKeyring(ctx, now)
		if err != nil {
			return err
		}
		key := kr.current()
		if tok, err = Issue(key, c); err != nil {
			return err
		}
		exp := time.Unix(c.Expires, 0).UTC()
		if exp.After(key.LastExpiry) {
			key.LastExpiry = exp
		}
		issued, err := k.issued(ctx)
		if err != nil {
			return err
		}
		ledger, err := marshalIssued(recordIssued(issued, Issued{ID: c.ID, Node: c.Node(), Expires: exp, KeyID: key.ID}, now))
		if err != nil {
			return err
		}
		keys, err := kr.marshal()
		if err != nil {
			return err
		}
		if err := k.write(ctx,
			atomicfile.File{Name: IssuedFile, Data: ledger, Perm: 0o600},
			atomicfile.File{Name: KeyFile, Data: keys, Perm: 0o600}); err != nil {
			return fmt.Errorf("record token: %w", err)
		}
		out = *key
		return nil
	})
	if err != nil {
		return "", nil, err
	}
	return tok, &out, nil
}

// RotateOptions are the choices of RotateKey.
type RotateOptions struct {
	// DropLegacy stops accepting tokens without kid: the key of an earlier
	// version is then kept only for the tokens recorded as issued with it.
	DropLegacy bool
}

// Rotation is what RotateKey did.
type Rotation struct {
	// New is the key new tokens are signed with from now on.
	New Key
	// Kept are the older keys still in the keyring: their tokens verify
	// until LastExpiry, or, for a Legacy key, until DropLegacy.
	Kept []Key
	// Dropped are the keys removed: every token they signed has expired
	// (or none was recorded).
	Dropped []Key
	// LegacyEnded is the key that stopped accepting tokens without kid
	// (DropLegacy), nil when none did.
	LegacyEnded *Key
}

// RotateKey adds a new key to stateDir's keyring and makes it the one new
// tokens are signed with, and drops the older keys whose tokens have all
// expired at now. Tokens of the keys kept go on verifying until they
// expire; a running Verifier picks the change up without a restart.
func RotateKey(stateDir string, now time.Time, opts RotateOptions) (Rotation, error) {
	return dirKeeper(stateDir).RotateKey(context.Background(), now, opts)
}

// RotateKey adds a new key to the keyring and makes it the signing key,
// dropping the older keys whose tokens have all expired at now (see the
// function RotateKey). The Verifiers of every replica sharing the store
// pick the change up within a second or so.
func (k *Keeper) RotateKey(ctx context.Context, now time.Time, opts RotateOptions) (Rotation, error) {
	var r Rotation
	err := k.withKeyring(ctx, now, func(kr *keyring) (bool, error) {
		key, err := generateKey(now)
		if err != nil {
			return false, err
		}
		kept := kr.keys[:0:0]
		for _, k := range kr.keys {
			if k.Legacy && opts.DropLegacy {
				k.Legacy = false
				ended := *k
				r.LegacyEnded = &ended
			}
			if !k.Legacy && !now.Before(k.LastExpiry) {
				r.Dropped = append(r.Dropped, *k)
				continue
			}
			kept = append(kept, k)
			r.Kept = append(r.Kept, *k)
		}
		kr.keys = kept
		kr.add(key)
		r.New = *key
		return true, nil
	})
	return r, err
}
