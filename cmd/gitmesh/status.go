package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/gitmesh/gitmesh/reconcile"
)

// statusTimeout bounds the whole GET /status, connection included.
const statusTimeout = 5 * time.Second

var statusFormats = []string{"text", "json"}

type statusOptions struct {
	apiAddress string
	format     string
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
	f.StringVar(&o.apiAddress, "api-address", "127.0.0.1:5681", "HOST:PORT or URL of the daemon's HTTP API")
	f.StringVarP(&o.format, "format", "o", "text", "output format: text or json")
	_ = cmd.RegisterFlagCompletionFunc("format", cobra.FixedCompletions(statusFormats, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

func runStatus(ctx context.Context, stdout io.Writer, o statusOptions) error {
	if o.format != "text" && o.format != "json" {
		return usageError("unknown --format %q: use one of %v", o.format, statusFormats)
	}
	base, err := apiBaseURL(o.apiAddress)
	if err != nil {
		return usageError("--api-address: %v", err)
	}
	ctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	raw, err := fetchStatus(ctx, base+"/status")
	if err != nil {
		return &exitError{code: exitUsage, err: err}
	}
	if o.format == "json" {
		var out bytes.Buffer
		if err := json.Indent(&out, raw, "", "  "); err != nil {
			return &exitError{code: exitUsage, err: fmt.Errorf("the answer of %s is not JSON: %w", base, err)}
		}
		out.WriteByte('\n')
		_, err := stdout.Write(out.Bytes())
		return err
	}
	var st reconcile.Status
	if err := json.Unmarshal(raw, &st); err != nil {
		return &exitError{code: exitUsage, err: fmt.Errorf("the answer of %s is not a gitmesh status: %w", base, err)}
	}
	return printStatus(stdout, st, time.Now())
}

// apiBaseURL turns HOST:PORT or an http(s) URL into a base URL without a
// trailing slash.
func apiBaseURL(addr string) (string, error) {
	if addr == "" {
		return "", errors.New("empty address")
	}
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	u, err := url.Parse(addr)
	if err != nil {
		return "", err
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("%q is neither HOST:PORT nor an http(s) URL", addr)
	}
	return strings.TrimSuffix(u.String(), "/"), nil
}

// fetchStatus GETs target and returns the body of a 200 answer; its errors
// say what to check.
func fetchStatus(ctx context.Context, target string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		why := err
		if ue, ok := errors.AsType[*url.Error](err); ok {
			why = ue.Err
		}
		if errors.Is(err, context.DeadlineExceeded) {
			why = fmt.Errorf("no answer within %s", statusTimeout)
		}
		return nil, fmt.Errorf("cannot reach the gitmesh daemon at %s: %v\n"+
			"  is `gitmesh serve` running there? Point --api-address (or GITMESH_API_ADDRESS) at its HTTP API", target, why)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, fmt.Errorf("read the answer of %s: %w", target, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		msg := strings.TrimSpace(string(body))
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			msg = e.Error
		}
		if len(msg) > 200 {
			msg = msg[:200] + "…"
		}
		return nil, fmt.Errorf("%s answered %s: %s", target, resp.Status, msg)
	}
	return body, nil
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
		line("Head", "%s [%s]", commitLine(st.Head), orNone(st.HeadVerdict, "pending"))
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

	if st.Pinned {
		line("Pinned", "yes: new commits are checked but not published until `gitmesh resume`")
	} else {
		line("Pinned", "no")
	}
	line("Last error", "%s", orNone(st.LastError, "none"))

	c := st.Convergence
	line("Proxies", "%d/%d proxies ACKed (%d NACKed), %d connected", c.Acked, c.Proxies, c.Nacked, c.Connected)
	line("Last sync", "%s", when(now, st.LastSync))
	line("Last good sync", "%s", when(now, st.LastGoodSync))
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
