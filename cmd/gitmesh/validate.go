package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"

	"github.com/gitmesh/gitmesh/reconcile/pipeline"
	"github.com/gitmesh/gitmesh/schema"
)

type validateOptions struct {
	format     string
	source     treeFlags
	limits     limitFlags
	allowEmpty bool
	// deprecations warns on each legacy form with its Kuma 2.x successor.
	deprecations bool
}

func newValidateCmd() *cobra.Command {
	var o validateOptions
	cmd := &cobra.Command{
		Use:   "validate [PATH...]",
		Short: "Check policy files, or a commit, as the pull-request gate",
		Long: `Validate loads every *.yaml and *.yml file under the given files and
directories (default ".") as one policy set, checks each resource against its
JSON Schema and gitmesh's rules, checks the resources against each other, and
translates the set for every data plane a dataplane may run (Envoy and
proxyless gRPC) to check those resources too: exactly what gitmesh serve
does with a commit before it publishes it. Every problem is reported in one
pass, with file, line, column and JSON pointer.

With --repo and --rev it reads a commit straight from git objects, without a
checkout: what a CI job runs against a pull request's merge commit. With
--verify-commits KEYRING as well, the commit must carry an OpenPGP signature
by a key in KEYRING (armored public keys, as gpg --export --armor writes
them), as gitmesh serve --verify-commits requires before publishing; an
unsigned commit, one signed by another key or a bad signature exits 1 with
the reason, before the tree is read.

With --deprecations, each legacy form (TrafficPermission, interface strings,
the 0.x tag and mTLS spellings) is a warning naming its Kuma 2.x successor.

A tree without any policy file is an error (exit 2), as a wrong path more
often than not; --allow-empty accepts it.

Exit status: 0 valid (warnings allowed), 1 invalid, 2 usage or I/O error.`,
		Example: `  gitmesh validate policies/
  gitmesh validate --format github .
  gitmesh validate --repo . --rev refs/pull/42/merge --path policies
  gitmesh validate --repo . --rev HEAD --path policies --verify-commits keys.asc`,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runValidate(cmd.Context(), cmd.OutOrStdout(), o, args)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.format, "format", "o", "text", "output format: text, json, github or sarif")
	o.source.bind(f)
	f.StringVar(&o.source.verifyCommits, "verify-commits", "",
		"with --repo: require the commit's OpenPGP signature to verify against the public keys in this keyring file")
	o.limits.bind(f)
	f.BoolVar(&o.allowEmpty, "allow-empty", false, "accept a tree without any policy file")
	f.BoolVar(&o.deprecations, "deprecations", false, "warn on each legacy (Kuma 0.x) form, naming its Kuma 2.x successor")
	_ = cmd.RegisterFlagCompletionFunc("format", cobra.FixedCompletions(reportFormats, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// A one-shot run over a large tree allocates a few hundred megabytes of
// short-lived YAML, schema and translation state over a much smaller live
// heap (about 100 MB at 50,000 resources): it collects less often than
// the default (GOGC oneShotGCPercent), and more often again once the heap
// nears oneShotMemoryLimit, which bounds the peak. GOGC and GOMEMLIMIT in
// the environment take precedence. BenchmarkValidate measures with these.
const (
	oneShotGCPercent   = 400
	oneShotMemoryLimit = 512 << 20
)

// oneShotGC sets the collector for a one-shot run; the returned func puts
// it back.
func oneShotGC() func() {
	gc, limit := debug.SetGCPercent(-1), debug.SetMemoryLimit(-1)
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(oneShotGCPercent)
	} else {
		debug.SetGCPercent(gc)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(oneShotMemoryLimit)
	}
	return func() {
		debug.SetGCPercent(gc)
		debug.SetMemoryLimit(limit)
	}
}

func runValidate(ctx context.Context, stdout io.Writer, o validateOptions, args []string) error {
	report, ok := reporters[o.format]
	if !ok {
		return usageError("unknown --format %q: use one of %v", o.format, reportFormats)
	}
	// GitHub and SARIF resolve paths from the repository root, so those
	// formats name files as the user named their directories; text and JSON
	// name them relative to each argument.
	joinPrefix := o.format == "github" || o.format == "sarif"
	trees, release, err := o.source.trees(args, joinPrefix)
	if err != nil {
		return err
	}
	defer release()

	defer oneShotGC()()

	limits := o.limits.options()
	limits.Deprecations = o.deprecations
	p, err := pipeline.New(pipeline.Options{Limits: limits, VerdictOnly: true})
	if err != nil {
		return err
	}
	res, err := p.Run(ctx, trees, nil)
	if err != nil {
		return &exitError{code: exitUsage, err: err}
	}
	if res.Files == 0 && len(res.Findings) == 0 && !o.allowEmpty {
		return usageError("no policy file (*.yaml, *.yml) in %s; give the directory that holds them, or --allow-empty", o.source.where(args))
	}
	if err := report(stdout, res); err != nil {
		return &exitError{code: exitUsage, err: err}
	}
	if !res.Valid() {
		return failed()
	}
	return nil
}

// validateFinding is a finding as printed by --format json.
type validateFinding struct {
	File     string      `json:"file"`
	Document int         `json:"document"`
	Line     int         `json:"line"`
	Column   int         `json:"column"`
	Pointer  string      `json:"pointer"`
	Code     schema.Code `json:"code"`
	Message  string      `json:"message"`
	Hint     string      `json:"hint,omitempty"`
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

// plural is n and word, made plural unless n is 1 (proxy: proxies).
func plural(n int, word string) string {
	switch {
	case n == 1:
	case strings.HasSuffix(word, "proxy"):
		word = strings.TrimSuffix(word, "y") + "ies"
	default:
		word += "s"
	}
	return fmt.Sprintf("%d %s", n, word)
}
