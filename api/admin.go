package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"unicode"

	"github.com/gitmesh/gitmesh/reconcile"
	"github.com/gitmesh/gitmesh/reconcile/source"
	"github.com/gitmesh/gitmesh/schema"
	"github.com/gitmesh/gitmesh/store"
)

// Admin is the part of the backend that changes what is served.
type Admin interface {
	// Rollback publishes the commit rev names and pins the mesh on it; see
	// reconcile.Daemon.Rollback for its errors.
	Rollback(ctx context.Context, rev, by, reason string) (reconcile.Record, error)
	// Resume lifts the pin and publishes the branch's newest valid commit.
	Resume(ctx context.Context, by, reason string) (reconcile.Record, error)
}

// access is what a request needs its token to grant.
type access int

const (
	accessRead  access = iota // the read token or the admin token
	accessAdmin               // the admin token
)

// maxAdminBody bounds the body of POST /rollback and /resume.
const maxAdminBody = 16 << 10

// maxLabel bounds the by and reason of an operation.
const maxLabel = 200

// tokens holds the digests of the API's bearer tokens. Comparing fixed-size
// digests in constant time tells nothing of a token's length or content.
type tokens struct {
	admin, read [sha256.Size]byte
	hasAdmin    bool
	hasRead     bool
	reads       bool // read endpoints need a token too
}

func newTokens(cfg Config) tokens {
	t := tokens{reads: cfg.AuthReads}
	t.admin, t.hasAdmin = tokenOrDigest(cfg.AdminToken, cfg.AdminTokenDigest)
	t.read, t.hasRead = tokenOrDigest(cfg.ReadToken, cfg.ReadTokenDigest)
	return t
}

// tokenOrDigest is the digest of token when there is one, else digest
// unless it is zero.
func tokenOrDigest(token []byte, digest [sha256.Size]byte) ([sha256.Size]byte, bool) {
	if len(token) > 0 {
		return TokenDigest(token), true
	}
	return digest, digest != [sha256.Size]byte{}
}

// TokenDigest is the SHA-256 digest of a bearer token, which the API
// compares, in constant time, with those of its tokens.
func TokenDigest(token []byte) [sha256.Size]byte { return sha256.Sum256(token) }

// AdminTokenDigestKey is the store document holding the digest of the admin
// token every replica sharing the store accepts (hex, one line; Private).
// The token itself is never stored.
const AdminTokenDigestKey = "api/admin-token.sha256"

// FormatTokenDigest is a digest as AdminTokenDigestKey holds it.
func FormatTokenDigest(d [sha256.Size]byte) []byte { return []byte(hex.EncodeToString(d[:]) + "\n") }

// ParseTokenDigest reads what FormatTokenDigest wrote.
func ParseTokenDigest(b []byte) ([sha256.Size]byte, error) {
	var d [sha256.Size]byte
	raw, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(raw) != len(d) {
		return d, fmt.Errorf("not a SHA-256 digest in hex")
	}
	copy(d[:], raw)
	if d == [sha256.Size]byte{} {
		return d, fmt.Errorf("a zero digest")
	}
	return d, nil
}

// grants says what token grants: admin, read, or nothing.
func (t tokens) grants(token string) (admin, read bool) {
	d := sha256.Sum256([]byte(token))
	// Both comparisons always run, so the answer's timing says nothing
	// about which token matched.
	a := subtle.ConstantTimeCompare(d[:], t.admin[:]) == 1 && t.hasAdmin
	r := subtle.ConstantTimeCompare(d[:], t.read[:]) == 1 && t.hasRead
	return a, a || r
}

