package main

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gitmesh/gitmesh/reconcile/gittest"
	"github.com/gitmesh/gitmesh/xds/servertls"
	"github.com/gitmesh/gitmesh/xds/token"
)

// TestServeWithTokensAndTLS serves with --xds-auth token and --tls auto:
// plaintext is refused on both ports, the CLI reaches the API over TLS with
// --ca-file, and gitmesh certs works with a token over TLS and is refused
// without one.
func TestServeWithTokensAndTLS(t *testing.T) {
	work := gittest.Init(t)
	gittest.Commit(t, work, "Policies", policyFiles(t))
	state := t.TempDir()
	o := serveOptions{repo: work, path: "policies", stateDir: state,
		security: serveSecurity{xdsAuth: xdsAuthToken, tls: tlsAuto, tlsSANs: []string{"gitmesh.example"}}}
	s := startServe(t, o)
	caFile := filepath.Join(state, servertls.CAFile)
	api := "https://" + s.app.apiLis.Addr().String()
	tokenArgs := []string{"--token-file", filepath.Join(state, adminTokenFileName), "--ca-file", caFile}

	// The CLI over TLS, once a commit is served.
	deadline := time.Now().Add(certsWait)
	for {
		code, out, stderr := gitmesh(t, append([]string{"status", "--api-address", api, "--format", "json"}, tokenArgs...)...)
		if code != exitOK {
			t.Fatalf("status over TLS: exit %d: %s", code, stderr)
		}
		var st struct{ Ready bool }
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatal(err)
		}
		if st.Ready {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no commit served")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// GITMESH_CA_FILE and a bare HOST:PORT do the same.
	t.Setenv("GITMESH_CA_FILE", caFile)
	if code, _, stderr := gitmesh(t, "status", "--api-address", s.app.apiLis.Addr().String()); code != exitOK {
		t.Errorf("status with GITMESH_CA_FILE: exit %d: %s", code, stderr)
	}
	os.Unsetenv("GITMESH_CA_FILE")

	// Plaintext HTTP is refused; TLS without the CA is not trusted.
	if resp, err := http.Get("http://" + s.app.apiLis.Addr().String() + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Error("plaintext API answered 200")
		}
	}
	if code, _, stderr := gitmesh(t, "status", "--api-address", api); code == exitOK || !strings.Contains(stderr, "certificate") {
		t.Errorf("status without --ca-file: exit %d: %s", code, stderr)
	}

	// gitmesh certs: a token of the dataplane over TLS gets its files.
	xdsAddr := s.app.xdsLis.Addr().String()
	code, tok, stderr := gitmesh(t, "token", "issue", "--dataplane", "default/web-01", "--ttl", "1h", "--state-dir", state)
	if code != exitOK || !strings.Contains(stderr, "token id ") {
		t.Fatalf("token issue: exit %d: %s", code, stderr)
	}
	if strings.Contains(s.logs.String(), strings.TrimSpace(tok)) {
		t.Error("the daemon logged a token")
	}
	tokenFile := filepath.Join(t.TempDir(), "web-01.token")
	if err := os.WriteFile(tokenFile, []byte(tok), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "certs")
	certs := func(args ...string) (int, string) {
		code, _, stderr := gitmesh(t, append([]string{"certs", "--dataplane", "default/web-01", "--xds-address", xdsAddr,
			"--dir", dir, "--once", "--timeout", "2s"}, args...)...)
		return code, stderr
	}
	if code, stderr := certs("--token-file", tokenFile, "--ca-file", caFile); code != exitOK {
		t.Fatalf("certs with token and CA: exit %d: %s", code, stderr)
	}
	if _, err := readCertDir(dir); err != nil {
		t.Fatal(err)
	}
	if code, stderr := certs("--ca-file", caFile); code == exitOK || !strings.Contains(stderr, "Unauthenticated") {
		t.Errorf("certs without a token: exit %d: %s", code, stderr)
	}
	if code, stderr := certs("--token-file", tokenFile); code == exitOK {
		t.Errorf("certs over plaintext: exit %d: %s", code, stderr)
	}
	// A token for another dataplane is refused before dialling.
	if code, stderr := certs("--token-file", tokenFile, "--ca-file", caFile, "--dataplane", "default/backend-01"); code != exitUsage ||
		!strings.Contains(stderr, "the token is for default/web-01") {
		t.Errorf("certs with another dataplane's token: exit %d: %s", code, stderr)
	}

	// Revoked: refused from the next stream on.
	if code, out, stderr := gitmesh(t, "token", "revoke", "--token-file", tokenFile, "--state-dir", state); code != exitOK ||
		!strings.Contains(out, "revoked token id") {
		t.Fatalf("token revoke: exit %d: %s", code, stderr)
	}
	if code, stderr := certs("--token-file", tokenFile, "--ca-file", caFile); code == exitOK || !strings.Contains(stderr, "token revoked") {
		t.Errorf("certs with a revoked token: exit %d: %s", code, stderr)
	}
}

func TestTokenIssueWritesKeyOnce(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state")
	for range 2 {
		if code, _, stderr := gitmesh(t, "token", "issue", "--dataplane", "default/web-01", "--state-dir", state); code != exitOK {
			t.Fatalf("exit %d: %s", code, stderr)
		}
	}
	fi, err := os.Stat(filepath.Join(state, token.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key mode %o, want 600", fi.Mode().Perm())
	}
	for _, args := range [][]string{
		{"token", "issue", "--dataplane", "default", "--state-dir", state},
		{"token", "issue", "--dataplane", "default/web-01", "--ttl", "0s", "--state-dir", state},
		{"token", "revoke", "--state-dir", state},
	} {
		if code, _, _ := gitmesh(t, args...); code != exitUsage {
			t.Errorf("%v: exit %d, want %d", args, code, exitUsage)
		}
	}
}
