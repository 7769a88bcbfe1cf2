package reconcile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestStateRoundTripAndAtomicity(t *testing.T) {
	dir := t.TempDir()
	st, err := LoadState(dir)
	if err != nil || st.Published != nil || st.Pin != nil {
		t.Fatalf("empty state dir: %+v, %v", st, err)
	}
	at := time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)
	want := State{Published: &CommitInfo{Hash: strings.Repeat("a", 40), Author: "Ada", Subject: "x"}, PublishedAt: at,
		Pin: &Pin{Commit: CommitInfo{Hash: strings.Repeat("b", 40)}, At: at, By: "ops"}}
	if err := SaveState(dir, want); err != nil {
		t.Fatal(err)
	}
	got, err := LoadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got.Published.Hash != want.Published.Hash || !got.PublishedAt.Equal(at) || got.Pin.Commit.Hash != want.Pin.Commit.Hash {
		t.Errorf("round trip: %+v", got)
	}
	info, err := os.Stat(StateFile(dir))
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Errorf("state file mode %v, want 0600", info.Mode().Perm())
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("state dir holds %d entries, want only state.json (no temporary files left)", len(entries))
	}

	// A file of another format version is refused, not misread.
	if err := os.WriteFile(StateFile(dir), []byte(`{"version": 99}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadState(dir); err == nil || !strings.Contains(err.Error(), "version 99") {
		t.Errorf("future version: %v", err)
	}
	if err := os.WriteFile(StateFile(dir), []byte(`{"vers`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadState(dir); err == nil || !strings.Contains(err.Error(), filepath.Base(StateFile(dir))) {
		t.Errorf("torn file: %v", err)
	}
}

func TestHistoryBoundedAndPersisted(t *testing.T) {
	dir := t.TempDir()
	h, err := OpenHistory(dir, 5)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 23 {
		r := Record{Commit: CommitInfo{Hash: strings.Repeat(string(rune('a'+i)), 40)}, Verdict: VerdictPublished}
		if err := h.Add(r); err != nil {
			t.Fatal(err)
		}
	}
	recs := h.Records()
	if len(recs) != 5 || recs[0].Commit.Hash[0] != 'a'+22 || recs[4].Commit.Hash[0] != 'a'+18 {
		t.Fatalf("records: %d, newest %q", len(recs), recs[0].Commit.Hash)
	}
	data, err := os.ReadFile(filepath.Join(dir, "history.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	if lines := strings.Count(string(data), "\n"); lines > 10 {
		t.Errorf("history file holds %d lines, want at most twice the limit", lines)
	}
	// A crash can tear the last line; the rest loads.
	f, err := os.OpenFile(filepath.Join(dir, "history.jsonl"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"commit":{"hash":"zz`)
	f.Close()
	h2, err := OpenHistory(dir, 5)
	if err != nil {
		t.Fatal(err)
	}
	if got := h2.Records(); len(got) != 5 || got[0].Commit.Hash != recs[0].Commit.Hash {
		t.Errorf("reloaded %d records, newest %q", len(got), got[0].Commit.Hash)
	}
}

func TestBackoff(t *testing.T) {
	lo, hi := time.Second, time.Minute
	for n, want := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 4: 8 * time.Second, 10: time.Minute, 100: time.Minute} {
		for range 20 {
			got := backoff(n, lo, hi)
			if got < want*8/10 || got > want*12/10 {
				t.Errorf("backoff(%d) = %v, want %v ±20%%", n, got, want)
			}
		}
	}
}
