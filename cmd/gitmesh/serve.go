package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/gitmesh/gitmesh/api"
	"github.com/gitmesh/gitmesh/internal/atomicfile"
	"github.com/gitmesh/gitmesh/reconcile"
	"github.com/gitmesh/gitmesh/reconcile/pipeline"
	"github.com/gitmesh/gitmesh/reconcile/plan"
	"github.com/gitmesh/gitmesh/reconcile/source"
	"github.com/gitmesh/gitmesh/store"
	"github.com/gitmesh/gitmesh/xds/ads"
	"github.com/gitmesh/gitmesh/xds/ca"
	"github.com/gitmesh/gitmesh/xds/plane"
)

type serveOptions struct {
	repo, branch, path string
	interval           time.Duration
	stateDir           string
	xdsAddress         string
	apiAddress         string
	logFormat          string
	logLevel           string
	gitTimeout         time.Duration
	certValidity       time.Duration
	limits             limitFlags
	maxFetchBytes      int64
	allowEmpty         bool

	gitUsername, gitPasswordFile, gitTokenFile string
	sshKeyFile, sshKeyPassphraseFile           string
	sshKnownHosts                              string
	gitCAFile                                  string

	githubSecretFile, gitlabTokenFile, webhookSecretFile string

	adminTokenFile, readTokenFile string
	authReads                     bool
	corsOrigins                   []string
	repoWebURL                    string
	rollbackOnNACK                bool
	verifyCommits                 string
	security                      serveSecurity
	store                         storeFlags
	replicaID, advertiseAddress   string
	leaseDuration                 time.Duration
}

// Environment variables that carry secrets themselves (the *-file flags and
// their GITMESH_*_FILE variables name files instead). They are read once and
// never logged.
const (
	envGitPassword   = "GITMESH_GIT_PASSWORD"
	envGitToken      = "GITMESH_GIT_TOKEN"
	envSSHPassphrase = "GITMESH_SSH_KEY_PASSPHRASE"
	envGitHubSecret  = "GITMESH_GITHUB_WEBHOOK_SECRET"
	envGitLabToken   = "GITMESH_GITLAB_WEBHOOK_TOKEN"
	envWebhookSecret = "GITMESH_WEBHOOK_SECRET"
	envAdminToken    = "GITMESH_ADMIN_TOKEN"
	envReadToken     = "GITMESH_READ_TOKEN"
)

