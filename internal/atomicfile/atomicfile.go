// Package atomicfile replaces files so that a crash, kill -9 included, leaves
// either the old content or the new one, never a torn or empty file: the
// state file, the history, keys and certificates all go through it. Each file
// is written to a temporary file in its own directory (github.com/google/
// renameio: synced before the rename), renamed over its destination, and the
// directory is synced so that the rename itself survives a power loss.
package atomicfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/renameio/v2"
)

// File is one file of WriteFiles: its name within the directory, its content
// and its mode.
type File struct {
	Name string
	Data []byte
	Perm fs.FileMode
}

// Write replaces path with data, with mode perm whatever mode an earlier
// file had. The directory must exist.
func Write(path string, data []byte, perm fs.FileMode) error {
	return WriteFiles(filepath.Dir(path), File{Name: filepath.Base(path), Data: data, Perm: perm})
}

// WriteFiles replaces several files of dir (created 0700 when missing): all
// of them are written and synced to temporary files first, then renamed in
// the order given, then dir is synced. A failure while writing (a full disk)
// changes none of them; the renames follow each other within microseconds,
// so put last the file whose readers pick the others up (a certificate after
// its key). Two files cannot be swapped in one step: a reader between two
// renames sees a new file next to an old one.
func WriteFiles(dir string, files ...File) (err error) {
	if len(files) == 0 {
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	pending := make([]*renameio.PendingFile, 0, len(files))
	defer func() {
		for _, p := range pending {
			if cerr := p.Cleanup(); cerr != nil && err == nil && !errors.Is(cerr, fs.ErrNotExist) {
				err = cerr
			}
		}
	}()
	for _, f := range files {
		if f.Name == "" || strings.ContainsRune(f.Name, filepath.Separator) || f.Name == "." || f.Name == ".." {
			return fmt.Errorf("atomic write in %s: %q is not a file name", dir, f.Name)
		}
		p, err := renameio.NewPendingFile(filepath.Join(dir, f.Name), renameio.WithTempDir(dir), renameio.WithStaticPermissions(f.Perm))
		if err != nil {
			return err
		}
		pending = append(pending, p)
		if _, err := p.Write(f.Data); err != nil {
			return err
		}
		if err := p.Sync(); err != nil {
			return err
		}
	}
	for _, p := range pending {
		if err := p.CloseAtomicallyReplace(); err != nil {
			return err
		}
	}
	return syncDir(dir)
}

// syncDir makes the renames in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// RemoveStale removes the temporary files an interrupted WriteFiles of the
// named files left in dir. They start with "." and the file's name, followed
// by digits.
func RemoveStale(dir string, names ...string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		for _, name := range names {
			rest, ok := strings.CutPrefix(e.Name(), "."+name)
			if ok && rest != "" && strings.Trim(rest, "0123456789") == "" {
				os.Remove(filepath.Join(dir, e.Name()))
			}
		}
	}
}
