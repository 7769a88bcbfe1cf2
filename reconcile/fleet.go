package reconcile

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gitmesh/gitmesh/reconcile/pipeline"
	"github.com/gitmesh/gitmesh/reconcile/source"
	"github.com/gitmesh/gitmesh/store"
	"github.com/gitmesh/gitmesh/xds/plane"
)

// Several replicas of the daemon on one shared store (Config.Fleet):
//
//   - One replica at a time decides: the holder of the store's lease. It
//     follows the branch as a single daemon does, and writes the state and
//     the history through a store that refuses its writes once the lease
//     is no longer its own (store.ErrFenced).
//   - Every replica serves what the store says was decided: told by a
//     notification, it reads the state, fetches the commit when it lacks
//     its objects, runs the pipeline on it and publishes it to its own
//     proxies. It fetches the branch itself on its own triggers (poll,
//     webhook) and tells the decider when the branch moved.
//   - Rollback and resume asked of a replica that does not decide are
//     handed to the decider through the store, and answered with its
//     result.

// Fleet is the daemon's handle on a store shared with other replicas;
// *store.Fleet is one. Config.Store must then be its Store.
type Fleet interface {
	ID() string
	Campaign(ctx context.Context, ttl time.Duration) (store.Lease, error)
	Leading() (epoch int64, ok bool)
	Resign(ctx context.Context) error
	Listen(ctx context.Context, onError func(error)) <-chan store.Notification
	Notify(ctx context.Context, kind, arg string) error
	Heartbeat(ctx context.Context, info []byte) error
	Replicas(ctx context.Context, within time.Duration) ([]store.Replica, error)
	Leave(ctx context.Context) error
	Submit(ctx context.Context, op string, args []byte) (int64, error)
	Result(ctx context.Context, id int64) ([]byte, bool, error)
	Abandon(ctx context.Context, id int64) (bool, error)
	Claim(ctx context.Context) ([]store.Request, error)
	Complete(ctx context.Context, id int64, result []byte) error
}

var _ Fleet = (*store.Fleet)(nil)

// DefaultLeaseDuration is the decider's lease: a decider that stops
// renewing it (killed, cut off from the store) is replaced within about
// that long.
const DefaultLeaseDuration = 4 * time.Second

// forwardWait bounds how long a replica waits for the decider to take an
// operation it handed over before withdrawing it.
const forwardWait = 15 * time.Second

// fleetState is the daemon's side of the fleet.
type fleetState struct {
	follow   chan struct{} // read the state (and the history) again
	history  chan struct{} // read the history again
	requests chan struct{} // run the operations handed over
	campaign chan struct{} // campaign now (the decider resigned)
	leading  atomic.Bool   // as of the last campaign
	gained   atomic.Bool   // the lease was taken and the loop has not caught up yet
	dup      atomic.Bool   // another process heartbeats under this id (logged once)
	unheard  atomic.Bool   // the notifications are lost until the listener reconnects

	mu       sync.Mutex
	waiters  map[int64]chan struct{}
	disagree bool // the last heartbeat saw replicas serving different commits
	storeErr bool // the last campaign could not reach the store
}