func newServeCmd() *cobra.Command {
	var o serveOptions
	cmd := &cobra.Command{
		Use:   "serve --repo URL|PATH",
		Short: "Follow a branch and serve every valid commit to the proxies over xDS",
		Long: `Serve keeps a bare clone of the repository in the state directory and
follows one branch: on every poll, webhook, or (for a local repository) commit,
it validates the new head as a whole, diffs it against what is served,
translates the proxies it changes and publishes them over ADS. An invalid
commit changes nothing that is served. On restart the last published commit is
served again from local objects before the remote is contacted.

Every flag can also be set with an environment variable: --state-dir is
GITMESH_STATE_DIR. Credentials come from files (--git-token-file,
--ssh-key-file ...) or from ` + envGitToken + ` / ` + envGitPassword + ` /
` + envSSHPassphrase + `;
webhook secrets from files or ` + envGitHubSecret + `, ` + envGitLabToken + `
and ` + envWebhookSecret + `.

POST /rollback and /resume need the admin token: --admin-token-file, or
` + envAdminToken + `; without either, a random token is generated once into
<state-dir>/admin-token (0600), where ` + "`gitmesh rollback`" + ` on this host finds it.
With a PostgreSQL store the first replica to start so puts the digest of
its token in the store, and every replica accepts that token (which stays
on the first one's host); a token given by file or variable is used as it
is, with a warning when the store holds another's digest.

With --verify-commits KEYRING (armored OpenPGP public keys), a head that is
unsigned, signed by a key not in KEYRING, or badly signed is recorded as
unverified and not published, and rollback refuses such commits.

With --repo-web-url TEMPLATE, the console links every finding's file and
line to the forge's web UI: TEMPLATE is an http(s) URL with {commit} and
{path}, and optionally {line}, after its host, e.g.
  https://github.com/org/repo/blob/{commit}/{path}#L{line}
  https://gitlab.com/org/repo/-/blob/{commit}/{path}#L{line}

Replicas given one PostgreSQL store (--store-file, --store-key-file) are one
control plane: the replica holding the store's lease decides which commit is
published, every replica serves it, and rollback, resume and webhooks work
through any of them (--replica-id, --advertise-address, --lease-duration).`,
		Example: `  gitmesh serve --repo https://git.example.com/platform/mesh.git --path policies
  gitmesh serve --repo ./mesh-policies --state-dir /var/lib/gitmesh --interval 1m`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runServe(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.repo, "repo", "", "the policy repository: a local path, or a file://, git://, http(s):// or ssh:// URL (required)")
	f.StringVar(&o.branch, "branch", "main", "the branch to follow")
	f.StringVar(&o.path, "path", "", "the policy directory within the repository (default: the root)")
	f.DurationVar(&o.interval, "interval", 30*time.Second, "how often to poll the remote")
	f.StringVar(&o.stateDir, "state-dir", ".gitmesh", "where the clone, the CA, the state file and the history are kept")
	f.StringVar(&o.xdsAddress, "xds-address", "127.0.0.1:5678", "address of the xDS (ADS) server; use :5678 to reach proxies on other hosts")
	f.StringVar(&o.apiAddress, "api-address", "127.0.0.1:5681", "address of the HTTP API (status, webhooks, metrics)")
	f.StringVar(&o.logFormat, "log-format", "text", "log format: text or json")
	f.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	f.DurationVar(&o.gitTimeout, "git-timeout", 30*time.Second, "bound on every call to the remote, listing refs or fetching (a remote that trickles bytes is cut off)")
	f.DurationVar(&o.certValidity, "cert-validity", ca.DefaultValidity, "validity of the dataplane certificates of mTLS meshes")
	o.limits.bind(f)
	f.BoolVar(&o.allowEmpty, "allow-empty", false, "publish a commit without any policy file (it serves nothing); otherwise such a commit is invalid")
	f.Int64Var(&o.maxFetchBytes, "max-fetch-bytes", source.DefaultMaxFetchBytes, "abandon a fetch whose packfile grows past this many bytes; the mirror keeps what it had")
	f.StringVar(&o.gitUsername, "git-username", "", "user name for HTTP(S) basic authentication")
	f.StringVar(&o.gitPasswordFile, "git-password-file", "", "file holding the HTTP(S) password")
	f.StringVar(&o.gitTokenFile, "git-token-file", "", "file holding an HTTP(S) access token")
	f.StringVar(&o.sshKeyFile, "ssh-key-file", "", "private key for ssh:// remotes")
	f.StringVar(&o.sshKeyPassphraseFile, "ssh-key-passphrase-file", "", "file holding the passphrase of an encrypted --ssh-key-file (or "+envSSHPassphrase+")")
	f.StringVar(&o.sshKnownHosts, "ssh-known-hosts", "", "known_hosts file that must list the SSH server's key")
	f.StringVar(&o.gitCAFile, "git-ca-file", "", "PEM bundle of CAs to trust for an https:// remote, besides the system's")
	f.StringVar(&o.githubSecretFile, "github-webhook-secret-file", "", "file holding the secret of POST /hooks/github")
	f.StringVar(&o.gitlabTokenFile, "gitlab-webhook-token-file", "", "file holding the token of POST /hooks/gitlab")
	f.StringVar(&o.webhookSecretFile, "webhook-secret-file", "", "file holding the HMAC secret of POST /hooks/generic")
	f.StringVar(&o.adminTokenFile, "admin-token-file", "", "file holding the bearer token of POST /rollback and /resume (default: "+
		envAdminToken+", else generated into <state-dir>/admin-token)")
	f.StringVar(&o.readTokenFile, "read-token-file", "", "file holding a second bearer token that may only read (or "+envReadToken+")")
	f.StringSliceVar(&o.corsOrigins, "api-cors-origin", nil, "browser origin (https://host[:port]) allowed to call the HTTP API from another origin; repeatable; none by default")
	f.StringVar(&o.repoWebURL, "repo-web-url", "", "link the console's findings to the forge's web UI: a `TEMPLATE` URL of a file at a commit, with {commit}, {path} "+
		"and optionally {line}, e.g. https://github.com/org/repo/blob/{commit}/{path}#L{line}")
	f.BoolVar(&o.authReads, "auth-reads", false, "require a token for the read endpoints too (all but /healthz, /readyz and the webhooks)")
	f.BoolVar(&o.rollbackOnNACK, "rollback-on-nack", false, "put a proxy that NACKs its configuration back on the last commit it accepted")
	f.StringVar(&o.verifyCommits, "verify-commits", "", "publish (and roll back to) only commits whose OpenPGP signature verifies against the public keys in this keyring file")
	o.security.bind(f)
	o.store.bind(f)
	f.StringVar(&o.replicaID, "replica-id", "", "with a PostgreSQL store, this replica's id among those sharing it (default: the host name); on every metric and log line")
	f.StringVar(&o.advertiseAddress, "advertise-address", "", "with a PostgreSQL store, where other hosts reach this replica's HTTP API, shown in the registry of replicas (default: --api-address)")
	f.DurationVar(&o.leaseDuration, "lease-duration", reconcile.DefaultLeaseDuration, "with a PostgreSQL store, the decider's lease: a replica that stops renewing it is replaced within about that long")
	return cmd
}

// secret reads a secret from file when given, else from the environment
// variable env; "" when neither is set.
func secret(file, env string) ([]byte, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, usageError("read secret: %v", err)
		}
		s := strings.TrimRight(string(b), "\r\n")
		if s == "" {
			return nil, usageError("secret file %s is empty", file)
		}
		return []byte(s), nil
	}
	return []byte(os.Getenv(env)), nil
}

