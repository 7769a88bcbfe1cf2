package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/gitmesh/gitmesh/schema"
	"github.com/gitmesh/gitmesh/xds"
)

type renderOptions struct {
	dataplane string // MESH/NAME
	format    string
	source    treeFlags
}

func newRenderCmd() *cobra.Command {
	var o renderOptions
	cmd := &cobra.Command{
		Use:   "render --dataplane MESH/NAME [PATH | --repo DIR --rev REV [--path SUBDIR]]",
		Short: "Print the Envoy resources gitmesh serves one dataplane",
		Long: `Render loads the policy tree under PATH (default "."), or a commit of a
git repository, translates it as the xDS server does, and prints what one
dataplane gets: its listeners, clusters, endpoints and routes, with its node
id, mTLS identities and config hash.

Exit status: 0 rendered, 1 the policies are invalid or do not translate,
2 usage or I/O error.`,
		Example: `  gitmesh render --dataplane default/web-1 policies/
  gitmesh render --dataplane prod/reviews-1 --format json .
  gitmesh render --dataplane default/web-01 --repo . --rev HEAD~1 --path policies`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			trees, release, err := o.source.trees(args, false)
			if err != nil {
				return err
			}
			defer release()
			return runRender(cmd.OutOrStdout(), cmd.ErrOrStderr(), o, trees)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.dataplane, "dataplane", "", "the dataplane to render, as MESH/NAME (required)")
	f.StringVarP(&o.format, "format", "o", string(xds.FormatYAML), "output format: yaml or json")
	o.source.bind(f)
	_ = cmd.RegisterFlagCompletionFunc("format", cobra.FixedCompletions(
		[]string{string(xds.FormatYAML), string(xds.FormatJSON)}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// runRender renders one dataplane of the policy trees: directories, files, or
// a git commit's tree.
func runRender(stdout, stderr io.Writer, o renderOptions, trees []schema.Tree) error {
	mesh, name, err := parseDataplane(o.dataplane)
	if err != nil {
		return usageError("--dataplane: %w", err)
	}
	format := xds.Format(o.format)
	if format != xds.FormatYAML && format != xds.FormatJSON {
		return usageError("unknown --format %q: use yaml or json", o.format)
	}

	loader, err := schema.NewLoader(schema.Options{})
	if err != nil {
		return err
	}
	res, err := loader.LoadTrees(trees)
	if err != nil {
		return &exitError{code: exitUsage, err: err}
	}
	if !res.Valid() {
		for _, f := range res.Findings {
			fmt.Fprintln(stderr, f.Error())
		}
		return failed()
	}
	dp := res.Set.Dataplane(mesh, name)
	if dp == nil {
		return usageError("no dataplane %s in mesh %q", name, mesh)
	}
	idx, err := xds.NewIndex(res.Set)
	if err != nil {
		return &exitError{code: exitFailed, err: err}
	}
	p, err := xds.TranslateProxy(idx, dp, xds.Options{})
	if err != nil {
		return &exitError{code: exitFailed, err: err}
	}
	out, err := xds.MarshalProxy(p, format)
	if err != nil {
		return &exitError{code: exitFailed, err: err}
	}
	if _, err := stdout.Write(out); err != nil {
		return &exitError{code: exitUsage, err: err}
	}
	if err := xds.Check(p); err != nil {
		return &exitError{code: exitFailed, err: fmt.Errorf("the rendered resources would be rejected: %w", err)}
	}
	return nil
}
