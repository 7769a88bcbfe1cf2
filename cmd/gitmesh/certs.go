package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/spf13/cobra"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/gitmesh/gitmesh/schema"
	"github.com/gitmesh/gitmesh/xds"
)

// The files of a certificate directory, as the gRPC bootstrap names them.
const (
	certFileName = xds.CertFileName
	keyFileName  = xds.KeyFileName
	caFileName   = xds.CAFileName
)

// The agent's side of the xDS protocol.
const (
	certsUserAgent = "gitmesh-certs"
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

// Bounds of the wait between two streams.
const (
	minReconnect = 500 * time.Millisecond
	maxReconnect = 30 * time.Second
)

type certsOptions struct {
	dataplane  string
	xdsAddress string
	dir        string
	once       bool
	timeout    time.Duration
	logFormat  string
	logLevel   string
	access     xdsAccess
}

func newCertsCmd() *cobra.Command {
	var o certsOptions
	cmd := &cobra.Command{
		Use:   "certs --dataplane MESH/NAME [--xds-address HOST:PORT] [--dir DIR] [--once]",
		Short: "Keep the certificate files of a proxyless gRPC application current",
		Long: `Certs is the certificate agent of a proxyless gRPC application in a mesh
with mTLS. It connects to gitmesh's xDS server as the dataplane's node
(<mesh>.<name>), takes the dataplane's certificate and the mesh CA over SDS,
checks them (the key matches the certificate, which chains to the CA and has
not expired), and writes cert.pem, key.pem (0600) and ca.pem into --dir,
where the bootstrap of ` + "`gitmesh bootstrap --grpc`" + ` points gRPC's
certificate provider. A response that fails the checks is rejected (NACK)
and the files are kept.

It keeps running and rewrites the files when gitmesh renews the
certificate, reconnecting when the stream breaks. With --once it exits after
the first write, as an init container would, and fails when no certificate
arrives within --timeout.

Every flag can also be set with an environment variable: --xds-address is
GITMESH_XDS_ADDRESS.`,
		Example: `  gitmesh certs --dataplane default/reviews-v1 --xds-address 10.0.0.5:5678
  gitmesh certs --dataplane default/reviews-v1 --xds-address 10.0.0.5:5678 --once --dir /etc/reviews/tls`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			a, err := newCertAgent(o, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			return a.run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.dataplane, "dataplane", "", "the dataplane, as MESH/NAME (required)")
	f.StringVar(&o.xdsAddress, "xds-address", "127.0.0.1:5678", "HOST:PORT of gitmesh's xDS server")
	f.StringVar(&o.dir, "dir", "", "directory of cert.pem, key.pem and ca.pem (default "+defaultCertDirRoot+"/MESH/NAME)")
	f.BoolVar(&o.once, "once", false, "exit after the first certificate is written")
	f.DurationVar(&o.timeout, "timeout", 30*time.Second, "with --once, how long to wait for a certificate; otherwise when to warn that none came")
	f.StringVar(&o.logFormat, "log-format", "text", "log format: text or json")
	f.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	o.access.bind(f)
	_ = cmd.MarkFlagRequired("dataplane")
	return cmd
}

// xdsDialOptions are the options of the agent's connection to gitmesh's xDS
// server, all in one place: TLS and the dataplane token when given, and
// keepalive pings that notice a connection that died silently, within the
// server's limits.
func xdsDialOptions(access xdsAccess, mesh, name string) ([]grpc.DialOption, error) {
	opts, err := access.dialOptions(mesh, name)
	if err != nil {
		return nil, err
	}
	return append(opts, grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second})), nil
}