func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, usageError("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, usageError("--log-format %q: want text or json", format)
}

func runServe(ctx context.Context, stdout, stderr io.Writer, o serveOptions) error {
	app, err := newServeApp(o, stderr)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "gitmesh serve: following %s branch %s", source.RedactURL(o.repo), o.branch)
	if o.path != "" {
		fmt.Fprintf(stdout, " path %s", o.path)
	}
	fmt.Fprintf(stdout, "\n  xDS (ADS, gRPC):  %s\n  HTTP API:         %s://%s  (/status /history /proxies /meshes /metrics)\n  console:          %s://%s/ui/\n  state directory:  %s\n",
		app.xdsLis.Addr(), app.sec.scheme(), app.apiLis.Addr(), app.sec.scheme(), app.apiLis.Addr(), o.stateDir)
	if app.fleet != nil {
		fmt.Fprintf(stdout, "  state store:      %s  (replica %s; one replica decides at a time, lease %s)\n",
			app.store.Describe(), app.fleet.ID(), o.leaseDuration)
	}
	app.sec.describe(stdout, stderr)
	switch {
	case app.admin.given:
	case app.admin.file != "":
		fmt.Fprintf(stdout, "  admin token:      %s  (POST /rollback and /resume)\n", app.admin.file)
	default:
		fmt.Fprintf(stdout, "  admin token:      the one shared through the store: in %s of the replica that created it, or of the state directory imported\n", adminTokenFileName)
	}
	return app.Run(ctx)
}

// serveApp is a wired daemon: the git mirror, the reconcile loop, the xDS
// server and plane, and the HTTP API, listening but not yet running.
type serveApp struct {
	o          serveOptions
	log        *slog.Logger
	mirror     *source.Mirror
	daemon     *reconcile.Daemon
	server     *ads.Server
	plane      *plane.Plane
	httpServer *http.Server
	xdsLis     net.Listener
	apiLis     net.Listener
	sec        secured
	store      store.Store
	fleet      *store.Fleet
	admin      adminAuth
}

