// Package source reads policy trees out of git: a commit's tree straight from
// the object store, without a worktree checkout, as an io/fs.FS that the
// schema loader reads like a directory.
package source

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"

	"github.com/gitmesh/gitmesh/schema"
)

// TreeFS is a git tree as a read-only fs.FS. It implements fs.ReadDirFS,
// fs.StatFS and fs.ReadLinkFS. Symbolic links are resolved only within the
// tree: a link that leaves it fails with fs.ErrPermission. Submodules appear as
// irregular files whose Sys is a schema.GitSubmodule. A TreeFS is safe for concurrent use: access to the object
// store is serialised, and file contents are read when first read, so a Stat
// (which reads only the object header) can refuse a huge blob unread.
//
// A TreeFS also names each file's content by its git blob id without reading
// it (schema.ContentIDFS), so a loader with a cache reads only the files a
// commit changed.
type TreeFS struct {
	mu   sync.Mutex
	root *object.Tree
	when time.Time
	dirs map[string]*object.Tree // directories looked up so far, by path
}

var (
	_ fs.ReadDirFS       = (*TreeFS)(nil)
	_ fs.StatFS          = (*TreeFS)(nil)
	_ fs.ReadLinkFS      = (*TreeFS)(nil)
	_ schema.ContentIDFS = (*TreeFS)(nil)
)

// NewTreeFS returns the tree as a file system; modTime is reported for every
// entry (the commit time is a good choice). The TreeFS takes root over: go-git
// trees remember lookups, so root must not be used elsewhere at the same time.
func NewTreeFS(root *object.Tree, modTime time.Time) *TreeFS {
	return &TreeFS{root: root, when: modTime, dirs: map[string]*object.Tree{".": root}}
}

// maxLinkHops bounds symbolic-link chains, as the kernel does.
const maxLinkHops = 40

// node is a resolved tree entry. The blob of a file or link is looked up only
// when needed (to open, stat or follow it): naming its content takes the
// entry's hash alone.
type node struct {
	name   string
	mode   filemode.FileMode
	hash   plumbing.Hash
	tree   *object.Tree      // for directories
	parent *object.Tree      // the directory holding entry; nil for the root
	entry  *object.TreeEntry // nil for the root
	file   *object.File      // for files and links, once read
	size   int64
}

// subtree returns the directory at dir, looked up once per TreeFS; a link is
// not followed. Callers hold mu.
func (t *TreeFS) subtree(dir string) (*object.Tree, error) {
	if tree, ok := t.dirs[dir]; ok {
		return tree, nil
	}
	parent, err := t.subtree(path.Dir(dir))
	if err != nil {
		return nil, err
	}
	base := path.Base(dir)
	if e, err := parent.FindEntry(base); err != nil || e.Mode != filemode.Dir {
		return nil, object.ErrDirectoryNotFound
	}
	tree, err := parent.Tree(base)
	if err != nil {
		return nil, err
	}
	t.dirs[dir] = tree
	return tree, nil
}

// lookup finds name without following a final symbolic link; callers hold mu.
func (t *TreeFS) lookup(op, name string) (*node, error) {
	if !fs.ValidPath(name) {
		return nil, &fs.PathError{Op: op, Path: name, Err: fs.ErrInvalid}
	}
	if name == "." {
		return &node{name: ".", mode: filemode.Dir, hash: t.root.Hash, tree: t.root}, nil
	}
	parent, err := t.subtree(path.Dir(name))
	if err != nil {
		return nil, &fs.PathError{Op: op, Path: name, Err: fs.ErrNotExist}
	}
	entry, err := parent.FindEntry(path.Base(name))
	if err != nil {
		return nil, &fs.PathError{Op: op, Path: name, Err: fs.ErrNotExist}
	}
	n := &node{name: path.Base(name), mode: entry.Mode, hash: entry.Hash, parent: parent, entry: entry}
	if entry.Mode == filemode.Dir {
		if n.tree, err = t.subtree(name); err != nil {
			return nil, &fs.PathError{Op: op, Path: name, Err: err}
		}
	}
	return n, nil
}

