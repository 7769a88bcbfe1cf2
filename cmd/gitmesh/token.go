package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/gitmesh/gitmesh/reconcile/source"
	"github.com/gitmesh/gitmesh/store"
	"github.com/gitmesh/gitmesh/xds/token"
)

func newTokenCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Issue and revoke the dataplane tokens of the xDS server, rotate their signing key",
		Long: `A dataplane token lets one dataplane (one xDS node id, <mesh>.<name>) take
its configuration from ` + "`gitmesh serve --xds-auth token`" + `. Tokens are
signed with Ed25519 keys kept in the state directory's keyring
(` + token.KeyFile + `, 0600), started on first use with the key of an earlier
version (` + token.LegacyKeyFile + `) when there is one, else with a new key;
rotate-key adds a key for new tokens. Issued tokens are recorded in
` + token.IssuedFile + ` and revoked token ids listed in ` + token.RevokedFile + `
there. Run these commands on the control-plane host, with its state
directory.

With a PostgreSQL state store (--store-file and --store-key-file, as given
to gitmesh serve) the keyring and both lists are kept in the store instead,
the keyring encrypted, and shared by every replica: a token issued or
revoked from any host holds for all of them within a couple of seconds.

A token is a JWT: base64url(header).base64url(claims).base64url(signature),
header {"alg":"EdDSA","kid":KID,"typ":"JWT"} where KID is the RFC 7638
thumbprint of the signing key, claims {"mesh","name","iat","exp","jti"}.
Tokens of earlier versions carry no kid and keep verifying.`,
	}
	cmd.AddCommand(newTokenIssueCmd(), newTokenRevokeCmd(), newTokenRotateKeyCmd())
	return cmd
}

// tokenKeeper opens the store the flags name and keeps the tokens there;
// close closes the store.
func tokenKeeper(ctx context.Context, sf storeFlags, stateDir string) (k *token.Keeper, closeStore func(), err error) {
	st, err := sf.open(ctx, stateDir, migrateAtOpen)
	if err != nil {
		return nil, nil, err
	}
	return token.NewKeeper(st), func() { st.Close() }, nil
}

// where names the keeper's store in messages: the state directory as
// given, else the store's description.
func where(k *token.Keeper, stateDir string, sf storeFlags) string {
	if !sf.postgres() {
		return stateDir
	}
	return k.Describe()
}

