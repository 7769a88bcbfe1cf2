package api_test

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/gitmesh/gitmesh/api"
	"github.com/gitmesh/gitmesh/reconcile"
	"github.com/gitmesh/gitmesh/schema"
	"github.com/gitmesh/gitmesh/schema/schematest"
)

const (
	adminToken = "adm-3f1c9a7e5b2d"
	readToken  = "read-8e4b6c1a9f0d"
)

func auth(token string) http.Header {
	return http.Header{"Authorization": {"Bearer " + token}}
}

func post(t *testing.T, url string, header http.Header, body string) response {
	t.Helper()
	return do(t, http.MethodPost, url, header, []byte(body))
}

func TestRollbackAndResumeNeedTheAdminToken(t *testing.T) {
	base, b, logs := startAPI(t, api.Config{AdminToken: []byte(adminToken), ReadToken: []byte(readToken)})
	body := `{"commit":"4f2a9c1"}`

	r := post(t, base+"/rollback", nil, body)
	r.wantError(t, http.StatusUnauthorized, "authentication required")
	if got := r.header.Get("WWW-Authenticate"); got != `Bearer realm="gitmesh"` {
		t.Errorf("WWW-Authenticate %q", got)
	}
	for _, h := range []http.Header{
		auth("adm-3f1c9a7e5b2"), auth(adminToken + "x"), auth(""), {"Authorization": {"Basic " + adminToken}},
		{"Authorization": {adminToken}},
	} {
		r := post(t, base+"/rollback", h, body)
		if r.code != http.StatusUnauthorized {
			t.Errorf("Authorization %q: status %d, want 401", h.Get("Authorization"), r.code)
		}
	}
	post(t, base+"/rollback", auth(readToken), body).wantError(t, http.StatusForbidden, "may only read")
	post(t, base+"/resume", auth(readToken), "").wantError(t, http.StatusForbidden, "may only read")
	if ops := b.operations(); len(ops) != 0 {
		t.Fatalf("refused requests reached the daemon: %v", ops)
	}
	if strings.Contains(logs.String(), adminToken[:8]) || strings.Contains(logs.String(), readToken) {
		t.Errorf("a token reached the log:\n%s", logs)
	}

	var res api.OperationResult
	post(t, base+"/rollback", auth(adminToken), `{"commit":"4f2a9c1","by":"alice","reason":"incident 7"}`).wantJSON(t, http.StatusOK, &res)
	if res.Record.Commit.Hash != "4f2a9c1" || !res.Record.Pinned {
		t.Errorf("rollback answer %+v", res.Record)
	}
	post(t, base+"/resume", http.Header{"Authorization": {"bearer " + adminToken}}, "").wantJSON(t, http.StatusOK, &res)
	want := []string{"rollback 4f2a9c1 alice incident 7", "resume api "}
	if ops := b.operations(); !slices.Equal(ops, want) {
		t.Errorf("operations %q, want %q", ops, want)
	}
}

func TestAdminEndpointsDisabledWithoutToken(t *testing.T) {
	base, b, _ := startAPI(t, api.Config{})
	post(t, base+"/rollback", auth("anything"), `{"commit":"abc"}`).wantError(t, http.StatusForbidden, "no admin token")
	post(t, base+"/resume", nil, "").wantError(t, http.StatusForbidden, "no admin token")
	get(t, base+"/rollback").wantError(t, http.StatusMethodNotAllowed, "use POST")
	if len(b.operations()) != 0 {
		t.Fatal("a disabled endpoint reached the daemon")
	}
}

