package source

import (
	"context"
	"errors"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-git/go-git/v5/plumbing/transport"

	"github.com/gitmesh/gitmesh/reconcile/gittest"
)

// remote is a repository served one way, with what a mirror needs to reach
// it.
type remote struct {
	url   string
	creds Credentials
	ca    []byte
	// uploads counts upload-pack requests, where the transport can tell.
	uploads *atomic.Int64
}

// served makes a worktree with one commit and a bare repository it pushes
// to, and serves the bare one over transport. Servers stop when t ends.
func served(t *testing.T, transport string, work, bare string) remote {
	t.Helper()
	base, name := filepath.Dir(bare), filepath.Base(bare)
	switch transport {
	case "worktree":
		return remote{url: work}
	case "path":
		return remote{url: bare}
	case "file":
		return remote{url: "file://" + filepath.ToSlash(bare)}
	case "git":
		return remote{url: gittest.Daemon(t, base) + name}
	case "http":
		var n atomic.Int64
		url := gittest.HTTPBackend(t, base, gittest.HTTPOptions{Token: "tok-3f9a", OnRequest: countUploads(&n)})
		return remote{url: url + name, creds: Credentials{Token: "tok-3f9a"}, uploads: &n}
	case "https":
		var n atomic.Int64
		url, ca := gittest.HTTPSBackend(t, base, gittest.HTTPOptions{Username: "ada", Password: "pw-77c1", OnRequest: countUploads(&n)})
		return remote{url: url + name, creds: Credentials{Username: "ada", Password: "pw-77c1"}, ca: ca, uploads: &n}
	case "ssh":
		url, knownHosts, key := gittest.SSHServer(t, base)
		return remote{url: url + name, creds: Credentials{SSHKeyFile: key, KnownHostsFile: knownHosts}}
	}
	t.Fatalf("unknown transport %q", transport)
	return remote{}
}

// copyFile copies file into dir and returns the copy's path; "" stays "".
func copyFile(t *testing.T, file, dir string) string {
	t.Helper()
	if file == "" {
		return ""
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, filepath.Base(file))
	if err := os.WriteFile(out, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return out
}

func countUploads(n *atomic.Int64) func(*http.Request) {
	return func(r *http.Request) {
		if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/git-upload-pack") {
			n.Add(1)
		}
	}
}

// newRemote makes a worktree with one commit on main, pushed to a new bare
// repository.
func newRemote(t *testing.T) (work, bare, first string) {
	t.Helper()
	work = gittest.Init(t)
	first = gittest.Commit(t, work, "first", map[string]string{"policies/mesh.yaml": "type: Mesh\nname: one\n"})
	bare = gittest.Bare(t)
	gittest.Push(t, work, bare)
	return work, bare, first
}

