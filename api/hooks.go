package api

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
)

// Trigger reasons the webhooks give Backend.Trigger.
const (
	ReasonGitHub  = "webhook:github"
	ReasonGitLab  = "webhook:gitlab"
	ReasonGeneric = "webhook:generic"
)

// Headers the webhooks read.
const (
	headerGitHubSignature  = "X-Hub-Signature-256"
	headerGitHubEvent      = "X-GitHub-Event"
	headerGitHubDelivery   = "X-GitHub-Delivery"
	headerGitLabToken      = "X-Gitlab-Token"
	headerGitLabEvent      = "X-Gitlab-Event"
	headerGitLabUUID       = "X-Gitlab-Event-UUID"
	headerGenericSignature = "X-Gitmesh-Signature"
)

// invalidSignature is the one answer to every refused webhook, whichever
// way its signature or token is wrong.
const invalidSignature = "invalid signature"

// hook answers 404 while secret is empty (the webhook is disabled), and
// runs handle otherwise.
func (s *server) hook(secret []byte, handle func(w http.ResponseWriter, r *http.Request, secret []byte)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if len(secret) == 0 {
			writeError(w, http.StatusNotFound, "webhook "+r.URL.Path+" is not enabled")
			return
		}
		handle(w, r, secret)
	}
}

// github serves GitHub's push and ping events, signed with HMAC-SHA256 in
// X-Hub-Signature-256.
func (s *server) github(w http.ResponseWriter, r *http.Request, secret []byte) {
	body, ok := s.readBody(w, r)
	if !ok {
		return
	}
	if reason := checkHMAC(secret, body, r.Header.Get(headerGitHubSignature)); reason != "" {
		s.refuse(w, r, "github", reason)
		return
	}
	event := r.Header.Get(headerGitHubEvent)
	delivery := r.Header.Get(headerGitHubDelivery)
	switch event {
	case "ping":
		s.log.Info("webhook ping", "hook", "github", "delivery", delivery)
		writeJSON(w, http.StatusOK, statusBody{Status: "pong"})
		return
	case "push":
		payload := body
		// A GitHub webhook may be set to send its JSON as a form field.
		if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct == "application/x-www-form-urlencoded" {
			form, err := url.ParseQuery(string(body))
			if err != nil {
				writeError(w, http.StatusBadRequest, "form body: "+err.Error())
				return
			}
			payload = []byte(form.Get("payload"))
		}
		s.push(w, "github", event, delivery, ReasonGitHub, payload)
	default:
		s.ignore(w, "github", event, delivery, fmt.Sprintf("event %q does not move a branch", event))
	}
}

// gitlab serves GitLab's Push Hook, authenticated by the secret token in
// X-Gitlab-Token.
func (s *server) gitlab(w http.ResponseWriter, r *http.Request, token []byte) {
	// The token does not depend on the body: refuse before reading it.
	if reason := checkToken(token, r.Header.Values(headerGitLabToken)); reason != "" {
		s.refuse(w, r, "gitlab", reason)
		return
	}
	body, ok := s.readBody(w, r)
	if !ok {
		return
	}
	event := r.Header.Get(headerGitLabEvent)
	delivery := r.Header.Get(headerGitLabUUID)
	if event != "Push Hook" {
		s.ignore(w, "gitlab", event, delivery, fmt.Sprintf("event %q does not move a branch", event))
		return
	}
	s.push(w, "gitlab", event, delivery, ReasonGitLab, body)
}

// generic serves any sender that signs its body with HMAC-SHA256 in
// X-Gitmesh-Signature; the body is not parsed.
func (s *server) generic(w http.ResponseWriter, r *http.Request, secret []byte) {
	body, ok := s.readBody(w, r)
	if !ok {
		return
	}
	if reason := checkHMAC(secret, body, r.Header.Get(headerGenericSignature)); reason != "" {
		s.refuse(w, r, "generic", reason)
		return
	}
	s.queue(w, "generic", "", "", ReasonGeneric)
}

// push triggers a sync for a push to the followed branch and ignores one
// to any other ref. GitHub and GitLab both name it in `ref`.
func (s *server) push(w http.ResponseWriter, hook, event, delivery, reason string, payload []byte) {
	var p struct {
		Ref string `json:"ref"`
	}
	if err := json.Unmarshal(payload, &p); err != nil {
		writeError(w, http.StatusBadRequest, "push payload is not JSON: "+err.Error())
		return
	}
	if want := branchRef(s.b.Status().Branch); want != "" && p.Ref != want {
		s.ignore(w, hook, event, delivery, fmt.Sprintf("push to %q, not to the followed %q", p.Ref, want))
		return
	}
	s.queue(w, hook, event, delivery, reason)
}

// branchRef is the full ref of a branch name ("" for none).
func branchRef(branch string) string {
	if branch == "" || strings.HasPrefix(branch, "refs/") {
		return branch
	}
	return "refs/heads/" + branch
}

func (s *server) queue(w http.ResponseWriter, hook, event, delivery, reason string) {
	s.b.Trigger(reason)
	s.log.Info("webhook accepted", "hook", hook, "event", event, "delivery", delivery)
	writeJSON(w, http.StatusAccepted, statusBody{Status: "queued"})
}

func (s *server) ignore(w http.ResponseWriter, hook, event, delivery, why string) {
	s.log.Info("webhook ignored", "hook", hook, "event", event, "delivery", delivery, "reason", why)
	writeJSON(w, http.StatusAccepted, statusBody{Status: "ignored", Reason: why})
}

// refuse answers 401 with the same message whatever was wrong; the log line
// says what, never the secret nor what was sent.
func (s *server) refuse(w http.ResponseWriter, r *http.Request, hook, why string) {
	s.log.Warn("webhook refused", "hook", hook, "reason", why, "remote", r.RemoteAddr)
	writeError(w, http.StatusUnauthorized, invalidSignature)
}

// readBody reads a webhook body up to Config.MaxBodyBytes, answering 413
// above it.
func (s *server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	limit := s.cfg.MaxBodyBytes
	tooLarge := func() ([]byte, bool) {
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body larger than %d bytes", limit))
		return nil, false
	}
	if r.ContentLength > limit {
		return tooLarge()
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return tooLarge()
		}
		writeError(w, http.StatusBadRequest, "read body: "+err.Error())
		return nil, false
	}
	return body, true
}

// checkHMAC checks a "sha256=<hex>" signature of body; it returns why the
// signature is refused, or "" when it is good.
func checkHMAC(secret, body []byte, header string) string {
	if header == "" {
		return "missing signature"
	}
	hexSig, ok := strings.CutPrefix(header, "sha256=")
	if !ok {
		return "signature is not sha256=<hex>"
	}
	got, err := hex.DecodeString(hexSig)
	if err != nil || len(got) != sha256.Size {
		return "signature is not sha256=<hex>"
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	if !hmac.Equal(got, mac.Sum(nil)) {
		return "signature does not match"
	}
	return ""
}

// checkToken compares a token in constant time, through digests so that
// the time taken does not tell the token's length either. A header sent
// twice is refused.
func checkToken(token []byte, sent []string) string {
	switch {
	case len(sent) == 0 || sent[0] == "":
		return "missing token"
	case len(sent) > 1:
		return "token header sent more than once"
	}
	want, have := sha256.Sum256(token), sha256.Sum256([]byte(sent[0]))
	if subtle.ConstantTimeCompare(want[:], have[:]) != 1 {
		return "token does not match"
	}
	return ""
}
