package source

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	gitssh "github.com/go-git/go-git/v5/plumbing/transport/ssh"
	"golang.org/x/crypto/ssh"
)

// Credentials authenticate a Mirror to its remote. Which fields apply depends
// on the URL's scheme; the others are ignored. The secrets (Password, Token,
// SSHKeyPassphrase) never appear in logs or errors: String, GoString and
// LogValue redact them, and Mirror scrubs them from every error it returns.
type Credentials struct {
	// Username and Password are sent as HTTP basic authentication; for SSH,
	// Username is the login (default: the URL's user, else "git") and
	// Password is used when no SSHKeyFile is given.
	Username, Password string
	// Token is sent over HTTP(S) as the basic-authentication password, with
	// user Username or, when that is empty, "git" (what GitHub, GitLab and
	// Gitea accept for access tokens).
	Token string
	// SSHKeyFile is a private key (OpenSSH or PEM format), decrypted with
	// SSHKeyPassphrase when it is encrypted.
	SSHKeyFile, SSHKeyPassphrase string
	// KnownHostsFile holds the SSH server's host key, in OpenSSH's
	// known_hosts format. SSH needs it unless InsecureIgnoreHostKey is set.
	KnownHostsFile string
	// InsecureIgnoreHostKey accepts any SSH host key. For tests and first
	// contact only: it lets anyone on the path impersonate the server.
	InsecureIgnoreHostKey bool
}

// String describes the credentials with every secret replaced by "set".
func (c Credentials) String() string {
	var parts []string
	add := func(name, value string, secret bool) {
		if value == "" {
			return
		}
		if secret {
			value = "set"
		} else {
			value = strconv.Quote(value)
		}
		parts = append(parts, name+": "+value)
	}
	add("Username", c.Username, false)
	add("Password", c.Password, true)
	add("Token", c.Token, true)
	add("SSHKeyFile", c.SSHKeyFile, false)
	add("SSHKeyPassphrase", c.SSHKeyPassphrase, true)
	add("KnownHostsFile", c.KnownHostsFile, false)
	if c.InsecureIgnoreHostKey {
		parts = append(parts, "InsecureIgnoreHostKey: true")
	}
	return "Credentials{" + strings.Join(parts, ", ") + "}"
}

// GoString keeps %#v from printing secrets.
func (c Credentials) GoString() string { return c.String() }

// LogValue keeps slog from printing secrets.
func (c Credentials) LogValue() slog.Value { return slog.StringValue(c.String()) }

func (c Credentials) secrets() []string {
	var s []string
	for _, v := range []string{c.Password, c.Token, c.SSHKeyPassphrase} {
		if v != "" {
			s = append(s, v)
		}
	}
	return s
}

func (c Credentials) hasHTTP() bool { return c.Username != "" || c.Password != "" || c.Token != "" }

// ReadSecretFile reads a password, token or passphrase from a file (a
// mounted secret, say), without the trailing newline editors and `echo` add.
func ReadSecretFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read secret: %w", err)
	}
	s := strings.TrimRight(string(b), "\r\n")
	if s == "" {
		return "", fmt.Errorf("read secret: %s is empty", path)
	}
	return s, nil
}

// scpLike matches git's scp-like syntax, [user@]host:path, as go-git does.
var scpLike = regexp.MustCompile(`^(?:(?P<user>[^@]+)@)?(?P<host>[^:\s/]+):(?P<path>[^\\].*)$`)

