// Package store keeps what gitmesh serve must remember across restarts: the
// published commit and the pin, the history, the mesh CAs and the control
// plane's TLS CA. Two backends hold it: the state directory (Dir, the
// default, one replica and nothing else to run) and PostgreSQL (Postgres),
// where private keys are encrypted at rest with a key of the operator's.
//
// A Store holds documents under slash-separated keys such as "state.json"
// or "ca/default/ca.key" (in a state directory, the file of that path) and,
// when it is a RecordStore, the history's records. The git mirror and the
// cache of issued dataplane certificates stay in the local state directory
// whatever the store.
//
// Several replicas may share a PostgreSQL store: see Fleet for the
// decider's lease, change notification and the registry of replicas.
package store

import (
	"context"
	"errors"
	"path"
	"strings"
)

// ErrNotFound: no document under that key.
var ErrNotFound = errors.New("not in the store")

// ErrUnavailable wraps every failure to reach the store (a PostgreSQL
// server down or unreachable): what was decided stays served, and what
// needs the store (rollback, resume) is refused until it returns.
var ErrUnavailable = errors.New("the state store is unreachable")

// unavailable wraps err so that errors.Is(err, ErrUnavailable) holds.
type unavailable struct{ err error }

func (u *unavailable) Error() string   { return ErrUnavailable.Error() + ": " + u.err.Error() }
func (u *unavailable) Unwrap() []error { return []error{ErrUnavailable, u.err} }

// cleanKey reports whether key is a clean relative slash-separated path.
func cleanKey(key string) bool {
	return key != "" && path.Clean(key) == key && !path.IsAbs(key) && key != ".." && !strings.HasPrefix(key, "../")
}

// Class says how a document is kept.
type Class int

const (
	// Private is state that is not secret but not for everyone either (the
	// state file): 0600 in a state directory.
	Private Class = iota
	// Public is a certificate: 0644 in a state directory.
	Public
	// Secret is private key material: 0600 in a state directory (its
	// directory 0700), encrypted at rest in PostgreSQL.
	Secret
)

// Store is where documents are kept. Put replaces a document whole and
// atomically: a reader sees the old or the new one, never a mix.
type Store interface {
	// Get returns the document under key, decrypted; an error wrapping
	// ErrNotFound when there is none.
	Get(ctx context.Context, key string) ([]byte, error)
	// Put replaces the document under key.
	Put(ctx context.Context, key string, data []byte, class Class) error
	// Ping reports whether the store can be reached now; an error wrapping
	// ErrUnavailable when it cannot.
	Ping(ctx context.Context) error
	// Describe names the store for logs, without credentials.
	Describe() string
	Close() error
}

// Record is one record of the history: its id and its JSON.
type Record struct {
	ID   int64
	Data []byte
}

// RecordStore is a Store that also keeps the history's records. The state
// directory keeps its history in history.jsonl, which the reconcile loop
// writes itself; PostgreSQL keeps it in a table.
type RecordStore interface {
	Store
	// Records returns every record, oldest (lowest id) first.
	Records(ctx context.Context) ([]Record, error)
	// PutRecords inserts the records, replacing those of the same ids.
	PutRecords(ctx context.Context, rs ...Record) error
	// TrimRecords removes the records whose id is below first.
	TrimRecords(ctx context.Context, first int64) error
}

// Swapper is a store shared by replicas that replaces a document only when
// it is still what the caller read (see Postgres.Swap).
type Swapper interface {
	Swap(ctx context.Context, key string, old, data []byte, class Class) (current []byte, swapped bool, err error)
}

var _ Swapper = (*Postgres)(nil)
