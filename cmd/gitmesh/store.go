package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/gitmesh/gitmesh/api"
	"github.com/gitmesh/gitmesh/reconcile"
	"github.com/gitmesh/gitmesh/reconcile/source"
	"github.com/gitmesh/gitmesh/store"
	"github.com/gitmesh/gitmesh/xds/servertls"
	"github.com/gitmesh/gitmesh/xds/token"
)

// envStore is the variable of --store; unlike the flag it may carry a
// password, the environment not being on the command line.
const envStore = "GITMESH_STORE"

// storeFlags select the state store: the state directory (default) or
// PostgreSQL.
type storeFlags struct {
	url, file, passwordFile, keyFile string
}

func (s *storeFlags) bind(f *pflag.FlagSet) {
	f.StringVar(&s.url, "store", "", "state store: a postgres:// URL without password (default: the state directory); "+
		"the password goes in --store-password-file, or the whole URL in --store-file or "+envStore)
	f.StringVar(&s.file, "store-file", "", "file holding the postgres:// URL of the state store, password included")
	f.StringVar(&s.passwordFile, "store-password-file", "", "file holding the PostgreSQL password of --store")
	f.StringVar(&s.keyFile, "store-key-file", "", "file holding the key (32 bytes, hex or base64; mode 0600, or 0640 when root owns it) that encrypts private keys in PostgreSQL")
}

// postgres reports whether a PostgreSQL store is asked for.
func (s storeFlags) postgres() bool { return s.url != "" || s.file != "" }

// schemaAction is what opening a PostgreSQL store does with its schema.
type schemaAction int

const (
	migrateAtOpen schemaAction = iota // apply the migrations it lacks
	migrateByHand                     // nothing: the caller migrates
)

// open opens the store the flags name: the state directory when none.

func (s storeFlags) open(ctx context.Context, stateDir string, migrate schemaAction) (store.Store, error) {
	if !s.postgres() {
		if s.passwordFile != "" || s.keyFile != "" {
			return nil, usageError("--store-password-file and --store-key-file need --store or --store-file")
		}
		return store.Dir{Path: stateDir}, nil
	}
	if s.url != "" && s.file != "" {
		return nil, usageError("--store and --store-file: give one")
	}
	raw := s.url
	if s.file != "" {
		b, err := os.ReadFile(s.file)
		if err != nil {
			return nil, usageError("--store-file: %v", err)
		}
		raw = strings.TrimSpace(string(b))
	} else if store.URLHasPassword(raw) && raw != os.Getenv(envStore) {
		return nil, usageError("--store: the URL carries a password, which would be seen in the process list and shell history; " +
			"put the password in --store-password-file, or the whole URL in --store-file or " + envStore)
	}
	if !store.IsPostgresURL(raw) {
		return nil, usageError("--store: want a postgres:// URL (the state directory is the default store)")
	}
	if s.keyFile == "" {
		return nil, usageError("a PostgreSQL store needs --store-key-file: the key that encrypts the private keys kept there " +
			"(make one with: openssl rand -hex 32 > store.key && chmod 600 store.key)")
	}
	key, err := store.ReadKeyFile(s.keyFile)
	if err != nil {
		return nil, usageError("--store-key-file: %v", err)
	}
	var password string
	if s.passwordFile != "" {
		b, err := os.ReadFile(s.passwordFile)
		if err != nil {
			return nil, usageError("--store-password-file: %v", err)
		}
		password = strings.TrimRight(string(b), "\r\n")
	}
	st, err := store.OpenPostgres(ctx, store.PostgresOptions{URL: raw, Password: password, Key: key,
		Migrate: migrate == migrateAtOpen, NoSchemaCheck: migrate == migrateByHand})
	if err != nil {
		return nil, &exitError{code: exitUsage, err: fmt.Errorf("state store: %w", err)}
	}
	return st, nil
}

func newStoreCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "store",
		Short: "Manage the PostgreSQL state store: migrate its schema, import a state directory",
	}
	cmd.AddCommand(newStoreMigrateCmd(), newStoreImportCmd())
	return cmd
}

func newStoreMigrateCmd() *cobra.Command {
	var sf storeFlags
	cmd := &cobra.Command{
		Use:   "migrate --store-file FILE --store-key-file KEY",
		Short: "Apply the schema migrations the PostgreSQL store lacks (serve applies them at start too)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !sf.postgres() {
				return usageError("store migrate needs --store, --store-file or " + envStore)
			}
			st, err := sf.open(cmd.Context(), "", migrateByHand)
			if err != nil {
				return err
			}
			defer st.Close()
			pg := st.(*store.Postgres)
			applied, err := pg.Migrate(cmd.Context())
			if err != nil {
				return err
			}
			if len(applied) == 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "%s: schema at version %d, nothing to do\n", st.Describe(), store.SchemaVersion)
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: applied migrations %v; schema at version %d\n", st.Describe(), applied, store.SchemaVersion)
			return nil
		},
	}
	sf.bind(cmd.Flags())
	return cmd
}

