package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	gogit "github.com/go-git/go-git/v5"
	"github.com/spf13/pflag"

	"github.com/gitmesh/gitmesh/reconcile/source"
	"github.com/gitmesh/gitmesh/schema"
)

// treeFlags choose where policies are read from: PATH arguments, or a commit
// of a git repository read straight from its objects.
type treeFlags struct {
	repo, rev, path string
	// verifyCommits is a keyring file: with --repo, the commit must carry an
	// OpenPGP signature by one of its keys. Bound by validate only.
	verifyCommits string
	flags         *pflag.FlagSet // to tell a --rev given from its default
}

func (t *treeFlags) bind(f *pflag.FlagSet) {
	t.flags = f
	f.StringVar(&t.repo, "repo", "", "read a commit from the git repository in this directory instead of files")
	f.StringVar(&t.rev, "rev", "HEAD", "with --repo: the revision to read")
	f.StringVar(&t.path, "path", "", "with --repo: the policy directory within the repository")
}

// where names what the trees of args are, for messages.
func (t *treeFlags) where(args []string) string {
	if t.repo != "" {
		return fmt.Sprintf("%s of %s", orRoot(t.path), t.rev)
	}
	if len(args) == 0 {
		return "."
	}
	return strings.Join(args, ", ")
}

// orRoot names a directory of a repository for people.
func orRoot(path string) string {
	if path == "" || path == "." {
		return "the root"
	}
	return path
}

// limitFlags bind the loader's limits, which validate, diff, render and
// serve share.
type limitFlags struct {
	maxFileBytes       int64
	maxFiles, maxDepth int
}

func (l *limitFlags) bind(f *pflag.FlagSet) {
	f.Int64Var(&l.maxFileBytes, "max-file-size", schema.DefaultMaxFileBytes, "refuse policy files larger than this many bytes, from their size, unread")
	f.IntVar(&l.maxFiles, "max-files", schema.DefaultMaxFiles, "refuse a tree with more files than this under the policy path, before loading any")
	f.IntVar(&l.maxDepth, "max-dir-depth", schema.DefaultMaxDirDepth, "refuse directories nested deeper than this under the policy path")
}

// options are the loader options the flags ask for.
func (l limitFlags) options() schema.Options {
	return schema.Options{MaxFileBytes: l.maxFileBytes, MaxFiles: l.maxFiles, MaxDirDepth: l.maxDepth}
}

// trees opens the policy trees. With joinPrefix, findings name files joined
// with the directory the user gave (repository-relative for --repo);
// otherwise relative to it. A file argument is always named as typed. The
// returned func releases the trees.
func (t *treeFlags) trees(args []string, joinPrefix bool) ([]schema.Tree, func(), error) {
	if t.repo == "" {
		for _, name := range []string{"path", "rev", "verify-commits"} {
			if t.flags != nil && t.flags.Changed(name) {
				return nil, nil, usageError("--%s reads a commit of a repository: give --repo too (or PATH arguments without --%s)", name, name)
			}
		}
	}
	if t.repo != "" {
		if len(args) > 0 {
			return nil, nil, usageError("--repo reads a commit: give --path instead of PATH arguments")
		}
		repo, err := source.OpenRepository(t.repo)
		if err != nil {
			return nil, nil, &exitError{code: exitUsage, err: err}
		}
		c, err := source.ReadCommit(repo, t.rev, t.path)
		if err != nil {
			return nil, nil, &exitError{code: exitUsage, err: err}
		}
		if t.verifyCommits != "" {
			if err := verifyCommit(repo, string(c.Hash), t.verifyCommits); err != nil {
				return nil, nil, err
			}
		}
		tree := schema.Tree{FS: c.Tree}
		if joinPrefix && t.path != "" {
			tree.Prefix = filepath.ToSlash(filepath.Clean(t.path))
		}
		return []schema.Tree{tree}, func() {}, nil
	}
	if len(args) == 0 {
		args = []string{"."}
	}
	var trees []schema.Tree
	var roots []*os.Root
	release := func() {
		for _, r := range roots {
			r.Close()
		}
	}
	for _, arg := range args {
		info, err := os.Stat(arg)
		if err != nil {
			release()
			return nil, nil, &exitError{code: exitUsage, err: err}
		}
		dir, files := arg, []string(nil)
		if !info.IsDir() {
			dir, files = filepath.Dir(arg), []string{filepath.Base(arg)}
		}
		// os.Root confines reads to dir: symbolic links cannot leave it.
		root, err := os.OpenRoot(dir)
		if err != nil {
			release()
			return nil, nil, &exitError{code: exitUsage, err: err}
		}
		roots = append(roots, root)
		tree := schema.Tree{FS: root.FS(), Files: files}
		if joinPrefix || files != nil {
			tree.Prefix = filepath.ToSlash(filepath.Clean(dir))
		}
		trees = append(trees, tree)
	}
	return trees, release, nil
}

// verifyCommit checks the signature of commit hash against the keyring
// file: a commit whose signature is not accepted fails (exit 1, before its
// tree is read), a keyring without a usable key is a usage error.
func verifyCommit(repo *gogit.Repository, hash, keyring string) error {
	v, err := source.NewVerifier(keyring)
	if err != nil {
		return &exitError{code: exitUsage, err: err}
	}
	_, err = v.VerifyCommit(repo, hash)
	var uv *source.UnverifiedError
	switch {
	case errors.As(err, &uv):
		return &exitError{code: exitFailed, err: err}
	case err != nil:
		return &exitError{code: exitUsage, err: err}
	}
	return nil
}
