package token

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// IssuedRetention is how long a token stays in IssuedFile after it
// expires: long enough to tell a revocation of a token just expired from
// one of an id this state directory never issued.
const IssuedRetention = 7 * 24 * time.Hour

// maxIssuedBytes bounds IssuedFile (about 150 bytes a token, so some
// 400,000 live tokens).
const maxIssuedBytes = 64 << 20

// Issued is the record of one token issued from a state directory.
type Issued struct {
	ID      string    `json:"jti"`
	Node    string    `json:"node"`
	Expires time.Time `json:"expires"`
	KeyID   string    `json:"kid"`
}

type issuedJSON struct {
	Tokens []Issued `json:"tokens"`
}

// readIssued reads IssuedFile (nothing when there is none).
func readIssued(stateDir string) ([]Issued, error) {
	f, err := os.Open(filepath.Join(stateDir, IssuedFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("issued tokens: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxIssuedBytes+1))
	if err != nil {
		return nil, fmt.Errorf("issued tokens: %w", err)
	}
	if len(b) > maxIssuedBytes {
		return nil, fmt.Errorf("issued tokens %s: larger than %d bytes", f.Name(), maxIssuedBytes)
	}
	var in issuedJSON
	if err := json.Unmarshal(b, &in); err != nil {
		return nil, fmt.Errorf("issued tokens %s: %w", f.Name(), err)
	}
	return in.Tokens, nil
}

// marshalIssued writes one token a line, for people reading the file.
func marshalIssued(tokens []Issued) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString(`{"tokens": [`)
	for i, t := range tokens {
		line, err := json.Marshal(t)
		if err != nil {
			return nil, err
		}
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString("\n  ")
		b.Write(line)
	}
	b.WriteString("\n]}\n")
	return b.Bytes(), nil
}

// recordIssued adds rec to tokens and drops the records of tokens expired
// more than IssuedRetention before now.
func recordIssued(tokens []Issued, rec Issued, now time.Time) []Issued {
	out := tokens[:0:0]
	for _, t := range tokens {
		if now.Sub(t.Expires) <= IssuedRetention {
			out = append(out, t)
		}
	}
	return append(out, rec)
}

// issued reads the issued list of k's store (nothing when there is none).
func (k *Keeper) issued(ctx context.Context) ([]Issued, error) {
	if k.local {
		return readIssued(k.dir)
	}
	b, err := k.read(ctx, IssuedFile, "issued tokens")
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if len(b) > maxIssuedBytes {
		return nil, fmt.Errorf("issued tokens %s: larger than %d bytes", IssuedFile, maxIssuedBytes)
	}
	var in issuedJSON
	if err := json.Unmarshal(b, &in); err != nil {
		return nil, fmt.Errorf("issued tokens %s: %w", IssuedFile, err)
	}
	return in.Tokens, nil
}

// LookupIssued finds the record of the token with id among those issued
// from stateDir (and not expired more than IssuedRetention ago).
func LookupIssued(stateDir, id string) (Issued, bool, error) {
	return dirKeeper(stateDir).LookupIssued(context.Background(), id)
}

// LookupIssued finds the record of the token with id among those issued
// (and not expired more than IssuedRetention ago).
func (k *Keeper) LookupIssued(ctx context.Context, id string) (Issued, bool, error) {
	tokens, err := k.issued(ctx)
	if err != nil {
		return Issued{}, false, err
	}
	for _, t := range tokens {
		if t.ID == id {
			return t, true, nil
		}
	}
	return Issued{}, false, nil
}