func newTokenIssueCmd() *cobra.Command {
	var dataplane, stateDir string
	var ttl time.Duration
	var sf storeFlags
	cmd := &cobra.Command{
		Use:   "issue --dataplane MESH/NAME [--ttl 720h]",
		Short: "Print a new token for one dataplane",
		Example: `  gitmesh token issue --dataplane default/web-01 --state-dir /var/lib/gitmesh > web-01.token
  gitmesh token issue --dataplane default/web-01 --store-file /etc/gitmesh/store-url --store-key-file /etc/gitmesh/store.key > web-01.token
  gitmesh bootstrap --dataplane default/web-01 --xds-address 10.0.0.5:5678 --token-file web-01.token > envoy.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			k, closeStore, err := tokenKeeper(cmd.Context(), sf, stateDir)
			if err != nil {
				return err
			}
			defer closeStore()
			return runTokenIssue(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), k, dataplane, ttl, time.Now())
		},
	}
	f := cmd.Flags()
	f.StringVar(&dataplane, "dataplane", "", "the dataplane, as MESH/NAME (required)")
	f.DurationVar(&ttl, "ttl", 720*time.Hour, "how long the token is valid")
	f.StringVar(&stateDir, "state-dir", ".gitmesh", "the state directory `DIR` of gitmesh serve, holding the keyring (without a PostgreSQL store)")
	sf.bind(f)
	_ = cmd.MarkFlagRequired("dataplane")
	return cmd
}

func runTokenIssue(ctx context.Context, stdout, stderr io.Writer, k *token.Keeper, dataplane string, ttl time.Duration, now time.Time) error {
	mesh, name, err := parseDataplane(dataplane)
	if err != nil {
		return usageError("--dataplane: %w", err)
	}
	if ttl < time.Second {
		return usageError("--ttl must be at least 1s")
	}
	id, err := token.NewID()
	if err != nil {
		return err
	}
	c := token.Claims{Mesh: mesh, Name: name, IssuedAt: now.Unix(), Expires: now.Add(ttl).Unix(), ID: id}
	tok, key, err := k.IssueRecorded(ctx, c, now)
	if err != nil {
		return &exitError{code: exitUsage, err: err}
	}
	fmt.Fprintln(stdout, tok)
	fmt.Fprintf(stderr, "token id %s for node %s, expires %s, signed with key %s\n", id, c.Node(), formatTime(now.Add(ttl)), key.ID)
	return nil
}

func newTokenRevokeCmd() *cobra.Command {
	var id, tokenFile, stateDir string
	var sf storeFlags
	cmd := &cobra.Command{
		Use:   "revoke --jti ID | --token-file FILE",
		Short: "Revoke a token: the xDS server refuses it on the next stream",
		Long: `Revoke adds a token id to the revocation list in the state directory
(rewritten atomically), or in the PostgreSQL store with --store-file. The
xDS server reads the list again when it changes (on a PostgreSQL store,
every replica within a couple of seconds) and refuses the token from the
next stream on; streams already open keep running until they reconnect.

It warns when the state directory has no record of issuing the token (` + token.IssuedFile + `
lists each token issued, until a week after it expires) and revokes it all
the same: the id may come from a copy of this state directory.`,
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
			k, closeStore, err := tokenKeeper(cmd.Context(), sf, stateDir)
			if err != nil {
				return err
			}
			defer closeStore()
			return runTokenRevoke(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), k, where(k, stateDir, sf), id)
		},
	}
	f := cmd.Flags()
	f.StringVar(&id, "jti", "", "the id of the token to revoke")
	f.StringVar(&tokenFile, "token-file", "", "file holding the token to revoke")
	f.StringVar(&stateDir, "state-dir", ".gitmesh", "the state directory `DIR` of gitmesh serve (without a PostgreSQL store)")
	sf.bind(f)
	return cmd
}

// runTokenRevoke revokes id in k's store, which messages call where (the
// state directory, or the store's description).
func runTokenRevoke(ctx context.Context, stdout, stderr io.Writer, k *token.Keeper, where, id string) error {
	rec, found, lookupErr := k.LookupIssued(ctx, id)
	if err := k.Revoke(ctx, id); err != nil {
		return &exitError{code: exitUsage, err: err}
	}
	list := filepath.Join(where, token.RevokedFile)
	if _, local := k.Store().(store.Dir); !local {
		list = "the store's document " + token.RevokedFile
	}
	switch {
	case lookupErr != nil:
		fmt.Fprintf(stderr, "warning: cannot tell whether token id %s was issued here: %v\n", id, lookupErr)
	case !found:
		fmt.Fprintf(stderr, "warning: %s has no record of issuing token id %s (%s): a typo, a token of another state directory,\n"+
			"  one issued before tokens were recorded, or one that expired over %s ago. Revoked anyway, in case the id\n"+
			"  comes from a copy of this state; to undo, remove its line from %s.\n",
			where, id, token.IssuedFile, formatDays(token.IssuedRetention), list)
	}
	if found {
		fmt.Fprintf(stdout, "revoked token id %s (node %s, expires %s)\n", id, rec.Node, formatTime(rec.Expires))
	} else {
		fmt.Fprintf(stdout, "revoked token id %s\n", id)
	}
	return nil
}

// formatDays writes a whole number of days as such.
func formatDays(d time.Duration) string {
	if days := d / (24 * time.Hour); d%(24*time.Hour) == 0 && days > 0 {
		return fmt.Sprintf("%d days", days)
	}
	return d.String()
}

func newTokenRotateKeyCmd() *cobra.Command {
	var stateDir string
	var dropLegacy bool
	var sf storeFlags
	cmd := &cobra.Command{
		Use:   "rotate-key [--state-dir DIR]",
		Short: "Sign new tokens with a new key; drop the old keys whose tokens have all expired",
		Long: `Rotate-key adds a new Ed25519 key to the keyring (` + token.KeyFile + `) and
makes it the one new tokens are signed with. Tokens of the older keys keep
verifying until they expire: each key remembers the latest expiry of the
tokens issued with it, and is dropped from the keyring by the first
rotate-key after that. A running ` + "`gitmesh serve`" + ` picks the new keyring
up without a restart (on a PostgreSQL store, every replica within a couple
of seconds). It prints the new key's kid, never key material.

The key taken over from an earlier version (` + token.LegacyKeyFile + `) also
checks the tokens of that version, which carry no kid and whose expiry was
not recorded, so it is kept until --drop-legacy: from then on tokens without
kid are refused, and the key stays only until the tokens issued with it by
this version have expired.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			k, closeStore, err := tokenKeeper(cmd.Context(), sf, stateDir)
			if err != nil {
				return err
			}
			defer closeStore()
			return runTokenRotateKeyWith(cmd.Context(), cmd.ErrOrStderr(), k, dropLegacy, time.Now())
		},
	}
	f := cmd.Flags()
	f.StringVar(&stateDir, "state-dir", ".gitmesh", "the state directory `DIR` of gitmesh serve, holding the keyring (without a PostgreSQL store)")
	f.BoolVar(&dropLegacy, "drop-legacy", false, "refuse tokens without kid (issued by earlier versions) from now on")
	sf.bind(f)
	return cmd
}

func runTokenRotateKey(stderr io.Writer, stateDir string, dropLegacy bool, now time.Time) error {
	return runTokenRotateKeyWith(context.Background(), stderr, token.NewKeeper(store.Dir{Path: stateDir}), dropLegacy, now)
}

func runTokenRotateKeyWith(ctx context.Context, stderr io.Writer, k *token.Keeper, dropLegacy bool, now time.Time) error {
	r, err := k.RotateKey(ctx, now, token.RotateOptions{DropLegacy: dropLegacy})
	if err != nil {
		return &exitError{code: exitUsage, err: err}
	}
	fmt.Fprintf(stderr, "new signing key %s: tokens issued from now on carry it\n", r.New.ID)
	if r.LegacyEnded != nil {
		fmt.Fprintf(stderr, "key %s no longer checks tokens without kid: they are refused from now on\n", r.LegacyEnded.ID)
	}
	for _, k := range r.Kept {
		switch {
		case k.Legacy:
			fmt.Fprintf(stderr, "kept key %s (from %s): it checks the tokens of earlier versions, which carry no kid and no recorded expiry; rotate-key --drop-legacy once they are replaced\n",
				k.ID, token.LegacyKeyFile)
		default:
			fmt.Fprintf(stderr, "kept key %s: its tokens verify until they expire, the last at %s\n", k.ID, formatTime(k.LastExpiry))
		}
	}
	for _, k := range r.Dropped {
		if k.LastExpiry.IsZero() {
			fmt.Fprintf(stderr, "dropped key %s: no token was issued with it\n", k.ID)
		} else {
			fmt.Fprintf(stderr, "dropped key %s: its last token expired at %s\n", k.ID, formatTime(k.LastExpiry))
		}
	}
	return nil
}

func formatTime(t time.Time) string { return t.UTC().Format(time.RFC3339) }
