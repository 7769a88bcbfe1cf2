package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/gitmesh/gitmesh/reconcile/pipeline"
	"github.com/gitmesh/gitmesh/schema"
	"github.com/gitmesh/gitmesh/xds"
)

type renderOptions struct {
	dataplane string // MESH/NAME
	format    string
	flavor    string
	policies  bool
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
routes, with its node id, mTLS identities and config hash. With --policies
it prints instead the policies that apply to each inbound and outbound, from
which file and line, and what they decide for each client.

Exit status: 0 rendered, 1 the policies are invalid or do not translate,
2 usage or I/O error.`,
		Example: `  gitmesh render --dataplane default/web-01 policies/
  gitmesh render --dataplane default/web-01 --flavor grpc --format json policies/
  gitmesh render --dataplane default/web-01 --repo . --rev HEAD~1 --path policies
  gitmesh render --dataplane default/web-01 --policies policies/`,
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
	f.BoolVar(&o.policies, "policies", false, "list the policies affecting the dataplane instead of its resources")
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
	if o.policies {
		dp := res.Set.Dataplane(id.Mesh, id.Name)
		if dp == nil {
			return usageError("no dataplane %s in mesh %q", id.Name, id.Mesh)
		}
		return writePolicies(stdout, res.Set.PoliciesOf(dp), format)
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

// writePolicies prints the policies affecting a dataplane: YAML is a
// listing a person reads, JSON the same data for tools.
func writePolicies(w io.Writer, dp schema.DataplanePolicies, format xds.Format) error {
	if format == xds.FormatJSON {
		b, err := json.MarshalIndent(dp, "", "  ")
		if err != nil {
			return &exitError{code: exitFailed, err: err}
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "dataplane %s\n", dp.Dataplane)
	confs := func(cs []schema.ConfSummary) {
		for _, c := range cs {
			conf, _ := json.Marshal(c.Conf)
			fmt.Fprintf(&b, "      %s %s\n", c.Type, conf)
			for _, f := range c.From {
				fmt.Fprintf(&b, "        from %s  %s:%d\n", f.Name, f.File, f.Line)
			}
		}
	}
	if len(dp.Proxy) > 0 {
		b.WriteString("  proxy\n")
		confs(dp.Proxy)
	}
	for _, in := range dp.Inbounds {
		fmt.Fprintf(&b, "  inbound %s (service %s)\n", in.Inbound, in.Service)
		fmt.Fprintf(&b, "    permissions: %s\n", in.Permissions)
		for _, p := range in.Policies {
			fmt.Fprintf(&b, "      %s %s  %s:%d\n", p.Type, p.Name, p.File, p.Line)
		}
		for _, c := range in.Clients {
			line := fmt.Sprintf("      client %-24s %s", c.Client, c.Action)
			if c.By != "" {
				line += "  by " + c.By
			}
			if c.Inexact {
				line += "  (fails closed: selects by tags a certificate does not carry)"
			}
			b.WriteString(line + "\n")
		}
		confs(in.Confs)
	}
	for _, out := range dp.Outbounds {
		fmt.Fprintf(&b, "  outbound %s -> %s\n", out.Outbound, out.Service)
		confs(out.Confs)
		for _, p := range out.Policies {
			fmt.Fprintf(&b, "      %s %s  %s:%d\n", p.Type, p.Name, p.File, p.Line)
		}
		route := func(kind string, r schema.RouteSummary) {
			line := fmt.Sprintf("      %s %s -> %s", kind, r.Name, strings.Join(r.Backends, ", "))
			if r.Match != "" {
				line = fmt.Sprintf("      %s %q -> %s", kind, r.Match, strings.Join(r.Backends, ", "))
			}
			if len(r.Filters) > 0 {
				line += "  filters " + strings.Join(r.Filters, ", ")
			}
			if r.Unused {
				line += "  (left out: no backend has a weight)"
			}
			if r.By != "" {
				line += fmt.Sprintf("  by %s  %s:%d", r.By, r.File, r.Line)
			} else {
				line += "  (catch-all: the service itself)"
			}
			b.WriteString(line + "\n")
		}
		for _, r := range out.Routes {
			route("route", r)
		}
		if out.TCP != nil {
			route("tcp", *out.TCP)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
