package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"

	"github.com/gitmesh/gitmesh/reconcile/pipeline"
	"github.com/gitmesh/gitmesh/reconcile/source"
	"github.com/gitmesh/gitmesh/store"
	"github.com/gitmesh/gitmesh/xds"
	"github.com/gitmesh/gitmesh/xds/plane"
)

// Source is the git side: the followed branch and the commits in local
// objects.
type Source interface {
	// Head is the branch head as last fetched, known without the network.
	Head() (source.Hash, bool)
	// Sync asks the remote for the branch head and fetches it when it moved.
	Sync(ctx context.Context) (source.SyncResult, error)
	// ReadCommit reads a commit's policy directory from local objects. rev
	// is a hash, a short hash, the branch, or one of these with a ~N or ^N
	// suffix; an unknown one is source.ErrUnknownRevision.
	ReadCommit(rev, subdir string) (*source.Commit, error)
	// FirstParent is the first parent of a commit in local objects; false
	// for a root commit or an unknown one.
	FirstParent(hash source.Hash) (source.Hash, bool)
}

// Target is the xDS side as the loop sees it; *plane.Plane is one.
type Target interface {
	// Apply makes t, the translation of commit, what is served. All or
	// nothing: on error nothing served changes.
	Apply(ctx context.Context, commit string, t *xds.Translation) (plane.Result, error)
	// Renew issues again the certificates that near the end of their life.
	Renew(ctx context.Context) (plane.Result, error)
	// Convergence counts the served proxies that hold the served commit.
	Convergence() plane.Convergence
	// Feedback delivers what the proxies said about what was published;
	// the daemon drains it in its own loop.
	Feedback() <-chan plane.Feedback
}

var _ Target = (*plane.Plane)(nil)

// Config wires a Daemon.
type Config struct {
	Source Source
	// Repo (credentials removed), Branch and Path describe the source in
	// the status and logs; Path is also the policy directory read from each
	// commit.
	Repo, Branch, Path string
	// Pipeline judges each commit's tree, as the pull-request gate does.
	// It should keep a cache (pipeline.Options.Cache): most commits change
	// a few files.
	Pipeline *pipeline.Pipeline
	// AllowEmpty lets a commit with no policy file be published (it serves
	// nothing); otherwise such a commit is invalid, as an empty path is
	// more often a mistake than a wish to remove every proxy.
	AllowEmpty bool
	// Verify, when set, checks a commit's signature before its tree is
	// loaded (serve --verify-commits) and returns the signer; an
	// *source.UnverifiedError keeps the commit from being published or
	// rolled back to. See source.Verifier.VerifyCommit.
	Verify func(hash source.Hash) (signer string, err error)
	Target Target
	// StateDir holds the state file and the history, unless Store holds
	// them.
	StateDir string
	// Store keeps the state (published commit, pin) and, when it is a
	// store.RecordStore, the history; the state directory when nil. While
	// it cannot be reached, what is served stays served, no new commit is
	// published, and rollback and resume are refused with an error
	// wrapping store.ErrUnavailable.
	Store store.Store
	// Interval between polls of the remote (default 30s). Triggers sync at
	// once, whatever the interval.
	Interval time.Duration
	// RenewInterval is how often certificates are checked for renewal
	// (default 1m).
	RenewInterval time.Duration
	// MinBackoff is the first wait after a failed sync (default 1s); it
	// doubles with each failure in a row, with ±20% jitter, up to Interval.
	MinBackoff   time.Duration
	HistoryLimit int
	// Fleet, when set, makes the daemon one of several replicas on a
	// shared store: it decides only while it holds the store's lease, and
	// otherwise serves what the replica that decides published (see
	// fleet.go). Store must then be the Fleet's store. LeaseDuration is
	// the lease's (DefaultLeaseDuration when zero); Address is where this
	// replica's API is reached, for the registry.
	Fleet         Fleet
	LeaseDuration time.Duration
	Address       string
	Logger        *slog.Logger
	Metrics       *Metrics
	Now           func() time.Time
}

// Daemon follows the branch and publishes its valid commits.
type Daemon struct {
	cfg     Config
	history *History
	trigger chan string

	// op serialises what changes the served state: deciding on a head,
	// restoring, rollback and resume. Feedback never waits for it.
	op sync.Mutex

	mu     sync.Mutex
	state  State
	status Status
	// served is what is served and its commit; previous what was served
	// before it, kept so that going back to it (a rollback) needs no run of
	// the pipeline.
	served, previous         *pipeline.Result
	servedInfo, previousInfo CommitInfo
	// decided is the head whose verdict is final; fresh is set until the
	// first decision after start, which is not recorded again when the
	// history's newest record of that commit says the same.
	decided source.Hash
	fresh   bool
	// lastFail is the commit and error of the last failure recorded.
	lastFail string
	// rejecting are the proxies that NACKed the served commit.
	rejecting map[string]bool
	// publishing is the commit being published and not recorded yet;
	// parked holds its feedback until it is.
	publishing string
	parked     []plane.Feedback

	// fl is the fleet's side of the daemon; nil without a Fleet.
	fl *fleetState
}

