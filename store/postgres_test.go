package store_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/gitmesh/gitmesh/store"
	"github.com/gitmesh/gitmesh/store/pgtest"
)

func testKey() []byte { return bytes.Repeat([]byte{7}, store.KeySize) }

func TestPostgresDocumentsAndRecords(t *testing.T) {
	srv := pgtest.Start(t)
	ctx := context.Background()
	if _, err := store.OpenPostgres(ctx, store.PostgresOptions{URL: srv.URL(), Key: testKey()}); err == nil {
		t.Fatal("opened a database without the schema and without Migrate")
	}
	p, err := store.OpenPostgres(ctx, store.PostgresOptions{URL: srv.URL(), Key: testKey(), Migrate: true})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if applied, err := p.Migrate(ctx); err != nil || len(applied) != 0 {
		t.Fatalf("second migrate: applied %v, %v; want nothing", applied, err)
	}
	if _, err := p.Get(ctx, "state.json"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("get of nothing: %v, want ErrNotFound", err)
	}
	pemKey := []byte("-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----\n")
	for _, c := range []struct {
		key   string
		data  []byte
		class store.Class
	}{{"state.json", []byte(`{"version":1}`), store.Private}, {"ca/default/ca.key", pemKey, store.Secret}} {
		if err := p.Put(ctx, c.key, c.data, c.class); err != nil {
			t.Fatal(err)
		}
		got, err := p.Get(ctx, c.key)
		if err != nil || !bytes.Equal(got, c.data) {
			t.Fatalf("get %s: %q, %v; want %q", c.key, got, err, c.data)
		}
	}
	// Another key opens nothing.
	other, err := store.OpenPostgres(ctx, store.PostgresOptions{URL: srv.URL(), Key: bytes.Repeat([]byte{8}, store.KeySize)})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if _, err := other.Get(ctx, "ca/default/ca.key"); err == nil {
		t.Fatal("a secret opened with another key")
	}

	if err := p.PutRecords(ctx, store.Record{ID: 1, Data: []byte(`{"a":1}`)}, store.Record{ID: 2, Data: []byte(`{"a":2}`)}); err != nil {
		t.Fatal(err)
	}
	if err := p.PutRecords(ctx, store.Record{ID: 1, Data: []byte(`{"a":3}`)}); err != nil {
		t.Fatal(err)
	}
	if err := p.TrimRecords(ctx, 2); err != nil {
		t.Fatal(err)
	}
	rs, err := p.Records(ctx)
	if err != nil || len(rs) != 1 || rs[0].ID != 2 {
		t.Fatalf("records after trim: %v, %v; want record 2 alone", rs, err)
	}

	srv.Stop(t)
	if err := p.Put(ctx, "state.json", []byte("{}"), store.Private); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("put with the server stopped: %v, want ErrUnavailable", err)
	}
	if err := p.Ping(ctx); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("ping with the server stopped: %v, want ErrUnavailable", err)
	}
	srv.Restart(t)
	if err := p.Put(ctx, "state.json", []byte("{}"), store.Private); err != nil {
		t.Fatalf("put once the server is back: %v", err)
	}
}

func TestPostgresRefusesPasswordInURL(t *testing.T) {
	for s, want := range map[string]bool{
		"postgres://u:secret@h/db":          true,
		"postgres://u@h/db?password=x":      true,
		"postgres://u@h/db?sslmode=disable": false,
	} {
		if got := store.URLHasPassword(s); got != want {
			t.Errorf("URLHasPassword(%q) = %v, want %v", s, got, want)
		}
	}
}
