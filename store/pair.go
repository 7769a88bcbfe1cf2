package store

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// pairWait bounds how long CreatePair waits for the certificate of a key
// another replica stored.
const pairWait = 5 * time.Second

// CreatePair stores a new key and its certificate (a CA), the key first:
// a key without a certificate is a creation that did not finish. On a
// store shared by replicas (a Swapper) the first replica to store its key
// wins: the others get its key and certificate back instead of theirs, so
// that every replica signs with one CA. It returns the pair stored.
func CreatePair(ctx context.Context, st Store, keyKey string, keyPEM []byte, certKey string, certPEM []byte) (key, cert []byte, err error) {
	sw, shared := st.(Swapper)
	if !shared {
		if err := st.Put(ctx, keyKey, keyPEM, Secret); err != nil {
			return nil, nil, err
		}
		if err := st.Put(ctx, certKey, certPEM, Public); err != nil {
			return nil, nil, err
		}
		return keyPEM, certPEM, nil
	}
	current, swapped, err := sw.Swap(ctx, keyKey, nil, keyPEM, Secret)
	if err != nil {
		return nil, nil, err
	}
	if !swapped {
		// Another replica made it, or is making it: its certificate
		// follows its key.
		deadline := time.Now().Add(pairWait)
		for {
			theirs, err := st.Get(ctx, certKey)
			if err == nil {
				return current, theirs, nil
			}
			if !errors.Is(err, ErrNotFound) {
				return nil, nil, err
			}
			if time.Now().After(deadline) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		// No certificate came: that creation never finished. Take its
		// place, unless another replica just did.
		if _, swapped, err = sw.Swap(ctx, keyKey, current, keyPEM, Secret); err != nil {
			return nil, nil, err
		}
		if !swapped {
			return nil, nil, fmt.Errorf("%s: replaced by another replica while this one made it; try again", keyKey)
		}
	}
	if err := st.Put(ctx, certKey, certPEM, Public); err != nil {
		return nil, nil, err
	}
	return keyPEM, certPEM, nil
}
