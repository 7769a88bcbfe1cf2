package gittest

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

// served makes a bare repository with one commit and returns the directory
// to serve, the repository's name in it and the commit.
func served(t *testing.T) (base, name, head string) {
	work := Init(t)
	head = Commit(t, work, "one", map[string]string{"a.yaml": "a: 1\n"})
	bare := Bare(t)
	Push(t, work, bare)
	return filepath.Dir(bare), filepath.Base(bare), head
}

// lsRemote runs the git CLI against url and returns main's hash.
func lsRemote(t *testing.T, url string, env ...string) (string, error) {
	cmd := exec.Command("git", "ls-remote", url, "refs/heads/main")
	cmd.Env = append(Env(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", errors.New(string(out))
	}
	hash, _, _ := strings.Cut(string(out), "\t")
	return hash, nil
}

func TestDaemon(t *testing.T) {
	base, name, head := served(t)
	url := Daemon(t, base)
	if got, err := lsRemote(t, url+name); err != nil || got != head {
		t.Errorf("ls-remote %s = %q, %v; want %s", url+name, got, err, head)
	}
}

func TestHTTPBackend(t *testing.T) {
	base, name, head := served(t)
	open := HTTPBackend(t, base, HTTPOptions{})
	if got, err := lsRemote(t, open+name); err != nil || got != head {
		t.Errorf("ls-remote = %q, %v", got, err)
	}
	locked := HTTPBackend(t, base, HTTPOptions{Token: "tok"})
	if _, err := lsRemote(t, locked+name, "GIT_TERMINAL_PROMPT=0"); err == nil || !strings.Contains(err.Error(), "401") && !strings.Contains(err.Error(), "Authentication failed") && !strings.Contains(err.Error(), "could not read Username") {
		t.Errorf("ls-remote without the token: %v", err)
	}
	withToken := strings.Replace(locked, "://", "://git:tok@", 1)
	if got, err := lsRemote(t, withToken+name); err != nil || got != head {
		t.Errorf("ls-remote with the token = %q, %v", got, err)
	}

	tlsURL, ca := HTTPSBackend(t, base, HTTPOptions{Username: "ada", Password: "pw"})
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(caFile, ca, 0o600)
	tlsURL = strings.Replace(tlsURL, "://", "://ada:pw@", 1)
	if got, err := lsRemote(t, tlsURL+name, "GIT_SSL_CAINFO="+caFile); err != nil || got != head {
		t.Errorf("ls-remote over https = %q, %v", got, err)
	}
}

func TestSSHServer(t *testing.T) {
	base, name, head := served(t)
	url, knownHosts, key := SSHServer(t, base)
	addr := strings.TrimSuffix(strings.TrimPrefix(url, "ssh://git@"), "/")

	b, err := os.ReadFile(key)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.ParsePrivateKey(b)
	if err != nil {
		t.Fatal(err)
	}
	hostKeys, err := os.ReadFile(knownHosts)
	if err != nil {
		t.Fatal(err)
	}
	_, _, hostKey, _, _, err := ssh.ParseKnownHosts(hostKeys)
	if err != nil {
		t.Fatal(err)
	}
	client, err := ssh.Dial("tcp", addr, &ssh.ClientConfig{
		User:            "git",
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: ssh.FixedHostKey(hostKey),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()

	run := func(command string) (string, error) {
		s, err := client.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		var stdout, stderr bytes.Buffer
		s.Stdout, s.Stderr = &stdout, &stderr
		s.Stdin = strings.NewReader("0000") // end the negotiation at once
		err = s.Run(command)
		return stdout.String() + stderr.String(), err
	}
	out, err := run("git-upload-pack '/" + name + "'")
	if err != nil || !strings.Contains(out, head+" refs/heads/main") {
		t.Errorf("upload-pack: %v\n%s", err, out)
	}
	if err := os.Symlink(t.TempDir(), filepath.Join(base, "out")); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{
		"git-receive-pack '/" + name + "'",
		"git-upload-pack '/out'",
		"git-upload-pack '/../" + filepath.Base(base) + "'",
		"git-upload-pack '/" + name + "'; touch /tmp/x",
		"sh -c true",
	} {
		if out, err := run(cmd); err == nil {
			t.Errorf("%s succeeded:\n%s", cmd, out)
		}
	}

	other, _ := NewSSHKey(t, "")
	b, _ = os.ReadFile(other)
	otherSigner, _ := ssh.ParsePrivateKey(b)
	if _, err := ssh.Dial("tcp", addr, &ssh.ClientConfig{
		User:            "git",
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(otherSigner)},
		HostKeyCallback: ssh.FixedHostKey(hostKey),
	}); err == nil {
		t.Error("the server accepted another key")
	}
}

func TestShellUnquote(t *testing.T) {
	for in, want := range map[string]string{
		`'/a b.git'`:     "/a b.git",
		`'/it'\''s.git'`: "/it's.git",
		`'/wow'\!'.git'`: "/wow!.git",
		`/plain.git`:     "/plain.git",
	} {
		if got, err := shellUnquote(in); err != nil || got != want {
			t.Errorf("shellUnquote(%s) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{`'/x'; rm -rf /`, `'/x`, `$(id)`, `a b`} {
		if got, err := shellUnquote(in); err == nil {
			t.Errorf("shellUnquote(%s) = %q, want an error", in, got)
		}
	}
}
