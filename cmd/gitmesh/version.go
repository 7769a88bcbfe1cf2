package main

import (
	"encoding/json"
	"fmt"
	"io"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"
)

// buildVersion is what the binary knows of itself, from the build
// information the Go toolchain embeds: the module version (a tag for `go
// install ...@v1.2.3`, "(devel)" for a build from a checkout), the commit
// and whether the tree had changes, and the Go version.
type buildVersion struct {
	Version  string `json:"version"`
	Commit   string `json:"commit,omitempty"`
	Time     string `json:"time,omitempty"`
	Modified bool   `json:"modified,omitempty"`
	Go       string `json:"go"`
}

func readBuildVersion() buildVersion {
	v := buildVersion{Version: "(unknown)", Go: "(unknown)"}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return v
	}
	v.Version, v.Go = bi.Main.Version, bi.GoVersion
	if v.Version == "" {
		v.Version = "(devel)"
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			v.Commit = s.Value
		case "vcs.time":
			v.Time = s.Value
		case "vcs.modified":
			v.Modified = s.Value == "true"
		}
	}
	return v
}

// String is the one line `gitmesh --version` prints.
func (v buildVersion) String() string {
	parts := []string{v.Version}
	if v.Commit != "" {
		c := v.Commit[:min(len(v.Commit), 12)]
		if v.Modified {
			c += "+changes"
		}
		parts = append(parts, "commit "+c)
	}
	parts = append(parts, v.Go)
	return strings.Join(parts, ", ")
}

func newVersionCmd() *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version of gitmesh, the commit it was built from and its Go version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return printVersion(cmd.OutOrStdout(), format, readBuildVersion())
		},
	}
	cmd.Flags().StringVarP(&format, "format", "o", "text", "output format: text or json")
	return cmd
}

func printVersion(w io.Writer, format string, v buildVersion) error {
	switch format {
	case "text":
		_, err := fmt.Fprintf(w, "gitmesh %s\n", v)
		return err
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	return usageError("unknown --format %q: use text or json", format)
}