func newFleetState() *fleetState {
	return &fleetState{follow: make(chan struct{}, 1), history: make(chan struct{}, 1), requests: make(chan struct{}, 1),
		campaign: make(chan struct{}, 1), waiters: map[int64]chan struct{}{}}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// deciding reports whether this daemon decides now: always without a
// fleet, else while it holds the lease.
func (d *Daemon) deciding() bool {
	if d.cfg.Fleet == nil {
		return true
	}
	_, ok := d.cfg.Fleet.Leading()
	return ok
}

// Advertise sets where this replica's API is reached, for the registry
// (Config.Address). Call it before Run.
func (d *Daemon) Advertise(addr string) { d.cfg.Address = addr }

// runFleet starts the fleet's goroutines: the campaign for the lease with
// the heartbeat, and the notifications.
func (d *Daemon) runFleet(ctx context.Context, wg *sync.WaitGroup) {
	notes := d.cfg.Fleet.Listen(ctx, func(err error) {
		if !d.fl.unheard.Swap(true) { // once an outage: it retries every 2 s
			d.cfg.Logger.Warn("lost the store's notifications; reconnecting", "error", err)
		}
	})
	wg.Go(func() {
		for n := range notes {
			d.notified(n)
		}
	})
	wg.Go(func() { d.campaignLoop(ctx) })
}

// notified acts on one notification of the fleet. What this replica wrote
// itself it holds already.
func (d *Daemon) notified(n store.Notification) {
	fl := d.fl
	own := n.Replica == d.cfg.Fleet.ID()
	switch n.Kind {
	case store.NoteState:
		if !own {
			signal(fl.follow)
		}
	case store.NoteHistory:
		if !own {
			signal(fl.history)
		}
	case store.NoteResync:
		if fl.unheard.Swap(false) {
			d.cfg.Logger.Info("the store's notifications are back")
		}
		signal(fl.follow)
		signal(fl.requests)
	case store.NoteLease:
		signal(fl.campaign)
	case store.NoteRequest:
		signal(fl.requests)
	case store.NoteDone:
		id, _ := strconv.ParseInt(n.Arg, 10, 64)
		fl.mu.Lock()
		if c := fl.waiters[id]; c != nil {
			close(c)
			delete(fl.waiters, id)
		}
		fl.mu.Unlock()
	case store.NoteSync:
		if !own && d.deciding() {
			d.Trigger(n.Arg)
		}
	}
}

// campaignLoop takes or renews the lease a few times per lease duration,
// and keeps the registry; on the way out it lets the lease go and leaves
// the registry, so that another replica decides at once.
func (d *Daemon) campaignLoop(ctx context.Context) {
	ttl := d.cfg.LeaseDuration
	tick := time.NewTicker(ttl / 4)
	defer tick.Stop()
	defer func() {
		bg := context.WithoutCancel(ctx)
		if d.fl.leading.Load() {
			d.cfg.Logger.Info("this replica stops deciding (shutting down)")
		}
		_ = d.cfg.Fleet.Resign(bg)
		_ = d.cfg.Fleet.Leave(bg)
	}()
	for {
		d.campaignOnce(ctx)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-d.fl.campaign:
		}
	}
}

func (d *Daemon) campaignOnce(ctx context.Context) {
	fl := d.fl
	l, err := d.cfg.Fleet.Campaign(ctx, d.cfg.LeaseDuration)
	if ctx.Err() != nil {
		return
	}
	was := fl.leading.Load()
	fl.leading.Store(l.Held)
	fl.mu.Lock()
	reported := fl.storeErr
	fl.storeErr = err != nil
	fl.mu.Unlock()
	switch {
	case err != nil && was:
		d.cfg.Logger.Error("cannot renew the decider's lease: this replica stops deciding; what is served stays served", "error", err)
	case err != nil && !reported:
		d.cfg.Logger.Warn("cannot reach the store; what is served stays served", "error", err)
	case err == nil && reported:
		d.cfg.Logger.Info("the store is back")
		signal(fl.follow)
	}
	switch {
	case l.Held && !was:
		d.cfg.Logger.Info("this replica decides", "epoch", l.Epoch)
		fl.gained.Store(true)
		d.Trigger("lease")
	case !l.Held && was && err == nil:
		d.cfg.Logger.Warn("this replica no longer decides", "decider", l.Holder)
	}
	d.mu.Lock()
	if err == nil {
		d.status.Decider = l.Holder
	}
	d.mu.Unlock()
	d.heartbeat(ctx, l.Held)
}

