// Package api is the daemon's HTTP API on port 5681: status and history,
// rollback and resume behind a bearer token,
// the proxies' convergence, a read-only Kuma-style view of the served
// policy, health and readiness, metrics, and the webhooks that ask for a
// sync. It reads the daemon only through Backend.
package api

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gitmesh/gitmesh/reconcile"
	"github.com/gitmesh/gitmesh/reconcile/pipeline"
	"github.com/gitmesh/gitmesh/schema"
	"github.com/gitmesh/gitmesh/xds/ads"
	"github.com/gitmesh/gitmesh/xds/ca"
)

// Backend is what the API reads from the daemon, and what it asks of it.
// Every method may be called from many requests at once and must be safe
// for that; what they return is not modified by the API.
type Backend interface {
	Admin
	// Status is the daemon's state now.
	Status() reconcile.Status
	// History is the recorded commits, newest first.
	History() []reconcile.Record
	// Served is the pipeline's Result of the commit served (its policy set
	// and translation) and the commit; ok is false until a commit is
	// served.
	Served() (res *pipeline.Result, commit reconcile.CommitInfo, ok bool)
	// Proxies is every proxy the xDS server published or saw.
	Proxies() []ads.ProxyStatus
	// Certificate is the info of the certificate issued to a node of a
	// mesh with mTLS, the one its SDS secrets carry; ok is false when
	// none is held.
	Certificate(nodeID string) (info ca.CertificateInfo, ok bool)
	// Trigger asks for a sync now, giving what asked. It must not block:
	// the daemon coalesces requests that arrive while a sync runs.
	Trigger(reason string)
}

// DefaultMaxBodyBytes bounds a webhook body when Config.MaxBodyBytes is not
// set.
const DefaultMaxBodyBytes = 1 << 20

// Config wires the API.
type Config struct {
	Backend Backend
	// Secrets of the webhooks; an empty one disables its webhook, which then
	// answers 404.
	GitHubSecret  []byte // HMAC-SHA256 key of X-Hub-Signature-256
	GitLabToken   []byte // expected X-Gitlab-Token
	GenericSecret []byte // HMAC-SHA256 key of X-Gitmesh-Signature
	// Metrics is served at /metrics; nil answers 404.
	Metrics http.Handler
	// Logger receives a line per refused or accepted webhook; nil discards.
	Logger *slog.Logger
	// MaxBodyBytes bounds a webhook body (413 above it); 0 means
	// DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// AdminToken is the bearer token POST /rollback and /resume require;
	// without one they answer 403. ReadToken, when set, is a second token
	// that may only read. With AuthReads, the read endpoints (all but
	// /healthz, /readyz and the webhooks, which have their own secrets)
	// require either token.
	AdminToken, ReadToken []byte
	// AdminTokenDigest and ReadTokenDigest, when not zero, stand for
	// AdminToken and ReadToken by their SHA-256 digest (TokenDigest): a
	// replica of a shared store accepts the token another replica made
	// without ever holding it. A token, when set, is used instead.
	AdminTokenDigest, ReadTokenDigest [sha256.Size]byte
	AuthReads                         bool
	// Differ answers GET /diff; nil answers 404.
	Differ Differ
	// EventsInterval is how often GET /events looks for a change; 0 means
	// DefaultEventsInterval.
	EventsInterval time.Duration
	// CORSOrigins are the browser origins (scheme://host[:port]) allowed
	// to call the API from another origin; none by default.
	CORSOrigins []string
	// RepoWebURL is the template of the address of a file at a commit in
	// the forge's web UI (see CheckRepoWebURL), given to the console in
	// GET /status as repoWebUrl; none when empty.
	RepoWebURL string
}

// Methods a route answers.
var (
	readMethods = []string{http.MethodGet, http.MethodHead}
	postMethods = []string{http.MethodPost}
)

