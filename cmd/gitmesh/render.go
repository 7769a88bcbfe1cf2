package main

import (
	"context"
	"fmt"
	"io"
	"slices"

	"github.com/spf13/cobra"

	"github.com/gitmesh/gitmesh/reconcile/pipeline"
	"github.com/gitmesh/gitmesh/schema"
	"github.com/gitmesh/gitmesh/xds"
)

type renderOptions struct {
	dataplane string // MESH/NAME
	format    string
	flavor    string
	source    treeFlags
	limits    limitFlags
}

func newRenderCmd() *cobra.Command {
	var o renderOptions
	cmd := &cobra.Command{
		Use:   "render --dataplane MESH/NAME [PATH | --repo DIR --rev REV [--path SUBDIR]]",
		Short: "Print the Envoy or gRPC resources gitmesh serves one dataplane",
		Long: `Render loads the policy tree under PATH (default "."), or a commit of a
git repository, checks and translates it as gitmesh serve does, and prints
what one dataplane gets in the data plane it runs (--flavor: envoy, or grpc
for a proxyless gRPC application): its listeners, clusters, endpoints and
routes, with its node id, mTLS identities and config hash.

Exit status: 0 rendered, 1 the policies are invalid or do not translate,
2 usage or I/O error.`,
		Example: `  gitmesh render --dataplane default/web-01 policies/
  gitmesh render --dataplane default/web-01 --flavor grpc --format json policies/
  gitmesh render --dataplane default/web-01 --repo . --rev HEAD~1 --path policies`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			trees, release, err := o.source.trees(args, false)
			if err != nil {
				return err
			}
			defer release()
			return runRender(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), o, trees)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.dataplane, "dataplane", "", "the dataplane to render, as MESH/NAME (required)")
	f.StringVarP(&o.format, "format", "o", string(xds.FormatYAML), "output format: yaml or json")
	f.StringVar(&o.flavor, "flavor", string(xds.FlavorEnvoy), "the data plane the dataplane runs: envoy or grpc")
	o.source.bind(f)
	o.limits.bind(f)
	_ = cmd.RegisterFlagCompletionFunc("format", cobra.FixedCompletions(
		[]string{string(xds.FormatYAML), string(xds.FormatJSON)}, cobra.ShellCompDirectiveNoFileComp))
	_ = cmd.RegisterFlagCompletionFunc("flavor", cobra.FixedCompletions(
		[]string{string(xds.FlavorEnvoy), string(xds.FlavorGRPC)}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// runRender renders one dataplane of the policy trees: directories, files, or
// a git commit's tree.
func runRender(ctx context.Context, stdout, stderr io.Writer, o renderOptions, trees []schema.Tree) error {
	id, err := schema.ParseRef(o.dataplane)
	if err != nil {
		return usageError("--dataplane: %w", err)
	}
	format := xds.Format(o.format)
	if format != xds.FormatYAML && format != xds.FormatJSON {
		return usageError("unknown --format %q: use yaml or json", o.format)
	}
	flavor := xds.Flavor(o.flavor)
	if !slices.Contains(xds.Flavors, flavor) {
		return usageError("unknown --flavor %q: use envoy or grpc", o.flavor)
	}
	p, err := pipeline.New(pipeline.Options{Limits: o.limits.options()})
	if err != nil {
		return err
	}
	res, err := p.Run(ctx, trees, nil)
	if err != nil {
		return &exitError{code: exitUsage, err: err}
	}
	if !res.Valid() {
		for _, f := range res.Findings {
			fmt.Fprintln(stderr, f.Error())
		}
		return failed()
	}
	px := res.Translation.Proxy(id.String(), flavor)
	if px == nil {
		return usageError("no dataplane %s in mesh %q", id.Name, id.Mesh)
	}
	out, err := xds.MarshalProxy(px, format)
	if err != nil {
		return &exitError{code: exitFailed, err: err}
	}
	if _, err := stdout.Write(out); err != nil {
		return &exitError{code: exitUsage, err: err}
	}
	return nil
}