// New opens the state directory (creating it, 0700) and reads the state and
// history; it touches neither the network nor the Target.
func New(cfg Config) (*Daemon, error) {
	if cfg.Source == nil || cfg.Target == nil || cfg.Pipeline == nil {
		return nil, errors.New("reconcile: Source, Target and Pipeline are required")
	}
	if cfg.StateDir == "" {
		return nil, errors.New("reconcile: no state directory")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 30 * time.Second
	}
	if cfg.RenewInterval <= 0 {
		cfg.RenewInterval = time.Minute
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	if cfg.Store == nil {
		cfg.Store = store.Dir{Path: cfg.StateDir}
	}
	st, err := LoadStateFrom(context.Background(), cfg.Store)
	if err != nil {
		return nil, err
	}
	var h *History
	if db, ok := cfg.Store.(store.RecordStore); ok {
		h, err = OpenHistoryStore(context.Background(), db, cfg.HistoryLimit)
	} else {
		h, err = OpenHistory(cfg.StateDir, cfg.HistoryLimit)
	}
	if err != nil {
		return nil, err
	}
	if torn := h.Torn(); torn != "" {
		cfg.Logger.Warn("the history's last record was cut short (a crash while it was written); it is dropped", "record", torn)
	}
	d := &Daemon{cfg: cfg, history: h, trigger: make(chan string, 1), state: st, fresh: true}
	d.status = Status{Repo: cfg.Repo, Branch: cfg.Branch, Path: cfg.Path, Pinned: st.Pin != nil, Pin: st.Pin}
	if cfg.Fleet != nil {
		if d.cfg.LeaseDuration <= 0 {
			d.cfg.LeaseDuration = DefaultLeaseDuration
		}
		d.fl = newFleetState()
		d.status.Replica = cfg.Fleet.ID()
	}
	if head, ok := cfg.Source.Head(); ok {
		d.status.Head = &CommitInfo{Hash: head}
	}
	cfg.Metrics.setPinned(st.Pin != nil)
	return d, nil
}

// Trigger asks for a sync now. It never blocks: triggers that come while one
// is pending are one.
func (d *Daemon) Trigger(reason string) {
	select {
	case d.trigger <- reason:
	default:
	}
}

// Run serves the last published commit from local objects, then follows the
// branch until ctx ends. The proxies' feedback is drained on a goroutine of
// its own, never behind a sync.
func (d *Daemon) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wg.Go(func() { d.drainFeedback(ctx) })
	var follow, history, requests chan struct{}
	if d.fl != nil {
		d.runFleet(ctx, &wg)
		follow, history, requests = d.fl.follow, d.fl.history, d.fl.requests
	}

	restored := false
	restore := func() {
		if c, res := d.restore(ctx); c != nil {
			restored = true
			wg.Go(func() { d.checkRestored(ctx, c, res) })
		}
	}
	restore()
	timer := time.NewTimer(0)
	defer timer.Stop()
	renew := time.NewTicker(d.cfg.RenewInterval)
	defer renew.Stop()
	retry := d.newBackoff()
	reason := "start"
	for {
		select {
		case <-ctx.Done():
			return nil
		case r := <-d.trigger:
			reason = r
		case <-timer.C:
			if reason == "" {
				reason = "interval"
			}
		case <-renew.C:
			if _, err := d.cfg.Target.Renew(ctx); err != nil && ctx.Err() == nil {
				d.cfg.Logger.Error("certificate renewal failed", "error", err)
			}
			continue
		case <-follow:
			if err := d.follow(ctx); err != nil && ctx.Err() == nil {
				// Tried again at the next poll, or notification.
				d.cfg.Logger.Debug("cannot serve what was decided yet", "error", err)
			}
			continue
		case <-history:
			d.reloadHistory(ctx)
			continue
		case <-requests:
			d.serveRequests(ctx)
			continue
		}
		var err error
		if d.deciding() {
			if d.fl != nil && d.fl.gained.Swap(false) {
				d.takeOver(ctx)
			}
			err = d.sync(ctx, reason)
			if d.fl != nil {
				d.serveRequests(ctx)
			}
		} else {
			err = d.watch(ctx, reason)
		}
		reason = ""
		if ctx.Err() != nil {
			return nil
		}
		if !restored && d.awaitsRestore() {
			// The published or pinned commit was not in local objects at
			// start (a new state directory on a shared store): the fetch
			// may have brought it.
			restore()
		}
		delay := d.cfg.Interval
		if err != nil {
			delay = d.retryDelay(retry)
		} else {
			retry.Reset()
		}
		timer.Reset(delay)
	}
}

// awaitsRestore reports whether the state names a commit to serve while
// nothing is served.
func (d *Daemon) awaitsRestore() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.served == nil && (d.state.Pin != nil || d.state.Published != nil)
}

// newBackoff is the wait after failed syncs: MinBackoff doubling with each
// failure in a row, ±20% jitter so replicas do not retry in step (see
// retryDelay for the bound).
func (d *Daemon) newBackoff() *backoff.ExponentialBackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = min(d.cfg.MinBackoff, d.cfg.Interval)
	b.Multiplier = 2
	b.RandomizationFactor = 0.2
	b.MaxInterval = d.cfg.Interval
	b.Reset()
	return b
}

// retryDelay is the next wait of b, never longer than the poll interval.
func (d *Daemon) retryDelay(b *backoff.ExponentialBackOff) time.Duration {
	return min(b.NextBackOff(), d.cfg.Interval)
}

// Status is the daemon's status now.
func (d *Daemon) Status() Status {
	d.mu.Lock()
	st := d.status
	d.mu.Unlock()
	st.Convergence = d.cfg.Target.Convergence()
	st.Decides = d.fl != nil && d.deciding()
	return st
}

// History is every commit decided on, newest first.
func (d *Daemon) History() []Record { return d.history.Records() }

// Served returns the served pipeline Result and its commit; ok is false
// until a commit is served.
func (d *Daemon) Served() (*pipeline.Result, CommitInfo, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.served, d.servedInfo, d.served != nil
}

func commitInfo(c *source.Commit) CommitInfo {
	return CommitInfo{Hash: c.Hash, Author: c.Author, Subject: c.Subject, Time: c.Time}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
