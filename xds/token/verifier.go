package token

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gitmesh/gitmesh/store"
)

// minForcedReload spaces the keyring reloads that unknown kids trigger, so
// that a client sending made-up kids cannot make every call read the disk.
const minForcedReload = time.Second

// storeReload is how often a Verifier on a shared store reads the keyring
// and the revocation list again: a revocation or rotation done through any
// replica is seen by every other within about that long.
const storeReload = time.Second

// storeReadTimeout bounds one read of the store by a Verifier.
const storeReadTimeout = 2 * time.Second

// Verifier checks tokens against the public keys of a state directory's
// keyring and its revocation list. It reads either file again whenever it
// was replaced or its size or modification time changed, and the keyring
// also when a token names a kid it does not know (a key just rotated in),
// at most once a second.
//
// On a shared store (Keeper.NewVerifier) it reads both documents again at
// most every storeReload, never once per call, and the keyring also on an
// unknown kid as above. While the store cannot be reached it goes on
// checking tokens against what it read last (it fails static), logs that
// once, and tries the store again in the background.
//
// Safe for concurrent use.
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

	// On a shared store: the store, how often to read it, when the last
	// read began, the digests of the documents read, the error that lets
	// no token in (a keyring that does not parse), whether the last read
	// could not reach the store.
	keeper         *Keeper
	log            *slog.Logger
	every          time.Duration
	lastLoad       time.Time
	keySum, revSum [sha256.Size]byte
	bad            error
	failing        bool
	loadMu         sync.Mutex  // one read of the store at a time
	retrying       atomic.Bool // a read in the background is under way
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
	if err := dirKeeper(stateDir).ensureKeyring(context.Background(), now()); err != nil {
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

// VerifierOptions are the choices of Keeper.NewVerifier.
type VerifierOptions struct {
	// Now is the clock of the expiry check; time.Now when nil.
	Now func() time.Time
	// Logger is told when the store becomes unreachable and when it is
	// back; slog.Default() when nil.
	Logger *slog.Logger
}

// NewVerifier returns a verifier for the tokens of k's keyring, starting
// the keyring when there is none yet. For a state directory it is the
// function NewVerifier's; on a shared store the first read must succeed.
func (k *Keeper) NewVerifier(ctx context.Context, o VerifierOptions) (*Verifier, error) {
	if k.local {
		return NewVerifier(k.dir, o.Now)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if err := k.ensureKeyring(ctx, o.Now()); err != nil {
		return nil, err
	}
	v := &Verifier{keeper: k, now: o.Now, log: o.Logger, every: storeReload}
	if err := v.readStore(); err != nil {
		return nil, err
	}
	return v, nil
}

// reload reads the keyring and the revocation list again when they changed
// on disk, and the keyring in any case when force is set (at most once
// every minForcedReload).
func (v *Verifier) reload(force bool) error {
	if v.keeper != nil {
		return v.refresh(force)
	}
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
		v.takeKeyring(kr)
		v.keyStamp = keyStamp
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

// refresh reads the shared store again when the last read is older than
// v.every, or, when force is set, at most once every minForcedReload. A
// call that finds a read due waits for it; while the store is unreachable
// reads go on in the background and calls use what was read last.
func (v *Verifier) refresh(force bool) error {
	asked := time.Now()
	v.mu.Lock()
	if force {
		if asked.Sub(v.lastForced) < minForcedReload {
			force = false
		} else {
			v.lastForced = asked
		}
	}
	due := force || asked.Sub(v.lastLoad) >= v.every
	failing, bad := v.failing, v.bad
	v.mu.Unlock()
	switch {
	case !due:
		return bad
	case failing:
		if v.retrying.CompareAndSwap(false, true) {
			go func() {
				defer v.retrying.Store(false)
				_ = v.readStoreOnce(asked)
			}()
		}
		return bad
	}
	return v.readStoreOnce(asked)
}

// readStoreOnce reads the store unless a read that began after asked has
// been done meanwhile.
func (v *Verifier) readStoreOnce(asked time.Time) error {
	v.loadMu.Lock()
	defer v.loadMu.Unlock()
	v.mu.Lock()
	fresh, bad := v.lastLoad.After(asked), v.bad
	v.mu.Unlock()
	if fresh {
		return bad
	}
	return v.readStore()
}

// readStore reads the keyring and the revocation list from the store and
// takes them in when they changed. A store that cannot be reached keeps
// what was read before (an error only on the first read); a keyring or
// list that is missing or does not parse lets no token in until it is
// fixed, as in a state directory.
func (v *Verifier) readStore() error {
	start := time.Now()
	v.mu.Lock()
	v.lastLoad = start
	v.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), storeReadTimeout)
	defer cancel()
	keyDoc, err := v.keeper.read(ctx, KeyFile, "token keyring")
	var revDoc []byte
	if err == nil {
		revDoc, err = v.keeper.read(ctx, RevokedFile, "token revocation list")
		if errors.Is(err, fs.ErrNotExist) {
			revDoc, err = nil, nil
		}
	}

	v.mu.Lock()
	defer v.mu.Unlock()
	if errors.Is(err, store.ErrUnavailable) {
		if !v.loaded {
			return err
		}
		if !v.failing {
			v.failing = true
			v.log.Warn("cannot read the token keyring and revocation list: checking dataplane tokens against those read before until the store is back",
				"store", v.keeper.Describe(), "error", err)
		}
		return v.bad
	}
	if v.failing {
		v.failing = false
		v.log.Info("token keyring and revocation list read from the store again", "store", v.keeper.Describe())
	}
	if err == nil && len(keyDoc) > maxKeyringBytes {
		err = fmt.Errorf("token keyring %s: larger than %d bytes", KeyFile, maxKeyringBytes)
	}
	if err == nil && len(revDoc) > maxRevokedBytes {
		err = fmt.Errorf("token revocation list %s: larger than %d bytes", RevokedFile, maxRevokedBytes)
	}
	if err != nil {
		v.bad = err
		return err
	}
	if sum := sha256.Sum256(keyDoc); !v.loaded || sum != v.keySum {
		kr, err := unmarshalKeyring(keyDoc)
		if err != nil {
			v.bad = fmt.Errorf("token keyring %s: %w", KeyFile, err)
			return v.bad
		}
		v.takeKeyring(kr)
		v.keySum = sum
	}
	if sum := sha256.Sum256(revDoc); !v.loaded || sum != v.revSum {
		v.ids, v.revSum = parseRevoked(revDoc), sum
	}
	v.bad, v.loaded = nil, true
	return nil
}

// takeKeyring makes kr's public keys those tokens are checked against; the
// caller holds v.mu.
func (v *Verifier) takeKeyring(kr *keyring) {
	keys := make(map[string]ed25519.PublicKey, len(kr.keys))
	for _, k := range kr.keys {
		keys[k.ID] = k.private.Public().(ed25519.PublicKey)
	}
	v.legacy = nil
	if l := kr.legacy(); l != nil {
		v.legacy = keys[l.ID]
	}
	v.keys = keys
}