func newServeApp(o serveOptions, stderr io.Writer) (*serveApp, error) {
	if o.repo == "" {
		return nil, usageError("--repo is required")
	}
	if o.interval <= 0 {
		return nil, usageError("--interval must be positive")
	}
	if o.repoWebURL != "" {
		if err := api.CheckRepoWebURL(o.repoWebURL); err != nil {
			return nil, usageError("--repo-web-url %q: %v", o.repoWebURL, err)
		}
	}
	log, err := newLogger(stderr, o.logFormat, o.logLevel)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(o.stateDir, 0o700); err != nil {
		return nil, &exitError{code: exitUsage, err: fmt.Errorf("state directory: %w", err)}
	}
	st, err := o.store.open(context.Background(), o.stateDir, migrateAtOpen)
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			st.Close()
		}
	}()
	reg := prometheus.NewRegistry()
	var metricsReg prometheus.Registerer = reg
	// Replicas sharing a store decide in turn: each is one of a fleet.
	var fleet *store.Fleet
	decided := st // where the state and the history are written
	if pg, shared := st.(*store.Postgres); shared {
		id, err := o.replica()
		if err != nil {
			return nil, err
		}
		fleet = store.NewFleet(pg, id)
		decided = fleet.Store()
		log = log.With("replica", id)
		metricsReg = prometheus.WrapRegistererWith(prometheus.Labels{"replica": id}, reg)
	} else if o.replicaID != "" || o.advertiseAddress != "" {
		return nil, usageError("--replica-id and --advertise-address are for replicas sharing a PostgreSQL store (--store, --store-file)")
	}
	if o.leaseDuration != 0 && o.leaseDuration < time.Second {
		return nil, usageError("--lease-duration %s: want at least 1s", o.leaseDuration)
	}
	apiCfg, admin, err := o.apiConfig(context.Background(), log.With("component", "api"), st)
	if err != nil {
		return nil, err
	}
	mirror, verify, err := o.openMirror(log)
	if err != nil {
		return nil, err
	}
	metricsReg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	sec, err := o.security.build(o.stateDir, st, log.With("component", "xds"))
	if err != nil {
		return nil, err
	}
	server, pl, err := o.newXDS(log.With("component", "xds"), metricsReg, sec, st)
	if err != nil {
		return nil, err
	}
	// Every commit is checked whole; the proxies kept built are those of
	// the nodes connected, the others are made when they connect.
	pipe, err := pipeline.New(pipeline.Options{Limits: o.limits.options(), Cache: true, Keep: pl.Keep})
	if err != nil {
		return nil, err
	}
	cfg := reconcile.Config{
		Source: mirror, Repo: source.RedactURL(o.repo), Branch: o.branch, Path: o.path,
		Pipeline: pipe, AllowEmpty: o.allowEmpty, Verify: verify, Target: pl,
		StateDir: o.stateDir, Store: decided, Interval: o.interval, Logger: log, Metrics: reconcile.NewMetrics(metricsReg),
		LeaseDuration: o.leaseDuration,
	}
	if fleet != nil {
		cfg.Fleet = fleet
	}
	daemon, err := reconcile.New(cfg)
	if err != nil {
		return nil, &exitError{code: exitUsage, err: err}
	}
	apiCfg.Backend = backend{daemon, server, pl}
	// Comparisons for GET /diff run a pipeline of their own, so that they
	// leave the daemon's cache to the branch's commits.
	diffPipe, err := pipeline.New(pipeline.Options{Limits: o.limits.options(), Cache: true})
	if err != nil {
		return nil, err
	}
	apiCfg.Differ = differ{mirror: mirror, pipe: diffPipe, path: o.path}
	apiCfg.Metrics = promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})

	xdsLis, err := net.Listen("tcp", o.xdsAddress)
	if err != nil {
		return nil, &exitError{code: exitUsage, err: fmt.Errorf("xds listener: %w", err)}
	}
	apiLis, err := net.Listen("tcp", o.apiAddress)
	if err != nil {
		xdsLis.Close()
		return nil, &exitError{code: exitUsage, err: fmt.Errorf("api listener: %w", err)}
	}
	// The registry shows where this replica's API is: as given, or as it
	// listens (a port chosen by the system, say).
	daemon.Advertise(o.advertised(apiLis.Addr().String()))
	httpServer := &http.Server{
		Handler:           api.New(apiCfg),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	ok = true
	return &serveApp{o: o, log: log, mirror: mirror, daemon: daemon, server: server, plane: pl,
		httpServer: httpServer, xdsLis: xdsLis, apiLis: sec.listen(apiLis), sec: sec, store: st, fleet: fleet, admin: admin}, nil
}

