package certagent

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gitmesh/gitmesh/xds"
)

// checkFiles checks that dir holds m in the three files, with their modes.
func checkFiles(t *testing.T, dir string, m *material) {
	t.Helper()
	for _, f := range []struct {
		name string
		data []byte
		perm os.FileMode
	}{{xds.CertFileName, m.cert, 0o644}, {xds.KeyFileName, m.key, 0o600}, {xds.CAFileName, m.ca, 0o644}} {
		p := filepath.Join(dir, f.name)
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != f.perm {
			t.Errorf("%s: mode %o, want %o", f.name, got, f.perm)
		}
		if b, err := os.ReadFile(p); err != nil || !bytes.Equal(b, f.data) {
			t.Errorf("%s does not hold the material (%v)", f.name, err)
		}
	}
}

func TestWriteCertFiles(t *testing.T) {
	c := issued(t, "default", time.Hour)
	m := &material{cert: c.CertPEM, key: c.KeyPEM, ca: c.CAPEM}
	dir := filepath.Join(t.TempDir(), "a", "b")
	if wrote, err := writeFiles(dir, m); err != nil || !wrote {
		t.Fatalf("first write: wrote=%v, %v", wrote, err)
	}
	checkFiles(t, dir, m)
	if wrote, err := writeFiles(dir, m); err != nil || wrote {
		t.Fatalf("same material: wrote=%v, %v", wrote, err)
	}
	// A key file someone opened up, and a temporary file a crash left,
	// are put right by the next write.
	if err := os.Chmod(filepath.Join(dir, xds.KeyFileName), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ".key.pem123"), []byte("half"), 0o600); err != nil {
		t.Fatal(err)
	}
	if wrote, err := writeFiles(dir, m); err != nil || !wrote {
		t.Fatalf("opened-up key: wrote=%v, %v", wrote, err)
	}
	checkFiles(t, dir, m)
	if stale, _ := filepath.Glob(filepath.Join(dir, ".*")); len(stale) != 0 {
		t.Errorf("temporary files left: %v", stale)
	}

	// A failed write keeps the old files.
	blocked := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(blocked, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := writeFiles(filepath.Join(blocked, "certs"), m); err == nil {
		t.Error("writing under a file: no error")
	}
}