func TestRollbackRefusals(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		code int
		want string
	}{
		{"unknown", fmt.Errorf("%w %q: not fetched", reconcile.ErrUnknownCommit, "deadbeef"), http.StatusNotFound, "unknown commit"},
		{"not pinned", reconcile.ErrNotPinned, http.StatusConflict, "not pinned"},
		{"failed", errors.New("publish: disk on fire"), http.StatusInternalServerError, "disk on fire"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base, b, _ := startAPI(t, api.Config{AdminToken: []byte(adminToken)})
			b.opErr = tc.err
			post(t, base+"/rollback", auth(adminToken), `{"commit":"deadbeef"}`).wantError(t, tc.code, tc.want)
		})
	}

	base, b, _ := startAPI(t, api.Config{AdminToken: []byte(adminToken)})
	finding := schema.Finding{Severity: schema.SeverityError, File: "dp/web.yaml", Line: 4, Column: 3, Code: schema.CodeUnknownField, Message: "unknown field"}
	b.opErr = &reconcile.InvalidCommitError{Commit: reconcile.CommitInfo{Hash: "9b1d4e7a2c5f8b0d"}, Errors: 1, Findings: []schema.Finding{finding}}
	var refusal api.RefusalBody
	post(t, base+"/rollback", auth(adminToken), `{"commit":"9b1d4e7"}`).wantJSON(t, http.StatusUnprocessableEntity, &refusal)
	if refusal.Errors != 1 || len(refusal.Findings) != 1 || refusal.Findings[0].File != "dp/web.yaml" ||
		!strings.Contains(refusal.Error, "dp/web.yaml:4:3") {
		t.Errorf("refusal %+v", refusal)
	}

	b.opErr = nil
	for body, want := range map[string]string{
		``:                              "names no commit",
		`{}`:                            "names no commit",
		`{"commit":"abc","force":true}`: "unknown field",
		`{"commit":"abc","by":"a\nb"}`:  "control characters",
		`[1,2]`:                         "not an operation request",
		`{"commit":"` + strings.Repeat("a", 300) + `"}`: "at most 200",
	} {
		post(t, base+"/rollback", auth(adminToken), body).wantError(t, http.StatusBadRequest, want)
	}
	post(t, base+"/rollback", auth(adminToken), `{"commit":"`+strings.Repeat("a", 20000)+`"}`).wantError(t, http.StatusRequestEntityTooLarge, "larger than")
	if ops := b.operations(); len(ops) != 1 {
		t.Errorf("bad requests reached the daemon: %v", ops)
	}
}

func TestReadsCanRequireAToken(t *testing.T) {
	b := daemon()
	b.serve(schematest.Load(t, policyTree), servedCommit)
	base, _, _ := startAPI(t, api.Config{Backend: b, AdminToken: []byte(adminToken), ReadToken: []byte(readToken), AuthReads: true})
	for _, path := range []string{"/status", "/history", "/proxies", "/meshes", "/meshes/default/dataplanes", "/metrics"} {
		get(t, base+path).wantError(t, http.StatusUnauthorized, "authentication required")
		do(t, http.MethodGet, base+path, auth("wrong"), nil).wantError(t, http.StatusUnauthorized, "invalid token")
		for _, tok := range []string{readToken, adminToken} {
			if r := do(t, http.MethodGet, base+path, auth(tok), nil); r.code == http.StatusUnauthorized || r.code == http.StatusForbidden {
				t.Errorf("GET %s with a valid token: %d %s", path, r.code, r.body)
			}
		}
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		if r := get(t, base+path); r.code != http.StatusOK {
			t.Errorf("GET %s without a token: %d, want the probe open", path, r.code)
		}
	}
	// Without AuthReads, reads stay open while writes need the token.
	base, _, _ = startAPI(t, api.Config{Backend: daemon(), AdminToken: []byte(adminToken)})
	get(t, base+"/status").wantJSON(t, http.StatusOK, nil)
}

