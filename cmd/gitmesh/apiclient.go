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
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/gitmesh/gitmesh/reconcile/source"
)

// apiTimeout bounds a whole request to the daemon, connection included. A
// rollback of a large mesh takes well under a second; the bound is for a
// daemon that does not answer.
const apiTimeout = 30 * time.Second

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
		"(<state-dir>/control-plane-ca.pem with `gitmesh serve --tls auto`)")
}

// apiClient talks to the daemon's HTTP API.
type apiClient struct {
	base  string
	token string // "" sends no Authorization header
	http  *http.Client
}

// client returns an API client. With needToken, a missing token is an
// error that says where one is looked for.
func (c *clientFlags) client(needToken bool) (*apiClient, error) {
	addr := c.apiAddress
	if c.caFile != "" && !strings.Contains(addr, "://") {
		addr = "https://" + addr
	}
	base, err := apiBaseURL(addr)
	if err != nil {
		return nil, usageError("--api-address: %v", err)
	}
	token, err := c.token(os.Getenv)
	if err != nil {
		return nil, err
	}
	if needToken && token == "" {
		return nil, usageError("no API token: give --token-file, set %s, or run where the daemon's state directory "+
			"holds %s (set %s when it is not .gitmesh)", envToken, adminTokenFileName, envStateDir)
	}
	hc := http.DefaultClient
	if c.caFile != "" {
		if !strings.HasPrefix(base, "https://") {
			return nil, usageError("--ca-file needs an https:// --api-address")
		}
		cfg, err := tlsClientConfig(c.caFile)
		if err != nil {
			return nil, usageError("--ca-file: %v", err)
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = cfg
		hc = &http.Client{Transport: tr}
	}
	return &apiClient{base: base, token: token, http: hc}, nil
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

// apiError is an answer other than 2xx.
type apiError struct {
	target string
	status int
	msg    string
	body   []byte
}

func (e *apiError) Error() string {
	return fmt.Sprintf("%s answered %d %s: %s", e.target, e.status, http.StatusText(e.status), e.msg)
}

// do sends a request and returns the body of a 2xx answer; its errors say
// what to check. body, when not nil, is sent as JSON.
func (c *apiClient) do(ctx context.Context, method, path string, body any) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	target := c.base + path
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, target, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	hc := c.http
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		why := err
		if ue, ok := errors.AsType[*url.Error](err); ok {
			why = ue.Err
		}
		if errors.Is(err, context.DeadlineExceeded) {
			why = fmt.Errorf("no answer within %s", apiTimeout)
		}
		return nil, fmt.Errorf("cannot reach the gitmesh daemon at %s: %v\n"+
			"  is `gitmesh serve` running there? Point --api-address (or GITMESH_API_ADDRESS) at its HTTP API", target, why)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("read the answer of %s: %w", target, err)
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error string `json:"error"`
		}
		msg := strings.TrimSpace(string(raw))
		if json.Unmarshal(raw, &e) == nil && e.Error != "" {
			msg = e.Error
		}
		if len(msg) > 300 {
			msg = msg[:300] + "…"
		}
		if resp.StatusCode == http.StatusUnauthorized {
			msg += " (see --token-file)"
		}
		return nil, &apiError{target: target, status: resp.StatusCode, msg: msg, body: raw}
	}
	return raw, nil
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
