package gittest

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// SSHServer serves the repositories under baseDir over SSH on 127.0.0.1.
// It accepts one client key, generated here, and one command, git-upload-pack
// '<path>' (fetching; pushing is refused), which it answers by running the
// real git-upload-pack on <path> taken relative to baseDir and confined to
// it. It returns the URL, "ssh://git@127.0.0.1:N/" (append a repository's
// path relative to baseDir), a known_hosts file naming its host key, and the
// client's private key file (unencrypted, OpenSSH format).
func SSHServer(t testing.TB, baseDir string) (url, knownHostsFile, clientKeyFile string) {
	t.Helper()
	gitProgram(t, "git-upload-pack")
	dir := t.TempDir()
	_, hostKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	hostSigner, err := ssh.NewSignerFromKey(hostKey)
	if err != nil {
		t.Fatal(err)
	}
	clientKeyFile = filepath.Join(dir, "id_ed25519")
	clientPub := writeSSHKey(t, clientKeyFile, "")

	cfg := &ssh.ServerConfig{
		PublicKeyCallback: func(_ ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			if bytes.Equal(key.Marshal(), clientPub.Marshal()) {
				return nil, nil
			}
			return nil, errors.New("unknown public key")
		},
	}
	cfg.AddHostKey(hostSigner)

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	knownHostsFile = filepath.Join(dir, "known_hosts")
	line := knownhosts.Line([]string{knownhosts.Normalize(addr)}, hostSigner.PublicKey()) + "\n"
	if err := os.WriteFile(knownHostsFile, []byte(line), 0o600); err != nil {
		t.Fatal(err)
	}

	s := &sshServer{baseDir: baseDir, cfg: cfg, conns: map[net.Conn]bool{}}
	s.wg.Add(1)
	go s.serve(l)
	t.Cleanup(func() {
		l.Close()
		s.mu.Lock()
		s.closed = true
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return "ssh://git@" + addr + "/", knownHostsFile, clientKeyFile
}

// NewSSHKey writes a new ed25519 private key to a file in OpenSSH format,
// encrypted when passphrase is not empty, and returns the file and the
// public key.
func NewSSHKey(t testing.TB, passphrase string) (keyFile string, pub ssh.PublicKey) {
	t.Helper()
	keyFile = filepath.Join(t.TempDir(), "id_ed25519")
	return keyFile, writeSSHKey(t, keyFile, passphrase)
}

func writeSSHKey(t testing.TB, file, passphrase string) ssh.PublicKey {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var block *pem.Block
	if passphrase == "" {
		block, err = ssh.MarshalPrivateKey(priv, "gittest")
	} else {
		block, err = ssh.MarshalPrivateKeyWithPassphrase(priv, "gittest", []byte(passphrase))
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return sshPub
}

type sshServer struct {
	baseDir string
	cfg     *ssh.ServerConfig
	wg      sync.WaitGroup

	mu     sync.Mutex
	conns  map[net.Conn]bool
	closed bool
}

func (s *sshServer) serve(l net.Listener) {
	defer s.wg.Done()
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = true
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			s.handle(c)
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
	}
}

func (s *sshServer) handle(c net.Conn) {
	defer c.Close()
	conn, chans, reqs, err := ssh.NewServerConn(c, s.cfg)
	if err != nil {
		return // a refused key or host-key check lands here
	}
	defer conn.Close()
	go ssh.DiscardRequests(reqs)
	var wg sync.WaitGroup
	defer wg.Wait()
	for nc := range chans {
		if nc.ChannelType() != "session" {
			nc.Reject(ssh.UnknownChannelType, "only sessions")
			continue
		}
		ch, requests, err := nc.Accept()
		if err != nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.session(ch, requests)
		}()
	}
}

// session answers one exec request, then closes the channel.
func (s *sshServer) session(ch ssh.Channel, requests <-chan *ssh.Request) {
	defer ch.Close()
	for req := range requests {
		if req.Type != "exec" {
			if req.WantReply {
				req.Reply(false, nil)
			}
			continue
		}
		var payload struct{ Command string }
		if err := ssh.Unmarshal(req.Payload, &payload); err != nil {
			req.Reply(false, nil)
			continue
		}
		req.Reply(true, nil)
		status := s.exec(ch, payload.Command)
		ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{status}))
		return
	}
}

// exec runs an allowed command with the channel as its standard streams and
// returns its exit status.
func (s *sshServer) exec(ch ssh.Channel, command string) uint32 {
	dir, err := s.uploadPackDir(command)
	if err != nil {
		fmt.Fprintf(ch.Stderr(), "gittest: %v\n", err)
		return 128
	}
	cmd := exec.Command("git", "upload-pack", dir)
	cmd.Env = Env()
	cmd.Stdout, cmd.Stderr = ch, ch.Stderr()
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return 128
	}
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(ch.Stderr(), "gittest: %v\n", err)
		return 128
	}
	// Copied by hand rather than through cmd.Stdin: Wait would otherwise
	// wait for the client to close its side, which it does only after the
	// exit status.
	go func() {
		io.Copy(stdin, ch)
		stdin.Close()
	}()
	err = cmd.Wait()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &exit):
		return uint32(exit.ExitCode())
	}
	return 128
}

// uploadPackDir parses `git-upload-pack '<path>'` (or `git upload-pack`),
// quoted as git and go-git quote it, and confines the path to baseDir.
func (s *sshServer) uploadPackDir(command string) (string, error) {
	rest, ok := strings.CutPrefix(command, "git-upload-pack ")
	if !ok {
		rest, ok = strings.CutPrefix(command, "git upload-pack ")
	}
	if !ok {
		return "", fmt.Errorf("command refused: %q (only git-upload-pack is served)", command)
	}
	path, err := shellUnquote(rest)
	if err != nil {
		return "", fmt.Errorf("command refused: %q: %v", command, err)
	}
	return repoPath(s.baseDir, path)
}

// shellUnquote reads one shell word made of single-quoted parts and
// backslash-escaped characters, which is how git quotes a path.
func shellUnquote(s string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\'':
			end := strings.IndexByte(s[i+1:], '\'')
			if end < 0 {
				return "", errors.New("unterminated quote")
			}
			b.WriteString(s[i+1 : i+1+end])
			i += end + 1
		case '\\':
			if i+1 == len(s) {
				return "", errors.New("trailing backslash")
			}
			i++
			b.WriteByte(s[i])
		case ' ', '\t', '\n', ';', '&', '|', '$', '`', '<', '>', '(', ')', '"':
			return "", fmt.Errorf("unexpected %q: one quoted path expected", c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), nil
}
