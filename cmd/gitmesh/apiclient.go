package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/pflag"

	"github.com/gitmesh/gitmesh/api"
	"github.com/gitmesh/gitmesh/reconcile/source"
)

// Environment variables of the API client.
const (
	envToken          = "GITMESH_TOKEN"            // the bearer token itself
	envAdminTokenFile = "GITMESH_ADMIN_TOKEN_FILE" // the file serve reads its admin token from
	envStateDir       = "GITMESH_STATE_DIR"
)

// adminTokenFileName is the admin token serve generates in its state
// directory when it is given none.
const adminTokenFileName = "admin-token"

// clientFlags are the flags of the commands that talk to a running daemon.
type clientFlags struct {
	apiAddress string
	tokenFile  string
	caFile     string
}

func (c *clientFlags) bind(f *pflag.FlagSet) {
	f.StringVar(&c.apiAddress, "api-address", "127.0.0.1:5681", "HOST:PORT or URL of the daemon's HTTP API")
	f.StringVar(&c.tokenFile, "token-file", "", "file holding the API bearer token (default: $"+envToken+", the file $"+
		envAdminTokenFile+" names, or admin-token in $"+envStateDir+" or .gitmesh)")
	f.StringVar(&c.caFile, "ca-file", "", "PEM file of the CA to trust for an https:// API address, instead of the system's "+
		"(<state-dir>/control-plane-ca.pem with gitmesh serve --tls auto)")
}

// client returns an API client. With needToken, a missing token is an
// error that says where one is looked for.
func (c *clientFlags) client(needToken bool) (*api.Client, error) {
	token, err := c.token(os.Getenv)
	if err != nil {
		return nil, err
	}
	if needToken && token == "" {
		return nil, usageError("no API token: give --token-file, set %s, or run where the daemon's state directory "+
			"holds %s (set %s when it is not .gitmesh)", envToken, adminTokenFileName, envStateDir)
	}
	cfg, err := tlsClientConfig(c.caFile)
	if err != nil {
		return nil, usageError("--ca-file: %v", err)
	}
	client, err := api.NewClient(c.apiAddress, token, cfg)
	if err != nil {
		return nil, usageError("--api-address: %v", err)
	}
	return client, nil
}

// token finds the bearer token: --token-file, $GITMESH_TOKEN, the file
// $GITMESH_ADMIN_TOKEN_FILE names, or the admin token a daemon generated
// in its state directory on this host. "" when there is none.
func (c *clientFlags) token(getenv func(string) string) (string, error) {
	if c.tokenFile != "" {
		t, err := source.ReadSecretFile(c.tokenFile)
		if err != nil {
			return "", usageError("--token-file: %v", err)
		}
		return t, nil
	}
	if t := strings.TrimSpace(getenv(envToken)); t != "" {
		return t, nil
	}
	if f := getenv(envAdminTokenFile); f != "" {
		t, err := source.ReadSecretFile(f)
		if err != nil {
			return "", usageError("%s: %v", envAdminTokenFile, err)
		}
		return t, nil
	}
	dir := getenv(envStateDir)
	if dir == "" {
		dir = ".gitmesh"
	}
	if t, err := source.ReadSecretFile(filepath.Join(dir, adminTokenFileName)); err == nil {
		return t, nil
	}
	return "", nil
}

// indentJSON writes raw indented, for --format json.
func indentJSON(w io.Writer, raw []byte) error {
	var out bytes.Buffer
	if err := json.Indent(&out, raw, "", "  "); err != nil {
		return fmt.Errorf("the answer is not JSON: %w", err)
	}
	out.WriteByte('\n')
	_, err := w.Write(out.Bytes())
	return err
}
