package store_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/gitmesh/gitmesh/store"
)

func TestDirKeepsFilesAsTheStateDirectoryDid(t *testing.T) {
	dir := t.TempDir()
	d := store.Dir{Path: dir}
	ctx := context.Background()
	if _, err := d.Get(ctx, "state.json"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("get of nothing: %v, want ErrNotFound", err)
	}
	for key, want := range map[string]os.FileMode{"state.json": 0o600, "ca/m/ca.key": 0o600, "ca/m/ca.crt": 0o644} {
		class := store.Private
		switch filepath.Ext(key) {
		case ".key":
			class = store.Secret
		case ".crt":
			class = store.Public
		}
		if err := d.Put(ctx, key, []byte(key), class); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(filepath.Join(dir, filepath.FromSlash(key)))
		if err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: %v mode %v, want %v", key, err, fi.Mode().Perm(), want)
		}
		if got, err := d.Get(ctx, key); err != nil || string(got) != key {
			t.Errorf("get %s: %q, %v", key, got, err)
		}
	}
	if fi, _ := os.Stat(filepath.Join(dir, "ca", "m")); fi.Mode().Perm() != 0o700 {
		t.Errorf("a key's directory has mode %v, want 0700", fi.Mode().Perm())
	}
	for _, bad := range []string{"../x", "/etc/passwd", "a/../../b", ""} {
		if err := d.Put(ctx, bad, nil, store.Private); err == nil {
			t.Errorf("put %q: no error", bad)
		}
	}
}

func TestSealerBindsTheKeyName(t *testing.T) {
	s, err := store.NewSealer(testKey())
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := s.Seal("ca/a/ca.key", []byte("secret"))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s.Open("ca/a/ca.key", sealed); err != nil || string(got) != "secret" {
		t.Fatalf("open: %q, %v", got, err)
	}
	if _, err := s.Open("ca/b/ca.key", sealed); err == nil {
		t.Error("a sealed value opened under another key name")
	}
	again, _ := s.Seal("ca/a/ca.key", []byte("secret"))
	if string(again) == string(sealed) {
		t.Error("two seals of one value are equal: the nonce is not fresh")
	}
}

func TestReadKeyFile(t *testing.T) {
	dir := t.TempDir()
	key, _ := store.NewKey()
	p := filepath.Join(dir, "k")
	if err := os.WriteFile(p, []byte(key+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := store.ReadKeyFile(p); err == nil {
		t.Error("a key file readable by others was accepted")
	}
	os.Chmod(p, 0o600)
	if k, err := store.ReadKeyFile(p); err != nil || len(k) != store.KeySize {
		t.Errorf("read key: %d bytes, %v", len(k), err)
	}
	// Group-readable: only when root owns the file (a Kubernetes Secret
	// mounted with fsGroup).
	os.Chmod(p, 0o640)
	_, err := store.ReadKeyFile(p)
	if os.Geteuid() == 0 {
		if err != nil {
			t.Errorf("a root-owned 0640 key file was refused: %v", err)
		}
		if err := os.Chown(p, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		_, err = store.ReadKeyFile(p)
	}
	if err == nil {
		t.Error("a group-readable key file not owned by root was accepted")
	}
	os.Chmod(p, 0o660)
	if _, err := store.ReadKeyFile(p); err == nil {
		t.Error("a group-writable key file was accepted")
	}
	os.Chmod(p, 0o600)
	os.WriteFile(p, []byte("short"), 0o600)
	if _, err := store.ReadKeyFile(p); err == nil {
		t.Error("a short key was accepted")
	}
}
