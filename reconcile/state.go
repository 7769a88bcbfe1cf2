package reconcile

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/gitmesh/gitmesh/internal/atomicfile"
)

// stateVersion is the format of the state file; a file of another version
// is refused rather than misread.
const stateVersion = 1

// State is what the daemon must remember across restarts: the commit it
// serves and the pin. It lives in <state-dir>/state.json.
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

// StateFile is the path of the state file in a state directory.
func StateFile(dir string) string { return filepath.Join(dir, "state.json") }

// LoadState reads the state file of dir; a missing file is an empty State.
func LoadState(dir string) (State, error) {
	path := StateFile(dir)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return State{Version: stateVersion}, nil
	}
	if err != nil {
		return State{}, fmt.Errorf("read state: %w", err)
	}
	var s State
	if err := json.Unmarshal(data, &s); err != nil {
		return State{}, fmt.Errorf("read state %s: %w", path, err)
	}
	if s.Version != stateVersion {
		return State{}, fmt.Errorf("read state %s: version %d, this gitmesh reads version %d", path, s.Version, stateVersion)
	}
	return s, nil
}

// SaveState replaces the state file of dir atomically: a crash leaves the
// old or the new state, never a torn one.
func SaveState(dir string, s State) error {
	s.Version = stateVersion
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.Write(StateFile(dir), append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	return nil
}