// New returns the API's handler. It keeps no state of its own besides cfg:
// every answer is read from the Backend at request time.
func New(cfg Config) http.Handler {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	s := &server{cfg: cfg, b: cfg.Backend, log: cfg.Logger, tokens: newTokens(cfg), diffing: make(chan struct{}, 1)}
	mux := http.NewServeMux()
	open := func(pattern string, methods []string, h http.HandlerFunc) {
		mux.Handle(pattern, allow(methods, h))
	}
	route := func(pattern string, methods []string, h http.HandlerFunc) {
		mux.Handle(pattern, allow(methods, s.guard(accessRead, h)))
	}
	route("/status", readMethods, s.status)
	route("/history", readMethods, s.history)
	route("/proxies", readMethods, s.proxies)
	open("/healthz", readMethods, s.healthz)
	open("/readyz", readMethods, s.readyz)
	route("/metrics", readMethods, s.metrics)
	route("/diff", readMethods, s.diff)
	route("/events", readMethods, s.events)
	mux.Handle("/ui/", allow(readMethods, console()))
	mux.Handle("/ui", allow(readMethods, http.RedirectHandler("/ui/", http.StatusMovedPermanently)))

	route("/meshes", readMethods, s.served(listMeshes))
	route("/meshes/{mesh}", readMethods, s.served(getMesh))
	route("/meshes/{mesh}/dataplanes", readMethods, s.served(listDataplanes))
	route("/meshes/{mesh}/dataplanes/{name}", readMethods, s.served(getDataplane))
	route("/meshes/{mesh}/dataplanes/{name}/policies", readMethods, s.served(dataplanePolicies))
	route("/meshes/{mesh}/dataplanes/{name}/resources", readMethods, s.dataplaneResources)
	route("/meshes/{mesh}/matrix", readMethods, s.served(matrix))
	route("/meshes/{mesh}/traffic-permissions", readMethods, s.served(listPermissions))
	route("/meshes/{mesh}/traffic-permissions/{name}", readMethods, s.served(getPermission))
	route("/meshes/{mesh}/meshtrafficpermissions", readMethods, s.served(listMeshTrafficPermissions))
	route("/meshes/{mesh}/meshtrafficpermissions/{name}", readMethods, s.served(getMeshTrafficPermission))
	route("/meshes/{mesh}/meshhttproutes", readMethods, s.served(listMeshHTTPRoutes))
	route("/meshes/{mesh}/meshhttproutes/{name}", readMethods, s.served(getMeshHTTPRoute))
	route("/meshes/{mesh}/meshtcproutes", readMethods, s.served(listMeshTCPRoutes))
	route("/meshes/{mesh}/meshtcproutes/{name}", readMethods, s.served(getMeshTCPRoute))
	for _, typ := range schema.ConfKinds() {
		route("/meshes/{mesh}/"+schema.ConfPlural(typ), readMethods, s.served(confPolicies(typ, false)))
		route("/meshes/{mesh}/"+schema.ConfPlural(typ)+"/{name}", readMethods, s.served(confPolicies(typ, true)))
	}

	open("/hooks/github", postMethods, s.hook(cfg.GitHubSecret, s.github))
	open("/hooks/gitlab", postMethods, s.hook(cfg.GitLabToken, s.gitlab))
	open("/hooks/generic", postMethods, s.hook(cfg.GenericSecret, s.generic))

	mux.Handle("/rollback", allow(postMethods, s.guard(accessAdmin, http.HandlerFunc(s.rollback))))
	mux.Handle("/resume", allow(postMethods, s.guard(accessAdmin, http.HandlerFunc(s.resume))))

	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such endpoint: "+r.URL.Path)
	})
	return cors(cfg.CORSOrigins, mux)
}

type server struct {
	cfg    Config
	b      Backend
	log    *slog.Logger
	tokens tokens
	// diffing holds a token while GET /diff runs: one comparison at a time.
	diffing chan struct{}
	// streams counts the open GET /events streams.
	streams atomic.Int64
}

// allow answers 405 with an Allow header, as JSON, to a method not in
// methods.
func allow(methods []string, h http.Handler) http.Handler {
	list := strings.Join(methods, ", ")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, m := range methods {
			if r.Method == m {
				h.ServeHTTP(w, r)
				return
			}
		}
		w.Header().Set("Allow", list)
		writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed: use %s", r.Method, list))
	})
}

// statusJSON is the answer of GET /status: the daemon's status and, for
// the console, the template of links into the forge.
type statusJSON struct {
	reconcile.Status
	RepoWebURL string `json:"repoWebUrl,omitempty"`
}

func (s *server) status(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, statusJSON{Status: s.b.Status(), RepoWebURL: s.cfg.RepoWebURL})
}

// HistoryList is the answer of GET /history.
type HistoryList struct {
	Items []reconcile.Record `json:"items"`
	Total int                `json:"total"`
}

func (s *server) history(w http.ResponseWriter, _ *http.Request) {
	items := s.b.History()
	if items == nil {
		items = []reconcile.Record{}
	}
	writeJSON(w, http.StatusOK, HistoryList{Items: items, Total: len(items)})
}

type statusBody struct {
	Status string `json:"status"`
	Reason string `json:"reason,omitempty"`
}

func (s *server) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, statusBody{Status: "ok"})
}

func (s *server) readyz(w http.ResponseWriter, _ *http.Request) {
	if !s.b.Status().Ready {
		writeError(w, http.StatusServiceUnavailable, "not ready: no commit is served yet")
		return
	}
	writeJSON(w, http.StatusOK, statusBody{Status: "ready"})
}

func (s *server) metrics(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Metrics == nil {
		writeError(w, http.StatusNotFound, "metrics are not enabled")
		return
	}
	s.cfg.Metrics.ServeHTTP(w, r)
}

// errorBody is every error answer.
type errorBody struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, errorBody{Error: msg})
}

// writeJSON answers v, indented for people reading it with curl.
func writeJSON(w http.ResponseWriter, code int, v any) {
	var body bytes.Buffer
	enc := json.NewEncoder(&body)
	enc.SetEscapeHTML(false) // keep "<ada@example.com>" readable; the type is JSON, never HTML
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		code = http.StatusInternalServerError
		body.Reset()
		_ = enc.Encode(errorBody{Error: "encode answer: " + err.Error()})
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write(body.Bytes())
}
