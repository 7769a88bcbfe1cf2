// Package certagent keeps the certificate files of a proxyless gRPC
// application current: it follows the dataplane's SDS secrets on an ADS
// stream to gitmesh, checks each certificate, writes the good ones
// atomically where gRPC's file_watcher reads them, and reconnects when the
// stream breaks. It is the logic behind `gitmesh certs`.
package certagent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/gitmesh/gitmesh/schema"
	"github.com/gitmesh/gitmesh/xds"
)

// Config is what an agent keeps current, and how it reaches gitmesh.
type Config struct {
	// Node is the dataplane: the agent connects as its xDS node,
	// Node.String(), with the gRPC flavour.
	Node schema.NodeID
	// XDSAddress is the gRPC target of gitmesh's xDS server, HOST:PORT.
	XDSAddress string
	// TLS, when not nil, secures the connection to the xDS server (a
	// servertls.ClientConfig); nil connects in plaintext.
	TLS *tls.Config
	// Token, when not empty, is the dataplane token, sent as
	// "authorization: Bearer <token>" on every call, and only over TLS
	// when TLS is set.
	Token string
	// DialOptions are applied after the agent's own (the credentials from
	// TLS and Token, keepalive pings within the server's limits), so they
	// may override them.
	DialOptions []grpc.DialOption
	// Dir is the directory of the files xds.CertFileName, xds.KeyFileName
	// and xds.CAFileName; it is created 0700 when missing.
	Dir string
	// Once ends Run after the first certificate is written or found up to
	// date, as an init container would.
	Once bool
	// Timeout is, with Once, how long Run waits for a certificate;
	// otherwise when it warns that none came. It must be positive.
	Timeout time.Duration
	// Logger receives what the agent does; certificates are logged by
	// their SANs and expiry, never their keys. Discarded when nil.
	Logger *slog.Logger
	// Now is the clock certificates are checked against; time.Now when nil.
	Now func() time.Time
}

// The agent's side of the xDS protocol.
const (
	userAgent = "gitmesh-certs"
	// noVersion is the version_info of a stream's first request before the
	// agent has written anything. It is never a real version, so the
	// control plane answers at once with what it holds for the node: its
	// secrets, or an empty response when the node's mesh has no mTLS (an
	// empty version_info would equal the empty version of a snapshot
	// without secrets, and the control plane would stay silent).
	noVersion = "gitmesh-certs:none"
	// closeGrace bounds the wait for the control plane to end a stream the
	// agent half-closed after its last ACK.
	closeGrace = 2 * time.Second
)

// Agent keeps the certificate files of one dataplane current. Run is its
// only entry point and is not reentrant.
type Agent struct {
	cfg  Config
	node *corev3.Node
	dial []grpc.DialOption
	log  *slog.Logger
	now  func() time.Time

	// written is the version the files hold, "" before the first write;
	// only Run's goroutine touches it.
	written string

	mu sync.Mutex // guards progress, read by the warning timer too
	progress
}

// progress is what the agent learnt so far, for the message when no
// certificate comes.
type progress struct {
	response  bool   // some SDS response arrived
	good      bool   // a certificate was written (or found up to date)
	noMTLS    bool   // the last response was empty: the mesh has no mTLS
	rejected  string // why the last response was rejected
	streamErr error  // why the last stream ended, nil while one is open
}

