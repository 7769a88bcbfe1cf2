package token

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// minForcedReload spaces the keyring reloads that unknown kids trigger, so
// that a client sending made-up kids cannot make every call read the disk.
const minForcedReload = time.Second

// Verifier checks tokens against the public keys of a state directory's
// keyring and its revocation list. It reads either file again whenever it
// was replaced or its size or modification time changed, and the keyring
// also when a token names a kid it does not know (a key just rotated in),
// at most once a second. Safe for concurrent use.
type Verifier struct {
	dir string
	now func() time.Time

	mu         sync.Mutex
	loaded     bool
	keys       map[string]ed25519.PublicKey
	legacy     ed25519.PublicKey // checks tokens without kid; nil when none may
	keyStamp   stamp
	ids        map[string]struct{}
	revStamp   stamp
	lastForced time.Time
}

// stamp identifies one version of a file: which file (a rename replaces
// it), its size and modification time; fi is nil when there is none.
type stamp struct{ fi fs.FileInfo }

func statStamp(path string) (stamp, error) {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return stamp{}, nil
	}
	if err != nil {
		return stamp{}, pathless(err)
	}
	return stamp{fi}, nil
}

func (s stamp) same(o stamp) bool {
	if s.fi == nil || o.fi == nil {
		return s.fi == nil && o.fi == nil
	}
	return os.SameFile(s.fi, o.fi) && s.fi.Size() == o.fi.Size() && s.fi.ModTime().Equal(o.fi.ModTime())
}

// NewVerifier returns a verifier for the tokens issued from stateDir,
// starting the keyring when there is none yet (see LoadOrCreateKey). now
// is the clock of the expiry check (time.Now when nil).
func NewVerifier(stateDir string, now func() time.Time) (*Verifier, error) {
	if now == nil {
		now = time.Now
	}
	if err := ensureKeyring(stateDir, now()); err != nil {
		return nil, err
	}
	v := &Verifier{dir: stateDir, now: now}
	if err := v.reload(false); err != nil {
		return nil, err
	}
	return v, nil
}

// Verify checks tok's signature against the key its kid names (a token
// without kid against the key of an earlier version only), its claims,
// expiry and revocation, and returns its claims. Errors wrap ErrMalformed,
// ErrSignature, ErrExpired or ErrRevoked and never contain the token.
func (v *Verifier) Verify(tok string) (Claims, error) {
	p, err := parse(tok)
	if err != nil {
		return Claims{}, err
	}
	// An unreadable keyring or revocation list lets no token in.
	if err := v.reload(false); err != nil {
		return Claims{}, err
	}
	pub, err := v.key(p.kid)
	if err != nil {
		return Claims{}, err
	}
	c, err := verify(p, pub, v.now())
	if err != nil {
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

// key is the public key that checks tokens with kid.
func (v *Verifier) key(kid string) (ed25519.PublicKey, error) {
	v.mu.Lock()
	pub, legacy := v.keys[kid], v.legacy
	v.mu.Unlock()
	if kid == "" {
		if legacy == nil {
			return nil, fmt.Errorf("%w: it carries no kid, and the keyring holds no key of an earlier version", ErrSignature)
		}
		return legacy, nil
	}
	if pub != nil {
		return pub, nil
	}
	if !looksLikeKID(kid) {
		return nil, fmt.Errorf("%w: its kid is not a key id of this control plane", ErrSignature)
	}
	// A key rotated in a moment ago: read the keyring once more.
	if err := v.reload(true); err != nil {
		return nil, err
	}
	v.mu.Lock()
	pub = v.keys[kid]
	v.mu.Unlock()
	if pub == nil {
		return nil, fmt.Errorf("%w: key %s is not in the keyring (a retired key is dropped once its tokens have expired)", ErrSignature, kid)
	}
	return pub, nil
}

// reload reads the keyring and the revocation list again when they changed
// on disk, and the keyring in any case when force is set (at most once
// every minForcedReload).
func (v *Verifier) reload(force bool) error {
	keyStamp, err := statStamp(filepath.Join(v.dir, KeyFile))
	if err != nil {
		return fmt.Errorf("token keyring %s: %w", KeyFile, err)
	}
	revStamp, err := statStamp(filepath.Join(v.dir, RevokedFile))
	if err != nil {
		return fmt.Errorf("token revocation list %s: %w", RevokedFile, err)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if force {
		if time.Since(v.lastForced) < minForcedReload {
			force = false
		} else {
			v.lastForced = time.Now()
		}
	}
	if !v.loaded || force || !keyStamp.same(v.keyStamp) {
		kr, err := readKeyring(v.dir)
		if err != nil {
			return err
		}
		keys := make(map[string]ed25519.PublicKey, len(kr.keys))
		for _, k := range kr.keys {
			keys[k.ID] = k.private.Public().(ed25519.PublicKey)
		}
		v.legacy = nil
		if l := kr.legacy(); l != nil {
			v.legacy = keys[l.ID]
		}
		v.keys, v.keyStamp = keys, keyStamp
	}
	if !v.loaded || !revStamp.same(v.revStamp) {
		ids := map[string]struct{}{}
		if revStamp.fi != nil {
			if revStamp.fi.Size() > maxRevokedBytes {
				return fmt.Errorf("token revocation list %s: larger than %d bytes", RevokedFile, maxRevokedBytes)
			}
			b, err := os.ReadFile(filepath.Join(v.dir, RevokedFile))
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("token revocation list %s: %w", RevokedFile, pathless(err))
			}
			ids = parseRevoked(b)
		}
		v.ids, v.revStamp = ids, revStamp
	}
	v.loaded = true
	return nil
}