// replica is this replica's id: --replica-id, else the host name.
func (o serveOptions) replica() (string, error) {
	id := o.replicaID
	if id == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			return "", usageError("--replica-id: the host name is unknown (%v); give an id", err)
		}
		id = h
	}
	if len(id) > 63 || !replicaName.MatchString(id) {
		return "", usageError("--replica-id %q: want at most 63 letters, digits, '.', '_' or '-'", id)
	}
	return id, nil
}

var replicaName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// advertised is where other hosts reach this replica's API:
// --advertise-address, else the address it listens on.
func (o serveOptions) advertised(listening string) string {
	if o.advertiseAddress != "" {
		return o.advertiseAddress
	}
	return listening
}

// apiConfig is the HTTP API's configuration from the flags: the webhooks'
// secrets, the tokens, CORS; and where the admin token is.
func (o serveOptions) apiConfig(ctx context.Context, log *slog.Logger, st store.Store) (cfg api.Config, admin adminAuth, err error) {
	cfg = api.Config{Logger: log, AuthReads: o.authReads, RepoWebURL: o.repoWebURL}
	if cfg.GitHubSecret, err = secret(o.githubSecretFile, envGitHubSecret); err != nil {
		return cfg, admin, err
	}
	if cfg.GitLabToken, err = secret(o.gitlabTokenFile, envGitLabToken); err != nil {
		return cfg, admin, err
	}
	if cfg.GenericSecret, err = secret(o.webhookSecretFile, envWebhookSecret); err != nil {
		return cfg, admin, err
	}
	if admin, err = adminToken(ctx, o, st, log); err != nil {
		return cfg, admin, err
	}
	cfg.AdminTokenDigest = admin.digest
	if cfg.ReadToken, err = secret(o.readTokenFile, envReadToken); err != nil {
		return cfg, admin, err
	}
	if o.authReads && len(cfg.ReadToken) == 0 {
		log.Info("--auth-reads without a read token: reads need the admin token")
	}
	for _, origin := range o.corsOrigins {
		if u, err := url.Parse(origin); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
			(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
			return cfg, admin, usageError("--api-cors-origin %q: want an origin such as https://console.example.com", origin)
		}
		// Browsers send the origin without a trailing slash.
		cfg.CORSOrigins = append(cfg.CORSOrigins, strings.TrimSuffix(origin, "/"))
	}
	return cfg, admin, nil
}

// openMirror opens the bare clone in the state directory, and the check of
// commit signatures when --verify-commits asks for one.
func (o serveOptions) openMirror(log *slog.Logger) (*source.Mirror, func(source.Hash) (string, error), error) {
	creds, err := o.credentials()
	if err != nil {
		return nil, nil, err
	}
	var caBundle []byte
	if o.gitCAFile != "" {
		if caBundle, err = os.ReadFile(o.gitCAFile); err != nil {
			return nil, nil, usageError("--git-ca-file: %v", err)
		}
	}
	mirror, err := source.OpenMirror(source.MirrorConfig{
		URL: o.repo, Branch: o.branch, Dir: filepath.Join(o.stateDir, "repo.git"),
		Credentials: creds, CABundle: caBundle, Timeout: o.gitTimeout, MaxFetchBytes: o.maxFetchBytes, Logger: log.With("component", "git"),
	})
	if err != nil {
		return nil, nil, &exitError{code: exitUsage, err: fmt.Errorf("--repo %s: %w", source.RedactURL(o.repo), err)}
	}
	if o.verifyCommits == "" {
		return mirror, nil, nil
	}
	v, err := source.NewVerifier(o.verifyCommits)
	if err != nil {
		return nil, nil, usageError("--verify-commits: %v", err)
	}
	log.Info("publishing only signed commits", "keyring", v.File(), "keys", v.Keys())
	return mirror, func(h source.Hash) (string, error) { return v.VerifyCommit(mirror.Repository(), string(h)) }, nil
}

