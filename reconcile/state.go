package reconcile

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/gitmesh/gitmesh/store"
)

// stateVersion is the format of the state file; a file of another version
// is refused rather than misread.
const stateVersion = 1

// State is what the daemon must remember across restarts: the commit it
// serves and the pin. It lives in the store: <state-dir>/state.json, or PostgreSQL.
type State struct {
	Version     int         `json:"version"`
	Published   *CommitInfo `json:"published,omitempty"`
	PublishedAt time.Time   `json:"publishedAt,omitzero"`
	Pin         *Pin        `json:"pin,omitempty"`
}

// Pin holds the mesh on one commit until it is resumed.
type Pin struct {
	Commit CommitInfo `json:"commit"`
	At     time.Time  `json:"at"`
	By     string     `json:"by,omitempty"`
	Reason string     `json:"reason,omitempty"`
}

// serves is the commit the state says is served: the pinned one, else the
// published one; nil when none.
func (s State) serves() *CommitInfo {
	switch {
	case s.Pin != nil:
		return &s.Pin.Commit
	case s.Published != nil:
		return s.Published
	}
	return nil
}

// StateKey is the store key of the state: the file state.json of a state
// directory.
const StateKey = "state.json"

// StateFile is the path of the state file in a state directory.
func StateFile(dir string) string { return filepath.Join(dir, StateKey) }

// LoadState reads the state file of dir; a missing file is an empty State.
func LoadState(dir string) (State, error) {
	return LoadStateFrom(context.Background(), store.Dir{Path: dir})
}

// LoadStateFrom reads the state of a store; none is an empty State.
func LoadStateFrom(ctx context.Context, st store.Store) (State, error) {
	data, err := st.Get(ctx, StateKey)
	if errors.Is(err, store.ErrNotFound) {
		return State{Version: stateVersion}, nil
	}
	if err != nil {
		return State{}, fmt.Errorf("read state: %w", err)
	}
	where := StateKey
	if d, ok := st.(store.Dir); ok {
		where = StateFile(d.Path)
	}
	var s State
	if err := json.Unmarshal(data, &s); err != nil {
		return State{}, fmt.Errorf("read state %s: %w", where, err)
	}
	if s.Version != stateVersion {
		return State{}, fmt.Errorf("read state %s: version %d, this gitmesh reads version %d", where, s.Version, stateVersion)
	}
	return s, nil
}

// SaveState replaces the state file of dir atomically: a crash leaves the
// old or the new state, never a torn one.
func SaveState(dir string, s State) error {
	return SaveStateTo(context.Background(), store.Dir{Path: dir}, s)
}

// SaveStateTo replaces the state of a store.
func SaveStateTo(ctx context.Context, st store.Store, s State) error {
	s.Version = stateVersion
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	if err := st.Put(ctx, StateKey, append(data, '\n'), store.Private); err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	return nil
}