// RedactURL returns a git URL fit for logs and status: HTTP(S) and git://
// URLs lose their user information (a lone user name there is often a
// token), SSH URLs keep their user but lose any password, and query values
// are replaced by "redacted". Local paths are returned unchanged.
func RedactURL(raw string) string {
	if !strings.Contains(raw, "://") {
		if m := scpLike.FindStringSubmatch(raw); m != nil && !isLocalPath(raw) {
			user, _, _ := strings.Cut(m[1], ":")
			if user != "" {
				user += "@"
			}
			return user + m[2] + ":" + m[3]
		}
		return raw
	}
	u, err := url.Parse(raw)
	if err != nil {
		// Unparseable: drop everything between the scheme and the last '@'
		// of the authority, which is where credentials would be.
		scheme, rest, _ := strings.Cut(raw, "://")
		authority, path, slash := strings.Cut(rest, "/")
		if i := strings.LastIndex(authority, "@"); i >= 0 {
			authority = authority[i+1:]
		}
		if slash {
			path = "/" + path
		}
		path, _, _ = strings.Cut(path, "?")
		return scheme + "://" + authority + path
	}
	if u.User != nil {
		if strings.EqualFold(u.Scheme, "ssh") || strings.HasPrefix(strings.ToLower(u.Scheme), "git+ssh") {
			u.User = url.User(u.User.Username())
		} else {
			u.User = nil
		}
	}
	if u.RawQuery != "" {
		q := u.Query()
		for k := range q {
			q[k] = []string{"redacted"}
		}
		u.RawQuery = q.Encode()
	}
	return u.String()
}

// isLocalPath reports whether a URL without a scheme names a local path, as
// git decides: a slash before the first colon, or a Windows drive letter.
func isLocalPath(s string) bool {
	colon := strings.IndexByte(s, ':')
	slash := strings.IndexByte(s, '/')
	if colon < 0 || (slash >= 0 && slash < colon) {
		return true
	}
	return colon == 1 && len(s) > 2 && (s[2] == '/' || s[2] == '\\')
}

// endpoint is a parsed, normalised remote: the URL stored in the mirror (no
// secrets), the credentials (those the URL carried moved in), and what the
// transport needs.
type endpoint struct {
	url       string // as stored in the mirror's config
	protocol  string // file, git, http, https or ssh
	localPath string // for file
	sshUser   string // for ssh: the user in the URL
	hostPort  string // for ssh: host:port, as known_hosts names it
}

// parseEndpoint normalises raw and moves credentials it carries into creds
// (explicit credentials win over the URL's).
func parseEndpoint(raw string, creds Credentials) (endpoint, Credentials, error) {
	if raw == "" {
		return endpoint{}, creds, errors.New("git URL is empty")
	}
	if !strings.Contains(raw, "://") && isLocalPath(raw) {
		abs, err := filepath.Abs(raw)
		if err != nil {
			return endpoint{}, creds, fmt.Errorf("git URL %s: %w", raw, err)
		}
		return endpoint{url: abs, protocol: "file", localPath: abs}, creds, nil
	}
	if !strings.Contains(raw, "://") {
		m := scpLike.FindStringSubmatch(raw)
		if m == nil {
			return endpoint{}, creds, fmt.Errorf("git URL %s is neither a URL, a path nor user@host:path", RedactURL(raw))
		}
		user, pass, _ := strings.Cut(m[1], ":")
		if pass != "" && creds.Password == "" {
			creds.Password = pass
		}
		stored := m[2] + ":" + m[3]
		if user != "" {
			stored = user + "@" + stored
		}
		return endpoint{url: stored, protocol: "ssh", sshUser: user, hostPort: net.JoinHostPort(m[2], "22")}, creds, nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // url.Error repeats the URL, secrets included
		}
		return endpoint{}, creds, fmt.Errorf("git URL %s: %w", RedactURL(raw), err)
	}
	ep := endpoint{protocol: strings.ToLower(u.Scheme)}
	switch ep.protocol {
	case "file":
		ep.localPath = filepath.FromSlash(u.Path)
		ep.url = ep.localPath
		return ep, creds, nil
	case "http", "https":
		if u.User != nil {
			if !creds.hasHTTP() {
				creds.Username = u.User.Username()
				creds.Password, _ = u.User.Password()
			}
			u.User = nil
		}
	case "git":
		u.User = nil
	case "ssh", "git+ssh", "ssh+git":
		ep.protocol = "ssh"
		port := u.Port()
		if port == "" {
			port = "22"
		}
		ep.hostPort = net.JoinHostPort(u.Hostname(), port)
		if u.User != nil {
			ep.sshUser = u.User.Username()
			if pass, ok := u.User.Password(); ok && creds.Password == "" {
				creds.Password = pass
			}
			u.User = url.User(ep.sshUser)
		}
		u.Scheme = "ssh"
	default:
		return endpoint{}, creds, fmt.Errorf("git URL %s: unsupported scheme %q (want a path, file, git, http, https or ssh)", RedactURL(raw), u.Scheme)
	}
	ep.url = u.String()
	return ep, creds, nil
}

