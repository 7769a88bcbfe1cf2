package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"

	"github.com/spf13/pflag"

	"github.com/gitmesh/gitmesh/store"
	"github.com/gitmesh/gitmesh/xds/ads"
	"github.com/gitmesh/gitmesh/xds/servertls"
	"github.com/gitmesh/gitmesh/xds/token"
)

// Modes of --xds-auth and --tls.
const (
	xdsAuthNone  = "none"
	xdsAuthToken = "token"
	tlsOff       = "off"
	tlsAuto      = "auto"
	tlsFiles     = "files"
)

// serveSecurity are the flags that decide who may reach serve's ports:
// dataplane tokens on the xDS port, TLS on the xDS port and the HTTP API.
type serveSecurity struct {
	xdsAuth                 string
	tls                     string
	tlsCertFile, tlsKeyFile string
	tlsSANs                 []string
}

func (s *serveSecurity) bind(f *pflag.FlagSet) {
	f.StringVar(&s.xdsAuth, "xds-auth", xdsAuthNone, "who may open an xDS stream: none (anyone who reaches the port) or token (a dataplane token from gitmesh token issue, for its own node only)")
	f.StringVar(&s.tls, "tls", tlsOff, "TLS on the xDS port and the HTTP API: off, auto (a certificate from a control-plane CA kept in the state directory) or files (--tls-cert-file, --tls-key-file)")
	f.StringVar(&s.tlsCertFile, "tls-cert-file", "", "with --tls files: PEM certificate (chain) of both servers")
	f.StringVar(&s.tlsKeyFile, "tls-key-file", "", "with --tls files: PEM private key of that certificate")
	f.StringSliceVar(&s.tlsSANs, "tls-san", nil, "with --tls auto: host names and IP addresses to put in the certificate besides 127.0.0.1 and localhost (repeat or comma-separate)")
}

// secured is what serveSecurity builds: the TLS config of both servers (nil
// when off), the CA file clients should trust (when auto), and the
// authenticator of xDS calls (nil when none).
type secured struct {
	tls    *tls.Config
	caFile string
	auth   ads.Authenticator
}

// build checks the flags and builds what they ask for; empty modes are the
// defaults, none and off. Dataplane tokens are checked against the keyring
// and revocation list of st (the state directory's files, or the shared
// documents of a PostgreSQL store); log is told when st cannot be reached.
func (s serveSecurity) build(stateDir string, st store.Store, log *slog.Logger) (secured, error) {
	var out secured
	if st == nil {
		st = store.Dir{Path: stateDir}
	}
	switch s.xdsAuth {
	case xdsAuthNone, "":
	case xdsAuthToken:
		v, err := token.NewKeeper(st).NewVerifier(context.Background(), token.VerifierOptions{Logger: log})
		if err != nil {
			return out, &exitError{code: exitUsage, err: fmt.Errorf("--xds-auth token: %w", err)}
		}
		out.auth = v.Authenticate
	default:
		return out, usageError("--xds-auth %q: want none or token", s.xdsAuth)
	}
	if s.tls != tlsFiles && (s.tlsCertFile != "" || s.tlsKeyFile != "") {
		return out, usageError("--tls-cert-file and --tls-key-file need --tls files")
	}
	if s.tls != tlsAuto && len(s.tlsSANs) > 0 {
		return out, usageError("--tls-san needs --tls auto")
	}
	var err error
	switch s.tls {
	case tlsOff, "":
	case tlsAuto:
		out.tls, out.caFile, err = servertls.AutoStore(st, stateDir, s.tlsSANs, nil)
	case tlsFiles:
		if s.tlsCertFile == "" || s.tlsKeyFile == "" {
			return out, usageError("--tls files needs --tls-cert-file and --tls-key-file")
		}
		out.tls, err = servertls.Files(s.tlsCertFile, s.tlsKeyFile)
	default:
		return out, usageError("--tls %q: want off, auto or files", s.tls)
	}
	if err != nil {
		return out, &exitError{code: exitUsage, err: fmt.Errorf("--tls %s: %w", s.tls, err)}
	}
	return out, nil
}

// listen wraps an API listener in TLS when it is on.
func (s secured) listen(lis net.Listener) net.Listener {
	if s.tls == nil {
		return lis
	}
	return tls.NewListener(lis, s.tls)
}

// scheme is the API's URL scheme.
func (s secured) scheme() string {
	if s.tls == nil {
		return "http"
	}
	return "https"
}

// describe prints how the ports are secured, for serve's banner.
func (s secured) describe(w, stderr io.Writer) {
	if s.auth != nil {
		fmt.Fprintln(w, "  xDS auth:         dataplane tokens (gitmesh token issue)")
	}
	if s.caFile != "" {
		fmt.Fprintf(w, "  TLS CA:           %s  (bootstrap/certs --ca-file, GITMESH_CA_FILE)\n", s.caFile)
	}
	if s.auth != nil && s.tls == nil {
		fmt.Fprintln(stderr, "warning: dataplane tokens travel in plaintext without --tls")
	}
}