func openMirror(t *testing.T, r remote, dir string) *Mirror {
	t.Helper()
	m, err := OpenMirror(MirrorConfig{URL: r.url, Dir: dir, Credentials: r.creds, CABundle: r.ca, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func mustSync(t *testing.T, m *Mirror) SyncResult {
	t.Helper()
	res, err := m.Sync(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func readFile(t *testing.T, m *Mirror, rev, name string) string {
	t.Helper()
	c, err := m.ReadCommit(rev, "policies")
	if err != nil {
		t.Fatal(err)
	}
	b, err := fs.ReadFile(c.Tree, name)
	if err != nil {
		t.Fatalf("%s:%s: %v", rev, name, err)
	}
	return string(b)
}

// TestMirror follows a branch over every transport: first clone, no-op,
// fast-forward, force push, then a restart with the remote gone.
func TestMirror(t *testing.T) {
	for _, tr := range []string{"worktree", "path", "file", "git", "http", "https", "ssh"} {
		t.Run(tr, func(t *testing.T) {
			t.Parallel()
			work, bare, first := newRemote(t)
			dir := filepath.Join(t.TempDir(), "mirror")
			publish := func(force bool) {
				if tr == "worktree" {
					return
				}
				spec := "HEAD:refs/heads/main"
				if force {
					spec = "+" + spec
				}
				gittest.Push(t, work, bare, spec)
			}
			var second, third string
			var cfg remote
			keep := t.TempDir()
			t.Run("live", func(t *testing.T) { // its servers stop when it ends
				cfg = served(t, tr, work, bare)
				// The key files outlive the server, as they would a restart.
				cfg.creds.SSHKeyFile = copyFile(t, cfg.creds.SSHKeyFile, keep)
				cfg.creds.KnownHostsFile = copyFile(t, cfg.creds.KnownHostsFile, keep)
				m := openMirror(t, cfg, dir)
				if h, ok := m.Head(); ok {
					t.Fatalf("Head before any sync = %s", h)
				}
				res := mustSync(t, m)
				if want := (SyncResult{Head: Hash(first), Fetched: true}); res != want {
					t.Fatalf("first sync = %+v, want %+v", res, want)
				}
				if got := readFile(t, m, "main", "mesh.yaml"); got != "type: Mesh\nname: one\n" {
					t.Errorf("mesh.yaml = %q", got)
				}

				var uploads int64
				if cfg.uploads != nil {
					uploads = cfg.uploads.Load()
				}
				if res := mustSync(t, m); res.Fetched || res.Head != Hash(first) || res.Previous != Hash(first) || res.Changed() {
					t.Errorf("sync without change = %+v", res)
				}
				if cfg.uploads != nil && cfg.uploads.Load() != uploads {
					t.Errorf("a sync without change fetched (%d upload-pack requests)", cfg.uploads.Load()-uploads)
				}

				second = gittest.Commit(t, work, "second", map[string]string{"policies/mesh.yaml": "type: Mesh\nname: two\n"})
				publish(false)
				if res := mustSync(t, m); res != (SyncResult{Head: Hash(second), Previous: Hash(first), Fetched: true}) {
					t.Errorf("fast-forward sync = %+v", res)
				}
				if got := readFile(t, m, "HEAD", "mesh.yaml"); got != "type: Mesh\nname: two\n" {
					t.Errorf("mesh.yaml after push = %q", got)
				}

				// Rewrite history: the branch goes back to first and on.
				gittest.Git(t, work, "reset", "-q", "--hard", first)
				third = gittest.Commit(t, work, "third", map[string]string{"policies/mesh.yaml": "type: Mesh\nname: three\n"})
				publish(true)
				if res := mustSync(t, m); res != (SyncResult{Head: Hash(third), Previous: Hash(second), Fetched: true, Forced: true}) {
					t.Errorf("sync after force push = %+v", res)
				}
				if got := readFile(t, m, second[:10], "mesh.yaml"); got != "type: Mesh\nname: two\n" {
					t.Errorf("overwritten commit's mesh.yaml = %q", got)
				}
				// Rewind to a commit the mirror already has: no objects to
				// fetch, but the head moves back.
				gittest.Git(t, work, "reset", "-q", "--hard", first)
				publish(true)
				if res := mustSync(t, m); res != (SyncResult{Head: Hash(first), Previous: Hash(third), Fetched: true, Forced: true}) {
					t.Errorf("sync after a rewind = %+v", res)
				}
				gittest.Git(t, work, "reset", "-q", "--hard", third)
				publish(true)
				if res := mustSync(t, m); res != (SyncResult{Head: Hash(third), Previous: Hash(first), Fetched: true}) {
					t.Errorf("sync forward again = %+v", res)
				}
				if anc, err := m.IsAncestor(first, "main"); err != nil || !anc {
					t.Errorf("IsAncestor(first, main) = %v, %v", anc, err)
				}
				if anc, err := m.IsAncestor(second, third); err != nil || anc {
					t.Errorf("IsAncestor(second, third) = %v, %v", anc, err)
				}
			})

			// A restart with the remote gone: the head and every commit are
			// still there, and Sync fails without changing them.
			if tr == "worktree" || tr == "path" || tr == "file" {
				if err := os.RemoveAll(work); err != nil {
					t.Fatal(err)
				}
				if err := os.RemoveAll(bare); err != nil {
					t.Fatal(err)
				}
			}
			m := openMirror(t, cfg, dir)
			if h, ok := m.Head(); !ok || h != Hash(third) {
				t.Fatalf("Head after restart = %s, %v; want %s", h, ok, third)
			}
			for rev, want := range map[string]string{"main": "three", second: "two", first: "one"} {
				if got := readFile(t, m, rev, "mesh.yaml"); got != "type: Mesh\nname: "+want+"\n" {
					t.Errorf("%s: mesh.yaml = %q", rev, got)
				}
			}
			if res, err := m.Sync(context.Background()); err == nil {
				t.Errorf("sync with the remote gone = %+v, want an error", res)
			}
			if h, _ := m.Head(); h != Hash(third) {
				t.Errorf("Head after a failed sync = %s", h)
			}
		})
	}
}

// TestMirrorSecrets checks that wrong or missing credentials fail with
// errors that name neither the secret given nor the one expected.
func TestMirrorSecrets(t *testing.T) {
	t.Parallel()
	_, bare, _ := newRemote(t)
	base := filepath.Dir(bare)
	const token, password, passphrase = "tok-right-81d2", "pw-right-44b0", "phrase-9e1c"
	secrets := []string{token, password, passphrase, "tok-wrong-a7", "pw-wrong-c3"}

	httpURL := gittest.HTTPBackend(t, base, gittest.HTTPOptions{Token: token}) + "repo.git"
	basicURL := gittest.HTTPBackend(t, base, gittest.HTTPOptions{Username: "ada", Password: password}) + "repo.git"
	sshURL, knownHosts, key := gittest.SSHServer(t, base)
	sshURL += "repo.git"
	wrongKey, _ := gittest.NewSSHKey(t, "")
	encrypted := encryptKey(t, key, passphrase) // the accepted key (encrypting is slow on purpose)

	for _, tc := range []struct {
		name  string
		url   string
		creds Credentials
		is    error // the error matches it, when set
	}{
		{"http no token", httpURL, Credentials{}, transport.ErrAuthenticationRequired},
		{"http wrong token", httpURL, Credentials{Token: "tok-wrong-a7"}, transport.ErrAuthenticationRequired},
		{"http wrong password in URL", strings.Replace(basicURL, "://", "://ada:pw-wrong-c3@", 1), Credentials{}, transport.ErrAuthenticationRequired},
		{"ssh wrong key", sshURL, Credentials{SSHKeyFile: wrongKey, KnownHostsFile: knownHosts}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m, err := OpenMirror(MirrorConfig{URL: tc.url, Dir: t.TempDir(), Credentials: tc.creds, Timeout: 10 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			_, err = m.Sync(context.Background())
			if err == nil {
				t.Fatal("sync succeeded")
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %q is not %q", err, tc.is)
			}
			for _, s := range secrets {
				if strings.Contains(err.Error(), s) {
					t.Errorf("error %q contains a secret", err)
				}
			}
			if cfg, _ := os.ReadFile(filepath.Join(m.dir, "config")); strings.Contains(string(cfg), "pw-wrong-c3") {
				t.Errorf("the mirror stored the URL's password:\n%s", cfg)
			}
		})
	}

	t.Run("right credentials", func(t *testing.T) {
		t.Parallel()
		for _, r := range []remote{
			{url: httpURL, creds: Credentials{Token: token}},
			{url: strings.Replace(basicURL, "://", "://ada:"+password+"@", 1)},
			{url: sshURL, creds: Credentials{SSHKeyFile: encrypted, SSHKeyPassphrase: passphrase, KnownHostsFile: knownHosts}},
		} {
			m := openMirror(t, r, t.TempDir())
			if res := mustSync(t, m); !res.Fetched {
				t.Errorf("%s: %+v", RedactURL(r.url), res)
			}
		}
	})

	t.Run("wrong passphrase", func(t *testing.T) {
		t.Parallel()
		_, err := OpenMirror(MirrorConfig{URL: sshURL, Dir: t.TempDir(),
			Credentials: Credentials{SSHKeyFile: encrypted, SSHKeyPassphrase: "pw-wrong-c3", KnownHostsFile: knownHosts}})
		if err == nil || strings.Contains(err.Error(), "pw-wrong-c3") {
			t.Errorf("OpenMirror with a wrong passphrase: %v", err)
		}
	})
}

// TestMirrorHostKey checks that SSH refuses a server whose key known_hosts
// does not hold, and that known_hosts is required.
func TestMirrorHostKey(t *testing.T) {
	t.Parallel()
	_, bare, _ := newRemote(t)
	url, _, key := gittest.SSHServer(t, filepath.Dir(bare))
	url += "repo.git"
	// known_hosts of another server on another port, and an empty one.
	_, otherKnownHosts, _ := gittest.SSHServer(t, t.TempDir())
	empty := filepath.Join(t.TempDir(), "known_hosts")
	os.WriteFile(empty, nil, 0o600)
	for name, kh := range map[string]string{"other host": otherKnownHosts, "empty": empty} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			m, err := OpenMirror(MirrorConfig{URL: url, Dir: t.TempDir(), Timeout: 10 * time.Second,
				Credentials: Credentials{SSHKeyFile: key, KnownHostsFile: kh}})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := m.Sync(context.Background()); err == nil || !strings.Contains(err.Error(), "key is unknown") {
				t.Errorf("sync with an unknown host key: %v", err)
			}
		})
	}
	if _, err := OpenMirror(MirrorConfig{URL: url, Dir: t.TempDir(), Credentials: Credentials{SSHKeyFile: key}}); err == nil || !strings.Contains(err.Error(), "known_hosts") {
		t.Errorf("ssh without known_hosts: %v", err)
	}
	m, err := OpenMirror(MirrorConfig{URL: url, Dir: t.TempDir(), Credentials: Credentials{SSHKeyFile: key, InsecureIgnoreHostKey: true}})
	if err != nil {
		t.Fatal(err)
	}
	mustSync(t, m)
}

func TestMirrorMissingBranch(t *testing.T) {
	t.Parallel()
	_, bare, _ := newRemote(t)
	url := gittest.HTTPBackend(t, filepath.Dir(bare), gittest.HTTPOptions{Username: "ada", Password: "pw-5d"})
	for _, tc := range []struct{ url, branch, want string }{
		{bare, "release", `"release" at ` + bare},
		{strings.Replace(url, "://", "://ada:pw-5d@", 1) + "repo.git", "team/next", `"team/next" at ` + url + "repo.git"},
		{gittest.Bare(t), "main", "empty"},
	} {
		m, err := OpenMirror(MirrorConfig{URL: tc.url, Branch: tc.branch, Dir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		_, err = m.Sync(context.Background())
		if !errors.Is(err, ErrBranchNotFound) || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "pw-5d") {
			t.Errorf("sync of a missing branch: %v; want ErrBranchNotFound naming %s", err, tc.want)
		}
		if _, err := m.ReadCommit("", ""); !errors.Is(err, ErrUnknownRevision) {
			t.Errorf("ReadCommit before any fetch: %v", err)
		}
	}
}

// TestMirrorTimeout syncs from servers that accept and never answer.
func TestMirrorTimeout(t *testing.T) {
	t.Parallel()
	addr := gittest.Silent(t)
	_, _, key := gittest.SSHServer(t, t.TempDir())
	for _, url := range []string{"git://" + addr + "/repo.git", "http://" + addr + "/repo.git", "ssh://git@" + addr + "/repo.git"} {
		t.Run(strings.Split(url, ":")[0], func(t *testing.T) {
			t.Parallel()
			m, err := OpenMirror(MirrorConfig{URL: url, Dir: t.TempDir(), Timeout: 300 * time.Millisecond,
				Credentials: Credentials{SSHKeyFile: key, InsecureIgnoreHostKey: true}})
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			_, err = m.Sync(context.Background())
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("sync from a silent server: %v, want a deadline error", err)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("sync took %v with a 300ms timeout", d)
			}
		})
	}
}

func TestOpenMirror(t *testing.T) {
	t.Parallel()
	_, bare, _ := newRemote(t)
	dir := filepath.Join(t.TempDir(), "state", "mirror")
	if _, err := OpenMirror(MirrorConfig{URL: bare, Dir: dir}); err != nil {
		t.Fatal(err)
	}
	_, err := OpenMirror(MirrorConfig{URL: "https://ada:pw-0b@example.com/policies.git", Dir: dir})
	if !errors.Is(err, ErrOtherRemote) || !strings.Contains(err.Error(), bare) ||
		!strings.Contains(err.Error(), "https://example.com/policies.git") || strings.Contains(err.Error(), "pw-0b") {
		t.Errorf("open a mirror of another URL: %v", err)
	}

	notRepo := t.TempDir()
	os.WriteFile(filepath.Join(notRepo, "x"), nil, 0o644)
	if _, err := OpenMirror(MirrorConfig{URL: bare, Dir: notRepo}); err == nil {
		t.Error("OpenMirror accepted a directory with other files")
	}
	if _, err := OpenMirror(MirrorConfig{URL: bare, Dir: t.TempDir(), Branch: "bad..name"}); err == nil {
		t.Error("OpenMirror accepted an invalid branch name")
	}
	if _, err := OpenMirror(MirrorConfig{URL: "ftp://example.com/x.git", Dir: t.TempDir()}); err == nil {
		t.Error("OpenMirror accepted ftp://")
	}
}

func TestLocalGitDir(t *testing.T) {
	t.Parallel()
	work, bare, _ := newRemote(t)
	linked := filepath.Join(t.TempDir(), "linked")
	gittest.Git(t, work, "worktree", "add", "-q", "-b", "other", linked)
	for url, want := range map[string]string{
		work:                        filepath.Join(work, ".git"),
		bare:                        bare,
		"file://" + bare:            bare,
		linked:                      filepath.Join(work, ".git"),
		"https://example.com/x.git": "",
		"git@example.com:org/x.git": "",
	} {
		m, err := OpenMirror(MirrorConfig{URL: url, Dir: t.TempDir(), Credentials: Credentials{InsecureIgnoreHostKey: true, Password: "x"}})
		if err != nil {
			t.Fatal(err)
		}
		got, ok := m.LocalGitDir()
		if got != want || ok != (want != "") {
			t.Errorf("LocalGitDir of %s = %q, %v; want %q", url, got, ok, want)
		}
	}
	// A local path that is no repository fails at once, not at each sync.
	none, plain := filepath.Join(t.TempDir(), "none"), t.TempDir()
	for path, want := range map[string]string{none: "no such file or directory", plain: "not a git repository"} {
		if _, err := OpenMirror(MirrorConfig{URL: path, Dir: t.TempDir()}); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("OpenMirror(%s): %v, want %q", path, err, want)
		}
	}
}

// TestMirrorConcurrentReads reads trees while syncs fetch new commits; the
// race detector checks the locking.
func TestMirrorConcurrentReads(t *testing.T) {
	t.Parallel()
	work, bare, first := newRemote(t)
	m := openMirror(t, remote{url: bare}, t.TempDir())
	mustSync(t, m)
	old, err := m.ReadCommit(first, "policies")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				c, err := m.ReadCommit("main", "policies")
				if err != nil {
					t.Error(err)
					return
				}
				for _, tree := range []fs.FS{c.Tree, old.Tree} {
					if _, err := fs.ReadFile(tree, "mesh.yaml"); err != nil {
						t.Error(err)
						return
					}
				}
				m.Head()
			}
		}()
	}
	for i := range 5 {
		gittest.Commit(t, work, "next", map[string]string{"policies/mesh.yaml": strings.Repeat("x", i+1)})
		gittest.Push(t, work, bare)
		mustSync(t, m)
	}
	cancel()
	wg.Wait()
	if got := readFile(t, m, "main", "mesh.yaml"); got != "xxxxx" {
		t.Errorf("mesh.yaml = %q", got)
	}
}