func newStoreImportCmd() *cobra.Command {
	var sf storeFlags
	var stateDir string
	var force bool
	cmd := &cobra.Command{
		Use:   "import --state-dir DIR --store-file FILE --store-key-file KEY",
		Short: "Copy a single replica's state directory into the PostgreSQL store",
		Long: `Import copies what gitmesh serve keeps in a state directory into PostgreSQL:
the published commit and the pin, the history, the mesh CAs and the control
plane's TLS CA (their keys encrypted with --store-key-file), the dataplane
tokens' keyring (encrypted too), issued list and revocation list, and the
digest of the admin token (` + adminTokenFileName + `), which every replica then
accepts; the token itself stays in DIR. Stop the daemon first. A store that
already holds a state, a token keyring or an admin token's digest is left
alone unless --force; revoked token ids already in the store are kept
either way. The git mirror and the issued certificates stay local.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !sf.postgres() {
				return usageError("store import needs --store, --store-file or " + envStore)
			}
			if _, err := os.Stat(reconcile.StateFile(stateDir)); err != nil {
				return usageError("--state-dir %s: no state file there (%v)", stateDir, err)
			}
			st, err := sf.open(cmd.Context(), stateDir, migrateAtOpen)
			if err != nil {
				return err
			}
			defer st.Close()
			return runStoreImport(cmd.Context(), cmd.OutOrStdout(), stateDir, st.(store.RecordStore), force)
		},
	}
	f := cmd.Flags()
	f.StringVar(&stateDir, "state-dir", ".gitmesh", "the state directory `DIR` to import")
	f.BoolVar(&force, "force", false, "replace a state the store already holds")
	sf.bind(f)
	return cmd
}

// importedKeys are the documents import copies, beside the state and the
// CAs it finds: their store class.
var importedKeys = map[string]store.Class{
	servertls.CADir + "/ca.crt": store.Public,
	servertls.CADir + "/ca.key": store.Secret,
}

func runStoreImport(ctx context.Context, stdout io.Writer, stateDir string, st store.RecordStore, force bool) error {
	if _, err := st.Get(ctx, reconcile.StateKey); err == nil && !force {
		return usageError("%s already holds a state: importing would replace it (--force to do so)", st.Describe())
	} else if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	if !force {
		for _, k := range []string{token.KeyFile, api.AdminTokenDigestKey} {
			if _, err := st.Get(ctx, k); err == nil {
				return usageError("%s already holds %s: importing would replace it (--force to do so)", st.Describe(), k)
			} else if !errors.Is(err, store.ErrNotFound) {
				return err
			}
		}
	}
	if force {
		if err := st.TrimRecords(ctx, math.MaxInt64); err != nil {
			return err
		}
	}
	src := store.Dir{Path: stateDir}
	state, err := reconcile.LoadState(stateDir)
	if err != nil {
		return err
	}
	hist, err := reconcile.OpenHistory(stateDir, reconcile.DefaultHistoryLimit)
	if err != nil {
		return err
	}
	keys := map[string]store.Class{}
	for k, c := range importedKeys {
		keys[k] = c
	}
	meshes, err := os.ReadDir(filepath.Join(stateDir, "ca"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	for _, m := range meshes {
		if m.IsDir() {
			keys["ca/"+m.Name()+"/ca.crt"], keys["ca/"+m.Name()+"/ca.key"] = store.Public, store.Secret
		}
	}
	names := make([]string, 0, len(keys))
	for k := range keys {
		names = append(names, k)
	}
	// Keys before certificates: a certificate without its key is an error.
	slices.SortFunc(names, func(a, b string) int {
		ka, kb := strings.HasSuffix(a, ".key"), strings.HasSuffix(b, ".key")
		if ka != kb {
			if ka {
				return -1
			}
			return 1
		}
		return strings.Compare(a, b)
	})
	var copied []string
	for _, k := range names {
		data, err := src.Get(ctx, k)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		if err := st.Put(ctx, k, data, keys[k]); err != nil {
			return err
		}
		copied = append(copied, k)
	}
	tokens, err := token.NewKeeper(st).Import(ctx, stateDir, true)
	if err != nil {
		return err
	}
	copied = append(copied, tokens...)
	if tok, err := source.ReadSecretFile(filepath.Join(stateDir, adminTokenFileName)); err == nil {
		if err := st.Put(ctx, api.AdminTokenDigestKey, api.FormatTokenDigest(api.TokenDigest([]byte(tok))), store.Private); err != nil {
			return err
		}
		copied = append(copied, api.AdminTokenDigestKey)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("admin token: %w", err)
	}
	recs := hist.Records()
	slices.Reverse(recs) // oldest first
	batch := make([]store.Record, 0, len(recs))
	for _, r := range recs {
		b, err := json.Marshal(r)
		if err != nil {
			return err
		}
		batch = append(batch, store.Record{ID: r.ID, Data: b})
	}
	if err := st.PutRecords(ctx, batch...); err != nil {
		return err
	}
	if len(recs) > 0 {
		if err := st.TrimRecords(ctx, recs[0].ID); err != nil {
			return err
		}
	}
	// The state last: a store with a state is a store imported whole.
	if err := reconcile.SaveStateTo(ctx, st, state); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Imported %s into %s:\n", stateDir, st.Describe())
	if state.Published != nil {
		fmt.Fprintf(stdout, "  published  %s\n", state.Published.Short())
	}
	if state.Pin != nil {
		fmt.Fprintf(stdout, "  pinned     on %s by %s\n", state.Pin.Commit.Short(), state.Pin.By)
	}
	fmt.Fprintf(stdout, "  history    %d records\n", len(recs))
	for _, k := range copied {
		fmt.Fprintf(stdout, "  %s\n", k)
	}
	fmt.Fprintf(stdout, "Start gitmesh serve with the same --store-file and --store-key-file; the git mirror is fetched again into its state directory.\n")
	return nil
}
