package source

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	pgperrors "github.com/ProtonMail/go-crypto/openpgp/errors"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// Reasons a commit is not verified, the label of
// gitmesh_unverified_commits_total.
const (
	ReasonUnsigned     = "unsigned"      // the commit carries no signature
	ReasonUnknownKey   = "unknown_key"   // signed by a key that is not in the keyring
	ReasonBadSignature = "bad_signature" // the signature does not verify, or is not OpenPGP
)

// Errors an UnverifiedError unwraps to, one per reason.
var (
	ErrUnsigned     = errors.New("commit is not signed")
	ErrUnknownKey   = errors.New("commit is signed by a key not in the keyring")
	ErrBadSignature = errors.New("commit signature does not verify")
)

// UnverifiedError says why a commit's signature was not accepted. It
// unwraps to ErrUnsigned, ErrUnknownKey or ErrBadSignature.
type UnverifiedError struct {
	Commit string // the commit's hash
	Reason string // ReasonUnsigned, ReasonUnknownKey or ReasonBadSignature
	KeyID  string // the issuer's key id (16 hex digits) when the signature names one
	Detail string // what was wrong with a bad signature
}

func (e *UnverifiedError) Error() string {
	c := e.Commit
	if len(c) > 12 {
		c = c[:12]
	}
	switch e.Reason {
	case ReasonUnsigned:
		return fmt.Sprintf("commit %s is not signed", c)
	case ReasonUnknownKey:
		if e.KeyID == "" {
			return fmt.Sprintf("commit %s is signed by an unknown key", c)
		}
		return fmt.Sprintf("commit %s is signed by unknown key %s", c, e.KeyID)
	default:
		msg := fmt.Sprintf("commit %s has a bad signature", c)
		if e.KeyID != "" {
			msg += " (key " + e.KeyID + ")"
		}
		if e.Detail != "" {
			msg += ": " + e.Detail
		}
		return msg
	}
}

func (e *UnverifiedError) Unwrap() error {
	switch e.Reason {
	case ReasonUnsigned:
		return ErrUnsigned
	case ReasonUnknownKey:
		return ErrUnknownKey
	default:
		return ErrBadSignature
	}
}

// Verifier checks commits' OpenPGP signatures against a keyring, as
// object.Commit.Verify does, with the keyring parsed once. It is safe for
// concurrent use.
type Verifier struct {
	file    string
	keyring openpgp.EntityList
}

// NewVerifier reads a keyring file: one or more ASCII-armored OpenPGP public
// key blocks (as `gpg --export --armor` writes them, concatenated), or a
// binary keyring. A file without a usable public key is an error naming it.
func NewVerifier(file string) (*Verifier, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("keyring: %w", err)
	}
	keyring, err := parseKeyring(data)
	if err != nil {
		return nil, fmt.Errorf("keyring %s: %w", file, err)
	}
	return &Verifier{file: file, keyring: keyring}, nil
}

// parseKeyring reads every armored block of data (ReadArmoredKeyRing reads
// only the first), or data as a binary keyring when it has no armor.
func parseKeyring(data []byte) (openpgp.EntityList, error) {
	const begin = "-----BEGIN PGP "
	var list openpgp.EntityList
	if !bytes.Contains(data, []byte(begin)) {
		l, err := openpgp.ReadKeyRing(bytes.NewReader(data))
		if err != nil {
			return nil, fmt.Errorf("no OpenPGP public key: %w", err)
		}
		list = l
	}
	for rest := data; ; {
		i := bytes.Index(rest, []byte(begin))
		if i < 0 {
			break
		}
		rest = rest[i:]
		l, err := openpgp.ReadArmoredKeyRing(bytes.NewReader(rest))
		if err != nil {
			return nil, fmt.Errorf("armored block at byte %d: %w", len(data)-len(rest), err)
		}
		list = append(list, l...)
		rest = rest[len(begin):]
	}
	for _, e := range list {
		if e.PrimaryKey != nil && len(e.Identities) > 0 {
			return list, nil
		}
	}
	return nil, errors.New("no usable OpenPGP public key (export one with `gpg --export --armor KEYID`)")
}

// File is the keyring file the Verifier was made from.
func (v *Verifier) File() string { return v.file }

// Keys are the key ids of the keyring's primary keys, 16 hex digits each.
func (v *Verifier) Keys() []string {
	ids := make([]string, 0, len(v.keyring))
	for _, e := range v.keyring {
		ids = append(ids, e.PrimaryKey.KeyIdString())
	}
	return ids
}

// Verify checks c's signature. It returns the signer, "Name <email> (key
// KEYID)", or an *UnverifiedError: the commit is unsigned, signed by a key
// not in the keyring, or its signature is bad (including expired or revoked
// keys, SSH or X.509 signatures, and more than one signature).
func (v *Verifier) Verify(c *object.Commit) (signer string, err error) {
	hash := c.Hash.String()
	sig := c.PGPSignature
	if strings.TrimSpace(sig) == "" {
		return "", &UnverifiedError{Commit: hash, Reason: ReasonUnsigned}
	}
	bad := func(keyID, detail string) error {
		return &UnverifiedError{Commit: hash, Reason: ReasonBadSignature, KeyID: keyID, Detail: detail}
	}
	if !strings.HasPrefix(strings.TrimSpace(sig), "-----BEGIN PGP SIGNATURE-----") {
		return "", bad("", "not an OpenPGP signature (SSH and X.509 signatures are not supported)")
	}
	if strings.Count(sig, "-----BEGIN ") > 1 {
		return "", bad("", "more than one signature")
	}
	keyID := issuer(sig)
	signed := &plumbing.MemoryObject{}
	if err := c.EncodeWithoutSignature(signed); err != nil {
		return "", fmt.Errorf("encode commit %s: %w", hash, err)
	}
	r, err := signed.Reader()
	if err != nil {
		return "", fmt.Errorf("encode commit %s: %w", hash, err)
	}
	defer r.Close()
	entity, err := openpgp.CheckArmoredDetachedSignature(v.keyring, r, strings.NewReader(sig), nil)
	switch {
	case errors.Is(err, pgperrors.ErrUnknownIssuer):
		return "", &UnverifiedError{Commit: hash, Reason: ReasonUnknownKey, KeyID: keyID}
	case err != nil:
		return "", bad(keyID, err.Error())
	case entity == nil:
		return "", bad(keyID, "no signer")
	}
	name := ""
	if id := entity.PrimaryIdentity(); id != nil {
		name = id.Name + " "
	}
	if keyID == "" {
		keyID = entity.PrimaryKey.KeyIdString()
	}
	return fmt.Sprintf("%s(key %s)", name, keyID), nil
}

// VerifyCommit reads the commit hash names from repo and verifies it.
func (v *Verifier) VerifyCommit(repo *git.Repository, hash string) (signer string, err error) {
	c, err := repo.CommitObject(plumbing.NewHash(hash))
	if err != nil {
		return "", fmt.Errorf("%w %q: %v", ErrUnknownRevision, hash, err)
	}
	return v.Verify(c)
}

// issuer is the key id an armored signature names, "" when it cannot be
// read.
func issuer(armored string) string {
	block, err := armor.Decode(strings.NewReader(armored))
	if err != nil {
		return ""
	}
	p, err := packet.NewReader(block.Body).Next()
	if err != nil {
		return ""
	}
	sig, ok := p.(*packet.Signature)
	if !ok || sig.IssuerKeyId == nil {
		return ""
	}
	return fmt.Sprintf("%016X", *sig.IssuerKeyId)
}
