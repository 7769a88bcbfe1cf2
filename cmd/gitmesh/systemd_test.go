package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gitmesh/gitmesh/internal/logtest"
	"github.com/gitmesh/gitmesh/reconcile"
	"github.com/gitmesh/gitmesh/reconcile/gittest"
)

// unitFile is a systemd unit: per section, its settings in order (a key
// may repeat).
type unitFile map[string][][2]string

// values are every value of key in section.
func (u unitFile) values(section, key string) []string {
	var out []string
	for _, kv := range u[section] {
		if kv[0] == key {
			out = append(out, kv[1])
		}
	}
	return out
}

// parseUnit reads a unit file as systemd does: [Section] headers, Key=Value
// lines, # and ; comments, a trailing backslash continuing the line.
func parseUnit(src string) (unitFile, error) {
	u := unitFile{}
	section := ""
	var cont strings.Builder
	for i, line := range strings.Split(src, "\n") {
		t := strings.TrimSpace(line)
		if cont.Len() == 0 && (t == "" || t[0] == '#' || t[0] == ';') {
			continue
		}
		if cont.Len() > 0 && (t != "" && (t[0] == '#' || t[0] == ';')) {
			continue // comments within a continued value are dropped
		}
		if strings.HasSuffix(t, `\`) {
			cont.WriteString(strings.TrimSuffix(t, `\`) + " ")
			continue
		}
		cont.WriteString(t)
		t = strings.TrimSpace(cont.String())
		cont.Reset()
		if strings.HasPrefix(t, "[") && strings.HasSuffix(t, "]") {
			section = t[1 : len(t)-1]
			continue
		}
		k, v, ok := strings.Cut(t, "=")
		if !ok || section == "" {
			return nil, fmt.Errorf("line %d: %q is no Key=Value of a section", i+1, t)
		}
		u[section] = append(u[section], [2]string{strings.TrimSpace(k), strings.TrimSpace(v)})
	}
	if cont.Len() > 0 {
		return nil, fmt.Errorf("the file ends inside a continued line")
	}
	return u, nil
}

// envFile reads KEY=VALUE lines (comments and blank lines skipped), as
// systemd's EnvironmentFile= does for unquoted values.
func envFile(t *testing.T, file string) [][2]string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var out [][2]string
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" || l[0] == '#' || l[0] == ';' {
			continue
		}
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			t.Fatalf("%s: %q is no KEY=VALUE", file, l)
		}
		out = append(out, [2]string{k, v})
	}
	return out
}

// unitServeFlags checks that every word of a serve command line is a flag of
// gitmesh serve (with its value where it takes one) and returns the
// flags by name.
func unitServeFlags(t *testing.T, words []string) map[string]string {
	t.Helper()
	fs := newServeCmd().Flags()
	got := map[string]string{}
	for i := 0; i < len(words); i++ {
		w := words[i]
		if !strings.HasPrefix(w, "--") {
			t.Errorf("ExecStart: %q is no --flag (serve takes no arguments)", w)
			continue
		}
		name, val, hasVal := strings.Cut(strings.TrimPrefix(w, "--"), "=")
		f := fs.Lookup(name)
		if f == nil {
			t.Errorf("ExecStart: gitmesh serve has no flag --%s", name)
			continue
		}
		if !hasVal && f.NoOptDefVal == "" {
			if i+1 >= len(words) {
				t.Errorf("ExecStart: --%s without its value", name)
				continue
			}
			i++
			val = words[i]
		}
		if !hasVal && f.NoOptDefVal != "" {
			val = f.NoOptDefVal
		}
		if _, dup := got[name]; dup {
			t.Errorf("ExecStart: --%s given twice", name)
		}
		got[name] = val
	}
	return got
}

// checkServeEnv checks that each GITMESH_* variable sets a serve flag that
// accepts its value, and that none of them carries a secret.
func checkServeEnv(t *testing.T, where string, vars [][2]string) {
	t.Helper()
	serve := newServeCmd()
	for _, kv := range vars {
		name := serveFlagOfEnv(serve, kv[0])
		switch {
		case slices.Contains([]string{envGitPassword, envGitToken, envSSHPassphrase, envGitHubSecret, envGitLabToken,
			envWebhookSecret, envAdminToken, envReadToken}, kv[0]):
			t.Errorf("%s: %s puts a secret in the environment; hand it over as a file", where, kv[0])
		case name == "":
			t.Errorf("%s: %s sets no flag of gitmesh serve", where, kv[0])
		default:
			if err := serve.Flags().Set(name, kv[1]); err != nil {
				t.Errorf("%s: %s=%s: --%s refuses it: %v", where, kv[0], kv[1], name, err)
			}
		}
	}
}

// TestSystemdUnit reads examples/systemd/gitmesh.service: its ExecStart
// names only real serve flags, on serve's ports, with the secrets from
// credentials; the hardening is there; and the command line, with the
// example environment file, serves a repository and stops on SIGTERM.
func TestSystemdUnit(t *testing.T) {
	const file = repoRoot + "/examples/systemd/gitmesh.service"
	src, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	u, err := parseUnit(string(src))
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	one := func(key string) string {
		t.Helper()
		v := u.values("Service", key)
		if len(v) != 1 {
			t.Errorf("[Service] %s= set %d times; want once", key, len(v))
			return ""
		}
		return v[0]
	}
	for key, want := range map[string]string{
		"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
		"PrivateDevices": "yes", "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes",
		"ProtectKernelLogs": "yes", "ProtectControlGroups": "yes", "CapabilityBoundingSet": "",
		"MemoryDenyWriteExecute": "yes", "LockPersonality": "yes", "Restart": "on-failure",
		"StateDirectory": "gitmesh", "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
		"RestrictSUIDSGID": "yes", "RestrictNamespaces": "yes",
	} {
		if got := one(key); got != want {
			t.Errorf("[Service] %s=%s; want %q", key, got, want)
		}
	}
	if f := u.values("Service", "SystemCallFilter"); len(f) == 0 || f[0] != "@system-service" {
		t.Errorf("SystemCallFilter=%v; want @system-service first", f)
	}
	if user := u.values("Service", "User"); !slices.Equal(u.values("Service", "DynamicUser"), []string{"yes"}) &&
		(len(user) != 1 || user[0] == "" || user[0] == "root" || user[0] == "0") {
		t.Errorf("the service runs as User=%v; want a user of its own or DynamicUser=yes", user)
	}

	// ExecStart: gitmesh serve and its real flags.
	exe := one("ExecStart")
	words, err := shellWords(strings.TrimLeft(exe, "@-:+!"))
	if err != nil {
		t.Fatal(err)
	}
	if len(words) < 2 || filepath.Base(words[0]) != "gitmesh" || !filepath.IsAbs(words[0]) || words[1] != "serve" {
		t.Fatalf("ExecStart=%s; want /path/to/gitmesh serve ...", exe)
	}
	flags := unitServeFlags(t, words[2:])
	if flags["state-dir"] != "%S/"+one("StateDirectory") {
		t.Errorf("--state-dir %q; want %%S/%s, the StateDirectory=", flags["state-dir"], one("StateDirectory"))
	}
	for flag, def := range map[string]string{"xds-address": serveFlagPort(t, "xds-address"), "api-address": serveFlagPort(t, "api-address")} {
		if _, port, err := net.SplitHostPort(flags[flag]); err != nil || port != def {
			t.Errorf("--%s %q; want serve's port %s", flag, flags[flag], def)
		}
	}
	creds := map[string]string{}
	for _, c := range u.values("Service", "LoadCredential") {
		id, path, ok := strings.Cut(c, ":")
		if !ok || !filepath.IsAbs(path) {
			t.Errorf("LoadCredential=%s; want ID:/absolute/path", c)
		}
		creds[id] = path
	}
	used := map[string]bool{}
	for name, v := range flags {
		if strings.HasSuffix(name, "-file") && !strings.HasPrefix(v, "%d/") {
			t.Errorf("--%s %s: a secret not from the unit's credentials (%%d/...)", name, v)
		}
		if id, ok := strings.CutPrefix(v, "%d/"); ok {
			if _, ok := creds[id]; !ok {
				t.Errorf("--%s %s: no LoadCredential=%s:...", name, v, id)
			}
			used[id] = true
		}
	}
	for id := range creds {
		if !used[id] {
			t.Errorf("LoadCredential=%s: no flag reads %%d/%s", id, id)
		}
	}
	envFiles := u.values("Service", "EnvironmentFile")
	if len(envFiles) != 1 || filepath.Base(envFiles[0]) != "gitmesh.env" {
		t.Fatalf("EnvironmentFile=%v; want /etc/gitmesh/gitmesh.env", envFiles)
	}
	vars := envFile(t, repoRoot+"/examples/systemd/gitmesh.env")
	checkServeEnv(t, "gitmesh.env", vars)
	if slices.IndexFunc(vars, func(kv [2]string) bool { return kv[0] == "GITMESH_REPO" }) < 0 {
		t.Error("gitmesh.env does not set GITMESH_REPO, and ExecStart has no --repo")
	}

	// The unit as systemd would run it: specifiers, credentials and the
	// environment file in place, a local repository, free ports.
	work := gittest.Init(t)
	commit := gittest.Commit(t, work, "Initial policies", policyFiles(t))
	root := t.TempDir()
	stateRoot, credDir := filepath.Join(root, "state"), filepath.Join(root, "credentials")
	for _, d := range []string{filepath.Join(stateRoot, "gitmesh"), credDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	for id := range creds {
		if err := os.WriteFile(filepath.Join(credDir, id), []byte("secret-"+id+"\n"), 0o400); err != nil {
			t.Fatal(err)
		}
	}
	ports := map[string]string{"xds-address": freeAddr(t), "api-address": freeAddr(t)}
	args := []string{"serve"}
	for i := 2; i < len(words); i++ {
		w := strings.NewReplacer("%S", stateRoot, "%d", credDir, "%%", "%").Replace(words[i])
		if name := strings.TrimPrefix(words[i], "--"); ports[name] != "" {
			args = append(args, words[i], ports[name])
			i++
			continue
		}
		args = append(args, w)
	}
	env := []string{"GITMESH_TEST_RUN_MAIN=1", "CREDENTIALS_DIRECTORY=" + credDir, "STATE_DIRECTORY=" + filepath.Join(stateRoot, "gitmesh")}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, EnvPrefix) {
			env = append(env, kv)
		}
	}
	for _, kv := range vars {
		if kv[0] == "GITMESH_REPO" {
			kv[1] = work
		}
		env = append(env, kv[0]+"="+kv[1])
	}
	cmd := exec.Command(os.Args[0], args...)
	cmd.Args[0] = "gitmesh"
	cmd.Env = env
	logs := &logtest.Buffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var waitErr error
	exited := make(chan struct{})
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("gitmesh %s\n%s", strings.Join(args, " "), logs.String())
		}
	})

	// The environment file turns TLS on: trust the CA serve writes.
	api := ports["api-address"]
	client := &http.Client{Timeout: 2 * time.Second}
	scheme := "http"
	if slices.Contains(vars, [2]string{"GITMESH_TLS", tlsAuto}) {
		scheme = "https"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var st reconcile.Status
	for {
		if ctx.Err() != nil {
			t.Fatalf("the unit's serve never published %s", commit[:12])
		}
		select {
		case <-exited:
			t.Fatalf("the unit's serve exited: %v", waitErr)
		case <-time.After(50 * time.Millisecond):
		}
		if scheme == "https" && client.Transport == nil {
			pem, err := os.ReadFile(filepath.Join(stateRoot, "gitmesh", "control-plane-ca.pem"))
			if err != nil {
				continue
			}
			pool := x509.NewCertPool()
			pool.AppendCertsFromPEM(pem)
			client.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
		}
		if ok := fetchJSON(client, scheme+"://"+api+"/status", &st); ok && st.Ready && st.Published != nil {
			break
		}
	}
	if string(st.Published.Hash) != commit {
		t.Errorf("published %s; want %s", st.Published.Hash, commit)
	}
	// The admin token is the credential, not one generated into the state.
	if _, err := os.Stat(filepath.Join(stateRoot, "gitmesh", adminTokenFileName)); err == nil {
		t.Error("serve generated an admin token: --admin-token-file was not read")
	}
	// systemd stops it with SIGTERM; a clean exit does not count as a
	// failure for Restart=on-failure.
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
		if waitErr != nil {
			t.Errorf("after SIGTERM: %v; want exit 0", waitErr)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("no exit within 15 s of SIGTERM (TimeoutStopSec)")
	}
}

// TestSystemdUnitVerifies runs systemd-analyze verify on the unit, with
// the binary path pointed at this test binary.
func TestSystemdUnitVerifies(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatal("systemd-analyze is needed to verify the unit: install it with `apt-get install -y systemd` (.ci/run does)")
	}
	src, err := os.ReadFile(repoRoot + "/examples/systemd/gitmesh.service")
	if err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	unit := strings.ReplaceAll(string(src), "/usr/local/bin/gitmesh", exe)
	unit = strings.ReplaceAll(unit, "EnvironmentFile=/etc/gitmesh/gitmesh.env", "EnvironmentFile=-/etc/gitmesh/gitmesh.env")
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "gitmesh.service"), []byte(unit), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, analyze, "verify", filepath.Join(dir, "gitmesh.service")).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// fetchJSON GETs url into v; false when that failed in any way.
func fetchJSON(c *http.Client, url string, v any) bool {
	resp, err := c.Get(url)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	return resp.StatusCode == http.StatusOK && json.NewDecoder(resp.Body).Decode(v) == nil
}

// freeAddr is a free port of 127.0.0.1, as HOST:PORT.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
