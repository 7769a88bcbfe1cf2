package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/gitmesh/gitmesh/api"
)

type operationOptions struct {
	clientFlags
	by, reason string
	format     string
}

func (o *operationOptions) bind(cmd *cobra.Command) {
	f := cmd.Flags()
	o.clientFlags.bind(f)
	f.StringVar(&o.by, "by", defaultBy(), "who asks, for the history and the log")
	f.StringVar(&o.reason, "reason", "", "why, for the history and the log")
	f.StringVarP(&o.format, "format", "o", "text", "output format: text or json")
}

// defaultBy names the person at the terminal.
func defaultBy() string {
	for _, v := range []string{"USER", "USERNAME", "LOGNAME"} {
		if u := os.Getenv(v); u != "" {
			return u
		}
	}
	return ""
}

func newRollbackCmd() *cobra.Command {
	var o operationOptions
	cmd := &cobra.Command{
		Use:   "rollback COMMIT",
		Short: "Put the mesh back on a commit at once and hold it there",
		Long: `Rollback asks the running daemon to publish COMMIT and pin the mesh on it.
COMMIT is any commit the daemon has fetched from the branch, not only recent
history: a full or short hash, or the branch with a suffix such as main~3.
The commit is validated first; an invalid commit or an unknown one is refused
and nothing changes.

While pinned, new commits are still fetched, validated and shown in
` + "`gitmesh history`" + ` as held, but not published, until ` + "`gitmesh resume`" + `.
The pin is in the daemon's state file and survives restarts.

Rollback needs the daemon's admin token: --token-file, $GITMESH_TOKEN, or the
admin-token file in the daemon's state directory when run on its host.

Exit status: 0 when rolled back, 1 when refused (unknown or invalid commit),
2 when the daemon cannot be reached or refuses the token.`,
		Example: `  gitmesh rollback 4f2a9c1 --reason "web cannot reach backend"
  gitmesh rollback main~3 --api-address 10.0.0.5:5681 --token-file /run/secrets/gitmesh-admin`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := api.OperationRequest{Commit: args[0], By: o.by, Reason: o.reason}
			return runOperation(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), o, "/rollback", req)
		},
	}
	o.bind(cmd)
	return cmd
}

func newResumeCmd() *cobra.Command {
	var o operationOptions
	cmd := &cobra.Command{
		Use:   "resume",
		Short: "Lift a rollback's pin and follow the branch again",
		Long: `Resume asks the running daemon to lift the pin a rollback set and follow
the branch again: the branch's newest valid commit is published at once (the
head, or the newest of its ancestors that validates, back to the pinned
commit).

Resume needs the daemon's admin token, as rollback does.

Exit status: 0 when resumed, 1 when the mesh is not pinned, 2 when the daemon
cannot be reached or refuses the token.`,
		Example: `  gitmesh resume --reason "fix merged"`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req := api.OperationRequest{By: o.by, Reason: o.reason}
			return runOperation(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), o, "/resume", req)
		},
	}
	o.bind(cmd)
	return cmd
}

// runOperation POSTs a rollback or resume and prints its outcome.
func runOperation(ctx context.Context, stdout, stderr io.Writer, o operationOptions, path string, req api.OperationRequest) error {
	if o.format != "text" && o.format != "json" {
		return usageError("unknown --format %q: use text or json", o.format)
	}
	c, err := o.client(true)
	if err != nil {
		return err
	}
	op := c.Rollback
	if path == "/resume" {
		op = c.Resume
	}
	res, raw, err := op(ctx, req)
	if ae, ok := errors.AsType[*api.Error](err); ok && ae.Refused() {
		return refused(stdout, stderr, o.format, ae)
	}
	if err != nil {
		return &exitError{code: exitUsage, err: err}
	}
	if o.format == "json" {
		return indentJSON(stdout, raw)
	}
	printOperation(stdout, path, res)
	return nil
}

// refused prints a refusal, with the findings of an invalid commit, and
// exits 1.
func refused(stdout, stderr io.Writer, format string, ae *api.Error) error {
	if format == "json" {
		if err := indentJSON(stdout, ae.Body); err != nil {
			return &exitError{code: exitUsage, err: err}
		}
		return failed()
	}
	body := ae.Refusal()
	switch {
	case len(body.Findings) > 0:
		fmt.Fprintf(stderr, "gitmesh: refused: commit %s is invalid (%s):\n", body.Commit.Short(), plural(body.Errors, "error"))
	default:
		fmt.Fprintf(stderr, "gitmesh: refused: %s\n", body.Error)
	}
	for _, f := range body.Findings {
		fmt.Fprintf(stderr, "  %s\n", f.Error())
	}
	if body.Errors > len(body.Findings) && len(body.Findings) > 0 {
		fmt.Fprintf(stderr, "  ... and %d more; `gitmesh validate --repo DIR --rev %s` lists them all\n",
			body.Errors-len(body.Findings), body.Commit.Short())
	}
	fmt.Fprintln(stderr, "Nothing changed.")
	return failed()
}

func printOperation(w io.Writer, path string, res api.OperationResult) {
	r, st := res.Record, res.Status
	var b strings.Builder
	subject := ""
	if r.Commit.Subject != "" {
		subject = fmt.Sprintf(" %q", r.Commit.Subject)
	}
	switch {
	case path == "/rollback":
		fmt.Fprintf(&b, "Rolled back to %s%s and pinned it.\n", r.Commit.Short(), subject)
	case r.Diff == nil:
		fmt.Fprintf(&b, "Resumed: no newer valid commit than %s%s; still serving it.\n", r.Commit.Short(), subject)
	default:
		fmt.Fprintf(&b, "Resumed: published %s%s.\n", r.Commit.Short(), subject)
	}
	if r.Diff != nil {
		fmt.Fprintf(&b, "  %s.\n", diffLine(r))
	}
	if path == "/rollback" {
		b.WriteString("  New commits are checked but not published until `gitmesh resume`.\n")
	} else {
		b.WriteString("  Following the branch again.\n")
	}
	c := st.Convergence
	fmt.Fprintf(&b, "  Proxies: %d/%d ACKed so far, %d connected; `gitmesh status` follows them.\n", c.Acked, c.Proxies, c.Connected)
	_, _ = io.WriteString(w, b.String())
}
