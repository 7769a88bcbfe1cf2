package store

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

// The fleet: several replicas of gitmesh serve on one PostgreSQL store.
//
// One replica at a time decides which commit is published: the holder of
// the decider's lease, a row with a holder, an expiry and a fencing epoch
// that grows each time the lease changes hands. Every write of the shared
// state (the state document, the history) goes through Fleet.Store, whose
// writes check in the same transaction that this replica still holds the
// lease at the epoch it was given: a replica that lost the lease without
// knowing it (paused, cut off) cannot write over the decision of the one
// that took it. Writes notify the other replicas (LISTEN/NOTIFY) in the
// same transaction, so a notification never announces what did not commit.

// ErrFenced refuses a write of the shared state by a replica that does not
// hold the decider's lease.
var ErrFenced = errors.New("this replica does not hold the decider's lease")

const (
	deciderLease = "decider"
	// channel is the LISTEN/NOTIFY channel of the fleet.
	channel = "gitmesh"
)

// Notification kinds. A notification's payload is "<kind> <replica> <arg>".
const (
	NoteState   = "state"   // the state (published commit, pin) changed
	NoteHistory = "history" // the history changed
	NoteRequest = "request" // a replica asks the decider to run an operation
	NoteDone    = "done"    // an operation ran; arg is its id
	NoteSync    = "sync"    // a replica saw the branch move (a webhook): the decider should sync
	NoteLease   = "lease"   // the decider let its lease go
	// NoteResync is never sent: Listen delivers it after it (re)connects,
	// when notifications may have been missed.
	NoteResync = "resync"
)

// Notification is one message of the fleet's channel.
type Notification struct {
	Kind, Replica, Arg string
}

func (n Notification) payload() string { return n.Kind + " " + n.Replica + " " + n.Arg }

func parseNotification(s string) Notification {
	f := strings.SplitN(s, " ", 3)
	for len(f) < 3 {
		f = append(f, "")
	}
	return Notification{Kind: f[0], Replica: f[1], Arg: f[2]}
}

// Lease is the decider's lease as a campaign found it.
type Lease struct {
	// Holder is the replica that decides; "" when none does.
	Holder string
	// Epoch grows each time the lease changes hands.
	Epoch int64
	// Held: this replica holds it, until Until by its own clock.
	Held  bool
	Until time.Time
}

// Replica is one replica in the registry.
type Replica struct {
	ID          string
	Info        json.RawMessage
	StartedAt   time.Time
	HeartbeatAt time.Time
}

// Request is an operation a replica asked the decider to run.
type Request struct {
	ID      int64
	Replica string
	Op      string
	Args    json.RawMessage
}

// Fleet is one replica's handle on a store shared with others. The lease
// is held by the process, not by the replica id: a replica started again
// under its id (after kill -9, say) does not inherit the lease of the one
// it replaces, and two processes given one id by mistake never both
// decide.
type Fleet struct {
	pg       *Postgres
	id       string
	instance string // this process, random
	started  time.Time
	beats    atomic.Int64 // heartbeats written

	mu    sync.Mutex
	epoch int64     // the epoch held; 0 when the lease is not held
	until time.Time // by the local clock, when the lease held lapses
}

// NewFleet is replica id's handle on pg.
func NewFleet(pg *Postgres, id string) *Fleet {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return &Fleet{pg: pg, id: id, instance: hex.EncodeToString(b), started: time.Now()}
}

// ErrDuplicateReplica: another process heartbeats under this replica's id.
var ErrDuplicateReplica = errors.New("another gitmesh serve runs with this replica id: give each replica its own --replica-id")

// ID is the replica's id.
func (f *Fleet) ID() string { return f.id }

