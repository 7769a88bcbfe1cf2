package source

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/go-git/go-billy/v5/osfs"
	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/storer"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/storage/filesystem"
	"github.com/go-git/go-git/v5/storage/memory"
)

// Defaults of MirrorConfig.
const (
	DefaultBranch  = "main"
	DefaultTimeout = 30 * time.Second
	// DefaultMaxFetchBytes bounds the packfile of one fetch.
	DefaultMaxFetchBytes = 1 << 30
)

// remoteName is the mirror's one remote.
const remoteName = "origin"

var (
	// ErrBranchNotFound is returned by Sync when the remote has no such
	// branch (or no branches at all).
	ErrBranchNotFound = errors.New("branch not found")
	// ErrOtherRemote is returned by OpenMirror when the directory already
	// mirrors another URL.
	ErrOtherRemote = errors.New("directory mirrors another remote")
)

// MirrorConfig configures a Mirror.
type MirrorConfig struct {
	// URL is the remote: a local path (worktree or bare repository),
	// file://, git://, http(s)://, ssh:// or scp-like user@host:path. A
	// local repository is read through git-upload-pack, so it needs git
	// installed.
	// Credentials in an HTTP(S) URL are moved into Credentials (which win
	// when both are given) and never stored on disk.
	URL string
	// Branch is the one branch mirrored (default "main").
	Branch string
	// Dir holds the bare clone; it is created when missing.
	Dir string
	// Credentials authenticate to the remote.
	Credentials Credentials
	// CABundle is PEM certificates trusted for https in addition to the
	// system's.
	CABundle []byte
	// Timeout bounds each network call, listing refs and fetching
	// (default 30s). A first fetch of a large repository needs more.
	Timeout time.Duration
	// MaxFetchBytes bounds the packfile one fetch may receive, counted as it
	// is written to disk (default 1 GiB; negative is no bound). A larger
	// fetch fails with a *PackTooLargeError, and the partial pack is removed.
	MaxFetchBytes int64
	// Logger receives a line per fetch; nil discards.
	Logger *slog.Logger
}

// SyncResult is what a Sync found.
type SyncResult struct {
	// Head is the branch head after the sync; Previous the head before ("" on
	// the first sync).
	Head, Previous Hash
	// Fetched reports that a fetch ran, because the remote's head was not
	// the local one; false means the remote was only asked for its refs.
	Fetched bool
	// Forced reports that the previous head is not an ancestor of the new
	// one: the branch was force-pushed or rewritten. The previous commit
	// stays readable.
	Forced bool
}

// Changed reports whether the head moved.
func (r SyncResult) Changed() bool { return r.Head != r.Previous }

// Mirror keeps a bare clone of one branch of a remote, with full history, and
// reads commits straight from its objects. The branch is tracked as
// refs/remotes/origin/<branch>; nothing is ever deleted, so every commit once
// fetched stays readable, across restarts and with the remote gone.
//
// All methods are safe for concurrent use. Access to the object store is
// serialised, including the lazy reads of a Commit's Tree, so a tree may be
// read while Sync fetches. One Sync runs at a time; others wait for it.
type Mirror struct {
	ep       endpoint
	redacted string
	branch   string
	dir      string
	creds    Credentials
	caBundle []byte
	timeout  time.Duration
	maxFetch int64 // 0 is no bound
	log      *slog.Logger

	store *lockedStorer
	repo  *git.Repository

	// auth is built when the mirror opens and again when the key or
	// known_hosts file changes (decrypting a key is slow on purpose).
	authMu    sync.Mutex
	auth      transport.AuthMethod
	authStamp string

	// syncing holds a token while a network operation that may write the
	// store runs. A fetch abandoned on timeout keeps it until it ends.
	syncing chan struct{}
}

