package gittest

import (
	"context"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// startTimeout bounds how long a server may take to accept connections.
const startTimeout = 10 * time.Second

// Daemon serves every repository under baseDir with the real `git daemon`
// on a free port of 127.0.0.1 and returns its URL, "git://127.0.0.1:N/";
// append a repository's path relative to baseDir.
func Daemon(t testing.TB, baseDir string) string {
	t.Helper()
	daemon := gitProgram(t, "git-daemon")
	var lastErr error
	for range 5 {
		port := freePort(t)
		url, err := startDaemon(t, daemon, baseDir, port)
		if err == nil {
			return url
		}
		lastErr = err // most likely another process took the port
	}
	t.Fatalf("start git daemon: %v", lastErr)
	return ""
}

func startDaemon(t testing.TB, daemon, baseDir string, port int) (string, error) {
	// Its output goes to a file: a pipe would stay open in the children git
	// daemon forks per connection and keep Wait from returning.
	logFile, err := os.CreateTemp(t.TempDir(), "git-daemon-*.log")
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	// The program itself, not `git daemon`: killing the git wrapper would
	// leave the daemon it started running.
	cmd := exec.Command(daemon, "--base-path="+baseDir, "--export-all", "--reuseaddr",
		"--listen=127.0.0.1", "--port="+strconv.Itoa(port), "--informative-errors")
	cmd.Env = Env()
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("git daemon: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	if err := waitAccepting(addr, exited); err != nil {
		cmd.Process.Kill()
		<-exited
		out, _ := os.ReadFile(logFile.Name())
		return "", fmt.Errorf("%w\n%s", err, out)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	return "git://" + addr + "/", nil
}

// freePort asks the kernel for a port that is free now.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// waitAccepting waits until addr accepts connections or the process exits.
func waitAccepting(addr string, exited <-chan error) error {
	deadline := time.Now().Add(startTimeout)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case err := <-exited:
			return fmt.Errorf("exited before listening on %s: %v", addr, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	return fmt.Errorf("not listening on %s after %v", addr, startTimeout)
}

// HTTPOptions make an HTTP server require credentials. With none set it
// serves anyone.
type HTTPOptions struct {
	// Username and Password are required as basic authentication.
	Username, Password string
	// Token is accepted as the basic-authentication password (any user) or
	// as a bearer token.
	Token string
	// OnRequest, when set, sees every request before it is served.
	OnRequest func(*http.Request)
	// Trickle, when set, makes the server a slow loris for fetches: the
	// answer to a fetch (POST git-upload-pack) is sent one byte per Trickle.
	// Listing refs is served at full speed.
	Trickle time.Duration
	// EndlessPack, when set, answers every fetch with a packfile that never
	// ends (a valid header, then random bytes, sent as fast as they are
	// read); listing refs is served by git. Nothing real can send that.
	EndlessPack bool
}

// HTTPBackend serves every repository under baseDir with the real `git
// http-backend` (smart HTTP) on 127.0.0.1 and returns its URL,
// "http://127.0.0.1:N/"; append a repository's path relative to baseDir.
// A request without the credentials opts requires gets 401.
func HTTPBackend(t testing.TB, baseDir string, opts HTTPOptions) string {
	t.Helper()
	srv := httptest.NewServer(httpBackend(t, baseDir, opts))
	t.Cleanup(srv.Close)
	return srv.URL + "/"
}

// HTTPSBackend is HTTPBackend over TLS. It returns the URL and the PEM of
// the certificate to trust (for 127.0.0.1).
func HTTPSBackend(t testing.TB, baseDir string, opts HTTPOptions) (url string, caPEM []byte) {
	t.Helper()
	srv := httptest.NewTLSServer(httpBackend(t, baseDir, opts))
	t.Cleanup(srv.Close)
	caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	return srv.URL + "/", caPEM
}

func httpBackend(t testing.TB, baseDir string, opts HTTPOptions) http.Handler {
	backend := &cgi.Handler{
		Path: gitProgram(t, "git-http-backend"),
		Dir:  baseDir,
		Env: []string{
			"GIT_PROJECT_ROOT=" + baseDir,
			"GIT_HTTP_EXPORT_ALL=1",
			"GIT_CONFIG_GLOBAL=/dev/null",
			"GIT_CONFIG_NOSYSTEM=1",
		},
		InheritEnv: []string{"PATH", "HOME", "TMPDIR"},
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if opts.OnRequest != nil {
			opts.OnRequest(r)
		}
		if !opts.authorized(r) {
			w.Header().Set("WWW-Authenticate", `Basic realm="gittest"`)
			http.Error(w, "authentication required", http.StatusUnauthorized)
			return
		}
		switch {
		case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/git-upload-pack") && opts.EndlessPack:
			endlessPack(w, r)
		case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/git-upload-pack") && opts.Trickle > 0:
			backend.ServeHTTP(&trickleWriter{ResponseWriter: w, ctx: r.Context(), every: opts.Trickle}, r)
		default:
			backend.ServeHTTP(w, r)
		}
	})
}

// trickleWriter sends the body one byte at a time, every so often, until the
// client goes away.
type trickleWriter struct {
	http.ResponseWriter
	ctx   context.Context
	every time.Duration
}

func (t *trickleWriter) Write(p []byte) (int, error) {
	rc := http.NewResponseController(t.ResponseWriter)
	for i := range p {
		select {
		case <-t.ctx.Done():
			return i, t.ctx.Err()
		case <-time.After(t.every):
		}
		if _, err := t.ResponseWriter.Write(p[i : i+1]); err != nil {
			return i, err
		}
		if err := rc.Flush(); err != nil {
			return i + 1, err
		}
	}
	return len(p), nil
}

// endlessPack answers a fetch (protocol v0, side-band-64k, as go-git asks)
// with NAK and a packfile that announces objects and never ends.
func endlessPack(w http.ResponseWriter, r *http.Request) {
	io.Copy(io.Discard, r.Body)
	w.Header().Set("Content-Type", "application/x-git-upload-pack-result")
	w.Header().Set("Cache-Control", "no-cache")
	rc := http.NewResponseController(w)
	band := func(data []byte) error {
		if _, err := fmt.Fprintf(w, "%04x\x01", len(data)+5); err != nil {
			return err
		}
		_, err := w.Write(data)
		return err
	}
	if _, err := io.WriteString(w, "0008NAK\n"); err != nil {
		return
	}
	if band([]byte("PACK\x00\x00\x00\x02\x00\x00\x10\x00")) != nil {
		return
	}
	chunk := make([]byte, 65515) // the most a side-band-64k packet carries
	for r.Context().Err() == nil {
		rand.Read(chunk)
		if band(chunk) != nil || rc.Flush() != nil {
			return
		}
	}
}

func (o HTTPOptions) authorized(r *http.Request) bool {
	user, pass, basic := r.BasicAuth()
	switch {
	case o.Token != "":
		return (basic && pass == o.Token) || r.Header.Get("Authorization") == "Bearer "+o.Token
	case o.Username != "" || o.Password != "":
		return basic && user == o.Username && pass == o.Password
	}
	return true
}

// Silent listens on 127.0.0.1, accepts connections and never answers: a
// server that hangs. It returns "127.0.0.1:N"; the connections are closed
// when the test ends.
func Silent(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
		done  = make(chan struct{})
	)
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err != nil {
				continue
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return l.Addr().String()
}

// repoPath confines a requested repository path to baseDir: it must name an
// existing directory inside it once links are resolved.
func repoPath(baseDir, requested string) (string, error) {
	rel := filepath.Clean(filepath.FromSlash("/" + requested))
	base, err := filepath.EvalSymlinks(baseDir)
	if err != nil {
		return "", err
	}
	full, err := filepath.EvalSymlinks(filepath.Join(base, rel))
	if err != nil {
		return "", fmt.Errorf("no repository %q", requested)
	}
	if r, err := filepath.Rel(base, full); err != nil || r == ".." || len(r) > 2 && r[:3] == ".."+string(filepath.Separator) {
		return "", fmt.Errorf("%q is outside the served directory", requested)
	}
	if st, err := os.Stat(full); err != nil || !st.IsDir() {
		return "", fmt.Errorf("no repository %q", requested)
	}
	return full, nil
}
