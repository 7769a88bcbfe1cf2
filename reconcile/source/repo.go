package source

import (
	"errors"
	"fmt"
	"path"
	"strings"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// Hash is a commit's full hexadecimal object name.
type Hash string

// Short is the hash abbreviated to 12 characters, as gitmesh prints and
// versions it.
func (h Hash) Short() string { return string(h[:min(len(h), 12)]) }

// String is the full hash.
func (h Hash) String() string { return string(h) }

// Commit is a resolved commit and its policy tree.
type Commit struct {
	Hash    Hash
	Author  string
	Subject string
	Time    time.Time // committer time
	Parents []Hash    // first parent first
	Tree    *TreeFS
}

// ErrUnknownRevision is returned when a revision names no commit.
var ErrUnknownRevision = errors.New("unknown revision")

// OpenRepository opens the git repository at dir (a worktree, any directory
// inside one, or a bare repository).
func OpenRepository(dir string) (*git.Repository, error) {
	repo, err := git.PlainOpenWithOptions(dir, &git.PlainOpenOptions{DetectDotGit: true})
	if err != nil {
		return nil, fmt.Errorf("open git repository %s: %w", dir, err)
	}
	return repo, nil
}

// ReadCommit resolves rev (a branch, tag, sha or any revision git accepts
// that go-git understands) and returns the tree under subdir ("" or "." for the
// root) read straight from the object store.
func ReadCommit(repo *git.Repository, rev, subdir string) (*Commit, error) {
	h, err := repo.ResolveRevision(plumbing.Revision(rev))
	if err != nil {
		return nil, fmt.Errorf("%w %q: %v", ErrUnknownRevision, rev, err)
	}
	c, err := repo.CommitObject(*h)
	if err != nil {
		return nil, fmt.Errorf("%w %q: %v", ErrUnknownRevision, rev, err)
	}
	tree, err := c.Tree()
	if err != nil {
		return nil, fmt.Errorf("read tree of %s: %w", c.Hash, err)
	}
	sub := strings.Trim(path.Clean("/"+subdir), "/")
	if sub != "" {
		tree, err = tree.Tree(sub)
		if errors.Is(err, object.ErrDirectoryNotFound) {
			return nil, fmt.Errorf("commit %s has no directory %q", c.Hash.String()[:12], sub)
		}
		if err != nil {
			return nil, fmt.Errorf("read %q of %s: %w", sub, c.Hash, err)
		}
	}
	subject, _, _ := strings.Cut(c.Message, "\n")
	parents := make([]Hash, len(c.ParentHashes))
	for i, p := range c.ParentHashes {
		parents[i] = Hash(p.String())
	}
	return &Commit{
		Hash:    Hash(c.Hash.String()),
		Parents: parents,
		Author:  c.Author.Name,
		Subject: subject,
		Time:    c.Committer.When,
		Tree:    NewTreeFS(tree, c.Committer.When),
	}, nil
}
