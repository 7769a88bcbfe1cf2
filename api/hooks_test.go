package api_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/gitmesh/gitmesh/api"
	"github.com/gitmesh/gitmesh/internal/logtest"
)

var (
	githubSecret  = []byte("gh-hook-secret-7c1e")
	gitlabToken   = []byte("gl-hook-token-42ab")
	genericSecret = []byte("generic-hook-secret-e9d0")
)

const testMaxBody = 4096

func sign(secret, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

func hooksAPI(t *testing.T) (string, *fakeBackend, *logtest.Buffer) {
	t.Helper()
	return startAPI(t, api.Config{GitHubSecret: githubSecret, GitLabToken: gitlabToken, GenericSecret: genericSecret, MaxBodyBytes: testMaxBody})
}

// hookCase is one webhook delivery and what it must lead to.
type hookCase struct {
	name    string
	path    string
	header  http.Header
	body    []byte
	code    int
	status  string // "queued", "ignored", "pong" or "" for an error
	errText string
	trigger string // the Trigger reason, "" for none
}

func (tc hookCase) run(t *testing.T) {
	t.Helper()
	base, b, _ := hooksAPI(t)
	r := do(t, http.MethodPost, base+tc.path, tc.header, tc.body)
	if tc.errText != "" {
		r.wantError(t, tc.code, tc.errText)
	} else {
		var got struct{ Status, Reason string }
		r.wantJSON(t, tc.code, &got)
		if got.Status != tc.status {
			t.Errorf("status %q, want %q (%s)", got.Status, tc.status, r.body)
		}
		if tc.status == "ignored" && got.Reason == "" {
			t.Errorf("an ignored delivery must say why: %s", r.body)
		}
	}
	var want []string
	if tc.trigger != "" {
		want = []string{tc.trigger}
	}
	if got := b.triggered(); !slices.Equal(got, want) {
		t.Errorf("triggers %q, want %q", got, want)
	}
}

func hdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return h
}

func pushBody(ref string) []byte {
	return []byte(`{"ref":"` + ref + `","before":"0000000000000000000000000000000000000000","after":"3f2a9c1e5b7d4a6f8e0c2b4d6f8a0c2e4b6d8f0a","repository":{"full_name":"platform/mesh-policy"}}`)
}

func TestGitHubHook(t *testing.T) {
	push := pushBody("refs/heads/main")
	good := sign(githubSecret, push)
	form := []byte("payload=" + url.QueryEscape(string(push)))
	other := pushBody("refs/heads/dev")
	ping := []byte(`{"zen":"Keep it logically awesome.","hook_id":1}`)
	for _, tc := range []hookCase{
		{name: "push", header: hdr("X-GitHub-Event", "push", "X-Hub-Signature-256", good, "Content-Type", "application/json"),
			body: push, code: 202, status: "queued", trigger: api.ReasonGitHub},
		{name: "form push", header: hdr("X-GitHub-Event", "push", "X-Hub-Signature-256", sign(githubSecret, form), "Content-Type", "application/x-www-form-urlencoded"),
			body: form, code: 202, status: "queued", trigger: api.ReasonGitHub},
		{name: "upper-case hex", header: hdr("X-GitHub-Event", "push", "X-Hub-Signature-256", "sha256="+strings.ToUpper(strings.TrimPrefix(good, "sha256="))),
			body: push, code: 202, status: "queued", trigger: api.ReasonGitHub},
		{name: "ping", header: hdr("X-GitHub-Event", "ping", "X-Hub-Signature-256", sign(githubSecret, ping)),
			body: ping, code: 200, status: "pong"},
		{name: "push to another branch", header: hdr("X-GitHub-Event", "push", "X-Hub-Signature-256", sign(githubSecret, other)),
			body: other, code: 202, status: "ignored"},
		{name: "tag push", header: hdr("X-GitHub-Event", "push", "X-Hub-Signature-256", sign(githubSecret, pushBody("refs/tags/main"))),
			body: pushBody("refs/tags/main"), code: 202, status: "ignored"},
		{name: "other event", header: hdr("X-GitHub-Event", "issues", "X-Hub-Signature-256", sign(githubSecret, ping)),
			body: ping, code: 202, status: "ignored"},
		{name: "push that is not JSON", header: hdr("X-GitHub-Event", "push", "X-Hub-Signature-256", sign(githubSecret, []byte("{"))),
			body: []byte("{"), code: 400, errText: "not JSON"},
		{name: "wrong secret", header: hdr("X-GitHub-Event", "push", "X-Hub-Signature-256", sign([]byte("guess"), push)),
			body: push, code: 401, errText: "invalid signature"},
		{name: "signature of another body", header: hdr("X-GitHub-Event", "push", "X-Hub-Signature-256", good),
			body: other, code: 401, errText: "invalid signature"},
		{name: "missing signature", header: hdr("X-GitHub-Event", "push"),
			body: push, code: 401, errText: "invalid signature"},
		{name: "truncated signature", header: hdr("X-GitHub-Event", "push", "X-Hub-Signature-256", good[:len(good)-2]),
			body: push, code: 401, errText: "invalid signature"},
		{name: "odd-length signature", header: hdr("X-GitHub-Event", "push", "X-Hub-Signature-256", good[:len(good)-1]),
			body: push, code: 401, errText: "invalid signature"},
		{name: "bare hex", header: hdr("X-GitHub-Event", "push", "X-Hub-Signature-256", strings.TrimPrefix(good, "sha256=")),
			body: push, code: 401, errText: "invalid signature"},
		{name: "sha1 signature", header: hdr("X-GitHub-Event", "push", "X-Hub-Signature-256", "sha1="+strings.TrimPrefix(good, "sha256=")[:40]),
			body: push, code: 401, errText: "invalid signature"},
		{name: "ping without signature", header: hdr("X-GitHub-Event", "ping"),
			body: ping, code: 401, errText: "invalid signature"},
	} {
		tc.path = "/hooks/github"
		t.Run(tc.name, tc.run)
	}
}

