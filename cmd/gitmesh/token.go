package main

import (
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/gitmesh/gitmesh/reconcile/source"
	"github.com/gitmesh/gitmesh/xds/token"
)

func newTokenCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Issue and revoke the dataplane tokens of the xDS server",
		Long: `A dataplane token lets one dataplane (one xDS node id, <mesh>.<name>) take
its configuration from ` + "`gitmesh serve --xds-auth token`" + `. Tokens are
signed with an Ed25519 key generated on first use in the state directory
(` + token.KeyFile + `, 0600); revoked token ids are listed in ` + token.RevokedFile + `
there. Run these commands on the control-plane host, with its state directory.

A token is a JWT: base64url(header).base64url(claims).base64url(signature),
header {"alg":"EdDSA","kid":KID,"typ":"JWT"} where KID is the RFC 7638
thumbprint of the signing key, claims {"mesh","name","iat","exp","jti"}.
Tokens of earlier versions carry no kid and keep verifying.`,
	}
	cmd.AddCommand(newTokenIssueCmd(), newTokenRevokeCmd())
	return cmd
}

func newTokenIssueCmd() *cobra.Command {
	var dataplane, stateDir string
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "issue --dataplane MESH/NAME [--ttl 720h]",
		Short: "Print a new token for one dataplane",
		Example: `  gitmesh token issue --dataplane default/web-01 --state-dir /var/lib/gitmesh > web-01.token
  gitmesh bootstrap --dataplane default/web-01 --xds-address 10.0.0.5:5678 --token-file web-01.token > envoy.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runTokenIssue(cmd.OutOrStdout(), cmd.ErrOrStderr(), dataplane, stateDir, ttl, time.Now())
		},
	}
	f := cmd.Flags()
	f.StringVar(&dataplane, "dataplane", "", "the dataplane, as MESH/NAME (required)")
	f.DurationVar(&ttl, "ttl", 720*time.Hour, "how long the token is valid")
	f.StringVar(&stateDir, "state-dir", ".gitmesh", "the state directory of `gitmesh serve`, holding the signing key")
	_ = cmd.MarkFlagRequired("dataplane")
	return cmd
}

func runTokenIssue(stdout, stderr io.Writer, dataplane, stateDir string, ttl time.Duration, now time.Time) error {
	mesh, name, err := parseDataplane(dataplane)
	if err != nil {
		return usageError("--dataplane: %w", err)
	}
	if ttl < time.Second {
		return usageError("--ttl must be at least 1s")
	}
	key, err := token.LoadOrCreateKey(stateDir)
	if err != nil {
		return &exitError{code: exitUsage, err: err}
	}
	id, err := token.NewID()
	if err != nil {
		return err
	}
	tok, err := token.Issue(key, token.Claims{Mesh: mesh, Name: name, IssuedAt: now.Unix(), Expires: now.Add(ttl).Unix(), ID: id})
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, tok)
	fmt.Fprintf(stderr, "token id %s for node %s.%s, expires %s\n", id, mesh, name, now.Add(ttl).UTC().Format(time.RFC3339))
	return nil
}

func newTokenRevokeCmd() *cobra.Command {
	var id, tokenFile, stateDir string
	cmd := &cobra.Command{
		Use:   "revoke --jti ID | --token-file FILE",
		Short: "Revoke a token: the xDS server refuses it on the next stream",
		Long: `Revoke adds a token id to the revocation list in the state directory
(rewritten atomically). The xDS server reads the list again when it changes
and refuses the token from the next stream on; streams already open keep
running until they reconnect.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if (id == "") == (tokenFile == "") {
				return usageError("give one of --jti and --token-file")
			}
			if tokenFile != "" {
				t, err := source.ReadSecretFile(tokenFile)
				if err != nil {
					return usageError("--token-file: %v", err)
				}
				c, err := token.Parse(t)
				if err != nil {
					return usageError("--token-file: %v", err)
				}
				id = c.ID
			}
			if err := token.Revoke(stateDir, id); err != nil {
				return &exitError{code: exitUsage, err: err}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "revoked token id %s\n", id)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&id, "jti", "", "the id of the token to revoke")
	f.StringVar(&tokenFile, "token-file", "", "file holding the token to revoke")
	f.StringVar(&stateDir, "state-dir", ".gitmesh", "the state directory of `gitmesh serve`")
	return cmd
}