// OpenMirror opens the mirror in cfg.Dir, or initialises an empty one there
// when the directory is missing or empty. It does not touch the network:
// the first Sync fetches. A directory that mirrors another URL is an error
// (ErrOtherRemote), as is a non-empty directory that is not a bare repository.
func OpenMirror(cfg MirrorConfig) (*Mirror, error) {
	if cfg.Dir == "" {
		return nil, errors.New("open mirror: no directory given")
	}
	ep, creds, err := parseEndpoint(cfg.URL, cfg.Credentials)
	if err != nil {
		return nil, fmt.Errorf("open mirror: %w", scrubError(err, cfg.Credentials.secrets()))
	}
	m := &Mirror{
		ep:       ep,
		redacted: RedactURL(ep.url),
		branch:   cfg.Branch,
		dir:      cfg.Dir,
		creds:    creds,
		caBundle: cfg.CABundle,
		timeout:  cfg.Timeout,
		maxFetch: cfg.MaxFetchBytes,
		log:      cfg.Logger,
		syncing:  make(chan struct{}, 1),
	}
	if m.branch == "" {
		m.branch = DefaultBranch
	}
	if err := m.trackingRef().Validate(); err != nil || strings.HasPrefix(m.branch, "refs/") {
		return nil, fmt.Errorf("open mirror: invalid branch name %q", m.branch)
	}
	if m.timeout <= 0 {
		m.timeout = DefaultTimeout
	}
	switch {
	case m.maxFetch == 0:
		m.maxFetch = DefaultMaxFetchBytes
	case m.maxFetch < 0:
		m.maxFetch = 0
	}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	if _, err := m.authMethod(); err != nil {
		return nil, m.errorf("open mirror of %s: %w", m.redacted, err)
	}
	if err := m.openStore(); err != nil {
		return nil, m.errorf("open mirror %s of %s: %w", m.dir, m.redacted, err)
	}
	if m.ep.protocol == "file" && m.isEmpty() {
		// A first start on a local path that holds no repository (a typo)
		// fails now rather than at every retry. A mirror that has commits
		// opens whatever became of the path: it serves what it has.
		if _, err := os.Stat(m.ep.localPath); err != nil {
			return nil, fmt.Errorf("open mirror of %s: %w", m.redacted, err)
		}
		if _, ok := findGitDir(m.ep.localPath); !ok {
			return nil, fmt.Errorf("open mirror of %s: not a git repository", m.redacted)
		}
	}
	return m, nil
}

func (m *Mirror) openStore() error {
	entries, err := os.ReadDir(m.dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if err := os.MkdirAll(m.dir, 0o750); err != nil {
			return err
		}
	case err != nil:
		return err
	}
	disk := filesystem.NewStorage(osfs.New(m.dir), cache.NewObjectLRUDefault())
	m.store = newLockedStorer(disk)
	m.store.maxPack = m.maxFetch
	if len(entries) == 0 {
		if _, err := git.Init(disk, nil); err != nil {
			return err
		}
		m.repo, err = git.Open(m.store, nil)
		if err != nil {
			return err
		}
		_, err = m.repo.CreateRemote(&config.RemoteConfig{Name: remoteName, URLs: []string{m.ep.url}})
		if err != nil {
			return err
		}
	} else {
		if !isBareRepository(m.dir) {
			return errors.New("the directory is neither empty nor a bare git repository")
		}
		if m.repo, err = git.Open(m.store, nil); err != nil {
			return err
		}
		remote, err := m.repo.Remote(remoteName)
		if errors.Is(err, git.ErrRemoteNotFound) && m.isEmpty() {
			// Initialised, then interrupted before the remote was added.
			remote, err = m.repo.CreateRemote(&config.RemoteConfig{Name: remoteName, URLs: []string{m.ep.url}})
		}
		if errors.Is(err, git.ErrRemoteNotFound) {
			return errors.New("the directory is a git repository but not a mirror (it has no remote origin)")
		}
		if err != nil {
			return err
		}
		if have := remote.Config().URLs[0]; have != m.ep.url {
			return fmt.Errorf("%w: it mirrors %s", ErrOtherRemote, RedactURL(have))
		}
	}
	// HEAD names the mirrored branch, so git commands run in the directory
	// (git log, git show) read it by default.
	return m.store.SetReference(plumbing.NewSymbolicReference(plumbing.HEAD, m.trackingRef()))
}

