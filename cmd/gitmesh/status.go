package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/gitmesh/gitmesh/reconcile"
)

var statusFormats = []string{"text", "json"}

type statusOptions struct {
	clientFlags
	format string
}

func newStatusCmd() *cobra.Command {
	var o statusOptions
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show what the running daemon follows, serves and how far proxies took it",
		Long: `Status asks a running gitmesh daemon for its state over the HTTP API and
prints the followed branch, the newest commit and its verdict, the commit that
is served, whether a rollback pins it, the last error, how many proxies have
ACKed the served commit, and when the last good sync was.

Exit status: 0 when the daemon answered, 2 when it cannot be reached or its
answer cannot be read.`,
		Example: `  gitmesh status
  gitmesh status --api-address 10.0.0.5:5681 --format json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runStatus(cmd.Context(), cmd.OutOrStdout(), o)
		},
	}
	f := cmd.Flags()
	o.clientFlags.bind(f)
	f.StringVarP(&o.format, "format", "o", "text", "output format: text or json")
	_ = cmd.RegisterFlagCompletionFunc("format", cobra.FixedCompletions(statusFormats, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

func runStatus(ctx context.Context, stdout io.Writer, o statusOptions) error {
	if o.format != "text" && o.format != "json" {
		return usageError("unknown --format %q: use one of %v", o.format, statusFormats)
	}
	c, err := o.client(false)
	if err != nil {
		return err
	}
	st, raw, err := c.Status(ctx)
	if err != nil {
		return &exitError{code: exitUsage, err: err}
	}
	if o.format == "json" {
		if err := indentJSON(stdout, raw); err != nil {
			return &exitError{code: exitUsage, err: fmt.Errorf("%s: %w", c.Base(), err)}
		}
		return nil
	}
	return printStatus(stdout, st, time.Now())
}

// printStatus writes st for a person, with ages relative to now.
func printStatus(w io.Writer, st reconcile.Status, now time.Time) error {
	var b strings.Builder
	line := func(label, format string, args ...any) {
		fmt.Fprintf(&b, "%-15s %s\n", label, fmt.Sprintf(format, args...))
	}

	follow := fmt.Sprintf("branch %s of %s", orNone(st.Branch, "(unknown)"), orNone(st.Repo, "(unknown repository)"))
	if st.Path != "" {
		follow += ", path " + st.Path
	}
	line("Following", "%s", follow)

	if st.Head != nil {
		line("Head", "%s [%s]", commitLine(st.Head), orNone(string(st.HeadVerdict), "pending"))
	} else {
		line("Head", "no commit seen yet")
	}

	switch {
	case st.Published != nil:
		pub := commitLine(st.Published)
		if !st.PublishedAt.IsZero() {
			pub += ", published " + age(now, st.PublishedAt)
		}
		line("Published", "%s", pub)
	default:
		line("Published", "nothing served yet (not ready)")
	}

	switch {
	case st.Pin != nil:
		pin := "on " + st.Pin.Commit.Short()
		if st.Pin.By != "" {
			pin += " by " + st.Pin.By
		}
		if !st.Pin.At.IsZero() {
			pin += " " + age(now, st.Pin.At)
		}
		if st.Pin.Reason != "" {
			pin += fmt.Sprintf(" (%s)", st.Pin.Reason)
		}
		line("Pinned", "%s: new commits are checked but not published until `gitmesh resume`", pin)
	case st.Pinned:
		line("Pinned", "yes: new commits are checked but not published until `gitmesh resume`")
	default:
		line("Pinned", "no")
	}
	line("Last error", "%s", orNone(st.LastError, "none"))

	c := st.Convergence
	proxies := fmt.Sprintf("%d/%d proxies ACKed (%d NACKed), %d connected", c.Acked, c.Proxies, c.Nacked, c.Connected)
	if c.Reverted > 0 {
		proxies += fmt.Sprintf(", %d put back on the commit they accepted", c.Reverted)
	}
	line("Proxies", "%s", proxies)
	for _, r := range st.Rejections {
		line("Rejected by", "%s", rejectionLine(r))
	}
	line("Last sync", "%s", when(now, st.LastSync))
	line("Last good sync", "%s", when(now, st.LastGoodSync))
	if st.Replica != "" {
		agree := "they agree"
		if st.ReplicasAgree != nil && !*st.ReplicasAgree {
			agree = "they DISAGREE on the published commit"
		}
		line("Replicas", "%d on the store, %s decides, %s; this is %s", len(st.Replicas), orNone(st.Decider, "none"), agree, st.Replica)
		for _, r := range st.Replicas {
			role := "follows"
			if r.Decides {
				role = "decides"
			}
			pub := "nothing served"
			if r.Published != nil {
				pub = "serves " + r.Published.Short()
			}
			if r.Pinned {
				pub += " (pinned)"
			}
			line("", "%s  %s  %s, %d proxies (%d connected), at %s, heard %s", r.ID, role, pub, r.Proxies, r.Connected,
				orNone(r.Address, "?"), age(now, r.HeartbeatAt))
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func commitLine(c *reconcile.CommitInfo) string {
	s := c.Short()
	if c.Subject != "" {
		s += "  " + c.Subject
	}
	return s
}

func orNone(s, none string) string {
	if s == "" {
		return none
	}
	return s
}

// when is the age of t and t itself, or "never".
func when(now, t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return fmt.Sprintf("%s (%s)", age(now, t), t.Local().Format(time.RFC3339))
}

// age says how long before now t was, to a precision a person needs.
func age(now, t time.Time) string {
	d := now.Sub(t).Round(time.Second)
	switch {
	case d < 0:
		return "in the future (clocks differ)"
	case d < time.Second:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds ago", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm ago", int(d.Hours()), int(d.Minutes())%60)
	default:
		return fmt.Sprintf("%dd ago", int(d.Hours())/24)
	}
}
