// Package token issues and checks dataplane tokens: the credential an xDS
// client presents so that the control plane serves it only its own node's
// configuration. A token is a compact JWS (a JWT) signed with Ed25519, bound
// to one mesh and dataplane, with an expiry and an id that can be revoked.
//
// Format: base64url(header) "." base64url(claims) "." base64url(signature),
// unpadded, where header is {"alg":"EdDSA","typ":"JWT"}, claims is
// {"mesh","name","iat","exp","jti"} (times in Unix seconds) and the signature
// covers the first two parts as sent. The JWT shape lets gRPC-Go's
// jwt_token_file call credentials carry it unchanged.
package token

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// header is the JWS header of every token.
const header = `{"alg":"EdDSA","typ":"JWT"}`

var encodedHeader = base64.RawURLEncoding.EncodeToString([]byte(header))

// maxTokenBytes bounds what Parse looks at; real tokens are about 250 bytes.
const maxTokenBytes = 4096

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

// Issue signs claims with key and returns the token.
func Issue(key ed25519.PrivateKey, c Claims) (string, error) {
	if c.Mesh == "" || c.Name == "" || c.ID == "" || c.Expires <= c.IssuedAt {
		return "", fmt.Errorf("issue token: need mesh, name, id and an expiry after the issue time")
	}
	payload, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	signed := encodedHeader + "." + base64.RawURLEncoding.EncodeToString(payload)
	sig := ed25519.Sign(key, []byte(signed))
	return signed + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

// Parse decodes a token's claims without checking its signature: for tools
// that show or revoke a token, never for deciding access.
func Parse(tok string) (Claims, error) {
	c, _, _, err := split(tok)
	return c, err
}

func split(tok string) (c Claims, signed string, sig []byte, err error) {
	tok = strings.TrimSpace(tok)
	if len(tok) > maxTokenBytes {
		return c, "", nil, fmt.Errorf("%w: longer than %d bytes", ErrMalformed, maxTokenBytes)
	}
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return c, "", nil, fmt.Errorf("%w: want three dot-separated parts", ErrMalformed)
	}
	h, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil || string(h) != header {
		return c, "", nil, fmt.Errorf("%w: want header %s", ErrMalformed, header)
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return c, "", nil, fmt.Errorf("%w: claims are not base64url", ErrMalformed)
	}
	dec := json.NewDecoder(strings.NewReader(string(payload)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return c, "", nil, fmt.Errorf("%w: claims: %v", ErrMalformed, err)
	}
	if c.Mesh == "" || c.Name == "" || c.ID == "" || c.Expires == 0 {
		return c, "", nil, fmt.Errorf("%w: claims need mesh, name, exp and jti", ErrMalformed)
	}
	sig, err = base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || len(sig) != ed25519.SignatureSize {
		return c, "", nil, fmt.Errorf("%w: bad signature encoding", ErrMalformed)
	}
	return c, parts[0] + "." + parts[1], sig, nil
}

// Verify checks a token's signature with pub and its expiry at now, and
// returns its claims. Revocation is the Verifier's job. Errors never
// contain the token.
func Verify(pub ed25519.PublicKey, tok string, now time.Time) (Claims, error) {
	c, signed, sig, err := split(tok)
	if err != nil {
		return Claims{}, err
	}
	if !ed25519.Verify(pub, []byte(signed), sig) {
		return Claims{}, ErrSignature
	}
	if exp := time.Unix(c.Expires, 0); !now.Before(exp) {
		return Claims{}, fmt.Errorf("%w at %s (token id %s): issue a new one", ErrExpired, exp.UTC().Format(time.RFC3339), c.ID)
	}
	return c, nil
}
