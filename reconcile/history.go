package reconcile

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/gitmesh/gitmesh/internal/atomicfile"
	"github.com/gitmesh/gitmesh/store"
)

// DefaultHistoryLimit bounds the history kept in memory and on disk.
const DefaultHistoryLimit = 1000

// maxRecordFindings bounds the findings a history record keeps.
const maxRecordFindings = 20

// History is the bounded record of every commit the daemon decided on,
// persisted as JSON lines in <state-dir>/history.jsonl: appended as records
// come, rewritten (atomically) to the newest Limit records when the file
// holds twice that many lines. An update of a record (a NACK, a convergence
// figure) appends the whole record again under its id; the last line of an
// id wins. A torn last line after a crash is dropped, and its id, if it was a
// new record's, is not given again.
type History struct {
	mu      sync.Mutex
	path    string
	limit   int
	records []Record // oldest first
	lines   int      // lines in the file
	next    int64    // the last record id given
	torn    bool     // the file does not end with a whole line
	// tornLine is the start of the torn last line when the file was
	// opened, for the log; "" when there was none.
	tornLine string

	// db, when set, keeps the records instead of the file (PostgreSQL);
	// unsaved are the ids of records it has not taken yet (the store was
	// unreachable), written with the next record.
	db      store.RecordStore
	unsaved map[int64]bool
}

// OpenHistoryStore loads the history kept in db.
func OpenHistoryStore(ctx context.Context, db store.RecordStore, limit int) (*History, error) {
	if limit <= 0 {
		limit = DefaultHistoryLimit
	}
	h := &History{limit: limit, db: db, unsaved: map[int64]bool{}}
	if err := h.load(ctx); err != nil {
		return nil, err
	}
	return h, nil
}

// load reads the records of db. Called locked, or before h is shared.
func (h *History) load(ctx context.Context) error {
	rs, err := h.db.Records(ctx)
	if err != nil {
		return err
	}
	records := make([]Record, 0, len(rs))
	for _, raw := range rs {
		var r Record
		if json.Unmarshal(raw.Data, &r) != nil || r.Commit.Hash == "" {
			continue
		}
		r.ID = raw.ID
		h.next = max(h.next, r.ID)
		records = append(records, r)
	}
	if len(records) > h.limit {
		records = slices.Clone(records[len(records)-h.limit:])
	}
	h.records = records
	return nil
}

// Reload reads the history again from the store, which other replicas
// write too, after writing the records this replica has not saved yet
// (unless it no longer may: store.ErrFenced drops them). Nothing to do
// for a history kept in a state directory.
func (h *History) Reload(ctx context.Context) error {
	if h.db == nil {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.unsaved) > 0 {
		if err := h.flushStore(ctx); err != nil && !errors.Is(err, store.ErrFenced) {
			return err
		}
		clear(h.unsaved)
	}
	return h.load(ctx)
}