// Campaign takes the decider's lease for ttl when no replica holds it (or
// its holder let it lapse), or renews it when this replica holds it. The
// lease is held, by this replica's reckoning, until ttl after the campaign
// began, less a tenth: the server set its expiry later than that.
func (f *Fleet) Campaign(ctx context.Context, ttl time.Duration) (Lease, error) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, min(opTimeout, ttl))
	defer cancel()
	var l Lease
	err := f.pg.pool.QueryRow(ctx, `INSERT INTO gitmesh_lease AS l (name, holder, instance, epoch, expires_at)
		VALUES ($1, $2, $3, 1, now() + $4::interval)
		ON CONFLICT (name) DO UPDATE SET
			holder = excluded.holder,
			instance = excluded.instance,
			epoch = CASE WHEN l.instance = excluded.instance AND l.expires_at > now() THEN l.epoch ELSE l.epoch + 1 END,
			expires_at = excluded.expires_at
		WHERE l.instance = excluded.instance AND l.expires_at > now() OR l.expires_at <= now()
		RETURNING holder, epoch`, deciderLease, f.id, f.instance, ttl.String()).Scan(&l.Holder, &l.Epoch)
	if errors.Is(err, pgx.ErrNoRows) {
		// Another replica holds it.
		var live bool
		err = f.pg.pool.QueryRow(ctx, `SELECT holder, epoch, expires_at > now() FROM gitmesh_lease WHERE name = $1`,
			deciderLease).Scan(&l.Holder, &l.Epoch, &live)
		if err == nil && !live {
			l.Holder = ""
		}
		f.set(0, time.Time{})
		if err != nil {
			return Lease{}, fmt.Errorf("decider's lease: %w", f.pg.classify(err))
		}
		return l, nil
	}
	if err != nil {
		f.set(0, time.Time{})
		return Lease{}, fmt.Errorf("decider's lease: %w", f.pg.classify(err))
	}
	l.Held, l.Until = true, start.Add(ttl-ttl/10)
	f.set(l.Epoch, l.Until)
	return l, nil
}

func (f *Fleet) set(epoch int64, until time.Time) {
	f.mu.Lock()
	f.epoch, f.until = epoch, until
	f.mu.Unlock()
}

// Leading returns the epoch of the lease while this replica holds it and it
// has not lapsed by the local clock.
func (f *Fleet) Leading() (int64, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.epoch == 0 || !time.Now().Before(f.until) {
		return 0, false
	}
	return f.epoch, true
}

// Resign lets the lease go at once (a replica stopping), so that another
// takes it without waiting for it to lapse.
func (f *Fleet) Resign(ctx context.Context) error {
	f.mu.Lock()
	epoch := f.epoch
	f.epoch, f.until = 0, time.Time{}
	f.mu.Unlock()
	if epoch == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	_, err := f.pg.pool.Exec(ctx, `WITH r AS (UPDATE gitmesh_lease SET expires_at = now()
		WHERE name = $1 AND instance = $2 AND epoch = $3 RETURNING 1)
		SELECT pg_notify($4, $5) FROM r`, deciderLease, f.instance, epoch, channel, Notification{Kind: NoteLease, Replica: f.id}.payload())
	return f.pg.classify(err)
}

// fenced runs fn in a transaction that holds this replica's lease at the
// epoch it was given (shared with other writes, exclusive of the lease
// changing hands), and sends notes when it commits; ErrFenced when the
// lease is not held.
func (f *Fleet) fenced(ctx context.Context, fn func(tx pgx.Tx) error, notes ...Notification) error {
	epoch, ok := f.Leading()
	if !ok {
		return ErrFenced
	}
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	err := pgx.BeginFunc(ctx, f.pg.pool, func(tx pgx.Tx) error {
		var one int
		err := tx.QueryRow(ctx, `SELECT 1 FROM gitmesh_lease WHERE name = $1 AND instance = $2 AND epoch = $3 AND expires_at > now() FOR SHARE`,
			deciderLease, f.instance, epoch).Scan(&one)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrFenced
		}
		if err != nil {
			return err
		}
		if err := fn(tx); err != nil {
			return err
		}
		for _, n := range notes {
			if _, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, channel, n.payload()); err != nil {
				return err
			}
		}
		return nil
	})
	if errors.Is(err, ErrFenced) {
		f.set(0, time.Time{})
		return err
	}
	return f.pg.classify(err)
}

// Store is the shared store as this replica writes it: reads as any, and
// writes only while it holds the decider's lease (else ErrFenced), each
// notifying the others.
func (f *Fleet) Store() RecordStore { return fencedStore{f} }

type fencedStore struct{ f *Fleet }

func (s fencedStore) Get(ctx context.Context, key string) ([]byte, error) {
	return s.f.pg.Get(ctx, key)
}
func (s fencedStore) Ping(ctx context.Context) error                { return s.f.pg.Ping(ctx) }
func (s fencedStore) Describe() string                              { return s.f.pg.Describe() }
func (s fencedStore) Close() error                                  { return nil }
func (s fencedStore) Records(ctx context.Context) ([]Record, error) { return s.f.pg.Records(ctx) }

