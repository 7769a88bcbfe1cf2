// Package token issues and checks dataplane tokens: the credential an xDS
// client presents so that the control plane serves it only its own node's
// configuration. A token is a compact JWT signed with Ed25519 ("EdDSA"),
// bound to one mesh and dataplane, with an expiry and an id that can be
// revoked.
//
// Format: base64url(header) "." base64url(claims) "." base64url(signature),
// unpadded, where header is {"alg":"EdDSA","kid":<key id>,"typ":"JWT"},
// claims is {"exp","iat","jti","mesh","name"} (times in Unix seconds) and the
// kid is the RFC 7638 thumbprint of the signing key. Tokens of earlier
// versions carry no kid. The plain JWT shape lets gRPC-Go's jwt_token_file
// call credentials read and refresh it unchanged.
//
// Signing and parsing go through github.com/go-jose/go-jose/v4 rather than
// hand-written JWS code: its parser takes an explicit list of accepted
// algorithms (EdDSA only here), so a token that names "none", or HS256 with
// the public key as its secret, is refused before any key is looked at, and
// its JSON decoder matches member names case-sensitively and rejects
// duplicate members, so what it verifies is what every other JOSE
// implementation would read. The module is already in the build as a
// dependency of gRPC-Go's xDS support.
package token

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// maxTokenBytes bounds what Parse and Verify look at; real tokens are about
// 300 bytes.
const maxTokenBytes = 4096

// algorithms are the only signature algorithms a token may name.
var algorithms = []jose.SignatureAlgorithm{jose.EdDSA}

// Claims are what a token asserts.
type Claims struct {
	Mesh     string `json:"mesh"`
	Name     string `json:"name"`
	IssuedAt int64  `json:"iat"`
	Expires  int64  `json:"exp"`
	ID       string `json:"jti"`
}

// Node is the xDS node id the claims allow: <mesh>.<name>.
func (c Claims) Node() string { return c.Mesh + "." + c.Name }

// check refuses claims a token of ours never has.
func (c Claims) check() error {
	if c.Mesh == "" || c.Name == "" || c.ID == "" || c.IssuedAt == 0 || c.Expires == 0 {
		return fmt.Errorf("%w: claims need mesh, name, iat, exp and jti", ErrMalformed)
	}
	if c.Expires <= c.IssuedAt {
		return fmt.Errorf("%w: exp is not after iat", ErrMalformed)
	}
	return nil
}

// Errors of Verify, for callers that branch; the returned errors wrap them.
var (
	ErrMalformed = errors.New("malformed token")
	ErrSignature = errors.New("token signature does not verify")
	ErrExpired   = errors.New("token expired")
	ErrRevoked   = errors.New("token revoked")
)

// NewID returns a random token id (16 bytes, hex).
func NewID() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// Key is a token signing key: an Ed25519 private key and its id.
// Formatting a Key shows its id only, never key material.
type Key struct {
	// ID is the key's kid: its RFC 7638 JWK thumbprint (SHA-256, base64url).
	ID string
	// Created is when the key was made (for a key of an earlier version,
	// when its file was last written).
	Created time.Time
	// LastExpiry is the latest expiry of the tokens recorded as issued
	// with the key; zero when none is.
	LastExpiry time.Time
	// Legacy marks the key taken over from an earlier version's key file:
	// tokens without a kid are checked against it, and only against it.
	Legacy bool

	private ed25519.PrivateKey
}

// String is the key's id; key material is never formatted.
func (k Key) String() string { return "token signing key " + k.ID }

// GoString keeps %#v from printing the private key.
func (k Key) GoString() string { return "token.Key{ID: " + fmt.Sprintf("%q", k.ID) + "}" }

// newKey wraps an Ed25519 private key with its thumbprint.
func newKey(priv ed25519.PrivateKey, created time.Time) (*Key, error) {
	kid, err := thumbprint(priv.Public().(ed25519.PublicKey))
	if err != nil {
		return nil, err
	}
	return &Key{ID: kid, Created: created.UTC().Truncate(time.Second), private: priv}, nil
}

// generateKey makes a new random signing key.
func generateKey(now time.Time) (*Key, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	return newKey(priv, now)
}

// thumbprint is the RFC 7638 JWK thumbprint of pub, the kid of its tokens.
func thumbprint(pub ed25519.PublicKey) (string, error) {
	jwk := jose.JSONWebKey{Key: pub}
	sum, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(sum), nil
}

// looksLikeKID tells a kid this package could have made (43 base64url
// characters) from anything else a header may carry, so that errors and
// reloads only ever deal with the former.
func looksLikeKID(kid string) bool {
	if len(kid) != base64.RawURLEncoding.EncodedLen(32) {
		return false
	}
	_, err := base64.RawURLEncoding.DecodeString(kid)
	return err == nil
}