// OpenHistory loads the history of a state directory.
func OpenHistory(dir string, limit int) (*History, error) {
	if limit <= 0 {
		limit = DefaultHistoryLimit
	}
	h := &History{path: filepath.Join(dir, "history.jsonl"), limit: limit}
	data, err := os.ReadFile(h.path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("read history: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	at := map[int64]int{} // record id → index in records
	for sc.Scan() {
		h.lines++
		var r Record
		if json.Unmarshal(sc.Bytes(), &r) != nil || r.Commit.Hash == "" {
			continue
		}
		h.next = max(h.next, r.ID)
		if i, ok := at[r.ID]; ok && r.ID != 0 {
			h.records[i] = r // a later line updates the record
			continue
		}
		at[r.ID] = len(h.records)
		h.records = append(h.records, r)
	}
	if len(h.records) > limit {
		h.records = slices.Clone(h.records[len(h.records)-limit:])
	}
	// A crash can leave a torn last line; appending after it would join the
	// next record to it, so the first write rewrites the file instead. The
	// torn line may have been a new record whose id is then lost: that id
	// is never given again, so that an id names one record forever.
	if len(data) > 0 && data[len(data)-1] != '\n' {
		h.torn = true
		last := data[bytes.LastIndexByte(data, '\n')+1:]
		h.tornLine = string(last[:min(len(last), 120)])
		h.next++
	}
	return h, nil
}

// Torn is the start of the history file's last line when it was cut short
// (a crash while it was written), as OpenHistory found it; "" otherwise.
// That record is dropped.
func (h *History) Torn() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.tornLine
}

// Add records r, newest, giving it the next id.
func (h *History) Add(r Record) (Record, error) {
	if len(r.Findings) > maxRecordFindings {
		r.Findings = r.Findings[:maxRecordFindings]
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.next++
	r.ID = h.next
	h.records = append(h.records, r)
	if len(h.records) > h.limit {
		h.records = slices.Clone(h.records[len(h.records)-h.limit:])
	}
	return r, h.write(r)
}

// Update changes the newest record that match accepts with change and
// persists it; false when no record matches or change reports no change.
func (h *History) Update(match func(*Record) bool, change func(*Record) bool) (Record, bool, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i := len(h.records) - 1; i >= 0; i-- {
		r := &h.records[i]
		if !match(r) {
			continue
		}
		if !change(r) {
			return *r, false, nil
		}
		return *r, true, h.write(*r)
	}
	return Record{}, false, nil
}

// write appends r to the file, or rewrites the file when it has grown to
// twice the limit. Called locked.
func (h *History) write(r Record) error {
	if h.db != nil {
		return h.writeStore(r)
	}
	if h.torn || h.lines+1 > 2*h.limit {
		return h.rewrite()
	}
	line, err := json.Marshal(r)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(h.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("write history: %w", err)
	}
	defer f.Close()
	if _, err := f.Write(append(line, '\n')); err != nil {
		return fmt.Errorf("write history: %w", err)
	}
	h.lines++
	if err := f.Sync(); err != nil {
		return fmt.Errorf("write history: %w", err)
	}
	return nil
}

// writeStore puts r, and the records the store missed before, in the
// store, and drops the records older than the limit from it. Called locked.
// A replica that may not write the shared history (store.ErrFenced) keeps
// nothing to write later: the replica that decides writes it.
func (h *History) writeStore(r Record) error {
	h.unsaved[r.ID] = true
	ctx := context.Background()
	err := h.flushStore(ctx)
	if errors.Is(err, store.ErrFenced) {
		clear(h.unsaved)
	}
	if err != nil {
		return err
	}
	clear(h.unsaved)
	if len(h.records) == h.limit {
		return h.db.TrimRecords(ctx, h.records[0].ID)
	}
	return nil
}

// flushStore puts the unsaved records in the store. Called locked.
func (h *History) flushStore(ctx context.Context) error {
	var batch []store.Record
	for _, rec := range h.records {
		if !h.unsaved[rec.ID] {
			continue
		}
		data, err := json.Marshal(rec)
		if err != nil {
			return err
		}
		batch = append(batch, store.Record{ID: rec.ID, Data: data})
	}
	return h.db.PutRecords(ctx, batch...)
}

// rewrite replaces the file with the records in memory. Called locked.
func (h *History) rewrite() error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	for _, r := range h.records {
		if err := enc.Encode(r); err != nil {
			return err
		}
	}
	if err := atomicfile.Write(h.path, buf.Bytes(), 0o600); err != nil {
		return fmt.Errorf("write history: %w", err)
	}
	h.lines, h.torn = len(h.records), false
	return nil
}

// Records returns the history, newest first.
func (h *History) Records() []Record {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := slices.Clone(h.records)
	slices.Reverse(out)
	return out
}

// Latest returns the newest record.
func (h *History) Latest() (Record, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.records) == 0 {
		return Record{}, false
	}
	return h.records[len(h.records)-1], true
}
