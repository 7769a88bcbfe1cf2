package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/spf13/cobra"

	"github.com/gitmesh/gitmesh/reconcile/pipeline"
	"github.com/gitmesh/gitmesh/reconcile/plan"
	"github.com/gitmesh/gitmesh/reconcile/source"
)

type diffOptions struct {
	repo   string
	path   string
	format string
	limits limitFlags
}

func newDiffCmd() *cobra.Command {
	var o diffOptions
	cmd := &cobra.Command{
		Use:   "diff BASE [HEAD]",
		Short: "Show what a change does to the resources and to each proxy's Envoy config",
		Long: `Diff reads two commits of a git repository straight from its objects, checks
each as gitmesh validate does, and prints what changes from BASE to HEAD
(default HEAD): the resources added, removed and changed, field by field, and
each proxy whose Envoy configuration changes, with its listeners, clusters,
routes, endpoints and secrets added, removed or changed. It needs no network.

BASE and HEAD are any revision git names: a sha, a branch, a tag, HEAD~3,
origin/main. --format markdown prints a plan to post on a pull request.

Exit status: 0 no change, 1 changes, 2 an invalid side (its findings go to
stderr), an unknown revision, or a usage or I/O error.`,
		Example: `  gitmesh diff main
  gitmesh diff --path policies origin/main HEAD
  gitmesh diff --path policies --format markdown "$BASE_SHA" "$HEAD_SHA" > plan.md`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			head := "HEAD"
			if len(args) == 2 {
				head = args[1]
			}
			return runDiff(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), o, args[0], head)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.repo, "repo", ".", "the git repository to read the commits from")
	f.StringVar(&o.path, "path", "", "the policy directory within the repository (default: its root)")
	f.StringVarP(&o.format, "format", "o", "text", "output format: text, json or markdown")
	o.limits.bind(f)
	_ = cmd.RegisterFlagCompletionFunc("format", cobra.FixedCompletions(plan.Formats, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

func runDiff(ctx context.Context, stdout, stderr io.Writer, o diffOptions, baseRev, headRev string) error {
	if !slices.Contains(plan.Formats, o.format) {
		return usageError("unknown --format %q: use one of %v", o.format, plan.Formats)
	}
	repo, err := source.OpenRepository(o.repo)
	if err != nil {
		return &exitError{code: exitUsage, err: err}
	}
	// The cache lets HEAD reuse what BASE loaded and translated of
	// everything the change does not reach.
	p, err := pipeline.New(pipeline.Options{Limits: o.limits.options(), Cache: true})
	if err != nil {
		return err
	}
	read := func(rev, dir string) (*source.Commit, error) { return source.ReadCommit(repo, rev, dir) }
	pl, err := plan.Commits(ctx, p, read, o.path, baseRev, headRev)
	var invalid *plan.InvalidSideError
	var unreadable *plan.RevisionError
	switch {
	case errors.As(err, &invalid):
		fmt.Fprintf(stderr, "gitmesh: %s %s (%s) is invalid:\n", invalid.Label, invalid.Commit.Short(), invalid.Subject)
		_ = reportText(stderr, invalid.Result)
		return &exitError{code: exitUsage}
	case errors.As(err, &unreadable):
		return &exitError{code: exitUsage, err: err}
	case err != nil:
		return err
	}
	if err := plan.Write(stdout, pl, o.format); err != nil {
		return &exitError{code: exitUsage, err: err}
	}
	if pl.Changed() {
		return failed()
	}
	return nil
}