// heartbeat records this replica in the registry and reads the others.
// A replica's entry is its ReplicaStatus as it sees itself; the id and the
// times are the registry's own.
func (d *Daemon) heartbeat(ctx context.Context, decides bool) {
	st := d.Status()
	info, _ := json.Marshal(ReplicaStatus{Address: d.cfg.Address, Decides: decides, Published: st.Published, Pinned: st.Pinned,
		Proxies: st.Convergence.Proxies, Connected: st.Convergence.Connected})
	if err := d.cfg.Fleet.Heartbeat(ctx, info); err != nil {
		if errors.Is(err, store.ErrDuplicateReplica) && !d.fl.dup.Swap(true) {
			d.cfg.Logger.Error("another process registers under this replica's id; give each replica its own --replica-id")
		}
		return // else the campaign said so
	}
	rs, err := d.cfg.Fleet.Replicas(ctx, max(3*d.cfg.LeaseDuration, 5*time.Second))
	if err != nil {
		return
	}
	self := d.cfg.Fleet.ID()
	out := make([]ReplicaStatus, 0, len(rs))
	agree := true
	for _, r := range rs {
		var e ReplicaStatus
		_ = json.Unmarshal(r.Info, &e)
		e.ID, e.StartedAt, e.HeartbeatAt, e.Self = r.ID, r.StartedAt, r.HeartbeatAt, r.ID == self
		if len(out) > 0 && e.published() != out[0].published() {
			agree = false
		}
		out = append(out, e)
	}
	d.fl.mu.Lock()
	// A change takes a moment to reach every replica: they disagree when
	// two heartbeats in a row say so.
	disagree := !agree && d.fl.disagree
	d.fl.disagree = !agree
	d.fl.mu.Unlock()
	d.mu.Lock()
	d.status.Replicas, d.status.ReplicasAgree = out, &agree
	d.mu.Unlock()
	d.cfg.Metrics.setFleet(len(out), decides, disagree)
}

// follow serves what the store says was decided, when it is not what is
// served: the pinned commit, else the published one. Another replica
// decided it and checked it whole; it is judged here again (against what
// is served) and published to this replica's proxies. It also reads the
// history again.
func (d *Daemon) follow(ctx context.Context) error {
	d.op.Lock()
	defer d.op.Unlock()
	st, err := LoadStateFrom(ctx, d.cfg.Store)
	if err != nil {
		return err
	}
	if err := d.history.Reload(ctx); err != nil {
		d.cfg.Logger.Warn("cannot read the history from the store", "error", err)
	}
	want := st.serves()
	d.mu.Lock()
	served, servedInfo, previous, previousInfo := d.served, d.servedInfo, d.previous, d.previousInfo
	d.mu.Unlock()
	if want == nil || (served != nil && servedInfo.Hash == want.Hash) {
		d.conclude(outcome{state: &st})
		d.refreshHeadVerdict()
		return nil
	}
	log := d.cfg.Logger.With("commit", want.Short())
	fail := func(msg string, err error) error {
		d.mu.Lock()
		d.status.LastError = fmt.Sprintf("serve %s, as decided: %v", want.Short(), err)
		d.mu.Unlock()
		log.Error(msg, "error", err)
		return err
	}
	c, err := d.cfg.Source.ReadCommit(string(want.Hash), d.cfg.Path)
	if errors.Is(err, source.ErrUnknownRevision) {
		// The decider fetched it before this replica did.
		if _, serr := d.cfg.Source.Sync(ctx); serr != nil {
			return fail("cannot fetch the commit the decider published", serr)
		}
		c, err = d.cfg.Source.ReadCommit(string(want.Hash), d.cfg.Path)
	}
	if err != nil {
		return fail("cannot read the commit the decider published", err)
	}
	rec := Record{Commit: commitInfo(c)}
	rec.Commit.Signer = want.Signer
	var res *pipeline.Result
	if previous != nil && previousInfo.Hash == c.Hash {
		res = previous
	} else {
		if res, err = d.judge(ctx, c, served, &rec); err != nil {
			return fail("cannot load the commit the decider published", err)
		}
		if err := invalidity(res); err != nil {
			// Another gitmesh version judging it otherwise: what is
			// served stays.
			return fail("the commit the decider published does not pass on this replica; what is served stays", err)
		}
	}
	d.mu.Lock()
	d.publishing = string(c.Hash)
	d.mu.Unlock()
	applied, err := d.cfg.Target.Apply(ctx, string(c.Hash), res.Translation)
	if err != nil {
		d.mu.Lock()
		d.publishing, d.parked = "", nil
		d.mu.Unlock()
		return fail("cannot serve the commit the decider published", err)
	}
	d.conclude(outcome{published: &publication{info: rec.Commit, result: res, state: st, at: st.PublishedAt}})
	d.mu.Lock()
	if strings.HasPrefix(d.status.LastError, "serve ") {
		d.status.LastError = ""
	}
	d.mu.Unlock()
	d.refreshHeadVerdict()
	log.Info("serving the commit the decider published", "pinned", st.Pin != nil, "proxies_pushed", len(applied.Changed),
		"proxies_unchanged", len(applied.Unchanged), "translate_ms", ms(res.Translate), "publish_ms", ms(applied.Publish))
	return nil
}

