package store

// migrations are the PostgreSQL schema, one version per entry, applied in
// order and never edited once released: a change is a new entry.
var migrations = []string{
	// 1: documents (state, CAs, keys) and the history.
	`CREATE TABLE gitmesh_documents (
		key        text PRIMARY KEY,
		data       bytea NOT NULL,
		encrypted  boolean NOT NULL,
		updated_at timestamptz NOT NULL DEFAULT now()
	);
	CREATE TABLE gitmesh_history (
		id         bigint PRIMARY KEY,
		record     jsonb NOT NULL,
		updated_at timestamptz NOT NULL DEFAULT now()
	);`,
	// 2: several replicas on one store: the decider's lease with its
	// fencing epoch, the registry of replicas, and the operations (rollback,
	// resume) a replica asks the decider to run.
	`CREATE TABLE gitmesh_lease (
		name       text PRIMARY KEY,
		holder     text NOT NULL,
		instance   text NOT NULL,
		epoch      bigint NOT NULL,
		expires_at timestamptz NOT NULL
	);
	CREATE TABLE gitmesh_replicas (
		id           text PRIMARY KEY,
		instance     text NOT NULL,
		info         jsonb NOT NULL,
		started_at   timestamptz NOT NULL,
		heartbeat_at timestamptz NOT NULL
	);
	CREATE TABLE gitmesh_requests (
		id            bigserial PRIMARY KEY,
		replica       text NOT NULL,
		op            text NOT NULL,
		args          jsonb NOT NULL,
		created_at    timestamptz NOT NULL DEFAULT now(),
		claimed_by    text,
		claimed_epoch bigint,
		done_at       timestamptz,
		result        jsonb
	);
	CREATE INDEX gitmesh_requests_pending ON gitmesh_requests (id) WHERE done_at IS NULL;`,
}

// SchemaVersion is the schema version this gitmesh reads and writes.
var SchemaVersion = len(migrations)