// isEmpty reports whether the repository has no references but HEAD.
func (m *Mirror) isEmpty() bool {
	refs, err := m.repo.References()
	if err != nil {
		return false
	}
	defer refs.Close()
	for {
		ref, err := refs.Next()
		if err != nil {
			return true
		}
		if ref.Name() != plumbing.HEAD {
			return false
		}
	}
}

// isBareRepository reports whether dir looks like a bare repository.
func isBareRepository(dir string) bool {
	for _, name := range []string{"HEAD", "objects", "refs"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			return false
		}
	}
	return true
}

// authMethod returns the transport's authentication, built anew when a
// file it comes from has changed since it was last built.
func (m *Mirror) authMethod() (transport.AuthMethod, error) {
	m.authMu.Lock()
	defer m.authMu.Unlock()
	var stamp strings.Builder
	for _, f := range []string{m.creds.SSHKeyFile, m.creds.KnownHostsFile} {
		if st, err := os.Stat(f); f != "" && err == nil {
			fmt.Fprintf(&stamp, "%s %d %d\n", f, st.Size(), st.ModTime().UnixNano())
		}
	}
	if m.auth != nil && stamp.String() == m.authStamp {
		return m.auth, nil
	}
	auth, err := authMethod(m.ep, m.creds, m.timeout)
	if err != nil {
		return nil, err
	}
	m.auth, m.authStamp = auth, stamp.String()
	return auth, nil
}

// trackingRef is where the mirror keeps the branch head.
func (m *Mirror) trackingRef() plumbing.ReferenceName {
	return plumbing.NewRemoteReferenceName(remoteName, m.branch)
}

// errorf formats an error and scrubs the credentials' secrets from it.
func (m *Mirror) errorf(format string, args ...any) error {
	return scrubError(fmt.Errorf(format, args...), m.creds.secrets())
}

// Repository is the mirror's repository. Its storer is the mirror's, so any
// use of it is serialised with Sync; it has no worktree.
func (m *Mirror) Repository() *git.Repository { return m.repo }

// URL is the remote's URL with credentials removed, for logs and status.
func (m *Mirror) URL() string { return m.redacted }

// Branch is the mirrored branch.
func (m *Mirror) Branch() string { return m.branch }

// Head is the branch head as last fetched, from local refs: it needs no
// network and survives restarts. ok is false before the first fetch.
func (m *Mirror) Head() (hash Hash, ok bool) {
	ref, err := m.store.Reference(m.trackingRef())
	if err != nil {
		return "", false
	}
	return Hash(ref.Hash().String()), true
}

// LocalGitDir returns the git directory of the remote when the remote is a
// local repository (its common directory, for a linked worktree), the place
// to watch for new commits. ok is false for network remotes and when the
// path holds no repository.
func (m *Mirror) LocalGitDir() (string, bool) {
	if m.ep.protocol != "file" {
		return "", false
	}
	return findGitDir(m.ep.localPath)
}

// findGitDir locates the git directory of a worktree or bare repository.
func findGitDir(p string) (string, bool) {
	dotgit := filepath.Join(p, ".git")
	if st, err := os.Stat(dotgit); err == nil && st.IsDir() {
		return dotgit, true
	} else if err == nil {
		b, err := os.ReadFile(dotgit)
		dir, ok := strings.CutPrefix(strings.TrimSpace(string(b)), "gitdir:")
		if err != nil || !ok {
			return "", false
		}
		return commonDir(resolveFrom(p, strings.TrimSpace(dir))), true
	}
	if isBareRepository(p) {
		return commonDir(p), true
	}
	return "", false
}

