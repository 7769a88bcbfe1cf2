package certagent

import (
	"bytes"
	"os"
	"path/filepath"

	"github.com/gitmesh/gitmesh/internal/atomicfile"
	"github.com/gitmesh/gitmesh/xds"
)

// certFiles are the files of a certificate directory holding m, in the
// order they are renamed into place.
func certFiles(m *material) []atomicfile.File {
	return []atomicfile.File{
		{Name: xds.CAFileName, Data: m.ca, Perm: 0o644},
		{Name: xds.KeyFileName, Data: m.key, Perm: 0o600},
		{Name: xds.CertFileName, Data: m.cert, Perm: 0o644},
	}
}

// writeFiles makes dir (created 0700 when missing) hold m, and reports
// whether it wrote: files that hold m already are left alone.
//
// The three files are replaced together by atomicfile.WriteFiles: all are
// written and synced first, so a failure (a full disk) changes nothing, then
// renamed ca.pem, key.pem, cert.pem. The certificate comes last, so whoever
// sees the new certificate and then reads the key gets the key that matches
// it (the CA it chains to is in place before it, too). A reader that reads
// cert.pem just before its rename and key.pem just after the key's can still
// pair the old certificate with the new key; gRPC's file_watcher checks the
// pair, keeps serving the previous one (still valid: renewal comes with a
// third of the lifetime left) and reads both again at its next refresh.
func writeFiles(dir string, m *material) (wrote bool, err error) {
	files := certFiles(m)
	if holds(dir, files) {
		return false, nil
	}
	atomicfile.RemoveStale(dir, xds.CAFileName, xds.KeyFileName, xds.CertFileName)
	if err := atomicfile.WriteFiles(dir, files...); err != nil {
		return false, err
	}
	return true, nil
}

// holds reports whether dir holds files already, with their modes.
func holds(dir string, files []atomicfile.File) bool {
	for _, f := range files {
		p := filepath.Join(dir, f.Name)
		fi, err := os.Lstat(p)
		if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != f.Perm {
			return false
		}
		b, err := os.ReadFile(p)
		if err != nil || !bytes.Equal(b, f.Data) {
			return false
		}
	}
	return true
}