// Issue signs claims with key and returns the token; its header names the
// key's kid. It records nothing: IssueRecorded signs with the state
// directory's current key and records the token.
func Issue(key *Key, c Claims) (string, error) {
	if key == nil || len(key.private) != ed25519.PrivateKeySize {
		return "", errors.New("issue token: no signing key")
	}
	if err := c.check(); err != nil {
		return "", fmt.Errorf("issue token: need mesh, name, id, an issue time and an expiry after it")
	}
	signer, err := jose.NewSigner(
		jose.SigningKey{Algorithm: jose.EdDSA, Key: jose.JSONWebKey{Key: key.private, KeyID: key.ID}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return "", fmt.Errorf("issue token: %w", err)
	}
	tok, err := jwt.Signed(signer).Claims(c).Serialize()
	if err != nil {
		return "", fmt.Errorf("issue token: %w", err)
	}
	return tok, nil
}

// parsed is a token split and decoded, its signature not yet checked.
type parsed struct {
	jwt *jwt.JSONWebToken
	kid string
}

// parse decodes tok's header, allowing EdDSA only.
func parse(tok string) (parsed, error) {
	tok = strings.TrimSpace(tok)
	if len(tok) > maxTokenBytes {
		return parsed{}, fmt.Errorf("%w: longer than %d bytes", ErrMalformed, maxTokenBytes)
	}
	if strings.Count(tok, ".") != 2 {
		return parsed{}, fmt.Errorf("%w: want three dot-separated parts", ErrMalformed)
	}
	t, err := jwt.ParseSigned(tok, algorithms)
	if err != nil {
		if e, ok := errors.AsType[*jose.ErrUnexpectedSignatureAlgorithm](err); ok && e.Got != "" {
			// alg "none", HS256 and the like: the header is well formed,
			// the signature is not one this control plane makes.
			return parsed{}, fmt.Errorf("%w: the token is not signed with EdDSA, the only algorithm accepted", ErrSignature)
		}
		return parsed{}, fmt.Errorf("%w: %s", ErrMalformed, joseMessage(err))
	}
	if len(t.Headers) != 1 {
		return parsed{}, fmt.Errorf("%w: want one signature", ErrMalformed)
	}
	return parsed{jwt: t, kid: t.Headers[0].KeyID}, nil
}

// joseMessage is a go-jose error without the library's prefix.
func joseMessage(err error) string {
	return strings.TrimPrefix(err.Error(), "go-jose/go-jose: ")
}

// Parse decodes a token's claims without checking its signature: for tools
// that show or revoke a token, never for deciding access.
func Parse(tok string) (Claims, error) {
	p, err := parse(tok)
	if err != nil {
		return Claims{}, err
	}
	var c Claims
	if err := p.jwt.UnsafeClaimsWithoutVerification(&c); err != nil {
		return Claims{}, fmt.Errorf("%w: claims: %s", ErrMalformed, joseMessage(err))
	}
	if err := c.check(); err != nil {
		return Claims{}, err
	}
	return c, nil
}

// KeyID returns the kid in a token's header ("" for a token of an earlier
// version) without checking its signature.
func KeyID(tok string) (string, error) {
	p, err := parse(tok)
	return p.kid, err
}

// verify checks p's signature with pub and its claims at now. Expiry has
// no leeway: a token is refused from its exp second on (RFC 7519, 4.1.4,
// "on or after"). Issuer and verifier are the same control plane, so there
// is no clock skew between them to absorb, and clients renew ahead of time
// (gRPC-Go's jwt_token_file treats a token as expired 30 s before its exp);
// a leeway would only extend a token past the life it was issued with.
// iat is required but not compared with the clock: a token is only ever
// as good as its exp, which bounds it whatever iat says.
func verify(p parsed, pub ed25519.PublicKey, now time.Time) (Claims, error) {
	var c Claims
	if err := p.jwt.Claims(pub, &c); err != nil {
		if errors.Is(err, jose.ErrCryptoFailure) {
			return Claims{}, ErrSignature
		}
		return Claims{}, fmt.Errorf("%w: claims: %s", ErrMalformed, joseMessage(err))
	}
	if err := c.check(); err != nil {
		return Claims{}, err
	}
	if exp := time.Unix(c.Expires, 0); !now.Before(exp) {
		return Claims{}, fmt.Errorf("%w at %s (token id %s): issue a new one", ErrExpired, exp.UTC().Format(time.RFC3339), c.ID)
	}
	return c, nil
}
