package token

import (
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

func TestTokenIssueVerifyRevoke(t *testing.T) {
	dir := t.TempDir()
	now := time.Unix(1_800_000_000, 0)
	v, err := NewVerifier(dir, func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	key, err := LoadOrCreateKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	c := Claims{Mesh: "demo", Name: "web-1", IssuedAt: now.Unix(), Expires: now.Add(time.Hour).Unix(), ID: "a1"}
	tok, err := Issue(key, c)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(tok, ".") != 2 {
		t.Fatalf("token %q is not three parts", tok)
	}
	if got, err := v.Verify(tok); err != nil || got != c {
		t.Fatalf("Verify: %+v, %v", got, err)
	}
	// A changed claim breaks the signature.
	parts := strings.Split(tok, ".")
	other, _ := Issue(key, Claims{Mesh: "demo", Name: "web-2", IssuedAt: c.IssuedAt, Expires: c.Expires, ID: "a2"})
	forged := parts[0] + "." + strings.Split(other, ".")[1] + "." + parts[2]
	if _, err := v.Verify(forged); !errors.Is(err, ErrSignature) {
		t.Errorf("forged: %v", err)
	}
	// Refused from the exp second on, with no leeway.
	now = now.Add(time.Hour)
	if _, err := v.Verify(tok); !errors.Is(err, ErrExpired) {
		t.Errorf("expired: %v", err)
	}
	now = now.Add(-time.Second)
	if _, err := v.Verify(tok); err != nil {
		t.Errorf("a second before exp: %v", err)
	}
	if err := Revoke(dir, "a1"); err != nil {
		t.Fatal(err)
	}
	if err := Revoke(dir, "a1"); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(tok); !errors.Is(err, ErrRevoked) {
		t.Errorf("revoked: %v", err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, RevokedFile))
	if string(b) != "a1\n" {
		t.Errorf("revocation list %q", b)
	}
	for _, bad := range []string{"", "a.b", "a.b.c", strings.Repeat("x", 5000), "e30.e30.", parts[0] + ".e30." + parts[2]} {
		if _, err := Parse(bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("Parse(%.10q): %v", bad, err)
		}
		if _, err := v.Verify(bad); !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrSignature) {
			t.Errorf("Verify(%.10q): %v", bad, err)
		}
	}
}

// TestTokenShape pins what gRPC-Go's jwt_token_file and other JOSE
// implementations read: a compact JWS whose header names EdDSA, JWT and the
// key's thumbprint, and whose claims are plain JSON with an integer exp.
func TestTokenShape(t *testing.T) {
	key, err := LoadOrCreateKey(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	c := Claims{Mesh: "demo", Name: "web-1", IssuedAt: 1_800_000_000, Expires: 1_800_003_600, ID: "a1"}
	tok, err := Issue(key, c)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(tok, ".")
	var header map[string]any
	if b, err := base64.RawURLEncoding.DecodeString(parts[0]); err != nil || json.Unmarshal(b, &header) != nil {
		t.Fatalf("header %q: %v", parts[0], err)
	}
	if header["alg"] != "EdDSA" || header["typ"] != "JWT" || header["kid"] != key.ID || len(header) != 3 {
		t.Errorf("header %v", header)
	}
	pub := key.private.Public().(ed25519.PublicKey)
	if kid, _ := thumbprint(pub); kid != key.ID || !looksLikeKID(kid) {
		t.Errorf("kid %q, thumbprint %q", key.ID, kid)
	}
	// RFC 7638, 3.1: SHA-256 of {"crv","kty","x"} in that order, no spaces.
	sum := sha256.Sum256(fmt.Appendf(nil, `{"crv":"Ed25519","kty":"OKP","x":"%s"}`, base64.RawURLEncoding.EncodeToString(pub)))
	if want := base64.RawURLEncoding.EncodeToString(sum[:]); key.ID != want {
		t.Errorf("kid %s, want RFC 7638 thumbprint %s", key.ID, want)
	}
	// What gRPC-Go's jwt file reader decodes.
	var grpcClaims struct {
		Exp int64 `json:"exp"`
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil || json.Unmarshal(b, &grpcClaims) != nil || grpcClaims.Exp != c.Expires {
		t.Errorf("claims %s: exp %d, %v", b, grpcClaims.Exp, err)
	}
	if got, err := Parse(tok); err != nil || got != c {
		t.Errorf("Parse: %+v, %v", got, err)
	}
	if kid, err := KeyID(tok); err != nil || kid != key.ID {
		t.Errorf("KeyID: %q, %v", kid, err)
	}
	for _, f := range []string{"%v", "%+v", "%#v", "%s"} {
		if s := fmt.Sprintf(f, *key); strings.Contains(s, string(key.private)) || strings.Contains(s, fmt.Sprint([]byte(key.private))) ||
			!strings.Contains(s, key.ID) {
			t.Errorf("%s of a key: %s", f, s)
		}
	}
}

// TestTokenAlgorithmConfusionRefused: a token whose header names "none", or
// HS256 keyed with the public key (which anyone may know), or that carries
// another kid than the key that signed it, does not verify.
func TestTokenAlgorithmConfusionRefused(t *testing.T) {
	dir := t.TempDir()
	v, err := NewVerifier(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	key, err := LoadOrCreateKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	c := Claims{Mesh: "demo", Name: "web-1", IssuedAt: now.Unix(), Expires: now.Add(time.Hour).Unix(), ID: "a1"}
	good, err := Issue(key, c)
	if err != nil {
		t.Fatal(err)
	}
	payload := strings.Split(good, ".")[1]
	enc := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

	pub := key.private.Public().(ed25519.PublicKey)
	hs, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: []byte(pub)},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", key.ID))
	if err != nil {
		t.Fatal(err)
	}
	hsTok, err := jwt.Signed(hs).Claims(c).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	// The same header, signature and claims with the kid changed: the
	// header is signed too.
	other, err := generateKey(now)
	if err != nil {
		t.Fatal(err)
	}
	sig := strings.Split(good, ".")[2]
	cases := map[string]struct {
		tok  string
		want error
	}{
		"alg none":               {enc(`{"alg":"none","kid":"`+key.ID+`","typ":"JWT"}`) + "." + payload + ".", ErrSignature},
		"alg none, no kid":       {enc(`{"alg":"none","typ":"JWT"}`) + "." + payload + ".", ErrSignature},
		"HS256 with the pub key": {hsTok, ErrSignature},
		"kid of another key":     {enc(`{"alg":"EdDSA","kid":"`+other.ID+`","typ":"JWT"}`) + "." + payload + "." + sig, ErrSignature},
		"kid removed":            {enc(`{"alg":"EdDSA","typ":"JWT"}`) + "." + payload + "." + sig, ErrSignature},
		"kid not a thumbprint":   {enc(`{"alg":"EdDSA","kid":"../../etc/passwd","typ":"JWT"}`) + "." + payload + "." + sig, ErrSignature},
	}
	for name, tc := range cases {
		_, err := v.Verify(tc.tok)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
			continue
		}
		if strings.Contains(err.Error(), tc.tok) || strings.Contains(err.Error(), "passwd") {
			t.Errorf("%s: the error %q shows the token", name, err)
		}
	}
	if _, err := v.Verify(good); err != nil {
		t.Errorf("the genuine token: %v", err)
	}
}

// legacyToken was issued by the previous version (hand-written JWS, no
// kid) with legacyKey, for demo/web-1, id legacy-1, iat 2023-11-14, exp
// 2100-01-01.
const legacyToken = "eyJhbGciOiJFZERTQSIsInR5cCI6IkpXVCJ9." +
	"eyJtZXNoIjoiZGVtbyIsIm5hbWUiOiJ3ZWItMSIsImlhdCI6MTcwMDAwMDAwMCwiZXhwIjo0MTAyNDQ0ODAwLCJqdGkiOiJsZWdhY3ktMSJ9." +
	"u7iRan4NrwDLw4lSaLYdDaDx9iPnUGohf14G7hopkkK0nNbpoBLArAJFZh-sCliO0Hv6Lqe-tpgf3hbSW1ARDQ"

// legacyKey is the key of legacyToken.
func legacyKey() ed25519.PrivateKey {
	seed := sha256.Sum256([]byte("gitmesh legacy token test key"))
	return ed25519.NewKeyFromSeed(seed[:])
}

// writeLegacyKey writes legacyKey as the previous version kept it.
func writeLegacyKey(t *testing.T, dir string) string {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(legacyKey())
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, LegacyKeyFile)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestTokenLegacyVerifies(t *testing.T) {
	dir := t.TempDir()
	writeLegacyKey(t, dir)
	v, err := NewVerifier(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := Claims{Mesh: "demo", Name: "web-1", IssuedAt: 1_700_000_000, Expires: 4_102_444_800, ID: "legacy-1"}
	if got, err := v.Verify(legacyToken); err != nil || got != want {
		t.Fatalf("legacy token: %+v, %v", got, err)
	}
	if kid, err := KeyID(legacyToken); err != nil || kid != "" {
		t.Errorf("KeyID of a legacy token: %q, %v", kid, err)
	}
	// New tokens are signed with the same key, now with its kid.
	key, err := LoadOrCreateKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	if want, _ := thumbprint(legacyKey().Public().(ed25519.PublicKey)); key.ID != want {
		t.Errorf("signing key %s, want the legacy key %s", key.ID, want)
	}
	// A kid-less token of any other key is refused.
	other, err := generateKey(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	forged := strings.Split(legacyToken, ".")
	forged[2] = base64.RawURLEncoding.EncodeToString(ed25519.Sign(other.private, []byte(forged[0]+"."+forged[1])))
	if _, err := v.Verify(strings.Join(forged, ".")); !errors.Is(err, ErrSignature) {
		t.Errorf("kid-less token of another key: %v", err)
	}
}