// refreshHeadVerdict gives the head, on a replica that does not decide,
// the verdict of its newest record in the history.
func (d *Daemon) refreshHeadVerdict() {
	if d.deciding() {
		return
	}
	d.mu.Lock()
	head := d.status.Head
	d.mu.Unlock()
	if head == nil {
		return
	}
	verdict := VerdictPending
	for _, r := range d.history.Records() {
		if r.Commit.Hash == head.Hash && r.Trigger != OpRollback && r.Trigger != OpResume {
			verdict = r.Verdict
			break
		}
	}
	d.mu.Lock()
	if d.status.Head != nil && d.status.Head.Hash == head.Hash {
		d.status.HeadVerdict = verdict
	}
	d.mu.Unlock()
	d.cfg.Metrics.setHead(string(head.Hash), verdict == VerdictInvalid || verdict == VerdictUnverified)
}

// watch fetches the branch on a replica that does not decide: the head is
// shown, the decider is told when a webhook or a local commit moved it,
// and what was decided is served.
func (d *Daemon) watch(ctx context.Context, trigger string) error {
	sr, _, err := d.fetch(ctx, trigger)
	if err != nil {
		return err
	}
	d.mu.Lock()
	moved := d.status.Head == nil || d.status.Head.Hash != sr.Head
	d.mu.Unlock()
	if moved {
		info := CommitInfo{Hash: sr.Head}
		if c, err := d.cfg.Source.ReadCommit(string(sr.Head), d.cfg.Path); err == nil {
			info = commitInfo(c)
		}
		d.mu.Lock()
		d.status.Head, d.status.HeadVerdict = &info, VerdictPending
		d.mu.Unlock()
		if trigger != "interval" && trigger != "start" && trigger != "lease" {
			// A webhook or a local commit: the decider may not have
			// heard of it.
			if err := d.cfg.Fleet.Notify(ctx, store.NoteSync, trigger); err != nil {
				d.cfg.Logger.Warn("cannot tell the decider that the branch moved", "error", err)
			}
		}
	}
	now := d.cfg.Now()
	d.mu.Lock()
	d.status.LastSync, d.status.LastGoodSync, d.status.LastError = now, now, ""
	d.mu.Unlock()
	d.cfg.Metrics.attempt(ResultUnchanged)
	d.cfg.Metrics.goodSync(now)
	// follow sets the last error again while what was decided cannot be
	// served.
	return d.follow(ctx)
}

// An operation handed to the decider: its arguments and its result.
type opRequest struct {
	Rev    string `json:"rev,omitempty"`
	By     string `json:"by,omitempty"`
	Reason string `json:"reason,omitempty"`
	// Commit and Rejections: the NACKs of proxies attached to another
	// replica (opRejected).
	Commit     string            `json:"commit,omitempty"`
	Rejections []plane.Rejection `json:"rejections,omitempty"`
}

// opRejected hands the decider NACKs of the proxies of a replica that does
// not decide, for the history; nobody waits for its result.
const opRejected = "rejected"

// handOver submits an operation to the decider without waiting for it.
func (d *Daemon) handOver(op string, args opRequest) {
	b, _ := json.Marshal(args)
	if _, err := d.cfg.Fleet.Submit(context.Background(), op, b); err != nil {
		d.cfg.Logger.Warn("cannot hand the decider what a proxy said", "operation", op, "error", err)
	}
}

type opResult struct {
	Record *Record  `json:"record,omitempty"`
	Error  *opError `json:"error,omitempty"`
}

// opError carries a refusal or a failure back to the replica that asked.
type opError struct {
	Kind    string              `json:"kind"`
	Message string              `json:"message"`
	Invalid *InvalidCommitError `json:"invalid,omitempty"`
}

