package main

import (
	"fmt"
	"io"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"

	"github.com/gitmesh/gitmesh/schema"
	"github.com/gitmesh/gitmesh/xds"
)

type validateOptions struct {
	format       string
	source       treeFlags
	maxFileBytes int64
	maxFiles     int
	maxDirDepth  int
}

func newValidateCmd() *cobra.Command {
	var o validateOptions
	cmd := &cobra.Command{
		Use:   "validate [PATH...]",
		Short: "Check policy files, or a commit, as the pull-request gate",
		Long: `Validate loads every *.yaml and *.yml file under the given files and
directories (default ".") as one policy set, checks each resource against its
JSON Schema and gitmesh's rules, checks the resources against each other, and
translates the set into every proxy's Envoy resources to check those too.
Every problem is reported in one pass, with file, line, column and JSON pointer.

With --repo and --rev it reads a commit straight from git objects, without a
checkout: what a CI job runs against a pull request's merge commit. With
--verify-commits KEYRING as well, the commit must carry an OpenPGP signature
by a key in KEYRING (armored public keys, as gpg --export --armor writes
them), as gitmesh serve --verify-commits requires before publishing; an
unsigned commit, one signed by another key or a bad signature exits 1 with
the reason, before the tree is read.

Exit status: 0 valid (warnings allowed), 1 invalid, 2 usage or I/O error.`,
		Example: `  gitmesh validate policies/
  gitmesh validate --format github .
  gitmesh validate --repo . --rev refs/pull/42/merge --path policies
  gitmesh validate --repo . --rev HEAD --path policies --verify-commits keys.asc`,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runValidate(cmd.OutOrStdout(), o, args)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.format, "format", "o", "text", "output format: text, json, github or sarif")
	o.source.bind(f)
	f.StringVar(&o.source.verifyCommits, "verify-commits", "",
		"with --repo: require the commit's OpenPGP signature to verify against the public keys in this keyring file")
	f.Int64Var(&o.maxFileBytes, "max-file-size", schema.DefaultMaxFileBytes, "refuse YAML files larger than this many bytes, from their size, unread")
	f.IntVar(&o.maxFiles, "max-files", schema.DefaultMaxFiles, "refuse a tree with more files than this, before loading any")
	f.IntVar(&o.maxDirDepth, "max-dir-depth", schema.DefaultMaxDirDepth, "refuse directories nested deeper than this")
	_ = cmd.RegisterFlagCompletionFunc("format", cobra.FixedCompletions(reportFormats, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// validateGCPercent is the GOGC a validate run uses; BenchmarkValidateCold
// measures with the same value.
const validateGCPercent = 400

func runValidate(stdout io.Writer, o validateOptions, args []string) error {
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

	// A one-shot run over a large tree allocates a few hundred megabytes of
	// short-lived YAML and schema state: collect less often (see the README's
	// speed figures). The loader's limits bound the total.
	defer debug.SetGCPercent(debug.SetGCPercent(validateGCPercent))

	loader, err := schema.NewLoader(schema.Options{MaxFileBytes: o.maxFileBytes, MaxFiles: o.maxFiles, MaxDirDepth: o.maxDirDepth})
	if err != nil {
		return err
	}
	res, err := loader.LoadTrees(trees)
	if err != nil {
		return &exitError{code: exitUsage, err: err}
	}
	if res.Set != nil {
		if fs := translationFindings(res.Set); len(fs) > 0 {
			res.Findings = append(res.Findings, fs...)
			res.Set = nil
		}
	}
	if err := report(stdout, res); err != nil {
		return &exitError{code: exitUsage, err: err}
	}
	if !res.Valid() {
		return failed()
	}
	return nil
}

// translationFindings translates every dataplane of a valid set as the xDS
// server would, and reports what the translator or Envoy's proto rules
// reject, at the dataplane that produced it.
func translationFindings(set *schema.Set) []schema.Finding {
	var out []schema.Finding
	fail := func(o schema.Origin, msg string) {
		out = append(out, schema.Finding{Severity: schema.SeverityError, File: o.File, Document: o.Document,
			Line: o.Line, Column: o.Column, Code: schema.CodeTranslationFailed, Message: msg,
			Hint: "the policy is valid YAML but Envoy would reject what it becomes; please report it if the message does not say why"})
	}
	idx, err := xds.NewIndex(set)
	if err != nil {
		fail(schema.Origin{}, "translate: "+err.Error())
		return out
	}
	checker := xds.NewChecker()
	for _, dp := range set.Dataplanes {
		p, err := xds.TranslateProxy(idx, dp, xds.Options{})
		if err == nil {
			err = checker.Check(p)
		}
		if err != nil {
			fail(dp.Origin, fmt.Sprintf("dataplane %s does not translate: %v", dp.NodeID().String(), err))
		}
	}
	return out
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