func TestGitLabHook(t *testing.T) {
	push := pushBody("refs/heads/main")
	token := string(gitlabToken)
	for _, tc := range []hookCase{
		{name: "push", header: hdr("X-Gitlab-Event", "Push Hook", "X-Gitlab-Token", token),
			body: push, code: 202, status: "queued", trigger: api.ReasonGitLab},
		{name: "push to another branch", header: hdr("X-Gitlab-Event", "Push Hook", "X-Gitlab-Token", token),
			body: pushBody("refs/heads/feature/x"), code: 202, status: "ignored"},
		{name: "merge request", header: hdr("X-Gitlab-Event", "Merge Request Hook", "X-Gitlab-Token", token),
			body: []byte(`{"object_kind":"merge_request"}`), code: 202, status: "ignored"},
		{name: "wrong token", header: hdr("X-Gitlab-Event", "Push Hook", "X-Gitlab-Token", "gl-hook-token-42aB"),
			body: push, code: 401, errText: "invalid signature"},
		{name: "missing token", header: hdr("X-Gitlab-Event", "Push Hook"),
			body: push, code: 401, errText: "invalid signature"},
		{name: "truncated token", header: hdr("X-Gitlab-Event", "Push Hook", "X-Gitlab-Token", token[:len(token)-1]),
			body: push, code: 401, errText: "invalid signature"},
		{name: "token with more", header: hdr("X-Gitlab-Event", "Push Hook", "X-Gitlab-Token", token+"x"),
			body: push, code: 401, errText: "invalid signature"},
		{name: "token sent twice", header: hdr("X-Gitlab-Event", "Push Hook", "X-Gitlab-Token", "guess", "X-Gitlab-Token", token),
			body: push, code: 401, errText: "invalid signature"},
	} {
		tc.path = "/hooks/gitlab"
		t.Run(tc.name, tc.run)
	}
}

func TestGenericHook(t *testing.T) {
	body := []byte("any body at all\x00\xff")
	good := sign(genericSecret, body)
	for _, tc := range []hookCase{
		{name: "signed", header: hdr("X-Gitmesh-Signature", good), body: body, code: 202, status: "queued", trigger: api.ReasonGeneric},
		{name: "empty body", header: hdr("X-Gitmesh-Signature", sign(genericSecret, nil)), code: 202, status: "queued", trigger: api.ReasonGeneric},
		{name: "wrong secret", header: hdr("X-Gitmesh-Signature", sign(githubSecret, body)), body: body, code: 401, errText: "invalid signature"},
		{name: "missing", body: body, code: 401, errText: "invalid signature"},
		{name: "truncated", header: hdr("X-Gitmesh-Signature", good[:len(good)-8]), body: body, code: 401, errText: "invalid signature"},
		{name: "not hex", header: hdr("X-Gitmesh-Signature", "sha256="+strings.Repeat("zz", 32)), body: body, code: 401, errText: "invalid signature"},
		{name: "github header instead", header: hdr("X-Hub-Signature-256", good), body: body, code: 401, errText: "invalid signature"},
	} {
		tc.path = "/hooks/generic"
		t.Run(tc.name, tc.run)
	}
}

