package api

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"unicode"

	"github.com/gitmesh/gitmesh/reconcile/plan"
	"github.com/gitmesh/gitmesh/reconcile/source"
	"github.com/gitmesh/gitmesh/schema"
)

// Differ compares two commits the daemon has fetched, as `gitmesh diff`
// does. It must be safe for concurrent use; the API runs one comparison at
// a time.
type Differ interface {
	// Diff is the plan from base to head (revisions as rollback takes
	// them). Its errors are *plan.RevisionError (wrapping
	// source.ErrUnknownRevision for an unknown one) and
	// *plan.InvalidSideError.
	Diff(ctx context.Context, base, head string) (*plan.Plan, error)
}

// DiffRefusal is the answer of GET /diff when a side is invalid.
type DiffRefusal struct {
	Error    string           `json:"error"`
	Side     string           `json:"side"`
	Commit   source.Hash      `json:"commit"`
	Subject  string           `json:"subject"`
	Findings []schema.Finding `json:"findings"`
}

// diff answers GET /diff?base=&head=: the plan from base (default: the
// published commit) to head (default: the branch head).
func (s *server) diff(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Differ == nil {
		writeError(w, http.StatusNotFound, "diff is not available")
		return
	}
	q := r.URL.Query()
	base, head := strings.TrimSpace(q.Get("base")), strings.TrimSpace(q.Get("head"))
	for _, rev := range []string{base, head} {
		if len(rev) > maxLabel || strings.IndexFunc(rev, func(c rune) bool { return unicode.IsControl(c) || unicode.IsSpace(c) }) >= 0 {
			writeError(w, http.StatusBadRequest, "base and head must be revisions: a hash, the branch, HEAD~N")
			return
		}
	}
	st := s.b.Status()
	if base == "" {
		if st.Published == nil {
			writeError(w, http.StatusServiceUnavailable, "no commit is served yet: name a base")
			return
		}
		base = string(st.Published.Hash)
	}
	if head == "" {
		head = "HEAD"
	}
	select {
	case s.diffing <- struct{}{}:
		defer func() { <-s.diffing }()
	case <-r.Context().Done():
		return
	}
	pl, err := s.cfg.Differ.Diff(r.Context(), base, head)
	var invalid *plan.InvalidSideError
	var unreadable *plan.RevisionError
	switch {
	case err == nil:
		writeJSON(w, http.StatusOK, pl)
	case errors.As(err, &invalid):
		findings := invalid.Result.Findings
		if findings == nil {
			findings = []schema.Finding{}
		}
		writeJSON(w, http.StatusUnprocessableEntity, DiffRefusal{Error: err.Error(), Side: invalid.Label,
			Commit: invalid.Commit, Subject: invalid.Subject, Findings: findings})
	case errors.Is(err, source.ErrUnknownRevision):
		writeError(w, http.StatusNotFound, err.Error())
	case errors.As(err, &unreadable):
		writeError(w, http.StatusUnprocessableEntity, err.Error())
	default:
		writeError(w, http.StatusInternalServerError, err.Error())
	}
}