// read makes the blob of a file or link node readable and learns its size;
// callers hold mu.
func (t *TreeFS) read(op, name string, n *node) error {
	if n.file != nil || n.entry == nil || n.mode == filemode.Dir || n.mode == filemode.Submodule {
		return nil
	}
	f, err := n.parent.TreeEntryFile(n.entry)
	if err != nil {
		return &fs.PathError{Op: op, Path: name, Err: err}
	}
	n.file, n.size = f, f.Size
	return nil
}

// follow resolves name, following symbolic links within the tree.
func (t *TreeFS) follow(op, name string) (*node, error) {
	cur := name
	for range maxLinkHops {
		n, err := t.lookup(op, cur)
		if err != nil {
			return nil, err
		}
		if n.mode != filemode.Symlink {
			return n, nil
		}
		target, err := t.linkTarget(op, cur, n)
		if err != nil {
			return nil, err
		}
		next, ok := resolveWithin(cur, string(target))
		if !ok {
			return nil, &fs.PathError{Op: op, Path: name, Err: fmt.Errorf("symbolic link to %q leaves the tree: %w", target, fs.ErrPermission)}
		}
		cur = next
	}
	return nil, &fs.PathError{Op: op, Path: name, Err: errors.New("too many levels of symbolic links")}
}

// resolveWithin joins a link target to the link's directory and reports
// whether the result stays inside the tree.
func resolveWithin(link, target string) (string, bool) {
	if strings.HasPrefix(target, "/") {
		return "", false
	}
	p := path.Join(path.Dir(link), target)
	if p == ".." || strings.HasPrefix(p, "../") {
		return "", false
	}
	return p, true
}

func readAll(f *object.File) ([]byte, error) {
	r, err := f.Reader()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}

// Open opens a file or directory, following symbolic links within the tree.
func (t *TreeFS) Open(name string) (fs.File, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n, err := t.follow("open", name)
	if err != nil {
		return nil, err
	}
	if n.mode == filemode.Dir {
		return &dirFile{info: t.info(n), entries: t.entries(name, n.tree)}, nil
	}
	if n.mode == filemode.Submodule {
		return nil, &fs.PathError{Op: "open", Path: name, Err: errors.New("is a git submodule")}
	}
	if err := t.read("open", name, n); err != nil {
		return nil, err
	}
	return &blobFile{fs: t, info: t.info(n), obj: n.file}, nil
}

// ReadDir lists a directory, sorted by name.
func (t *TreeFS) ReadDir(name string) ([]fs.DirEntry, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n, err := t.follow("readdir", name)
	if err != nil {
		return nil, err
	}
	if n.mode != filemode.Dir {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: errors.New("not a directory")}
	}
	return t.entries(name, n.tree), nil
}

// Stat describes name, following symbolic links within the tree.
func (t *TreeFS) Stat(name string) (fs.FileInfo, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n, err := t.follow("stat", name)
	if err != nil {
		return nil, err
	}
	if err := t.read("stat", name, n); err != nil {
		return nil, err
	}
	return t.info(n), nil
}

// Lstat describes name without following a final symbolic link.
func (t *TreeFS) Lstat(name string) (fs.FileInfo, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n, err := t.lookup("lstat", name)
	if err != nil {
		return nil, err
	}
	if err := t.read("lstat", name, n); err != nil {
		return nil, err
	}
	return t.info(n), nil
}

// ReadLink returns the target of a symbolic link as stored in git.
func (t *TreeFS) ReadLink(name string) (string, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n, err := t.lookup("readlink", name)
	if err != nil {
		return "", err
	}
	if n.mode != filemode.Symlink {
		return "", &fs.PathError{Op: "readlink", Path: name, Err: fs.ErrInvalid}
	}
	return t.linkTarget("readlink", name, n)
}

// maxLinkTarget bounds the target of a symbolic link, as PATH_MAX does: a
// link blob larger than that is refused unread.
const maxLinkTarget = 4096

// linkTarget reads the target of a symbolic-link node; callers hold mu.
func (t *TreeFS) linkTarget(op, name string, n *node) (string, error) {
	if err := t.read(op, name, n); err != nil {
		return "", err
	}
	if n.size > maxLinkTarget {
		return "", &fs.PathError{Op: op, Path: name, Err: fmt.Errorf("symbolic link target of %d bytes (more than %d); not read", n.size, maxLinkTarget)}
	}
	b, err := readAll(n.file)
	if err != nil {
		return "", &fs.PathError{Op: op, Path: name, Err: err}
	}
	return string(b), nil
}

