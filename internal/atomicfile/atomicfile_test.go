package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteReplacesWithMode(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")
	if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Write(path, []byte("new"), 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil || string(b) != "new" {
		t.Fatalf("content %q, %v", b, err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, %v: want 0600 whatever the old file had", fi.Mode(), err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("left %d entries in the directory, want the file alone", len(entries))
	}
}

func TestWriteFilesAllOrNothing(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	err := WriteFiles(dir,
		File{Name: "ca.pem", Data: []byte("ca"), Perm: 0o644},
		File{Name: "key.pem", Data: []byte("key"), Perm: 0o600},
		File{Name: "cert.pem", Data: []byte("cert"), Perm: 0o644})
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(dir)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("directory mode %v, %v: want 0700", fi.Mode(), err)
	}
	for name, want := range map[string]string{"ca.pem": "ca", "key.pem": "key", "cert.pem": "cert"} {
		if b, err := os.ReadFile(filepath.Join(dir, name)); err != nil || string(b) != want {
			t.Errorf("%s = %q, %v", name, b, err)
		}
	}
	// A file that cannot be written stops the whole write before any rename.
	err = WriteFiles(dir,
		File{Name: "ca.pem", Data: []byte("ca2"), Perm: 0o644},
		File{Name: "../escape", Data: []byte("x"), Perm: 0o644})
	if err == nil {
		t.Fatal("a name with a separator was accepted")
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "ca.pem")); string(b) != "ca" {
		t.Errorf("ca.pem = %q after a failed write, want the old content", b)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 3 {
		t.Errorf("a failed write left %d entries, want the 3 files", len(entries))
	}
}

func TestRemoveStale(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{".key.pem123", ".key.pemx1", "key.pem", ".cert.pem42"} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	RemoveStale(dir, "key.pem", "cert.pem")
	var left []string
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		left = append(left, e.Name())
	}
	if len(left) != 2 || left[0] != ".key.pemx1" || left[1] != "key.pem" {
		t.Errorf("left %v, want only what is not a temporary file of ours", left)
	}
}
