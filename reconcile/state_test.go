package reconcile

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gitmesh/gitmesh/reconcile/source"
	"github.com/gitmesh/gitmesh/xds/plane"
)

func TestStateRoundTripAndAtomicity(t *testing.T) {
	dir := t.TempDir()
	st, err := LoadState(dir)
	if err != nil || st.Published != nil || st.Pin != nil {
		t.Fatalf("empty state dir: %+v, %v", st, err)
	}
	at := time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)
	want := State{Published: &CommitInfo{Hash: source.Hash(strings.Repeat("a", 40)), Author: "Ada", Subject: "x"}, PublishedAt: at,
		Pin: &Pin{Commit: CommitInfo{Hash: source.Hash(strings.Repeat("b", 40))}, At: at, By: "ops"}}
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
		r := Record{Commit: CommitInfo{Hash: source.Hash(strings.Repeat(string(rune('a'+i)), 40))}, Verdict: VerdictPublished}
		if _, err := h.Add(r); err != nil {
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
	// A crash can tear the last line, here a new record's; the rest loads,
	// and the torn record is reported.
	f, err := os.OpenFile(filepath.Join(dir, "history.jsonl"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	torn := fmt.Sprintf(`{"id":%d,"commit":{"hash":"zz`, recs[0].ID+1)
	f.WriteString(torn)
	f.Close()
	h2, err := OpenHistory(dir, 5)
	if err != nil {
		t.Fatal(err)
	}
	if got := h2.Records(); len(got) != 5 || got[0].Commit.Hash != recs[0].Commit.Hash {
		t.Errorf("reloaded %d records, newest %q", len(got), got[0].Commit.Hash)
	}
	if h2.Torn() != torn {
		t.Errorf("Torn() = %q, want the torn line %q", h2.Torn(), torn)
	}
	// A record added after the torn line is not glued to it, and does not
	// take the torn record's id: an id names one record forever.
	added, err := h2.Add(Record{Commit: CommitInfo{Hash: source.Hash(strings.Repeat("f", 40))}, Verdict: VerdictPublished})
	if err != nil {
		t.Fatal(err)
	}
	if added.ID != recs[0].ID+2 {
		t.Errorf("id after reload = %d, want %d (the torn record had %d)", added.ID, recs[0].ID+2, recs[0].ID+1)
	}
	h3, err := OpenHistory(dir, 5)
	if err != nil {
		t.Fatal(err)
	}
	if got := h3.Records(); len(got) != 5 || got[0].Commit.Hash != added.Commit.Hash {
		t.Errorf("after a torn line and an append: %d records, newest %q", len(got), got[0].Commit.Hash)
	}
}

func TestHistoryUpdate(t *testing.T) {
	dir := t.TempDir()
	h, err := OpenHistory(dir, 3)
	if err != nil {
		t.Fatal(err)
	}
	hash := func(c byte) string { return strings.Repeat(string(c), 40) }
	for _, c := range []byte("abab") {
		if _, err := h.Add(Record{Commit: CommitInfo{Hash: source.Hash(hash(c))}, Verdict: VerdictPublished}); err != nil {
			t.Fatal(err)
		}
	}
	// The newest record of b is updated, and updated again; the older one is
	// left alone.
	for i := range 2 {
		_, ok, err := h.Update(publishedRecordOf(hash('b')), func(r *Record) bool {
			r.Verdict = VerdictRejected
			r.Rejections = append(r.Rejections, plane.Rejection{Node: fmt.Sprintf("m.p%d", i)})
			return true
		})
		if err != nil || !ok {
			t.Fatalf("update %d: %v %v", i, ok, err)
		}
	}
	if _, ok, _ := h.Update(publishedRecordOf(hash('z')), func(*Record) bool { return true }); ok {
		t.Error("update of an unknown commit reported a change")
	}
	for _, hh := range []*History{h, mustOpenHistory(t, dir, 3)} {
		recs := hh.Records()
		if len(recs) != 3 {
			t.Fatalf("%d records, want 3", len(recs))
		}
		if recs[0].ID != 4 || recs[0].Verdict != VerdictRejected || len(recs[0].Rejections) != 2 {
			t.Errorf("newest = %+v, want id 4 rejected by 2", recs[0])
		}
		if recs[2].ID != 2 || recs[2].Verdict != VerdictPublished {
			t.Errorf("oldest = %+v, want id 2 published", recs[2])
		}
	}
}

func mustOpenHistory(t *testing.T, dir string, limit int) *History {
	t.Helper()
	h, err := OpenHistory(dir, limit)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// TestBackoff: after failed syncs the daemon waits MinBackoff doubling per
// failure, ±20%, never longer than its poll interval.
func TestBackoff(t *testing.T) {
	d := &Daemon{cfg: Config{MinBackoff: time.Second, Interval: time.Minute}}
	for range 20 {
		b := d.newBackoff()
		for n, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second,
			32 * time.Second, time.Minute, time.Minute} {
			got := d.retryDelay(b)
			if got < want*8/10 || got > min(want*12/10, time.Minute) {
				t.Errorf("wait after failure %d = %v, want %v ±20%% and at most the interval", n+1, got, want)
			}
		}
	}
}