// guard answers 401 to a request without a valid bearer token where need
// asks for one, and 403 to a read token on an admin endpoint.
func (s *server) guard(need access, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if need == accessRead && !s.tokens.reads {
			h.ServeHTTP(w, r)
			return
		}
		if need == accessAdmin && !s.tokens.hasAdmin {
			writeError(w, http.StatusForbidden, r.URL.Path+" is disabled: the daemon has no admin token (gitmesh serve --admin-token-file)")
			return
		}
		token, ok := bearer(r)
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="gitmesh"`)
			writeError(w, http.StatusUnauthorized, "authentication required: send Authorization: Bearer <token>")
			return
		}
		admin, read := s.tokens.grants(token)
		switch {
		case !read:
			w.Header().Set("WWW-Authenticate", `Bearer realm="gitmesh", error="invalid_token"`)
			s.log.Warn("API request with an invalid token refused", "path", r.URL.Path, "remote", r.RemoteAddr)
			writeError(w, http.StatusUnauthorized, "invalid token")
		case need == accessAdmin && !admin:
			w.Header().Set("WWW-Authenticate", `Bearer realm="gitmesh", error="insufficient_scope"`)
			writeError(w, http.StatusForbidden, "this token may only read: "+r.Method+" "+r.URL.Path+" needs the admin token")
		default:
			h.ServeHTTP(w, r)
		}
	})
}

// bearer is the token of an Authorization: Bearer header.
func bearer(r *http.Request) (string, bool) {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

// OperationRequest is the body of POST /rollback and POST /resume.
type OperationRequest struct {
	// Commit is the revision to roll back to (rollback only).
	Commit string `json:"commit,omitempty"`
	// By names who asks, Reason why; both go to the history and the log.
	By     string `json:"by,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// OperationResult is the answer of a rollback or resume that was done.
type OperationResult struct {
	Record reconcile.Record `json:"record"`
	Status reconcile.Status `json:"status"`
}

// RefusalBody is the answer of a refused rollback: the error and, for an
// invalid commit, its findings.
type RefusalBody struct {
	Error    string           `json:"error"`
	Commit   source.Hash      `json:"commit,omitempty"`
	Errors   int              `json:"errors,omitempty"`
	Findings []schema.Finding `json:"findings,omitempty"`
}

func (s *server) rollback(w http.ResponseWriter, r *http.Request) {
	req, ok := s.operationRequest(w, r)
	if !ok {
		return
	}
	if req.Commit == "" {
		writeError(w, http.StatusBadRequest, `the body names no commit: send {"commit": "<sha>"}`)
		return
	}
	// Once asked for, an operation runs to its end even if the client goes.
	rec, err := s.b.Rollback(context.WithoutCancel(r.Context()), req.Commit, req.By, req.Reason)
	s.operationDone(w, "rollback", req, rec, err)
}

func (s *server) resume(w http.ResponseWriter, r *http.Request) {
	req, ok := s.operationRequest(w, r)
	if !ok {
		return
	}
	rec, err := s.b.Resume(context.WithoutCancel(r.Context()), req.By, req.Reason)
	s.operationDone(w, "resume", req, rec, err)
}

// operationRequest reads the body of an operation; an empty body is an
// empty request.
func (s *server) operationRequest(w http.ResponseWriter, r *http.Request) (OperationRequest, bool) {
	var req OperationRequest
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxAdminBody))
	if err != nil {
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body larger than %d bytes", maxAdminBody))
		return req, false
	}
	if len(strings.TrimSpace(string(body))) > 0 {
		dec := json.NewDecoder(strings.NewReader(string(body)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			writeError(w, http.StatusBadRequest, "the body is not an operation request: "+err.Error())
			return req, false
		}
	}
	for _, f := range []*string{&req.Commit, &req.By, &req.Reason} {
		*f = strings.TrimSpace(*f)
		if len(*f) > maxLabel || strings.IndexFunc(*f, unicode.IsControl) >= 0 {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("commit, by and reason must be at most %d characters, without control characters", maxLabel))
			return req, false
		}
	}
	if req.By == "" {
		req.By = "api"
	}
	return req, true
}

// operationDone answers the outcome of a rollback or resume.
func (s *server) operationDone(w http.ResponseWriter, op string, req OperationRequest, rec reconcile.Record, err error) {
	var invalid *reconcile.InvalidCommitError
	var unverified *reconcile.UnverifiedCommitError
	switch {
	case err == nil:
		s.log.Info(op+" done", "commit", rec.Commit.Short(), "by", req.By)
		writeJSON(w, http.StatusOK, OperationResult{Record: rec, Status: s.b.Status()})
	case errors.As(err, &invalid):
		writeJSON(w, http.StatusUnprocessableEntity, RefusalBody{Error: err.Error(), Commit: invalid.Commit.Hash,
			Errors: invalid.Errors, Findings: invalid.Findings})
	case errors.As(err, &unverified):
		writeJSON(w, http.StatusUnprocessableEntity, RefusalBody{Error: err.Error(), Commit: unverified.Commit.Hash})
	case errors.Is(err, reconcile.ErrUnknownCommit):
		writeError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, reconcile.ErrNotPinned):
		writeError(w, http.StatusConflict, err.Error())
	case errors.Is(err, store.ErrUnavailable):
		// The state store is down: nothing changed, what is served stays.
		w.Header().Set("Retry-After", "5")
		writeError(w, http.StatusServiceUnavailable, err.Error())
	default:
		writeError(w, http.StatusInternalServerError, err.Error())
	}
}