// commonDir follows a linked worktree's git directory to the repository's,
// where the branches are.
func commonDir(gitDir string) string {
	b, err := os.ReadFile(filepath.Join(gitDir, "commondir"))
	if err != nil {
		return gitDir
	}
	return resolveFrom(gitDir, strings.TrimSpace(string(b)))
}

func resolveFrom(base, p string) string {
	if !filepath.IsAbs(p) {
		p = filepath.Join(base, p)
	}
	return filepath.Clean(p)
}

// Sync brings the branch up to date with the remote. It lists the remote's
// refs and, when the branch head differs from the local one, fetches that
// branch with full history. Each network call is bounded by the mirror's
// Timeout (and ctx). A remote without the branch is ErrBranchNotFound.
// On error nothing local changes, except that a fetch abandoned on timeout
// may still complete in the background; the next Sync waits for it (for at
// most Timeout). A listing abandoned on timeout (only an SSH handshake can
// ignore the deadline) ends when its connection does.
func (m *Mirror) Sync(ctx context.Context) (SyncResult, error) {
	wait := time.NewTimer(m.timeout)
	defer wait.Stop()
	select {
	case m.syncing <- struct{}{}:
	case <-ctx.Done():
		return SyncResult{}, m.errorf("sync %s: waiting for the previous sync: %w", m.redacted, ctx.Err())
	case <-wait.C:
		return SyncResult{}, m.errorf("sync %s: the previous fetch has not ended after %v", m.redacted, m.timeout)
	}
	release := true
	defer func() {
		if release {
			<-m.syncing
		}
	}()

	var res SyncResult
	res.Previous, _ = m.Head()
	auth, err := m.authMethod()
	if err != nil {
		return res, m.errorf("sync %s: %w", m.redacted, err)
	}
	remoteHead, err := m.remoteHead(ctx, auth)
	if err != nil {
		return res, err
	}
	if Hash(remoteHead) == res.Previous && m.hasCommit(remoteHead) {
		res.Head = res.Previous
		m.log.Debug("git branch unchanged", "url", m.redacted, "branch", m.branch, "head", remoteHead)
		return res, nil
	}

	fctx, cancel := context.WithTimeout(ctx, m.timeout)
	defer cancel()
	done := make(chan error, 1)
	release = false // the fetch releases the token when it ends
	go func() {
		defer func() { <-m.syncing }()
		done <- m.fetch(fctx, auth)
	}()
	select {
	case err = <-done:
	case <-fctx.Done():
		err = fctx.Err()
	}
	if err != nil {
		return res, m.networkError(fctx, "fetch "+m.branch+" from", err)
	}
	head, ok := m.Head()
	if !ok {
		return res, m.errorf("fetch %s from %s: no %s after the fetch", m.branch, m.redacted, m.trackingRef())
	}
	res.Head, res.Fetched = head, true
	if res.Previous != "" && res.Previous != head {
		anc, err := m.IsAncestor(string(res.Previous), string(head))
		if err != nil {
			return res, m.errorf("fetch %s from %s: %w", m.branch, m.redacted, err)
		}
		res.Forced = !anc
	}
	m.log.Info("git branch fetched", "url", m.redacted, "branch", m.branch,
		"head", head, "previous", res.Previous, "forced", res.Forced)
	return res, nil
}