// Kinds of opError.
const (
	opErrUnknown     = "unknown-commit"
	opErrNotPinned   = "not-pinned"
	opErrInvalid     = "invalid"
	opErrUnavailable = "store-unavailable"
	opErrFailed      = "failed"
)

func resultOf(rec Record, err error) opResult {
	if err == nil {
		return opResult{Record: &rec}
	}
	e := &opError{Kind: opErrFailed, Message: err.Error()}
	var invalid *InvalidCommitError
	var unverified *UnverifiedCommitError
	switch {
	case errors.As(err, &invalid):
		e.Kind, e.Invalid = opErrInvalid, invalid
	case errors.As(err, &unverified):
		e.Kind, e.Invalid = opErrInvalid, &InvalidCommitError{Commit: unverified.Commit, Errors: 1, Reason: err.Error()}
	case errors.Is(err, ErrUnknownCommit):
		e.Kind = opErrUnknown
	case errors.Is(err, ErrNotPinned):
		e.Kind = opErrNotPinned
	case errors.Is(err, store.ErrUnavailable):
		e.Kind = opErrUnavailable
	}
	return opResult{Error: e}
}

// remoteError is an error of the decider, as errors.Is knows it.
type remoteError struct {
	msg string
	is  error
}

func (e *remoteError) Error() string        { return e.msg }
func (e *remoteError) Is(target error) bool { return e.is != nil && target == e.is }

func (e *opError) err(op string) error {
	switch e.Kind {
	case opErrInvalid:
		if e.Invalid != nil {
			return e.Invalid
		}
	case opErrUnknown:
		return &remoteError{msg: e.Message, is: ErrUnknownCommit}
	case opErrNotPinned:
		return &remoteError{msg: e.Message, is: ErrNotPinned}
	case opErrUnavailable:
		return &StoreUnavailableError{Op: op, Err: &remoteError{msg: e.Message, is: store.ErrUnavailable}}
	}
	return errors.New(e.Message)
}

// NoDeciderError: an operation handed over was not taken by any decider in
// time, and was withdrawn: nothing changed.
type NoDeciderError struct{ Op string }

func (e *NoDeciderError) Error() string {
	return fmt.Sprintf("%s refused: no replica decides now (the decider's lease is vacant); nothing changed, try again in a few seconds", e.Op)
}

// Unwrap makes it a store.ErrUnavailable: the API answers 503.
func (e *NoDeciderError) Unwrap() error { return store.ErrUnavailable }

// forward hands op to the decider and waits for its result. A rollback's
// revision is resolved here first (the decider's branch may name another
// commit as main~1, and an unknown one is refused at once).
func (d *Daemon) forward(ctx context.Context, op, rev, by, reason string) (Record, error) {
	if err := d.storeReachable(ctx, op); err != nil {
		return Record{}, err
	}
	if op == OpRollback {
		if rev == "" {
			return Record{}, fmt.Errorf("%w: no commit given", ErrUnknownCommit)
		}
		c, err := d.cfg.Source.ReadCommit(rev, d.cfg.Path)
		switch {
		case errors.Is(err, source.ErrUnknownRevision):
			return Record{}, fmt.Errorf("%w %q: it is not among the commits fetched from branch %s", ErrUnknownCommit, rev, d.cfg.Branch)
		case err == nil:
			rev = string(c.Hash)
		}
	}
	args, _ := json.Marshal(opRequest{Rev: rev, By: by, Reason: reason})
	id, err := d.cfg.Fleet.Submit(ctx, op, args)
	if err != nil {
		return Record{}, &StoreUnavailableError{Op: op, Err: err}
	}
	done := make(chan struct{})
	d.fl.mu.Lock()
	d.fl.waiters[id] = done
	d.fl.mu.Unlock()
	defer func() {
		d.fl.mu.Lock()
		delete(d.fl.waiters, id)
		d.fl.mu.Unlock()
	}()
	deadline := time.After(forwardWait)
	poll := time.NewTicker(250 * time.Millisecond) // notifications can be lost
	defer poll.Stop()
	for {
		select {
		case <-ctx.Done():
			_, _ = d.cfg.Fleet.Abandon(context.WithoutCancel(ctx), id)
			return Record{}, ctx.Err()
		case <-deadline:
			if gone, err := d.cfg.Fleet.Abandon(ctx, id); err == nil && gone {
				return Record{}, &NoDeciderError{Op: op}
			}
			deadline = time.After(forwardWait) // taken: it is running
			continue
		case <-done:
		case <-poll.C:
		}
		raw, ok, err := d.cfg.Fleet.Result(ctx, id)
		if err != nil || !ok {
			continue
		}
		var res opResult
		if err := json.Unmarshal(raw, &res); err != nil {
			return Record{}, fmt.Errorf("%s: the decider's answer: %w", op, err)
		}
		if res.Error != nil {
			return Record{}, res.Error.err(op)
		}
		if res.Record == nil {
			return Record{}, &NoDeciderError{Op: op}
		}
		// Serve the decision before answering, as the decider does.
		_ = d.follow(ctx)
		return *res.Record, nil
	}
}

