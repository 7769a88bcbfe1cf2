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
}

// SchemaVersion is the schema version this gitmesh reads and writes.
var SchemaVersion = len(migrations)