// certAgent keeps the certificate files of one dataplane current. run is
// its only entry point and is not reentrant.
type certAgent struct {
	mesh, name string
	node       *corev3.Node
	xdsAddress string
	dial       []grpc.DialOption
	dir        string
	once       bool
	timeout    time.Duration
	log        *slog.Logger
	now        func() time.Time

	// written is the version the files hold, "" before the first write;
	// only run's goroutine touches it.
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

func newCertAgent(o certsOptions, stderr io.Writer) (*certAgent, error) {
	mesh, name, err := parseDataplane(o.dataplane)
	if err != nil {
		return nil, usageError("--dataplane: %w", err)
	}
	if _, _, err := parseHostPort(o.xdsAddress); err != nil {
		return nil, usageError("--xds-address: %w", err)
	}
	if o.timeout <= 0 {
		return nil, usageError("--timeout must be positive")
	}
	log, err := newLogger(stderr, o.logFormat, o.logLevel)
	if err != nil {
		return nil, err
	}
	dir := o.dir
	if dir == "" {
		dir = defaultCertDir(schema.NodeID{Mesh: mesh, Name: name})
	}
	metadata, err := structpb.NewStruct(map[string]any{xds.FlavorMetadataKey: string(xds.FlavorGRPC)})
	if err != nil {
		return nil, err
	}
	node := &corev3.Node{Id: mesh + "." + name, Cluster: mesh, UserAgentName: certsUserAgent, Metadata: metadata}
	dial, err := xdsDialOptions(o.access, mesh, name)
	if err != nil {
		return nil, err
	}
	return &certAgent{mesh: mesh, name: name, node: node, xdsAddress: o.xdsAddress, dial: dial, dir: dir,
		once: o.once, timeout: o.timeout, log: log, now: time.Now}, nil
}

// errNoCertInTime ends a --once run whose timeout passed.
var errNoCertInTime = errors.New("timeout")

// run follows the node's secrets until ctx ends (or, with once, until the
// first good write), reconnecting after a broken stream.
func (a *certAgent) run(ctx context.Context) error {
	if a.once {
		// A cancel rather than a deadline: a deadline would travel to the
		// server, which could end the stream before ctx says why.
		var cancel context.CancelCauseFunc
		ctx, cancel = context.WithCancelCause(ctx)
		defer cancel(nil)
		timeout := time.AfterFunc(a.timeout, func() { cancel(errNoCertInTime) })
		defer timeout.Stop()
	} else {
		warn := time.AfterFunc(a.timeout, func() {
			if err := a.missing(); err != nil {
				a.log.Warn("still no certificate", "error", err)
			}
		})
		defer warn.Stop()
	}
	a.log.Info("waiting for the certificate", "node", a.node.Id, "xds", a.xdsAddress, "dir", a.dir)
	delay := backoff{min: minReconnect, max: maxReconnect}
	for {
		healthy, err := a.stream(ctx)
		var ee *exitError
		switch {
		case err == nil || errors.As(err, &ee):
			return err
		case ctx.Err() != nil:
			return a.stopped(ctx)
		}
		a.mu.Lock()
		a.streamErr = err
		a.mu.Unlock()
		if healthy {
			delay.reset()
		}
		wait := delay.next()
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

// stopped is what run returns once ctx ended: nil for an agent told to
// stop, an *exitError for a --once run without a certificate.
func (a *certAgent) stopped(ctx context.Context) error {
	if !a.once {
		return nil
	}
	err := a.missing()
	if err == nil {
		return nil
	}
	if !errors.Is(context.Cause(ctx), errNoCertInTime) {
		err = errors.New("stopped before a certificate was written")
	}
	return &exitError{code: exitFailed, err: fmt.Errorf("certs: %w", err)}
}

// missing explains why no certificate was written yet; nil once one was.
func (a *certAgent) missing() error {
	a.mu.Lock()
	s := a.progress
	a.mu.Unlock()
	switch {
	case s.good:
		return nil
	case s.noMTLS:
		return fmt.Errorf("mesh %s has no mTLS: no certificate to write", a.mesh)
	case s.rejected != "":
		return fmt.Errorf("no valid certificate for %s/%s from %s within %v; the last one was rejected: %s",
			a.mesh, a.name, a.xdsAddress, a.timeout, s.rejected)
	case !s.response && s.streamErr != nil:
		return fmt.Errorf("no certificate for %s/%s within %v: cannot get it from the xDS server at %s: %v",
			a.mesh, a.name, a.timeout, a.xdsAddress, s.streamErr)
	}
	return fmt.Errorf("no certificate for %s/%s within %v: the xDS server at %s serves no dataplane %s/%s "+
		"(check the name, and that gitmesh serves a commit that has it)", a.mesh, a.name, a.timeout, a.xdsAddress, a.mesh, a.name)
}

// stream runs one ADS stream: it subscribes to the node's secrets and
// answers every response, writing the good ones. healthy reports that the
// control plane answered on it and the agent could act on the answer. It
// returns nil when a --once run is done, an *exitError for what retrying
// cannot mend, and otherwise why the stream ended.
func (a *certAgent) stream(ctx context.Context) (healthy bool, err error) {
	conn, err := grpc.NewClient(a.xdsAddress, a.dial...)
	if err != nil {
		return false, usageError("--xds-address: %v", err)
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := discoverygrpc.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		return false, fmt.Errorf("open ADS stream: %w", err)
	}
	version := a.written
	if version == "" {
		version = noVersion
	}
	first := a.request(version, "", nil)
	first.Node = a.node
	if err := send(st, first); err != nil {
		return false, err
	}
	a.mu.Lock()
	a.streamErr = nil // connected: an earlier failure no longer explains a silence
	a.mu.Unlock()
	a.log.Debug("subscribed to the secrets", "node", a.node.Id, "xds", a.xdsAddress)
	for {
		resp, err := st.Recv()
		if err != nil {
			return healthy, fmt.Errorf("ADS stream: %w", err)
		}
		if resp.GetTypeUrl() != resource.SecretType {
			a.log.Debug("ignoring a response of a type the agent did not ask for", "type", resp.GetTypeUrl())
			continue
		}
		answer, done, fatal := a.handle(resp)
		healthy = healthy || fatal == nil
		if err := send(st, answer); err != nil {
			return healthy, err
		}
		if a.once && done {
			finish(st)
			return healthy, fatal
		}
		if fatal != nil {
			return healthy, fatal
		}
	}
}

// send sends req; when the server has ended the stream, the error is the
// stream's status rather than io.EOF.
func send(st discoverygrpc.AggregatedDiscoveryService_StreamAggregatedResourcesClient, req *discoverygrpc.DiscoveryRequest) error {
	err := st.Send(req)
	if errors.Is(err, io.EOF) {
		_, err = st.Recv()
	}
	if err != nil {
		return fmt.Errorf("ADS stream: %w", err)
	}
	return nil
}

// finish half-closes a stream after its last request and waits a little for
// the server to end it, so that the last ACK is read before the connection
// goes.
func finish(st discoverygrpc.AggregatedDiscoveryService_StreamAggregatedResourcesClient) {
	if st.CloseSend() != nil {
		return
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			if _, err := st.Recv(); err != nil {
				return
			}
		}
	}()
	t := time.NewTimer(closeGrace)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C: // the caller cancels the stream, which ends the goroutine
	}
}

// request is a request for the node's two secrets: an ACK of the response
// with nonce at version, or, with rejected, a NACK of it (version is then
// the last one accepted).
func (a *certAgent) request(version, nonce string, rejected error) *discoverygrpc.DiscoveryRequest {
	req := &discoverygrpc.DiscoveryRequest{
		VersionInfo:   version,
		ResponseNonce: nonce,
		TypeUrl:       resource.SecretType,
		ResourceNames: []string{xds.SecretIdentity, xds.SecretMeshCA},
	}
	if rejected != nil {
		req.ErrorDetail = &statuspb.Status{Code: int32(codes.InvalidArgument), Message: rejected.Error()}
	}
	return req
}

// handle checks one SDS response and writes it when it is good. It returns
// the ACK or NACK that answers it; done when a --once run may end (after a
// write, or with fatal, an *exitError, for a mesh without mTLS); fatal
// when the stream must end.
func (a *certAgent) handle(resp *discoverygrpc.DiscoveryResponse) (answer *discoverygrpc.DiscoveryRequest, done bool, fatal error) {
	version, nonce := resp.GetVersionInfo(), resp.GetNonce()
	a.mu.Lock()
	a.response = true
	a.mu.Unlock()
	if len(resp.GetResources()) == 0 {
		first := func() bool {
			a.mu.Lock()
			defer a.mu.Unlock()
			first := !a.noMTLS
			a.noMTLS, a.rejected = true, ""
			return first
		}()
		err := fmt.Errorf("mesh %s has no mTLS: no certificate to write", a.mesh)
		if a.once {
			return a.request(version, nonce, nil), true, &exitError{code: exitFailed, err: fmt.Errorf("certs: %w", err)}
		}
		if first {
			a.log.Warn(err.Error()+"; waiting for one", "node", a.node.Id, "version", version)
		}
		return a.request(version, nonce, nil), false, nil
	}
	a.mu.Lock()
	a.noMTLS = false
	a.mu.Unlock()

	m, err := parseCertSecrets(resp.GetResources(), a.mesh, a.now())
	if err != nil {
		a.mu.Lock()
		a.rejected = err.Error()
		a.mu.Unlock()
		a.log.Warn("rejected the certificate; keeping the files", "version", version, "error", err)
		return a.request(a.written, nonce, err), false, nil
	}
	m.version = version
	wrote, err := writeCertFiles(a.dir, m)
	if err != nil {
		// Retrying on a new stream (which gets the material again) may
		// mend a full disk; with --once the error is the answer. Either
		// way run reports it.
		err = fmt.Errorf("write certificate files (the old ones are kept): %w", err)
		if a.once {
			fatal = &exitError{code: exitUsage, err: fmt.Errorf("certs: %w", err)}
		} else {
			fatal = err
		}
		return a.request(a.written, nonce, err), false, fatal
	}
	a.written = version
	a.mu.Lock()
	a.good, a.rejected = true, ""
	a.mu.Unlock()
	msg := "wrote the certificate"
	if !wrote {
		msg = "certificate files are up to date"
	}
	a.log.Info(msg, "dir", a.dir, "sans", strings.Join(uriSANs(m.leaf), ","),
		"not_after", m.leaf.NotAfter.UTC().Format(time.RFC3339), "version", version)
	return a.request(version, nonce, nil), true, nil
}

// backoff is the wait before the next stream: it doubles from min to max
// with each stream that ends without an answer, and each wait is drawn from
// the upper half of its bound, so agents cut off together do not all come
// back at once.
type backoff struct {
	min, max, cur time.Duration
}

func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	} else {
		b.cur = min(2*b.cur, b.max)
	}
	return b.cur/2 + rand.N(b.cur/2+1)
}

func (b *backoff) reset() { b.cur = 0 }
