package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gitmesh/gitmesh/reconcile"
	"github.com/gitmesh/gitmesh/reconcile/gittest"
)

func TestValidateVerifyCommits(t *testing.T) {
	alice := gittest.NewSigner(t, "Alice", "alice@example.com")
	mallory := gittest.NewSigner(t, "Mallory", "mallory@example.com")
	keyring := gittest.Keyring(t, alice)
	dir := gittest.Init(t)
	mesh := map[string]string{"mesh/mesh.yaml": "type: Mesh\nname: default\n"}
	unsigned := gittest.Commit(t, dir, "unsigned", mesh)
	byMallory := mallory.Commit(t, dir, "by mallory", nil)
	signed := alice.Commit(t, dir, "signed", nil)

	validate := func(rev string, extra ...string) (int, string, string) {
		return gitmesh(t, append([]string{"validate", "--repo", dir, "--rev", rev, "--path", "mesh"}, extra...)...)
	}
	if code, out, errb := validate(signed, "--verify-commits", keyring); code != exitOK {
		t.Errorf("signed commit: exit %d\n%s%s", code, out, errb)
	}
	if code, out, errb := validate(unsigned, "--verify-commits", keyring); code != exitFailed || !strings.Contains(errb, "is not signed") {
		t.Errorf("unsigned commit: exit %d, want 1\n%s%s", code, out, errb)
	}
	if code, out, errb := validate(byMallory, "--verify-commits", keyring); code != exitFailed ||
		!strings.Contains(errb, "signed by unknown key "+mallory.KeyID()) {
		t.Errorf("commit by an unknown key: exit %d, want 1\n%s%s", code, out, errb)
	}
	// Without the flag the signature does not matter.
	if code, out, errb := validate(unsigned); code != exitOK {
		t.Errorf("unsigned commit without --verify-commits: exit %d\n%s%s", code, out, errb)
	}
	empty := filepath.Join(t.TempDir(), "empty.asc")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, errb := validate(signed, "--verify-commits", empty); code != exitUsage || !strings.Contains(errb, empty) {
		t.Errorf("empty keyring: exit %d, want 2 naming the file\n%s", code, errb)
	}
	if code, _, errb := gitmesh(t, "validate", "--verify-commits", keyring, dir); code != exitUsage || !strings.Contains(errb, "give --repo") {
		t.Errorf("--verify-commits without --repo: exit %d, want 2\n%s", code, errb)
	}
}

// TestServeVerifyCommits: a push announced by a webhook is published only
// when signed by a key of the keyring; an unsigned one shows in /status,
// /history and /metrics, and rollback to it is refused with 422.
func TestServeVerifyCommits(t *testing.T) {
	alice := gittest.NewSigner(t, "Alice", "alice@example.com")
	r := newRemote(t)
	c1 := alice.Commit(t, r.work, "Initial policies", policyFiles(t))
	gittest.Push(t, r.work, r.bare)

	stateDir := t.TempDir()
	s := startServe(t, serveOptions{repo: r.url, path: "policies", stateDir: stateDir,
		webhookSecretFile: writeSecret(t, webhookSecret), verifyCommits: gittest.Keyring(t, alice)})
	backend := s.dial(t, "default.backend-01")
	s.waitCommit(t, backend, c1)
	if st := s.status(t); st.Published == nil || !strings.Contains(st.Published.Signer, "key "+alice.KeyID()) {
		t.Errorf("published %+v, want alice's signature", st.Published)
	}

	gittest.Git(t, r.work, "rm", "-q", "policies/permissions/web-to-backend.yaml")
	unsigned := r.push(t, "Unsigned change", nil)
	if code := s.hook(t, webhookSecret); code != http.StatusAccepted {
		t.Fatalf("webhook: %d", code)
	}
	st := s.waitStatus(t, "the unsigned head", func(st reconcile.Status) bool {
		return st.Head != nil && string(st.Head.Hash) == unsigned && st.HeadVerdict != reconcile.VerdictPending
	})
	if st.HeadVerdict != reconcile.VerdictUnverified || !strings.Contains(st.LastError, "is not signed") || string(st.Published.Hash) != c1 {
		t.Errorf("status with an unsigned head: %+v", st)
	}
	if v := backend.Version("type.googleapis.com/envoy.config.listener.v3.Listener"); !strings.HasPrefix(v, c1[:12]) {
		t.Errorf("backend-01 was pushed %q; an unsigned commit must not reach it", v)
	}
	if metrics := s.metrics(t); !strings.Contains(metrics, `gitmesh_unverified_commits_total{reason="unsigned"} 1`) {
		t.Errorf("metrics lack the unsigned commit:\n%s", grepLines(metrics, "gitmesh_unverified"))
	}
	_, stdout, _ := cli(t, s.app.apiLis.Addr().String(), stateDir, "history")
	for _, want := range []string{"unverified", "not published: commit " + unsigned[:12] + " is not signed", "signed by Alice <alice@example.com>"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("history lacks %q:\n%s", want, stdout)
		}
	}

	// Rollback to the unsigned commit is a refusal (422), as for an invalid one.
	token, err := os.ReadFile(filepath.Join(stateDir, adminTokenFileName))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(map[string]string{"commit": unsigned})
	req, _ := http.NewRequest(http.MethodPost, s.api("/rollback"), bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	answer, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnprocessableEntity || !strings.Contains(string(answer), "is not signed") {
		t.Errorf("rollback to an unsigned commit: %d %s, want 422", resp.StatusCode, answer)
	}
	if st := s.status(t); st.Pinned || string(st.Published.Hash) != c1 {
		t.Errorf("a refused rollback changed the status: %+v", st)
	}

	// A signed commit on top is published.
	c3 := alice.Commit(t, r.work, "Signed change", map[string]string{"policies/README": "signed\n"})
	gittest.Push(t, r.work, r.bare)
	s.hook(t, webhookSecret)
	s.waitCommit(t, backend, c3)
}

// grepLines are the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for l := range strings.SplitSeq(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
