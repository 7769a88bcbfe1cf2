package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// opTimeout bounds every call to PostgreSQL, so that a server that does not
// answer is an unavailable store within seconds, not a hung rollback.
const opTimeout = 5 * time.Second

// migrationLock is the advisory lock key under which migrations run, so
// that two processes starting together do not both apply one.
const migrationLock = 0x6769746d657368 // "gitmesh"

// Postgres is a store in a PostgreSQL database. Secret documents are
// sealed (XChaCha20-Poly1305) before they leave the process.
type Postgres struct {
	pool   *pgxpool.Pool
	sealer *Sealer
	desc   string
}

// IsPostgresURL reports whether s names a PostgreSQL store.
func IsPostgresURL(s string) bool {
	return strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://")
}

// URLHasPassword reports whether a PostgreSQL URL carries a password (in
// its user information or as a password parameter).
func URLHasPassword(s string) bool {
	u, err := url.Parse(s)
	if err != nil {
		return strings.Contains(s, "@") // unparsable: assume the worst
	}
	if _, ok := u.User.Password(); ok {
		return true
	}
	return u.Query().Has("password")
}

// PostgresOptions opens a Postgres store.
type PostgresOptions struct {
	// URL is a postgres:// connection URL.
	URL string
	// Password, when set, replaces the URL's (from a password file).
	Password string
	// Key encrypts private keys at rest (KeySize bytes).
	Key []byte
	// Migrate applies the schema migrations this gitmesh knows; without
	// it a database behind this gitmesh's schema is an error.
	Migrate bool
	// NoSchemaCheck skips the check of the schema version (the caller
	// migrates it).
	NoSchemaCheck bool
}

// OpenPostgres connects to the database and checks (or migrates) its
// schema. It fails when the server cannot be reached.
func OpenPostgres(ctx context.Context, o PostgresOptions) (*Postgres, error) {
	sealer, err := NewSealer(o.Key)
	if err != nil {
		return nil, fmt.Errorf("store key: %w", err)
	}
	cfg, err := pgxpool.ParseConfig(o.URL)
	if err != nil {
		// pgx's message may quote the URL, password included.
		return nil, errors.New("store URL: not a valid postgres:// URL")
	}
	if o.Password != "" {
		cfg.ConnConfig.Password = o.Password
	}
	if cfg.ConnConfig.ConnectTimeout == 0 || cfg.ConnConfig.ConnectTimeout > opTimeout {
		cfg.ConnConfig.ConnectTimeout = opTimeout
	}
	cfg.MaxConns = 4
	desc := fmt.Sprintf("PostgreSQL %s@%s:%d/%s", cfg.ConnConfig.User, cfg.ConnConfig.Host, cfg.ConnConfig.Port, cfg.ConnConfig.Database)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", desc, err)
	}
	p := &Postgres{pool: pool, sealer: sealer, desc: desc}
	if err := p.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("%s: %w", desc, err)
	}
	switch {
	case o.Migrate:
		_, err = p.Migrate(ctx)
	case !o.NoSchemaCheck:
		err = p.checkSchema(ctx)
	}
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("%s: %w", desc, err)
	}
	return p, nil
}

// Migrate applies the migrations the database lacks, in one transaction
// under an advisory lock, and returns the versions it applied. A database
// of a newer schema than this gitmesh's is refused.
func (p *Postgres) Migrate(ctx context.Context) (applied []int, err error) {
	ctx, cancel := context.WithTimeout(ctx, 4*opTimeout)
	defer cancel()
	err = pgx.BeginFunc(ctx, p.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(migrationLock)); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS gitmesh_schema_migrations (
			version    integer PRIMARY KEY,
			applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
			return err
		}
		var current int
		if err := tx.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM gitmesh_schema_migrations`).Scan(&current); err != nil {
			return err
		}
		if current > SchemaVersion {
			return fmt.Errorf("the database's schema is version %d, this gitmesh knows versions up to %d: upgrade gitmesh", current, SchemaVersion)
		}
		for v := current + 1; v <= SchemaVersion; v++ {
			if _, err := tx.Exec(ctx, migrations[v-1]); err != nil {
				return fmt.Errorf("migration %d: %w", v, err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO gitmesh_schema_migrations (version) VALUES ($1)`, v); err != nil {
				return err
			}
			applied = append(applied, v)
		}
		return nil
	})
	if err != nil {
		return nil, p.classify(err)
	}
	return applied, nil
}