// A refused delivery is logged without the secret or what was sent, and
// answered with the same message whatever was wrong.
func TestRefusedHookLeaksNothing(t *testing.T) {
	base, b, logs := hooksAPI(t)
	push := pushBody("refs/heads/main")
	sent := []string{sign([]byte("guess"), push), sign(githubSecret, push)[:50], "gl-hook-token-42aB", "gl-hook"}
	answers := map[string]bool{}
	for _, req := range []struct {
		path   string
		header http.Header
		body   []byte
	}{
		{"/hooks/github", hdr("X-GitHub-Event", "push", "X-Hub-Signature-256", sent[0]), push},
		{"/hooks/github", hdr("X-GitHub-Event", "push", "X-Hub-Signature-256", sent[1]), push},
		{"/hooks/github", hdr("X-GitHub-Event", "push"), push},
		{"/hooks/gitlab", hdr("X-Gitlab-Event", "Push Hook", "X-Gitlab-Token", sent[2]), push},
		{"/hooks/gitlab", hdr("X-Gitlab-Event", "Push Hook", "X-Gitlab-Token", sent[3]), push},
		{"/hooks/generic", hdr("X-Gitmesh-Signature", sent[0]), push},
	} {
		r := do(t, http.MethodPost, base+req.path, req.header, req.body)
		r.wantError(t, http.StatusUnauthorized, "invalid signature")
		answers[string(r.body)] = true
	}
	if len(answers) != 1 {
		t.Errorf("refusals differ: %v", answers)
	}
	if got := b.triggered(); len(got) != 0 {
		t.Errorf("refused deliveries triggered %q", got)
	}
	out := logs.String()
	if n := strings.Count(out, "webhook refused"); n != 6 {
		t.Errorf("%d refusals logged, want 6:\n%s", n, out)
	}
	for _, secret := range append(sent, string(githubSecret), string(gitlabToken), string(genericSecret), strings.TrimPrefix(sent[0], "sha256=")[:16]) {
		if strings.Contains(out, secret) {
			t.Errorf("log shows %q:\n%s", secret, out)
		}
	}
}

func TestHookBodyLimit(t *testing.T) {
	big := []byte(`{"ref":"refs/heads/main","padding":"` + strings.Repeat("x", testMaxBody) + `"}`)
	for _, tc := range []struct {
		path   string
		header http.Header
	}{
		{"/hooks/github", hdr("X-GitHub-Event", "push", "X-Hub-Signature-256", sign(githubSecret, big))},
		{"/hooks/gitlab", hdr("X-Gitlab-Event", "Push Hook", "X-Gitlab-Token", string(gitlabToken))},
		{"/hooks/generic", hdr("X-Gitmesh-Signature", sign(genericSecret, big))},
	} {
		t.Run(tc.path, func(t *testing.T) {
			base, b, _ := hooksAPI(t)
			do(t, http.MethodPost, base+tc.path, tc.header, big).wantError(t, http.StatusRequestEntityTooLarge, "larger than 4096 bytes")

			// Without a Content-Length the limit holds while reading.
			req, err := http.NewRequest(http.MethodPost, base+tc.path, io.MultiReader(strings.NewReader(string(big))))
			if err != nil {
				t.Fatal(err)
			}
			req.Header = tc.header.Clone()
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if req.ContentLength != -1 && req.ContentLength != 0 {
				t.Fatalf("request has a Content-Length %d; the test needs a streamed body", req.ContentLength)
			}
			if resp.StatusCode != http.StatusRequestEntityTooLarge {
				t.Errorf("streamed body: status %d, want 413", resp.StatusCode)
			}
			if got := b.triggered(); len(got) != 0 {
				t.Errorf("an oversized delivery triggered %q", got)
			}
		})
	}
}

func TestDisabledHooks(t *testing.T) {
	base, b, _ := startAPI(t, api.Config{GitHubSecret: githubSecret})
	push := pushBody("refs/heads/main")
	do(t, http.MethodPost, base+"/hooks/gitlab", hdr("X-Gitlab-Event", "Push Hook", "X-Gitlab-Token", ""), push).
		wantError(t, http.StatusNotFound, "not enabled")
	do(t, http.MethodPost, base+"/hooks/generic", hdr("X-Gitmesh-Signature", sign(nil, push)), push).
		wantError(t, http.StatusNotFound, "not enabled")
	if got := b.triggered(); len(got) != 0 {
		t.Errorf("disabled hooks triggered %q", got)
	}
}

// Without a followed branch known, every push triggers.
func TestPushWithoutBranch(t *testing.T) {
	b := &fakeBackend{}
	base, _, _ := startAPI(t, api.Config{Backend: b, GitLabToken: gitlabToken})
	do(t, http.MethodPost, base+"/hooks/gitlab", hdr("X-Gitlab-Event", "Push Hook", "X-Gitlab-Token", string(gitlabToken)), pushBody("refs/heads/any")).
		wantJSON(t, http.StatusAccepted, nil)
	if got := b.triggered(); !slices.Equal(got, []string{api.ReasonGitLab}) {
		t.Errorf("triggers %q", got)
	}
}
