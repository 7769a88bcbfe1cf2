package token

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"github.com/gitmesh/gitmesh/internal/atomicfile"
)

// ErrKeyringExists is the error of Import into a store that holds another
// keyring than the state directory's.
var ErrKeyringExists = errors.New("the store holds another token keyring")

// Import copies the token state of the state directory stateDir into k's
// store, leaving the directory as it is: the keyring (made of the earlier
// version's LegacyKeyFile when the directory has only that), the issued
// list and the revocation list. Revoked ids and issued records are added to
// those the store holds, never dropped, so that a revoked token stays
// revoked. The keyring replaces the store's when replaceKeys is set or the
// store has none; a store holding another one is an error wrapping
// ErrKeyringExists. Import returns the documents it wrote.
func (k *Keeper) Import(ctx context.Context, stateDir string, replaceKeys bool) ([]string, error) {
	src := dirKeeper(stateDir)
	kr, err := src.keyring(ctx)
	if errors.Is(err, fs.ErrNotExist) {
		kr = nil
		switch legacy, lerr := src.legacyKey(); {
		case lerr == nil:
			kr = &keyring{}
			kr.add(legacy)
		case !errors.Is(lerr, fs.ErrNotExist):
			return nil, lerr
		}
	} else if err != nil {
		return nil, err
	}
	issued, err := src.issued(ctx)
	if err != nil {
		return nil, err
	}
	revoked, err := src.readRevoked(ctx)
	if err != nil {
		return nil, fmt.Errorf("token revocation list: %w", err)
	}

	var wrote []string
	err = k.locked(ctx, "import tokens", func(ctx context.Context) error {
		var files []atomicfile.File
		// Revocations first: whatever happens next, none is lost.
		if len(parseRevoked(revoked)) > 0 {
			have, err := k.readRevoked(ctx)
			if err != nil {
				return fmt.Errorf("token revocation list: %w", err)
			}
			if merged, changed := mergeRevoked(have, revoked); changed {
				files = append(files, atomicfile.File{Name: RevokedFile, Data: merged, Perm: 0o600})
			}
		}
		if len(issued) > 0 {
			have, err := k.issued(ctx)
			if err != nil {
				return err
			}
			if merged, changed := mergeIssued(have, issued); changed {
				b, err := marshalIssued(merged)
				if err != nil {
					return err
				}
				files = append(files, atomicfile.File{Name: IssuedFile, Data: b, Perm: 0o600})
			}
		}
		if kr != nil {
			b, err := kr.marshal()
			if err != nil {
				return err
			}
			have, err := k.keyring(ctx)
			switch {
			case errors.Is(err, fs.ErrNotExist):
			case err != nil && !replaceKeys:
				return err
			case err == nil && !replaceKeys:
				hb, err := have.marshal()
				if err != nil {
					return err
				}
				if !bytes.Equal(hb, b) {
					return fmt.Errorf("%w (%s): importing %s's would make the tokens of the store's keys fail", ErrKeyringExists, KeyFile, stateDir)
				}
				b = nil // the same keyring: nothing to write
			}
			if b != nil {
				files = append(files, atomicfile.File{Name: KeyFile, Data: b, Perm: 0o600})
			}
		}
		if err := k.write(ctx, files...); err != nil {
			return fmt.Errorf("import tokens: %w", err)
		}
		for _, f := range files {
			wrote = append(wrote, f.Name)
		}
		return nil
	})
	return wrote, err
}

// mergeRevoked adds to have the ids of more it lacks, one a line.
func mergeRevoked(have, more []byte) ([]byte, bool) {
	known := parseRevoked(have)
	out := bytes.Clone(have)
	changed := false
	sc := bufio.NewScanner(bytes.NewReader(more))
	for sc.Scan() {
		id := strings.TrimSpace(sc.Text())
		if _, ok := known[id]; ok || id == "" || strings.HasPrefix(id, "#") {
			continue
		}
		if len(out) > 0 && out[len(out)-1] != '\n' {
			out = append(out, '\n')
		}
		out = append(out, id+"\n"...)
		known[id] = struct{}{}
		changed = true
	}
	return out, changed
}

// mergeIssued adds to have the records of more whose ids it lacks.
func mergeIssued(have, more []Issued) ([]Issued, bool) {
	known := make(map[string]bool, len(have))
	for _, t := range have {
		known[t.ID] = true
	}
	out := append([]Issued(nil), have...)
	for _, t := range more {
		if !known[t.ID] {
			out = append(out, t)
			known[t.ID] = true
		}
	}
	return out, len(out) > len(have)
}
