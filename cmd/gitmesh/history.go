package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/gitmesh/gitmesh/api"
	"github.com/gitmesh/gitmesh/reconcile"
	"github.com/gitmesh/gitmesh/reconcile/source"
	"github.com/gitmesh/gitmesh/xds/plane"
)

type historyOptions struct {
	clientFlags
	format string
	limit  int
}

func newHistoryCmd() *cobra.Command {
	var o historyOptions
	cmd := &cobra.Command{
		Use:   "history",
		Short: "List the commits the running daemon decided on, newest first",
		Long: `History asks a running gitmesh daemon for every commit it has seen on the
branch, newest first: when, its author and subject, and its verdict:

  published   its translation was served
  rejected    it was published and at least one proxy NACKed it (the proxies
              and their error_detail are listed)
  invalid     it failed validation or does not translate for a data plane (its
              error count and first error); nothing changed, and it is not
              looked at again
  held        valid, but not published because a rollback pins the mesh
  unverified  with serve --verify-commits: unsigned, or not signed by a trusted
              key; nothing changed
  failed      reading or publishing it failed (the remote's objects, a CA file);
              nothing changed, retried

Rollbacks and resumes are listed with who asked and why, and published commits
with how long their proxies took to ACK them. The history is kept in the
daemon's state directory, bounded, across restarts.

Exit status: 0 when the daemon answered, 2 when it cannot be reached.`,
		Example: `  gitmesh history
  gitmesh history --limit 5 --format json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runHistory(cmd.Context(), cmd.OutOrStdout(), o)
		},
	}
	f := cmd.Flags()
	o.clientFlags.bind(f)
	f.StringVarP(&o.format, "format", "o", "text", "output format: text or json")
	f.IntVarP(&o.limit, "limit", "n", 20, "show at most this many commits (0: all the daemon keeps)")
	return cmd
}

func runHistory(ctx context.Context, stdout io.Writer, o historyOptions) error {
	if o.format != "text" && o.format != "json" {
		return usageError("unknown --format %q: use text or json", o.format)
	}
	if o.limit < 0 {
		return usageError("--limit must not be negative")
	}
	c, err := o.client(false)
	if err != nil {
		return err
	}
	h, _, err := c.History(ctx)
	if err != nil {
		return &exitError{code: exitUsage, err: err}
	}
	if o.limit > 0 && len(h.Items) > o.limit {
		h.Items = h.Items[:o.limit]
	}
	if o.format == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		return enc.Encode(h)
	}
	return printHistory(stdout, h, time.Now())
}

// printHistory writes the records for a person: a line per commit, and
// indented lines for what a reader needs to know about it.
func printHistory(w io.Writer, h api.HistoryList, now time.Time) error {
	var b strings.Builder
	if len(h.Items) == 0 {
		b.WriteString("No commit decided on yet.\n")
	}
	for _, r := range h.Items {
		when := "-"
		if !r.At.IsZero() {
			when = r.At.Local().Format("2006-01-02 15:04:05")
		}
		fmt.Fprintf(&b, "%-12s  %s  %-9s  %-16s  %s\n", r.Commit.Short(), when, r.Verdict,
			clip(authorName(r.Commit.Author), 16), r.Commit.Subject)
		for _, note := range recordNotes(r) {
			fmt.Fprintf(&b, "%14s%s\n", "", note)
		}
	}
	if len(h.Items) < h.Total {
		fmt.Fprintf(&b, "(%d of %d shown; --limit 0 shows all)\n", len(h.Items), h.Total)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// recordNotes are the details of a record worth a line each.
func recordNotes(r reconcile.Record) []string {
	var notes []string
	switch r.Trigger {
	case reconcile.OpRollback:
		notes = append(notes, "rollback"+byReason(r)+"; pinned")
	case reconcile.OpResume:
		notes = append(notes, "resume"+byReason(r)+"; following the branch again")
	}
	if r.Forced {
		notes = append(notes, "force push: the previous head "+r.Previous.Short()+" is not an ancestor")
	}
	switch r.Verdict {
	case reconcile.VerdictInvalid:
		msg := plural(r.Errors, "error")
		if len(r.Findings) > 0 {
			msg += "; first: " + r.Findings[0].Error()
		} else if r.Error != "" {
			msg += ": " + r.Error
		}
		notes = append(notes, msg)
	case reconcile.VerdictFailed:
		notes = append(notes, "failed: "+r.Error)
	case reconcile.VerdictHeld:
		notes = append(notes, "valid; not published while pinned")
	case reconcile.VerdictUnverified:
		notes = append(notes, "not published: "+r.Error)
	}
	if r.Commit.Signer != "" {
		notes = append(notes, "signed by "+r.Commit.Signer)
	}
	if r.Diff != nil {
		notes = append(notes, diffLine(r))
	}
	if c := r.Convergence; c != nil && c.Proxies > 0 {
		notes = append(notes, fmt.Sprintf("converged: %s ACKed in %s", plural(c.Proxies, "connected proxy"),
			c.Duration().Round(time.Millisecond)))
	}
	if r.RejectedProxies > 0 {
		notes = append(notes, fmt.Sprintf("rejected by %s:", plural(r.RejectedProxies, "proxy")))
		for _, x := range r.Rejections {
			notes = append(notes, "  "+rejectionLine(x))
		}
	}
	return notes
}

// diffLine sums up what a published commit changed.
func diffLine(r reconcile.Record) string {
	d := r.Diff
	return fmt.Sprintf("resources: %d added, %d changed, %d removed; proxies: %d pushed, %d unchanged, %d removed",
		len(d.Added), len(d.Changed), len(d.Removed), r.Changed, r.Unchanged, r.Removed)
}

// rejectionLine is one NACK for a person.
func rejectionLine(r plane.Rejection) string {
	s := fmt.Sprintf("%s NACKed %s %s: %s", r.Node, typeName(r.Type), r.Version, r.Error)
	if r.RevertedTo != "" {
		s += " (put back on " + short(r.RevertedTo) + ")"
	}
	return s
}

func byReason(r reconcile.Record) string {
	s := ""
	if r.By != "" {
		s += " by " + r.By
	}
	if r.Reason != "" {
		s += fmt.Sprintf(" (%s)", r.Reason)
	}
	return s
}

// authorName drops the e-mail address of "Name <email>".
func authorName(a string) string {
	if i := strings.Index(a, " <"); i > 0 {
		return a[:i]
	}
	return a
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-1] + "…"
}

func short(hash string) string { return source.Hash(hash).Short() }

// typeName shortens a type URL to its message name (Listener, Cluster...).
func typeName(url string) string { return url[strings.LastIndexByte(url, '.')+1:] }