// authMethod builds go-git's authentication for ep. It reads key and
// known_hosts files, so a missing file is reported when the mirror opens.
func authMethod(ep endpoint, c Credentials, timeout time.Duration) (transport.AuthMethod, error) {
	switch ep.protocol {
	case "http", "https":
		switch {
		case c.Token != "":
			user := c.Username
			if user == "" {
				user = "git"
			}
			return &githttp.BasicAuth{Username: user, Password: c.Token}, nil
		case c.Username != "" || c.Password != "":
			return &githttp.BasicAuth{Username: c.Username, Password: c.Password}, nil
		}
		return nil, nil
	case "ssh":
		return sshAuthMethod(ep, c, timeout)
	}
	return nil, nil
}

func sshAuthMethod(ep endpoint, c Credentials, timeout time.Duration) (transport.AuthMethod, error) {
	user := c.Username
	if user == "" {
		user = ep.sshUser
	}
	if user == "" {
		user = "git"
	}
	var helper gitssh.HostKeyCallbackHelper
	switch {
	case c.KnownHostsFile != "":
		if _, err := os.Stat(c.KnownHostsFile); err != nil {
			return nil, fmt.Errorf("ssh known_hosts: %w", err)
		}
		db, err := gitssh.NewKnownHostsDb(c.KnownHostsFile)
		if err != nil {
			return nil, fmt.Errorf("ssh known_hosts %s: %w", c.KnownHostsFile, err)
		}
		helper.HostKeyCallback = db.HostKeyCallback()
		// Offer only the key types known_hosts has for this host, so the
		// server cannot pick one that would then fail to verify.
		helper.HostKeyAlgorithms = db.HostKeyAlgorithms(ep.hostPort)
	case c.InsecureIgnoreHostKey:
		helper.HostKeyCallback = ssh.InsecureIgnoreHostKey()
	default:
		return nil, errors.New("ssh needs a known_hosts file to check the server's host key (or InsecureIgnoreHostKey)")
	}
	var auth gitssh.AuthMethod
	switch {
	case c.SSHKeyFile != "":
		keys, err := gitssh.NewPublicKeysFromFile(user, c.SSHKeyFile, c.SSHKeyPassphrase)
		if err != nil {
			return nil, fmt.Errorf("ssh key %s: %w", c.SSHKeyFile, scrubError(err, c.secrets()))
		}
		keys.HostKeyCallbackHelper = helper
		auth = keys
	case c.Password != "":
		auth = &gitssh.Password{User: user, Password: c.Password, HostKeyCallbackHelper: helper}
	default:
		return nil, errors.New("ssh needs a private key file (or a password)")
	}
	return sshAuth{AuthMethod: auth, timeout: timeout}, nil
}

// sshAuth bounds the TCP connect with the mirror's timeout.
type sshAuth struct {
	gitssh.AuthMethod
	timeout time.Duration
}

func (a sshAuth) ClientConfig() (*ssh.ClientConfig, error) {
	cfg, err := a.AuthMethod.ClientConfig()
	if err != nil {
		return nil, err
	}
	cfg.Timeout = a.timeout
	return cfg, nil
}

// scrubError replaces each secret in err's message with "xxxxx". When
// nothing needed replacing err is returned as is; otherwise the result still
// answers errors.Is for err's chain but does not unwrap to the original
// message.
func scrubError(err error, secrets []string) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	clean := msg
	for _, s := range secrets {
		clean = strings.ReplaceAll(clean, s, "xxxxx")
		if esc := url.QueryEscape(s); esc != s {
			clean = strings.ReplaceAll(clean, esc, "xxxxx")
		}
	}
	if clean == msg {
		return err
	}
	return &scrubbedError{msg: clean, err: err}
}

type scrubbedError struct {
	msg string
	err error
}

func (e *scrubbedError) Error() string        { return e.msg }
func (e *scrubbedError) Is(target error) bool { return errors.Is(e.err, target) }