// serveRequests runs, while this replica decides, the operations other
// replicas handed over, oldest first.
func (d *Daemon) serveRequests(ctx context.Context) {
	if !d.deciding() {
		return
	}
	if d.fl.gained.Swap(false) {
		d.takeOver(ctx) // the history first: what a former decider ran
	}
	reqs, err := d.cfg.Fleet.Claim(ctx)
	if err != nil {
		if !errors.Is(err, store.ErrFenced) {
			d.cfg.Logger.Warn("cannot read the operations other replicas asked for", "error", err)
		}
		return
	}
	for _, r := range reqs {
		rec, err := d.runRequest(ctx, r)
		out, _ := json.Marshal(resultOf(rec, err))
		if err := d.cfg.Fleet.Complete(ctx, r.ID, out); err != nil {
			d.cfg.Logger.Warn("cannot record the result of an operation", "operation", r.Op, "error", err)
		}
	}
}

// runRequest runs one operation handed over by another replica. A rollback
// or resume a former decider ran (its record names the request) is not run
// again: its record is the answer.
func (d *Daemon) runRequest(ctx context.Context, r store.Request) (Record, error) {
	var args opRequest
	if err := json.Unmarshal(r.Args, &args); err != nil {
		return Record{}, fmt.Errorf("operation %q: %w", r.Op, err)
	}
	if r.Op == opRejected {
		d.rejected(args.Commit, args.Rejections)
		return Record{}, nil
	}
	if rec, ok := d.ranRequest(r.ID); ok {
		return rec, nil
	}
	var rec Record
	var err error
	switch r.Op {
	case OpRollback:
		rec, err = d.rollback(ctx, args.Rev, args.By, args.Reason, r.ID)
	case OpResume:
		rec, err = d.resume(ctx, args.By, args.Reason, r.ID)
	default:
		err = fmt.Errorf("unknown operation %q", r.Op)
	}
	d.cfg.Logger.Info("ran an operation asked of another replica", "operation", r.Op, "asked_of", r.Replica, "by", args.By, "error", err)
	return rec, err
}

// takeOver readies a replica that just took the lease to decide: it
// serves and remembers what the former decider decided, and looks at the
// head afresh, so that a head that replica decided on is not recorded
// twice.
func (d *Daemon) takeOver(ctx context.Context) {
	if err := d.follow(ctx); err != nil {
		d.cfg.Logger.Warn("took the lease, but cannot serve what was decided yet", "error", err)
	}
	d.mu.Lock()
	d.fresh, d.decided, d.lastFail = true, "", ""
	d.mu.Unlock()
}

// ranRequest is the history's record of request id, when a decider ran it.
func (d *Daemon) ranRequest(id int64) (Record, bool) {
	for _, r := range d.history.Records() {
		if r.Request == id {
			return r, true
		}
	}
	return Record{}, false
}

// reloadHistory reads the history again, which another replica changed
// (a NACK, a convergence, an invalid head), and the head's verdict with it.
func (d *Daemon) reloadHistory(ctx context.Context) {
	if err := d.history.Reload(ctx); err != nil {
		d.cfg.Logger.Warn("cannot read the history from the store", "error", err)
		return
	}
	d.refreshHeadVerdict()
}