// New returns an agent for c, or an error when c lacks what the agent needs.
// It does not connect: Run does.
func New(c Config) (*Agent, error) {
	switch {
	case c.Node.Mesh == "" || c.Node.Name == "":
		return nil, errors.New("certificate agent: no node: the mesh and the name of the dataplane are required")
	case c.XDSAddress == "":
		return nil, errors.New("certificate agent: no xDS address")
	case c.Dir == "":
		return nil, errors.New("certificate agent: no directory")
	case c.Timeout <= 0:
		return nil, fmt.Errorf("certificate agent: timeout %v is not positive", c.Timeout)
	}
	metadata, err := structpb.NewStruct(map[string]any{xds.FlavorMetadataKey: string(xds.FlavorGRPC)})
	if err != nil {
		return nil, err
	}
	a := &Agent{
		cfg:  c,
		node: &corev3.Node{Id: c.Node.String(), Cluster: c.Node.Mesh, UserAgentName: userAgent, Metadata: metadata},
		dial: dialOptions(c),
		log:  c.Logger,
		now:  c.Now,
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	if a.now == nil {
		a.now = time.Now
	}
	return a, nil
}

// errTimeout is the cause of a Once run's context when its Timeout passed.
var errTimeout = errors.New("timeout")

// Run follows the node's secrets until ctx ends (or, with Once, until the
// first good write), reconnecting after a broken stream. It returns nil
// then, and otherwise an error that matches (errors.Is) ErrNoCertificate,
// ErrAddress or ErrWrite.
func (a *Agent) Run(ctx context.Context) error {
	if a.cfg.Once {
		// A cancel rather than a deadline: a deadline would travel to the
		// server, which could end the stream before ctx says why.
		var cancel context.CancelCauseFunc
		ctx, cancel = context.WithCancelCause(ctx)
		defer cancel(nil)
		timeout := time.AfterFunc(a.cfg.Timeout, func() { cancel(errTimeout) })
		defer timeout.Stop()
	} else {
		warn := time.AfterFunc(a.cfg.Timeout, func() {
			if err := a.missing(); err != nil {
				a.log.Warn("still no certificate", "error", err)
			}
		})
		defer warn.Stop()
	}
	a.log.Info("waiting for the certificate", "node", a.node.Id, "xds", a.cfg.XDSAddress, "dir", a.cfg.Dir)
	delay := newReconnectBackoff()
	for {
		healthy, err := a.stream(ctx)
		switch {
		case err == nil || isFinal(err):
			return err
		case ctx.Err() != nil:
			return a.stopped(ctx)
		}
		a.mu.Lock()
		a.streamErr = err
		a.mu.Unlock()
		if healthy {
			delay.Reset()
		}
		wait := delay.NextBackOff()
		a.log.Warn("xDS stream ended; reconnecting", "error", err, "in", wait.Round(time.Millisecond))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return a.stopped(ctx)
		case <-t.C:
		}
	}
}

// stopped is what Run returns once ctx ended: nil for an agent told to
// stop, an ErrNoCertificate for a Once run without a certificate.
func (a *Agent) stopped(ctx context.Context) error {
	if !a.cfg.Once {
		return nil
	}
	err := a.missing()
	if err == nil {
		return nil
	}
	if !errors.Is(context.Cause(ctx), errTimeout) {
		err = errors.New("stopped before a certificate was written")
	}
	return final(ErrNoCertificate, err)
}

// missing explains why no certificate was written yet; nil once one was.
func (a *Agent) missing() error {
	a.mu.Lock()
	s := a.progress
	a.mu.Unlock()
	mesh, name, addr, timeout := a.cfg.Node.Mesh, a.cfg.Node.Name, a.cfg.XDSAddress, a.cfg.Timeout
	switch {
	case s.good:
		return nil
	case s.noMTLS:
		return fmt.Errorf("mesh %s has no mTLS: no certificate to write", mesh)
	case s.rejected != "":
		return fmt.Errorf("no valid certificate for %s/%s from %s within %v; the last one was rejected: %s",
			mesh, name, addr, timeout, s.rejected)
	case !s.response && s.streamErr != nil:
		return fmt.Errorf("no certificate for %s/%s within %v: cannot get it from the xDS server at %s: %v",
			mesh, name, timeout, addr, s.streamErr)
	}
	return fmt.Errorf("no certificate for %s/%s within %v: the xDS server at %s serves no dataplane %s/%s "+
		"(check the name, and that gitmesh serves a commit that has it)", mesh, name, timeout, addr, mesh, name)
}