// newXDS makes the xDS server and the plane that feeds it.
func (o serveOptions) newXDS(log *slog.Logger, reg prometheus.Registerer, sec secured, st store.Store) (*ads.Server, *plane.Plane, error) {
	server, err := ads.New(ads.Config{Logger: log, EventBuffer: 1 << 16, Authenticate: sec.auth, TLS: sec.tls})
	if err != nil {
		return nil, nil, err
	}
	pl, err := plane.New(plane.Config{
		Server: server, Authority: &ca.Authority{StateDir: o.stateDir, Store: st, Validity: o.certValidity, Log: log},
		Metrics: plane.NewMetrics(reg, server), Logger: log, RollbackOnNACK: o.rollbackOnNACK,
	})
	if err != nil {
		return nil, nil, err
	}
	return server, pl, nil
}

// Run serves until ctx ends, then stops every part and returns the first
// error that ended one.
func (a *serveApp) Run(ctx context.Context) error {
	defer a.store.Close()
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return a.server.Serve(ctx, a.xdsLis) })
	g.Go(func() error {
		if err := a.httpServer.Serve(a.apiLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve api: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-ctx.Done()
		shutdown, done := context.WithTimeout(context.Background(), 5*time.Second)
		defer done()
		_ = a.httpServer.Shutdown(shutdown)
		return nil
	})
	g.Go(func() error { a.plane.Run(ctx); return nil })
	if dir, ok := a.mirror.LocalGitDir(); ok {
		g.Go(func() error {
			err := source.WatchRefs(ctx, dir, a.o.branch, func() { a.daemon.Trigger("watch") })
			if err != nil && ctx.Err() == nil {
				a.log.Warn("not watching the local repository; polling only", "error", err)
			}
			return nil
		})
	}
	g.Go(func() error {
		err := a.daemon.Run(ctx)
		if err == nil {
			err = errStopped // ends the others
		}
		return err
	})
	if err := g.Wait(); !errors.Is(err, errStopped) {
		return err
	}
	return nil
}

// errStopped ends the group when the daemon's loop returns.
var errStopped = errors.New("stopped")

func (o serveOptions) credentials() (source.Credentials, error) {
	c := source.Credentials{Username: o.gitUsername, SSHKeyFile: o.sshKeyFile, KnownHostsFile: o.sshKnownHosts}
	pw, err := secret(o.gitPasswordFile, envGitPassword)
	if err != nil {
		return c, err
	}
	tok, err := secret(o.gitTokenFile, envGitToken)
	if err != nil {
		return c, err
	}
	pass, err := secret(o.sshKeyPassphraseFile, envSSHPassphrase)
	if err != nil {
		return c, err
	}
	if len(pass) > 0 && o.sshKeyFile == "" {
		return c, usageError("an SSH key passphrase needs --ssh-key-file")
	}
	c.Password, c.Token, c.SSHKeyPassphrase = string(pw), string(tok), string(pass)
	return c, nil
}

// adminAuth is the admin token as the API takes it, by its digest, and
// where the token is.
type adminAuth struct {
	digest [sha256.Size]byte
	given  bool   // by --admin-token-file or GITMESH_ADMIN_TOKEN
	file   string // the file of the state directory holding it, if one does
}

// adminLock serialises the replicas of a store choosing the admin token.
const adminLock = "api-admin-token"

