package api

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gitmesh/gitmesh/reconcile"
)

// DefaultClientTimeout bounds a whole request of a Client, connection
// included. A rollback of a large mesh takes well under a second; the bound
// is for a daemon that does not answer.
const DefaultClientTimeout = 30 * time.Second

// maxAnswerBytes bounds an answer a Client reads.
const maxAnswerBytes = 16 << 20

// Client calls a daemon's API: what `gitmesh status`, `history`, `rollback`
// and `resume` use. It is safe for concurrent use.
type Client struct {
	base  string
	token string // "" sends no Authorization header
	http  *http.Client
}

// NewClient returns a client of the API at addr, HOST:PORT or an http(s)
// URL (a bare HOST:PORT is https when tlsConfig is set). token, when not
// empty, is sent as the bearer token; tlsConfig, when set, is the TLS of an
// https address.
func NewClient(addr, token string, tlsConfig *tls.Config) (*Client, error) {
	if tlsConfig != nil && !strings.Contains(addr, "://") {
		addr = "https://" + addr
	}
	base, err := baseURL(addr)
	if err != nil {
		return nil, err
	}
	hc := &http.Client{Timeout: DefaultClientTimeout}
	if tlsConfig != nil {
		if !strings.HasPrefix(base, "https://") {
			return nil, errors.New("a CA to trust needs an https:// address")
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = tlsConfig
		hc.Transport = tr
	}
	return &Client{base: base, token: token, http: hc}, nil
}

// Base is the API's base URL, without a trailing slash.
func (c *Client) Base() string { return c.base }

// baseURL turns HOST:PORT or an http(s) URL into a base URL without a
// trailing slash.
func baseURL(addr string) (string, error) {
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

// Error is an answer other than 2xx.
type Error struct {
	Target     string // the URL asked
	StatusCode int
	Message    string // the answer's error, or its start
	Body       []byte
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s answered %d %s: %s", e.Target, e.StatusCode, http.StatusText(e.StatusCode), e.Message)
}

// Refused reports whether the answer refuses an operation (an unknown or
// invalid commit, no pin): nothing changed, and the answer is "no".
func (e *Error) Refused() bool {
	switch e.StatusCode {
	case http.StatusNotFound, http.StatusUnprocessableEntity, http.StatusConflict:
		return true
	}
	return false
}

// Refusal is the body of a refused operation.
func (e *Error) Refusal() RefusalBody {
	var body RefusalBody
	if json.Unmarshal(e.Body, &body) != nil || body.Error == "" {
		body.Error = e.Message
	}
	return body
}

// Status asks for GET /status; raw is the answer as sent.
func (c *Client) Status(ctx context.Context) (st reconcile.Status, raw []byte, err error) {
	raw, err = c.call(ctx, http.MethodGet, "/status", nil, &st)
	return st, raw, err
}

// History asks for GET /history.
func (c *Client) History(ctx context.Context) (h HistoryList, raw []byte, err error) {
	raw, err = c.call(ctx, http.MethodGet, "/history", nil, &h)
	return h, raw, err
}

// Rollback asks for POST /rollback. A refusal is an *Error whose Refused
// is true.
func (c *Client) Rollback(ctx context.Context, req OperationRequest) (res OperationResult, raw []byte, err error) {
	raw, err = c.call(ctx, http.MethodPost, "/rollback", req, &res)
	return res, raw, err
}

// Resume asks for POST /resume, as Rollback.
func (c *Client) Resume(ctx context.Context, req OperationRequest) (res OperationResult, raw []byte, err error) {
	raw, err = c.call(ctx, http.MethodPost, "/resume", req, &res)
	return res, raw, err
}

// call sends a request (body, when not nil, as JSON) and decodes a 2xx
// answer into out; its errors say what to check.
func (c *Client) call(ctx context.Context, method, path string, body, out any) ([]byte, error) {
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
	resp, err := c.http.Do(req)
	if err != nil {
		why := err
		if ue, ok := errors.AsType[*url.Error](err); ok {
			why = ue.Err
			if ue.Timeout() {
				why = fmt.Errorf("no answer within %s", c.http.Timeout)
			}
		}
		return nil, fmt.Errorf("cannot reach the gitmesh daemon at %s: %v\n"+
			"  is `gitmesh serve` running there? Point --api-address (or GITMESH_API_ADDRESS) at its HTTP API", target, why)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes))
	if err != nil {
		return nil, fmt.Errorf("read the answer of %s: %w", target, err)
	}
	if resp.StatusCode/100 != 2 {
		var e errorBody
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
		return nil, &Error{Target: target, StatusCode: resp.StatusCode, Message: msg, Body: raw}
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return raw, fmt.Errorf("the answer of %s is not what gitmesh answers: %w", target, err)
	}
	return raw, nil
}