func TestCORSOnlyForConfiguredOrigins(t *testing.T) {
	preflight := http.Header{"Origin": {"https://console.example.com"}, "Access-Control-Request-Method": {"POST"},
		"Access-Control-Request-Headers": {"authorization"}}

	// Default: no CORS header at all, and a preflight is not answered as one.
	base, _, _ := startAPI(t, api.Config{AdminToken: []byte(adminToken)})
	r := do(t, http.MethodOptions, base+"/rollback", preflight, nil)
	if r.code == http.StatusNoContent || r.header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("preflight without configured origins: %d %v", r.code, r.header)
	}
	r = do(t, http.MethodGet, base+"/status", http.Header{"Origin": {"https://console.example.com"}}, nil)
	if r.header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("GET with an Origin got CORS headers: %v", r.header)
	}

	base, b, _ := startAPI(t, api.Config{AdminToken: []byte(adminToken), CORSOrigins: []string{"https://console.example.com"}})
	r = do(t, http.MethodOptions, base+"/rollback", preflight, nil)
	if r.code != http.StatusNoContent || r.header.Get("Access-Control-Allow-Origin") != "https://console.example.com" ||
		!strings.Contains(r.header.Get("Access-Control-Allow-Headers"), "Authorization") {
		t.Errorf("preflight from a configured origin: %d %v", r.code, r.header)
	}
	other := http.Header{"Origin": {"https://evil.example.net"}, "Access-Control-Request-Method": {"POST"}}
	if r := do(t, http.MethodOptions, base+"/rollback", other, nil); r.header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("preflight from another origin: %v", r.header)
	}
	// CORS never replaces the token.
	h := http.Header{"Origin": {"https://console.example.com"}}
	post(t, base+"/rollback", h, `{"commit":"abc"}`).wantError(t, http.StatusUnauthorized, "authentication required")
	if len(b.operations()) != 0 {
		t.Error("a cross-origin request without a token reached the daemon")
	}
}

// TestTokensByDigest: a replica that holds only the digests of the tokens
// (another replica of the shared store made them) accepts the tokens as
// if it held them, and nothing else.
func TestTokensByDigest(t *testing.T) {
	b := daemon()
	b.serve(schematest.Load(t, policyTree), servedCommit)
	base, _, logs := startAPI(t, api.Config{Backend: b, AuthReads: true,
		AdminTokenDigest: api.TokenDigest([]byte(adminToken)), ReadTokenDigest: api.TokenDigest([]byte(readToken))})
	post(t, base+"/rollback", nil, `{"commit":"4f2a9c1"}`).wantError(t, http.StatusUnauthorized, "authentication required")
	for _, tok := range []string{adminToken + "x", adminToken[:len(adminToken)-1], "", fmt.Sprintf("%x", api.TokenDigest([]byte(adminToken)))} {
		if r := post(t, base+"/rollback", auth(tok), `{"commit":"4f2a9c1"}`); r.code != http.StatusUnauthorized {
			t.Errorf("token %q: status %d, want 401", tok, r.code)
		}
	}
	post(t, base+"/rollback", auth(readToken), `{"commit":"4f2a9c1"}`).wantError(t, http.StatusForbidden, "may only read")
	post(t, base+"/rollback", auth(adminToken), `{"commit":"4f2a9c1","by":"ada"}`).wantJSON(t, http.StatusOK, nil)
	for _, tok := range []string{readToken, adminToken} {
		if r := do(t, http.MethodGet, base+"/status", auth(tok), nil); r.code != http.StatusOK {
			t.Errorf("GET /status with a token given by digest: %d %s", r.code, r.body)
		}
	}
	get(t, base+"/status").wantError(t, http.StatusUnauthorized, "authentication required")
	if strings.Contains(logs.String(), adminToken) {
		t.Error("a token reached the log")
	}

	// A token given whole wins over a digest; a zero digest is none.
	base, _, _ = startAPI(t, api.Config{AdminToken: []byte("whole"), AdminTokenDigest: api.TokenDigest([]byte(adminToken))})
	post(t, base+"/rollback", auth(adminToken), `{"commit":"4f2a9c1"}`).wantError(t, http.StatusUnauthorized, "invalid token")
	post(t, base+"/rollback", auth("whole"), `{"commit":"4f2a9c1"}`).wantJSON(t, http.StatusOK, nil)
	base, _, _ = startAPI(t, api.Config{})
	post(t, base+"/rollback", auth(adminToken), `{"commit":"4f2a9c1"}`).wantError(t, http.StatusForbidden, "no admin token")

	// The store's document: the digest in hex, read back.
	d := api.TokenDigest([]byte(adminToken))
	if got, err := api.ParseTokenDigest(api.FormatTokenDigest(d)); err != nil || got != d {
		t.Errorf("digest round trip: %x, %v", got, err)
	}
	for _, bad := range []string{"", "zz", "00", strings.Repeat("00", 32), strings.Repeat("ab", 31)} {
		if _, err := api.ParseTokenDigest([]byte(bad)); err == nil {
			t.Errorf("digest %q accepted", bad)
		}
	}
}