func (s fencedStore) Put(ctx context.Context, key string, data []byte, class Class) error {
	row, err := s.f.pg.sealRow(key, data, class)
	if err != nil {
		return err
	}
	err = s.f.fenced(ctx, func(tx pgx.Tx) error { return putRow(ctx, tx, row) },
		Notification{Kind: NoteState, Replica: s.f.id, Arg: key})
	if err != nil {
		return fmt.Errorf("store key %q: %w", key, err)
	}
	return nil
}

func (s fencedStore) PutRecords(ctx context.Context, rs ...Record) error {
	if len(rs) == 0 {
		return nil
	}
	err := s.f.fenced(ctx, func(tx pgx.Tx) error { return putRecords(ctx, tx, rs) },
		Notification{Kind: NoteHistory, Replica: s.f.id})
	if err != nil {
		return fmt.Errorf("write history: %w", err)
	}
	return nil
}

func (s fencedStore) TrimRecords(ctx context.Context, first int64) error {
	err := s.f.fenced(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `DELETE FROM gitmesh_history WHERE id < $1`, first)
		return err
	})
	if err != nil {
		return fmt.Errorf("trim history: %w", err)
	}
	return nil
}

// Notify sends n to every replica listening (this one too).
func (f *Fleet) Notify(ctx context.Context, kind, arg string) error {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	_, err := f.pg.pool.Exec(ctx, `SELECT pg_notify($1, $2)`, channel, Notification{Kind: kind, Replica: f.id, Arg: arg}.payload())
	return f.pg.classify(err)
}

// Listen delivers the fleet's notifications until ctx ends, on a
// connection of its own that it opens again (with backoff) when it is
// lost; after each (re)connection it delivers a NoteResync, since what was
// sent while it was away is lost. A reader that falls behind loses the
// oldest notifications rather than holding up the connection; each says
// only what to read again, never what changed.
func (f *Fleet) Listen(ctx context.Context, onError func(error)) <-chan Notification {
	out := make(chan Notification, 256)
	go func() {
		defer close(out)
		wait := 100 * time.Millisecond
		for ctx.Err() == nil {
			err := f.listen(ctx, out)
			if ctx.Err() != nil {
				return
			}
			if onError != nil {
				onError(f.pg.classify(err))
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
			wait = min(2*wait, 2*time.Second)
		}
	}()
	return out
}

func (f *Fleet) listen(ctx context.Context, out chan Notification) error {
	cctx, cancel := context.WithTimeout(ctx, opTimeout)
	conn, err := pgx.ConnectConfig(cctx, f.pg.pool.Config().ConnConfig.Copy())
	cancel()
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN "+channel); err != nil {
		return err
	}
	deliver(out, Notification{Kind: NoteResync, Replica: f.id})
	for {
		// A bounded wait, so that a server gone without a word (a
		// network cut) is noticed by the ping that follows.
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				pctx, cancel := context.WithTimeout(ctx, opTimeout)
				err = conn.Ping(pctx)
				cancel()
				if err == nil {
					continue
				}
			}
			return err
		}
		deliver(out, parseNotification(n.Payload))
	}
}

// deliver sends n without blocking, dropping the oldest notification when
// the reader is behind.
func deliver(out chan Notification, n Notification) {
	for {
		select {
		case out <- n:
			return
		default:
		}
		select {
		case <-out:
		default:
		}
	}
}

// Heartbeat records this replica in the registry with info (JSON), and
// now and then drops replicas not heard of for an hour and requests run a
// day ago.
//
// A replica's first heartbeat takes over the row of a process that ran
// under its id before (killed, say); after that, a row another process
// wrote is ErrDuplicateReplica, and the row is left to it.
func (f *Fleet) Heartbeat(ctx context.Context, info []byte) error {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	var taken bool
	err := f.pg.pool.QueryRow(ctx, `WITH up AS (
			INSERT INTO gitmesh_replicas AS r (id, instance, info, started_at, heartbeat_at) VALUES ($1, $2, $3, $4, now())
			ON CONFLICT (id) DO UPDATE SET instance = excluded.instance, info = excluded.info,
				started_at = excluded.started_at, heartbeat_at = now()
			WHERE r.instance = excluded.instance OR $5
			RETURNING 1)
		SELECT NOT EXISTS (SELECT 1 FROM up)`, f.id, f.instance, string(info), f.started, f.beats.Load() == 0).Scan(&taken)
	if err != nil {
		return f.pg.classify(err)
	}
	if taken {
		return ErrDuplicateReplica
	}
	if f.beats.Add(1)%cleanEvery != 1 {
		return nil
	}
	b := &pgx.Batch{}
	b.Queue(`DELETE FROM gitmesh_replicas WHERE heartbeat_at < now() - interval '1 hour'`)
	b.Queue(`DELETE FROM gitmesh_requests WHERE done_at < now() - interval '1 day'`)
	return f.pg.classify(f.pg.pool.SendBatch(ctx, b).Close())
}

