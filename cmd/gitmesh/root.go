package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// Exit codes shared by every subcommand.
const (
	exitOK     = 0
	exitFailed = 1 // the command ran and its answer is "no" (invalid, changes found)
	exitUsage  = 2 // bad flags or arguments, or an I/O error
)

// exitError carries a specific exit code up to run.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// failed reports a "no" answer whose details the command already printed.
func failed() error { return &exitError{code: exitFailed} }

func usageError(format string, args ...any) error {
	return &exitError{code: exitUsage, err: fmt.Errorf(format, args...)}
}

// run executes one gitmesh command line and returns the process exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRootCmd()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil {
			fmt.Fprintln(stderr, "gitmesh:", ee.err)
		}
		return ee.code
	}
	// Cobra's own errors are about flags and arguments.
	fmt.Fprintln(stderr, "gitmesh:", err)
	return exitUsage
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "gitmesh",
		Short: "GitOps control plane for Kuma-style service-mesh policy",
		Long: `gitmesh follows a git branch of Mesh, Dataplane and TrafficPermission
resources, validates every commit as a whole, and serves it to Envoy and
proxyless gRPC over xDS.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       readBuildVersion().String(),
	}
	root.SetVersionTemplate("gitmesh {{.Version}}\n")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return &exitError{code: exitUsage, err: err}
	})
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error {
		return flagsFromEnv(cmd.Flags(), os.LookupEnv)
	}
	root.AddCommand(
		newValidateCmd(),
		newDiffCmd(),
		newBootstrapCmd(),
		newCertsCmd(),
		newRenderCmd(),
		newMigrateCmd(),
		newServeCmd(),
		newStatusCmd(),
		newHistoryCmd(),
		newRollbackCmd(),
		newResumeCmd(),
		newTokenCmd(),
		newStoreCmd(),
		newVersionCmd(),
	)
	return root
}

// EnvPrefix starts the environment variable of every flag: --state-dir is
// also GITMESH_STATE_DIR. A flag on the command line wins over the variable.
const EnvPrefix = "GITMESH_"

// envName is the environment variable that sets the flag name.
func envName(name string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// flagsFromEnv sets every flag of fs not given on the command line from its
// environment variable, when that is set.
func flagsFromEnv(fs *pflag.FlagSet, lookup func(string) (string, bool)) error {
	var err error
	fs.VisitAll(func(f *pflag.Flag) {
		if err != nil || f.Changed || f.Name == "help" {
			return
		}
		v, ok := lookup(envName(f.Name))
		if !ok {
			return
		}
		if e := fs.Set(f.Name, v); e != nil {
			err = usageError("%s: %v", envName(f.Name), e)
		}
	})
	return err
}