// remoteHead lists the remote's refs and returns the branch's hash. Listing
// touches no local state, so it runs unlocked; a listing abandoned on
// timeout is left to end on its own.
func (m *Mirror) remoteHead(ctx context.Context, auth transport.AuthMethod) (string, error) {
	if head, ok, err := m.localHead(); ok {
		return head, err
	}
	ctx, cancel := context.WithTimeout(ctx, m.timeout)
	defer cancel()
	type listing struct {
		refs []*plumbing.Reference
		err  error
	}
	ch := make(chan listing, 1)
	go func() {
		remote := git.NewRemote(memory.NewStorage(), &config.RemoteConfig{Name: remoteName, URLs: []string{m.ep.url}})
		refs, err := remote.ListContext(ctx, &git.ListOptions{Auth: auth, CABundle: m.caBundle})
		ch <- listing{refs, err}
	}()
	var l listing
	select {
	case l = <-ch:
	case <-ctx.Done():
		l.err = ctx.Err()
	}
	if errors.Is(l.err, transport.ErrEmptyRemoteRepository) {
		return "", m.branchNotFound(true)
	}
	if l.err != nil {
		return "", m.networkError(ctx, "list refs of", l.err)
	}
	want := plumbing.NewBranchReferenceName(m.branch)
	for _, ref := range l.refs {
		if ref.Name() == want && ref.Type() == plumbing.HashReference {
			return ref.Hash().String(), nil
		}
	}
	return "", m.branchNotFound(false)
}

// localHead reads the branch of a local remote from its refs, as a listing
// would report it, without running git-upload-pack for the listing; ok is
// false for a network remote and when the refs cannot be read that way (a
// reftable), and the caller lists them.
func (m *Mirror) localHead() (head string, ok bool, err error) {
	dir, isLocal := m.LocalGitDir()
	if !isLocal {
		return "", false, nil
	}
	if st, err := os.Stat(filepath.Join(dir, "reftable")); err == nil && st.IsDir() {
		return "", false, nil
	}
	repo, err := git.PlainOpenWithOptions(dir, &git.PlainOpenOptions{EnableDotGitCommonDir: true})
	if err != nil {
		return "", false, nil
	}
	ref, err := repo.Reference(plumbing.NewBranchReferenceName(m.branch), true)
	switch {
	case errors.Is(err, plumbing.ErrReferenceNotFound):
		return "", true, m.branchNotFound(empty(repo))
	case err != nil:
		return "", false, nil
	}
	return ref.Hash().String(), true, nil
}

// branchNotFound is the ErrBranchNotFound of a remote without the branch,
// or without any (empty).
func (m *Mirror) branchNotFound(empty bool) error {
	if empty {
		return m.errorf("%w: %q at %s (the repository is empty)", ErrBranchNotFound, m.branch, m.redacted)
	}
	return m.errorf("%w: %q at %s", ErrBranchNotFound, m.branch, m.redacted)
}

// empty reports whether repo has no reference a listing would show.
func empty(repo *git.Repository) bool {
	refs, err := repo.References()
	if err != nil {
		return false
	}
	defer refs.Close()
	none := true
	_ = refs.ForEach(func(r *plumbing.Reference) error {
		if r.Type() == plumbing.HashReference {
			none = false
			return storer.ErrStop
		}
		return nil
	})
	return none
}

// fetch fetches the branch, its whole history and nothing else.
func (m *Mirror) fetch(ctx context.Context, auth transport.AuthMethod) error {
	remote, err := m.repo.Remote(remoteName)
	if err != nil {
		return err
	}
	spec := config.RefSpec(fmt.Sprintf("+%s:%s", plumbing.NewBranchReferenceName(m.branch), m.trackingRef()))
	err = remote.FetchContext(ctx, &git.FetchOptions{
		RemoteName: remoteName,
		RefSpecs:   []config.RefSpec{spec},
		Auth:       auth,
		CABundle:   m.caBundle,
		Tags:       git.NoTags,
	})
	switch {
	case errors.Is(err, git.NoErrAlreadyUpToDate):
		return nil
	case errors.Is(err, git.NoMatchingRefSpecError{}):
		return fmt.Errorf("%w: %q (deleted while fetching)", ErrBranchNotFound, m.branch)
	case err != nil:
		m.removeTempPacks()
	}
	return err
}

