package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/gitmesh/gitmesh/reconcile/source"
	"github.com/gitmesh/gitmesh/schema"
)

type validateOptions struct {
	format       string
	repo         string
	rev          string
	path         string
	maxFileBytes int64
}

func newValidateCmd() *cobra.Command {
	var o validateOptions
	cmd := &cobra.Command{
		Use:   "validate [PATH...]",
		Short: "Check policy files, or a commit, as the pull-request gate",
		Long: `Validate loads every *.yaml and *.yml file under the given files and
directories (default ".") as one policy set, checks each resource against its
JSON Schema and gitmesh's rules, and checks the resources against each other.
Every problem is reported in one pass, with file, line, column and JSON pointer.

With --repo and --rev it reads a commit straight from git objects, without a
checkout: what a CI job runs against a pull request's merge commit.

Exit status: 0 valid (warnings allowed), 1 invalid, 2 usage or I/O error.`,
		Example: `  gitmesh validate policies/
  gitmesh validate --format github .
  gitmesh validate --repo . --rev refs/pull/42/merge --path policies`,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runValidate(cmd.OutOrStdout(), o, args)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.format, "format", "o", "text", "output format: text, json, github or sarif")
	f.StringVar(&o.repo, "repo", "", "read a commit from the git repository in this directory instead of files")
	f.StringVar(&o.rev, "rev", "HEAD", "with --repo: the revision to check")
	f.StringVar(&o.path, "path", "", "with --repo: the policy directory within the repository")
	f.Int64Var(&o.maxFileBytes, "max-file-size", 8<<20, "refuse YAML files larger than this many bytes")
	_ = cmd.RegisterFlagCompletionFunc("format", cobra.FixedCompletions(reportFormats, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

func runValidate(stdout io.Writer, o validateOptions, args []string) error {
	report, ok := reporters[o.format]
	if !ok {
		return usageError("unknown --format %q: use one of %v", o.format, reportFormats)
	}
	// GitHub and SARIF resolve paths from the repository root, so those
	// formats name files as the user named their directories; text and JSON
	// name them relative to each argument.
	joinPrefix := o.format == "github" || o.format == "sarif"

	var trees []schema.Tree
	if o.repo != "" {
		if len(args) > 0 {
			return usageError("--repo reads a commit: give --path instead of PATH arguments")
		}
		repo, err := source.OpenRepository(o.repo)
		if err != nil {
			return &exitError{code: exitUsage, err: err}
		}
		c, err := source.ReadCommit(repo, o.rev, o.path)
		if err != nil {
			return &exitError{code: exitUsage, err: err}
		}
		t := schema.Tree{FS: c.Tree}
		if joinPrefix {
			t.Prefix = filepath.ToSlash(filepath.Clean(o.path))
		}
		trees = append(trees, t)
	} else {
		if len(args) == 0 {
			args = []string{"."}
		}
		for _, arg := range args {
			t, closeRoot, err := treeOf(arg, joinPrefix)
			if err != nil {
				return &exitError{code: exitUsage, err: err}
			}
			defer closeRoot()
			trees = append(trees, t)
		}
	}

	loader, err := schema.NewLoader(schema.Options{MaxFileBytes: o.maxFileBytes})
	if err != nil {
		return err
	}
	res, err := loader.LoadTrees(trees)
	if err != nil {
		return &exitError{code: exitUsage, err: err}
	}
	if err := report(stdout, res); err != nil {
		return &exitError{code: exitUsage, err: err}
	}
	if !res.Valid() {
		return failed()
	}
	return nil
}

// treeOf opens a directory argument as a tree confined to it (symbolic links
// cannot leave it), or a file argument as a one-file tree of its directory.
func treeOf(arg string, joinPrefix bool) (schema.Tree, func(), error) {
	info, err := os.Stat(arg)
	if err != nil {
		return schema.Tree{}, nil, err
	}
	dir, files := arg, []string(nil)
	if !info.IsDir() {
		dir, files = filepath.Dir(arg), []string{filepath.Base(arg)}
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return schema.Tree{}, nil, err
	}
	t := schema.Tree{FS: root.FS(), Files: files}
	if joinPrefix || files != nil { // a file is named as the user typed it
		t.Prefix = filepath.ToSlash(filepath.Clean(dir))
	}
	return t, func() { root.Close() }, nil
}

// validateFinding is a finding as printed by --format json.
type validateFinding struct {
	File     string `json:"file"`
	Document int    `json:"document"`
	Line     int    `json:"line"`
	Column   int    `json:"column"`
	Pointer  string `json:"pointer"`
	Code     string `json:"code"`
	Message  string `json:"message"`
	Hint     string `json:"hint,omitempty"`
}

func toJSONFindings(fs []schema.Finding, sev schema.Severity) []validateFinding {
	out := []validateFinding{}
	for _, f := range fs {
		if f.Severity != sev {
			continue
		}
		out = append(out, validateFinding{File: f.File, Document: f.Document, Line: f.Line, Column: f.Column,
			Pointer: f.Pointer, Code: f.Code, Message: f.Message, Hint: f.Hint})
	}
	return out
}

func plural(n int, word string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, word)
	}
	return fmt.Sprintf("%d %ss", n, word)
}
