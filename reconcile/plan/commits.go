package plan

import (
	"context"
	"fmt"
	"path"
	"path/filepath"

	"github.com/gitmesh/gitmesh/reconcile/pipeline"
	"github.com/gitmesh/gitmesh/reconcile/source"
	"github.com/gitmesh/gitmesh/schema"
)

// ReadCommit reads a commit's policy directory; source.ReadCommit and
// (*source.Mirror).ReadCommit are such functions. An unknown revision is
// source.ErrUnknownRevision.
type ReadCommit func(rev, subdir string) (*source.Commit, error)

// InvalidSideError is a side of a comparison that has errors: it cannot be
// compared. Result holds its findings.
type InvalidSideError struct {
	Label   string // BASE or HEAD
	Commit  source.Hash
	Subject string
	Result  *pipeline.Result
}

func (e *InvalidSideError) Error() string {
	errs, _ := e.Result.Count()
	return fmt.Sprintf("%s %s (%s) is invalid: %d error(s)", e.Label, e.Commit.Short(), e.Subject, errs)
}

// RevisionError is a side that cannot be read: an unknown revision (it
// wraps source.ErrUnknownRevision) or a tree that does not load.
type RevisionError struct {
	Label string
	Err   error
}

func (e *RevisionError) Error() string { return e.Label + ": " + e.Err.Error() }
func (e *RevisionError) Unwrap() error { return e.Err }

// Commits reads baseRev and headRev with read, runs each through p (head
// with base as its prev, so that it reuses what the change cannot reach)
// and compares them: what `gitmesh diff` and GET /diff show. dir is the
// policy directory within the repository ("" for its root).
func Commits(ctx context.Context, p *pipeline.Pipeline, read ReadCommit, dir, baseRev, headRev string) (*Plan, error) {
	side := func(label, rev string, prev *pipeline.Result) (Side, error) {
		c, err := read(rev, dir)
		if err != nil {
			return Side{}, &RevisionError{Label: label, Err: err}
		}
		tree := schema.Tree{FS: c.Tree}
		if dir != "" {
			tree.Prefix = path.Clean(filepath.ToSlash(dir))
		}
		res, err := p.Run(ctx, []schema.Tree{tree}, prev)
		if err != nil {
			return Side{}, &RevisionError{Label: label + " " + c.Hash.Short(), Err: err}
		}
		if !res.Valid() {
			return Side{}, &InvalidSideError{Label: label, Commit: c.Hash, Subject: c.Subject, Result: res}
		}
		return Side{Rev: rev, Commit: c.Hash, Subject: c.Subject, Result: res}, nil
	}
	base, err := side("BASE", baseRev, nil)
	if err != nil {
		return nil, err
	}
	head, err := side("HEAD", headRev, base.Result)
	if err != nil {
		return nil, err
	}
	return Compare(base, head), nil
}