// removeTempPacks deletes the partial packs a failed fetch leaves behind
// (go-git keeps its temporary file when the pack does not parse). The caller
// holds the sync token, so no fetch is writing one.
func (m *Mirror) removeTempPacks() {
	tmps, _ := filepath.Glob(filepath.Join(m.dir, "objects", "pack", "tmp_pack_*"))
	for _, f := range tmps {
		if err := os.Remove(f); err != nil {
			m.log.Warn("cannot remove a partial pack", "file", f, "error", err)
		}
	}
}

// networkError wraps err from a network operation, saying so when it ran
// out of time.
func (m *Mirror) networkError(ctx context.Context, op string, err error) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return m.errorf("%s %s: no answer within %v: %w", op, m.redacted, m.timeout, context.DeadlineExceeded)
	}
	if ctx.Err() != nil {
		return m.errorf("%s %s: %w", op, m.redacted, ctx.Err())
	}
	return m.errorf("%s %s: %w", op, m.redacted, err)
}

func (m *Mirror) hasCommit(hash string) bool {
	if hash == "" {
		return false
	}
	_, err := m.repo.CommitObject(plumbing.NewHash(hash))
	return err == nil
}

// resolve maps the names of the mirrored branch ("", "HEAD", the branch,
// origin/<branch>, refs/heads/<branch>) to its head, keeping a suffix such
// as ~3 or ^2 (HEAD~3 is three commits before the head); other revisions (a
// hash, a short hash) pass through.
func (m *Mirror) resolve(rev string) (string, error) {
	if i := strings.IndexAny(rev, "~^"); i > 0 {
		base, err := m.resolve(rev[:i])
		if err != nil {
			return "", err
		}
		return base + rev[i:], nil
	}
	switch rev {
	case "", "HEAD", m.branch, remoteName + "/" + m.branch, plumbing.NewBranchReferenceName(m.branch).String(), m.trackingRef().String():
		h, ok := m.Head()
		if !ok {
			return "", fmt.Errorf("%w %q: branch %s of %s not fetched yet", ErrUnknownRevision, rev, m.branch, m.redacted)
		}
		return string(h), nil
	}
	return rev, nil
}

// ReadCommit reads a commit and its tree under subdir from local objects;
// see the package-level ReadCommit. rev may name the mirrored branch (see
// Head) or any commit fetched so far.
func (m *Mirror) ReadCommit(rev, subdir string) (*Commit, error) {
	r, err := m.resolve(rev)
	if err != nil {
		return nil, err
	}
	return ReadCommit(m.repo, r, subdir)
}

// IsAncestor reports whether commit a is an ancestor of commit b (or b
// itself), as `git merge-base --is-ancestor` does, from local objects.
func (m *Mirror) IsAncestor(a, b string) (bool, error) {
	ca, err := m.commit(a)
	if err != nil {
		return false, err
	}
	cb, err := m.commit(b)
	if err != nil {
		return false, err
	}
	return ca.IsAncestor(cb)
}

func (m *Mirror) commit(rev string) (*object.Commit, error) {
	r, err := m.resolve(rev)
	if err != nil {
		return nil, err
	}
	h, err := m.repo.ResolveRevision(plumbing.Revision(r))
	if err != nil {
		return nil, fmt.Errorf("%w %q: %v", ErrUnknownRevision, rev, err)
	}
	c, err := m.repo.CommitObject(*h)
	if err != nil {
		return nil, fmt.Errorf("%w %q: %v", ErrUnknownRevision, rev, err)
	}
	return c, nil
}

// FirstParent returns the first parent of the commit hash from local
// objects; false for a root commit or a commit not fetched.
func (m *Mirror) FirstParent(hash Hash) (Hash, bool) {
	c, err := m.repo.CommitObject(plumbing.NewHash(string(hash)))
	if err != nil || len(c.ParentHashes) == 0 {
		return "", false
	}
	return Hash(c.ParentHashes[0].String()), true
}
