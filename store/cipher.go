package store

import (
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"

	"golang.org/x/crypto/chacha20poly1305"
)

// KeySize is the size of the key that encrypts private keys at rest.
const KeySize = chacha20poly1305.KeySize

// sealVersion prefixes every sealed value, so that another scheme can
// follow without misreading the old one.
const sealVersion = 1

// Sealer encrypts documents with XChaCha20-Poly1305: an AEAD whose 24-byte
// nonces may be drawn at random for every write without a counter to keep
// (with AES-GCM's 12 bytes random nonces are safe for far fewer messages
// under one key, and several replicas would have to share a counter), and
// which is constant-time in software, AES-NI or not. The document's key is
// the associated data: a sealed value copied to another key does not open.
type Sealer struct {
	aead cipher.AEAD
}

// NewSealer makes a Sealer of a 32-byte key.
func NewSealer(key []byte) (*Sealer, error) {
	aead, err := chacha20poly1305.NewX(key)
	if err != nil {
		return nil, err
	}
	return &Sealer{aead: aead}, nil
}

// ReadKeyFile reads the store's encryption key from path: 32 bytes written
// as 64 hex digits or as base64 (surrounding white space ignored). Nobody
// but its owner may read or write the file, except, as PostgreSQL allows
// for its own key files, that a file owned by root may be read by its
// group (0640, 0440): a Kubernetes Secret mounted with fsGroup is such a
// file, the group being the control plane's own.
func ReadKeyFile(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	perm := fi.Mode().Perm()
	sys, _ := fi.Sys().(*syscall.Stat_t)
	rootOwned := sys != nil && sys.Uid == 0
	switch {
	case perm&0o027 != 0:
		return nil, fmt.Errorf("%s may be read or written by others (mode %04o): chmod 600 it", path, perm)
	case perm&0o040 != 0 && !rootOwned:
		return nil, fmt.Errorf("%s is readable by its group (mode %04o): chmod 600 it (only a file owned by root may be 0640)", path, perm)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	s := strings.TrimSpace(string(b))
	if k, err := hex.DecodeString(s); err == nil && len(k) == KeySize {
		return k, nil
	}
	if k, err := base64.StdEncoding.DecodeString(s); err == nil && len(k) == KeySize {
		return k, nil
	}
	return nil, fmt.Errorf("%s: want %d random bytes as hex or base64 (openssl rand -hex %d > %s)", path, KeySize, KeySize, path)
}

// NewKey returns a random key, hex-encoded, for a key file.
func NewKey() (string, error) {
	k := make([]byte, KeySize)
	if _, err := rand.Read(k); err != nil {
		return "", err
	}
	return hex.EncodeToString(k), nil
}

// Seal encrypts data for the document key.
func (s *Sealer) Seal(key string, data []byte) ([]byte, error) {
	n := s.aead.NonceSize()
	out := make([]byte, 1+n, 1+n+len(data)+s.aead.Overhead())
	out[0] = sealVersion
	if _, err := rand.Read(out[1:]); err != nil {
		return nil, err
	}
	return s.aead.Seal(out, out[1:], data, []byte(key)), nil
}

// Open decrypts what Seal made for the document key.
func (s *Sealer) Open(key string, sealed []byte) ([]byte, error) {
	n := s.aead.NonceSize()
	if len(sealed) < 1+n+s.aead.Overhead() || sealed[0] != sealVersion {
		return nil, errors.New("not a sealed value of this gitmesh")
	}
	data, err := s.aead.Open(nil, sealed[1:1+n], sealed[1+n:], []byte(key))
	if err != nil {
		return nil, errors.New("cannot decrypt: wrong --store-key-file, or the value was altered")
	}
	return data, nil
}