// checkSchema fails unless the database has this gitmesh's schema.
func (p *Postgres) checkSchema(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	var v int
	err := p.pool.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM gitmesh_schema_migrations`).Scan(&v)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P01" { // undefined_table
		v, err = 0, nil
	}
	if err != nil {
		return p.classify(err)
	}
	if v != SchemaVersion {
		return fmt.Errorf("the database's schema is version %d, this gitmesh needs %d: run gitmesh store migrate", v, SchemaVersion)
	}
	return nil
}

// classify marks a failure to reach the server as ErrUnavailable; an error
// the server answered (a constraint, a syntax error) stays as it is.
func (p *Postgres) classify(err error) error {
	if err == nil {
		return nil
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		// Connection exceptions, a server shutting down or out of
		// resources: the store is away, not the request wrong.
		switch pgErr.Code[:2] {
		case "08", "53", "57":
			return &unavailable{err: err}
		}
		return err
	}
	if errors.Is(err, ErrUnavailable) {
		return err
	}
	return &unavailable{err: err}
}

// Get reads a document, opening it when it was sealed.
func (p *Postgres) Get(ctx context.Context, key string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	var data []byte
	var encrypted bool
	err := p.pool.QueryRow(ctx, `SELECT data, encrypted FROM gitmesh_documents WHERE key = $1`, key).Scan(&data, &encrypted)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("store key %q: %w", key, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("store key %q: %w", key, p.classify(err))
	}
	if !encrypted {
		return data, nil
	}
	data, err = p.sealer.Open(key, data)
	if err != nil {
		return nil, fmt.Errorf("store key %q: %w", key, err)
	}
	return data, nil
}

// Put writes a document, sealing it when it is Secret.
func (p *Postgres) Put(ctx context.Context, key string, data []byte, class Class) error {
	row, err := p.sealRow(key, data, class)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	if err := putRow(ctx, p.pool, row); err != nil {
		return fmt.Errorf("store key %q: %w", key, p.classify(err))
	}
	return nil
}

// row is a document as the table keeps it.
type row struct {
	key       string
	data      []byte
	encrypted bool
}

// sealRow is the row of a document, sealed when it is Secret.
func (p *Postgres) sealRow(key string, data []byte, class Class) (row, error) {
	if !cleanKey(key) {
		return row{}, fmt.Errorf("store key %q: not a clean relative path", key)
	}
	r := row{key: key, data: data, encrypted: class == Secret}
	if r.encrypted {
		var err error
		if r.data, err = p.sealer.Seal(key, data); err != nil {
			return row{}, err
		}
	}
	return r, nil
}

// execer is a pool or a transaction.
type execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

func putRow(ctx context.Context, db execer, r row) error {
	_, err := db.Exec(ctx, `INSERT INTO gitmesh_documents (key, data, encrypted) VALUES ($1, $2, $3)
		ON CONFLICT (key) DO UPDATE SET data = excluded.data, encrypted = excluded.encrypted, updated_at = now()`,
		r.key, r.data, r.encrypted)
	return err
}

// Swap replaces the document under key with data when it still is old
// (nil: there is none), and returns it; otherwise it leaves it and returns
// the document there. Replicas that make a document at once (a mesh CA,
// a node's certificate) so agree on one.
func (p *Postgres) Swap(ctx context.Context, key string, old, data []byte, class Class) (current []byte, swapped bool, err error) {
	r, err := p.sealRow(key, data, class)
	if err != nil {
		return nil, false, err
	}
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	err = pgx.BeginFunc(ctx, p.pool, func(tx pgx.Tx) error {
		// The row may not exist yet: lock its key, not the row.
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext($1))`, "gitmesh_documents/"+key); err != nil {
			return err
		}
		var stored []byte
		var encrypted bool
		err := tx.QueryRow(ctx, `SELECT data, encrypted FROM gitmesh_documents WHERE key = $1`, key).Scan(&stored, &encrypted)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			stored = nil
		case err != nil:
			return err
		case encrypted:
			if stored, err = p.sealer.Open(key, stored); err != nil {
				return err
			}
		}
		if (stored == nil) != (old == nil) || !bytes.Equal(stored, old) {
			current = stored
			return nil
		}
		current, swapped = data, true
		return putRow(ctx, tx, r)
	})
	if err != nil {
		return nil, false, fmt.Errorf("store key %q: %w", key, p.classify(err))
	}
	return current, swapped, nil
}

// Records returns the history, oldest first.
func (p *Postgres) Records(ctx context.Context) ([]Record, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	rows, err := p.pool.Query(ctx, `SELECT id, record FROM gitmesh_history ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("read history: %w", p.classify(err))
	}
	var out []Record
	for rows.Next() {
		var r Record
		if err := rows.Scan(&r.ID, &r.Data); err != nil {
			rows.Close()
			return nil, fmt.Errorf("read history: %w", p.classify(err))
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read history: %w", p.classify(err))
	}
	return out, nil
}

// PutRecords inserts or replaces records, all in one transaction.
func (p *Postgres) PutRecords(ctx context.Context, rs ...Record) error {
	if len(rs) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	err := pgx.BeginFunc(ctx, p.pool, func(tx pgx.Tx) error { return putRecords(ctx, tx, rs) })
	if err != nil {
		return fmt.Errorf("write history: %w", p.classify(err))
	}
	return nil
}

func putRecords(ctx context.Context, tx pgx.Tx, rs []Record) error {
	var b pgx.Batch
	for _, r := range rs {
		b.Queue(`INSERT INTO gitmesh_history (id, record) VALUES ($1, $2)
			ON CONFLICT (id) DO UPDATE SET record = excluded.record, updated_at = now()`, r.ID, string(r.Data))
	}
	return tx.SendBatch(ctx, &b).Close()
}

// TrimRecords removes the records below first.
func (p *Postgres) TrimRecords(ctx context.Context, first int64) error {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	if _, err := p.pool.Exec(ctx, `DELETE FROM gitmesh_history WHERE id < $1`, first); err != nil {
		return fmt.Errorf("trim history: %w", p.classify(err))
	}
	return nil
}

// Ping checks that the server answers.
func (p *Postgres) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	return p.classify(p.pool.Ping(ctx))
}

// Describe names the database, without password.
func (p *Postgres) Describe() string { return p.desc }

// Close closes the connections.
func (p *Postgres) Close() error { p.pool.Close(); return nil }

var _ RecordStore = (*Postgres)(nil)
