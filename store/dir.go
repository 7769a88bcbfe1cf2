package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/gitmesh/gitmesh/internal/atomicfile"
)

// Dir is the state directory as a store: each key is the file of that path
// under Path, written atomically (a crash leaves the old or the new file).
type Dir struct {
	Path string
}

// Get reads the file of key.
func (d Dir) Get(_ context.Context, key string) ([]byte, error) {
	if !cleanKey(key) {
		return nil, fmt.Errorf("store key %q: not a clean relative path", key)
	}
	b, err := os.ReadFile(d.file(key))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", d.file(key), ErrNotFound)
	}
	return b, err
}

// Put replaces the file of key: 0644 for Public, else 0600, its directory
// created 0700 (and, for Secret, tightened to 0700 when it existed).
func (d Dir) Put(_ context.Context, key string, data []byte, class Class) error {
	if !cleanKey(key) {
		return fmt.Errorf("store key %q: not a clean relative path", key)
	}
	path := d.file(key)
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if class == Secret && dir != filepath.Clean(d.Path) {
		// MkdirAll leaves existing directories alone; tighten a key's own.
		if err := os.Chmod(dir, 0o700); err != nil {
			return err
		}
	}
	perm := fs.FileMode(0o600)
	if class == Public {
		perm = 0o644
	}
	return atomicfile.Write(path, data, perm)
}

// Ping always succeeds: a state directory that cannot be written shows in
// the write itself.
func (d Dir) Ping(context.Context) error { return nil }

// Describe names the directory.
func (d Dir) Describe() string { return "state directory " + d.Path }

// Close does nothing.
func (d Dir) Close() error { return nil }

func (d Dir) file(key string) string { return filepath.Join(d.Path, filepath.FromSlash(key)) }