// TestMirrorLocalRemoteRefs: a local remote's branch is read from its refs,
// loose or packed, in a repository or a linked worktree of it, as a
// listing reports it.
func TestMirrorLocalRemoteRefs(t *testing.T) {
	t.Parallel()
	work, _, first := newRemote(t)
	gittest.Git(t, work, "pack-refs", "--all")
	m, err := OpenMirror(MirrorConfig{URL: work, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if res := mustSync(t, m); string(res.Head) != first {
		t.Fatalf("head from packed refs %s, want %s", res.Head, first[:12])
	}
	second := gittest.Commit(t, work, "second", map[string]string{"policies/mesh.yaml": "type: Mesh\nname: two\n"})
	if res := mustSync(t, m); string(res.Head) != second || !res.Fetched {
		t.Fatalf("head from the loose ref %s (fetched %v), want %s", res.Head, res.Fetched, second[:12])
	}
	if res := mustSync(t, m); res.Fetched {
		t.Error("an unchanged branch was fetched again")
	}
	// A linked worktree on another branch follows main through the
	// repository's common directory.
	linked := filepath.Join(t.TempDir(), "linked")
	gittest.Git(t, work, "worktree", "add", "-q", "-b", "side", linked)
	lm, err := OpenMirror(MirrorConfig{URL: linked, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if res := mustSync(t, lm); string(res.Head) != second {
		t.Errorf("head through a linked worktree %s, want %s", res.Head, second[:12])
	}
}