// cleanEvery is how many heartbeats a replica writes for each clean-up of
// the registry and the requests (the first, then every cleanEvery-th).
const cleanEvery = 100

// Replicas lists the replicas heard of within the last within, by id.
func (f *Fleet) Replicas(ctx context.Context, within time.Duration) ([]Replica, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	rows, err := f.pg.pool.Query(ctx, `SELECT id, info, started_at, heartbeat_at FROM gitmesh_replicas
		WHERE heartbeat_at > now() - $1::interval ORDER BY id`, within.String())
	if err != nil {
		return nil, f.pg.classify(err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Replica, error) {
		var r Replica
		var info []byte
		err := row.Scan(&r.ID, &info, &r.StartedAt, &r.HeartbeatAt)
		r.Info = info
		return r, err
	})
	return out, f.pg.classify(err)
}

// Leave drops this replica from the registry (a replica stopping).
func (f *Fleet) Leave(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	_, err := f.pg.pool.Exec(ctx, `DELETE FROM gitmesh_replicas WHERE id = $1 AND instance = $2`, f.id, f.instance)
	return f.pg.classify(err)
}

// Submit asks the decider to run op with args, and returns the request's
// id; Result tells when it ran.
func (f *Fleet) Submit(ctx context.Context, op string, args []byte) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	var id int64
	err := pgx.BeginFunc(ctx, f.pg.pool, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `INSERT INTO gitmesh_requests (replica, op, args) VALUES ($1, $2, $3) RETURNING id`,
			f.id, op, string(args)).Scan(&id); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, channel, Notification{Kind: NoteRequest, Replica: f.id, Arg: fmt.Sprint(id)}.payload())
		return err
	})
	return id, f.pg.classify(err)
}

// Result is the result of request id once it ran; done is false until then.
func (f *Fleet) Result(ctx context.Context, id int64) (result []byte, done bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	var doneAt *time.Time
	err = f.pg.pool.QueryRow(ctx, `SELECT done_at, result FROM gitmesh_requests WHERE id = $1`, id).Scan(&doneAt, &result)
	if err != nil {
		return nil, false, f.pg.classify(err)
	}
	return result, doneAt != nil, nil
}

// Abandon withdraws request id unless a decider has taken it: true when
// it will never run.
func (f *Fleet) Abandon(ctx context.Context, id int64) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	tag, err := f.pg.pool.Exec(ctx, `UPDATE gitmesh_requests SET done_at = now(), result = 'null'
		WHERE id = $1 AND claimed_by IS NULL AND done_at IS NULL`, id)
	if err != nil {
		return false, f.pg.classify(err)
	}
	return tag.RowsAffected() == 1, nil
}

// Claim takes the requests not run yet, oldest first, for this replica at
// the epoch it holds: requests a former decider took and did not finish
// are taken again. ErrFenced without the lease.
func (f *Fleet) Claim(ctx context.Context) ([]Request, error) {
	epoch, _ := f.Leading()
	var out []Request
	err := f.fenced(ctx, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `UPDATE gitmesh_requests SET claimed_by = $1, claimed_epoch = $2
			WHERE done_at IS NULL AND (claimed_epoch IS NULL OR claimed_epoch < $2)
			RETURNING id, replica, op, args`, f.id, epoch)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (Request, error) {
			var r Request
			var args []byte
			err := row.Scan(&r.ID, &r.Replica, &r.Op, &args)
			r.Args = args
			return r, err
		})
		return err
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b Request) int { return cmp.Compare(a.ID, b.ID) })
	return out, nil
}

// Complete records the result of request id and tells its replica.
func (f *Fleet) Complete(ctx context.Context, id int64, result []byte) error {
	return f.fenced(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `UPDATE gitmesh_requests SET done_at = now(), result = $2 WHERE id = $1`, id, string(result))
		return err
	}, Notification{Kind: NoteDone, Replica: f.id, Arg: fmt.Sprint(id)})
}