// ContentID returns the git blob id of the named file, following symbolic
// links within the tree, without reading the blob: equal ids mean equal
// bytes.
func (t *TreeFS) ContentID(name string) (string, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n, err := t.follow("contentid", name)
	if err != nil {
		return "", err
	}
	switch n.mode {
	case filemode.Dir:
		return "", &fs.PathError{Op: "contentid", Path: name, Err: errors.New("is a directory")}
	case filemode.Submodule:
		return "", &fs.PathError{Op: "contentid", Path: name, Err: errors.New("is a git submodule")}
	}
	return n.hash.String(), nil
}

// entries lists a directory; dir is its path, so an entry can be described
// in full (its size needs the object header) when asked.
func (t *TreeFS) entries(dir string, tree *object.Tree) []fs.DirEntry {
	out := make([]fs.DirEntry, 0, len(tree.Entries))
	for _, e := range tree.Entries {
		out = append(out, dirEntry{fs: t, path: path.Join(dir, e.Name), name: e.Name, mode: goMode(e.Mode)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name() < out[j].Name() })
	return out
}

func (t *TreeFS) info(n *node) *fileInfo {
	fi := &fileInfo{name: n.name, mode: goMode(n.mode), size: n.size, when: t.when}
	if n.mode == filemode.Submodule {
		fi.sys = schema.GitSubmodule{Commit: n.hash.String()}
	}
	return fi
}

func goMode(m filemode.FileMode) fs.FileMode {
	switch m {
	case filemode.Dir:
		return fs.ModeDir | 0o555
	case filemode.Symlink:
		return fs.ModeSymlink | 0o777
	case filemode.Submodule:
		return fs.ModeIrregular
	case filemode.Executable:
		return 0o555
	default:
		return 0o444
	}
}

type fileInfo struct {
	name string
	mode fs.FileMode
	size int64
	when time.Time
	sys  any // schema.GitSubmodule for a submodule
}

func (i *fileInfo) Name() string       { return i.name }
func (i *fileInfo) Size() int64        { return i.size }
func (i *fileInfo) Mode() fs.FileMode  { return i.mode }
func (i *fileInfo) ModTime() time.Time { return i.when }
func (i *fileInfo) IsDir() bool        { return i.mode.IsDir() }
func (i *fileInfo) Sys() any           { return i.sys }

type dirEntry struct {
	fs         *TreeFS
	path, name string
	mode       fs.FileMode
}

func (d dirEntry) Name() string               { return d.name }
func (d dirEntry) IsDir() bool                { return d.mode.IsDir() }
func (d dirEntry) Type() fs.FileMode          { return d.mode.Type() }
func (d dirEntry) Info() (fs.FileInfo, error) { return d.fs.Lstat(d.path) }

// blobFile reads its content from the object store on first Read.
type blobFile struct {
	fs     *TreeFS
	info   *fileInfo
	obj    *object.File
	r      *bytes.Reader
	closed bool
}

func (f *blobFile) Stat() (fs.FileInfo, error) { return f.info, nil }

func (f *blobFile) Read(p []byte) (int, error) {
	if f.closed {
		return 0, fs.ErrClosed
	}
	if f.r == nil {
		f.fs.mu.Lock()
		b, err := readAll(f.obj)
		f.fs.mu.Unlock()
		if err != nil {
			return 0, err
		}
		f.r = bytes.NewReader(b)
	}
	return f.r.Read(p)
}

func (f *blobFile) Close() error { f.closed = true; return nil }

type dirFile struct {
	info    *fileInfo
	entries []fs.DirEntry
	off     int
}

func (d *dirFile) Stat() (fs.FileInfo, error) { return d.info, nil }
func (d *dirFile) Read([]byte) (int, error) {
	return 0, &fs.PathError{Op: "read", Path: d.info.name, Err: errors.New("is a directory")}
}
func (d *dirFile) Close() error { return nil }

// ReadDir implements fs.ReadDirFile.
func (d *dirFile) ReadDir(n int) ([]fs.DirEntry, error) {
	rest := d.entries[d.off:]
	if n <= 0 {
		d.off = len(d.entries)
		return rest, nil
	}
	if len(rest) == 0 {
		return nil, io.EOF
	}
	if n > len(rest) {
		n = len(rest)
	}
	d.off += n
	return rest[:n], nil
}