// adminToken is the admin token of the API: from --admin-token-file or
// GITMESH_ADMIN_TOKEN, else the one in <state-dir>/admin-token, generated
// there (random, 0600) the first time.
//
// With a shared store, replicas must accept one token: the first to start
// without one given puts the digest of its <state-dir>/admin-token
// (generated then if need be) in the store (api.AdminTokenDigestKey), and
// every later one accepts the token of that digest, which is then on the
// first replica's host only (or in the state directory store import read).
// A token given by flag or environment is used as it is, with a warning
// when the store holds another's digest. The token itself is never stored.
func adminToken(ctx context.Context, o serveOptions, st store.Store, log *slog.Logger) (adminAuth, error) {
	_, local := st.(store.Dir)
	if o.adminTokenFile != "" || os.Getenv(envAdminToken) != "" {
		tok, err := secret(o.adminTokenFile, envAdminToken)
		if err != nil {
			return adminAuth{}, err
		}
		a := adminAuth{digest: api.TokenDigest(tok), given: true}
		if !local {
			switch shared, ok, err := storedAdminDigest(ctx, st); {
			case err != nil:
				log.Warn("cannot compare the admin token with the one of the other replicas", "error", err)
			case ok && shared != a.digest:
				log.Warn("the admin token given is not the one whose digest the store holds: the replicas of this store do not all accept the same admin token",
					"document", api.AdminTokenDigestKey)
			}
		}
		return a, nil
	}
	path := filepath.Join(o.stateDir, adminTokenFileName)
	if local {
		tok, err := localAdminToken(path, true)
		if err != nil {
			return adminAuth{}, err
		}
		return adminAuth{digest: api.TokenDigest([]byte(tok)), file: path}, nil
	}
	var a adminAuth
	choose := func(ctx context.Context) error {
		shared, ok, err := storedAdminDigest(ctx, st)
		if err != nil {
			return err
		}
		tok, err := localAdminToken(path, !ok)
		if err != nil {
			return err
		}
		if ok {
			a.digest = shared
			switch {
			case tok == "":
			case api.TokenDigest([]byte(tok)) == shared:
				a.file = path
			default:
				log.Warn("this replica's admin token file is not the token the replicas of the store accept, and is not accepted here: "+
					"the admin token is the one of the replica that created it", "file", path, "document", api.AdminTokenDigestKey)
			}
			return nil
		}
		a.digest, a.file = api.TokenDigest([]byte(tok)), path
		return st.Put(ctx, api.AdminTokenDigestKey, api.FormatTokenDigest(a.digest), store.Private)
	}
	var err error
	if l, ok := st.(store.Locker); ok {
		err = l.WithLock(ctx, adminLock, choose)
	} else {
		err = choose(ctx)
	}
	if err != nil {
		return adminAuth{}, &exitError{code: exitUsage, err: fmt.Errorf("admin token: %w", err)}
	}
	return a, nil
}

// localAdminToken reads the admin token file of a state directory; when
// there is none it generates one (random, 0600) if create is set, else
// returns "".
func localAdminToken(path string, create bool) (string, error) {
	if t, err := source.ReadSecretFile(path); err == nil {
		return t, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", &exitError{code: exitUsage, err: fmt.Errorf("admin token: %w", err)}
	}
	if !create {
		return "", nil
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	token := hex.EncodeToString(b)
	if err := atomicfile.Write(path, []byte(token+"\n"), 0o600); err != nil {
		return "", &exitError{code: exitUsage, err: fmt.Errorf("admin token: %w", err)}
	}
	return token, nil
}

// storedAdminDigest is the digest of the admin token the store holds; ok
// is false when it holds none.
func storedAdminDigest(ctx context.Context, st store.Store) (d [sha256.Size]byte, ok bool, err error) {
	b, err := st.Get(ctx, api.AdminTokenDigestKey)
	if errors.Is(err, store.ErrNotFound) {
		return d, false, nil
	}
	if err != nil {
		return d, false, err
	}
	if d, err = api.ParseTokenDigest(b); err != nil {
		return d, false, fmt.Errorf("store document %s: %w", api.AdminTokenDigestKey, err)
	}
	return d, true, nil
}

// backend is what the HTTP API reads: the loop, the xDS server and the
// plane (the certificates it serves).
type backend struct {
	*reconcile.Daemon
	server *ads.Server
	plane  *plane.Plane
}

func (b backend) Proxies() []ads.ProxyStatus { return b.server.Status() }

func (b backend) Certificate(node string) (ca.CertificateInfo, bool) {
	return b.plane.Certificate(node)
}

// differ compares two commits of the mirror for GET /diff, as `gitmesh
// diff` compares two of a repository.
type differ struct {
	mirror *source.Mirror
	pipe   *pipeline.Pipeline
	path   string
}

func (d differ) Diff(ctx context.Context, base, head string) (*plan.Plan, error) {
	return plan.Commits(ctx, d.pipe, d.mirror.ReadCommit, d.path, base, head)
}
