// Package gittest makes real git repositories for tests with the git CLI,
// under a fixed identity and with the user's and system's git configuration
// ignored, so tests behave the same on every machine, and serves them on
// 127.0.0.1 over git's real protocols: git daemon (git://), git http-backend
// (http:// and https://) and git-upload-pack behind an SSH server (ssh://).
// Every server stops when its test ends.
package gittest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Env is the environment every git command of a test runs with.
func Env() []string {
	return append(os.Environ(),
		"GIT_AUTHOR_NAME=Ada", "GIT_AUTHOR_EMAIL=ada@example.com",
		"GIT_COMMITTER_NAME=Ada", "GIT_COMMITTER_EMAIL=ada@example.com",
		"GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1")
}

// Git runs git with args in dir and returns its trimmed output; a failure
// fails the test.
func Git(t testing.TB, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = Env()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// Init makes an empty repository with branch main in a new temporary
// directory and returns the directory.
func Init(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	Git(t, dir, "init", "-q", "-b", "main")
	return dir
}

// WriteFiles writes files (slash-separated names relative to dir, parents
// created).
func WriteFiles(t testing.TB, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// Commit writes files, stages everything and commits; it returns the new
// commit's hash.
func Commit(t testing.TB, dir, message string, files map[string]string) string {
	t.Helper()
	WriteFiles(t, dir, files)
	Git(t, dir, "add", "-A")
	Git(t, dir, "commit", "-q", "--allow-empty", "-m", message)
	return Git(t, dir, "rev-parse", "HEAD")
}

// Bare makes an empty bare repository whose HEAD names branch main, at
// repo.git in a new temporary directory, and returns its path. Serve the
// directory holding it (filepath.Dir) and fetch "repo.git" from there.
func Bare(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "repo.git")
	Git(t, filepath.Dir(dir), "init", "-q", "--bare", "-b", "main", dir)
	return dir
}

// Push pushes from the worktree to remote (a path or URL); with no refspec
// it pushes HEAD to main. A refspec starting with "+" forces.
func Push(t testing.TB, worktree, remote string, refspec ...string) {
	t.Helper()
	if len(refspec) == 0 {
		refspec = []string{"HEAD:refs/heads/main"}
	}
	Git(t, worktree, append([]string{"push", "-q", remote}, refspec...)...)
}

// gitProgram returns the path of a git program such as git-daemon, failing
// the test with what to install when it is missing.
func gitProgram(t testing.TB, name string) string {
	t.Helper()
	out, err := exec.Command("git", "--exec-path").Output()
	if err != nil {
		t.Fatalf("git is not installed: %v", err)
	}
	p := filepath.Join(strings.TrimSpace(string(out)), name)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s is not installed (%v); these tests serve real repositories with it: install it (it ships with git, or as a separate package such as git-daemon on some systems)", name, err)
	}
	return p
}
