// Package ads serves translated proxies over xDS: aggregated (ADS) streams in
// state-of-the-world and delta form, and the separate CDS, LDS, EDS, RDS and
// SDS services, all from one go-control-plane snapshot cache. Publish swaps
// in a whole commit at once, and the server tracks what every proxy was sent,
// ACKed and NACKed, and which flavour (Envoy or proxyless gRPC) each runs.
//
// The snapshot cache is keyed by node and flavour: a stream is served from
// the snapshot of its node id and of the flavour its first request declares
// (xds.FlavorOfNode), and a proxy is published under the key of its own
// Flavor. A stream is therefore only ever sent resources of the flavour it
// runs; one whose node is published for another flavour waits, unanswered,
// until a proxy of its flavour is published for it (see Server.Publish).
// Status stays per node id and describes what is published for the node.
package ads

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	endpointservice "github.com/envoyproxy/go-control-plane/envoy/service/endpoint/v3"
	listenerservice "github.com/envoyproxy/go-control-plane/envoy/service/listener/v3"
	routeservice "github.com/envoyproxy/go-control-plane/envoy/service/route/v3"
	secretservice "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/gitmesh/gitmesh/xds"
)

// Config tunes the xDS server. The zero value is usable: zero fields take
// the defaults below.
type Config struct {
	// KeepaliveTime is how long a connection may be idle before the server
	// pings the client (default 30s); KeepaliveTimeout how long it then
	// waits for the ping's answer before closing it (default 10s).
	KeepaliveTime    time.Duration
	KeepaliveTimeout time.Duration
	// MinClientPingInterval is the enforcement policy: a client pinging more
	// often than this is disconnected (default 10s). Clients may ping while
	// they have no stream open.
	MinClientPingInterval time.Duration
	// MaxConnectionAge, when set, closes connections after this long (with
	// MaxConnectionAgeGrace to finish), spreading proxies over replicas.
	MaxConnectionAge      time.Duration
	MaxConnectionAgeGrace time.Duration
	// MaxConcurrentStreams limits the streams of one connection (default
	// 100: one ADS stream, or one per separate xDS service, per proxy).
	MaxConcurrentStreams uint32
	// EventBuffer is the capacity of each Subscribe channel (default 1024).
	EventBuffer int
	// Logger receives stream events (open, close, NACK) at debug and warn
	// level; at warn level, each call Authenticate refuses, and once per
	// node until it is published again, a node connected with no published
	// proxy. Secrets and credentials are never logged. Discarded when nil.
	Logger *slog.Logger
	// Now is the clock of the status timestamps; time.Now when nil.
	Now func() time.Time
	// Authenticate, when set, is asked about every call: a call it refuses
	// ends with Unauthenticated, and a request naming another node than the
	// one it returns with PermissionDenied. Nil serves every caller.
	Authenticate Authenticator
	// TLS, when set, makes the server speak TLS only, with this config.
	TLS *tls.Config
}

// Defaults of Config.
const (
	DefaultKeepaliveTime         = 30 * time.Second
	DefaultKeepaliveTimeout      = 10 * time.Second
	DefaultMinClientPingInterval = 10 * time.Second
	DefaultMaxConcurrentStreams  = 100
	DefaultEventBuffer           = 1024
)

func (c Config) withDefaults() (Config, error) {
	for name, d := range map[string]time.Duration{
		"keepalive time": c.KeepaliveTime, "keepalive timeout": c.KeepaliveTimeout,
		"minimum client ping interval": c.MinClientPingInterval,
		"maximum connection age":       c.MaxConnectionAge, "maximum connection age grace": c.MaxConnectionAgeGrace,
	} {
		if d < 0 {
			return c, fmt.Errorf("xds server config: negative %s %v", name, d)
		}
	}
	if c.EventBuffer < 0 {
		return c, fmt.Errorf("xds server config: negative event buffer %d", c.EventBuffer)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.KeepaliveTime, DefaultKeepaliveTime)
	def(&c.KeepaliveTimeout, DefaultKeepaliveTimeout)
	def(&c.MinClientPingInterval, DefaultMinClientPingInterval)
	if c.MaxConcurrentStreams == 0 {
		c.MaxConcurrentStreams = DefaultMaxConcurrentStreams
	}
	if c.EventBuffer == 0 {
		c.EventBuffer = DefaultEventBuffer
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c, nil
}

// ServerOptions are the gRPC server options the server's Config asks for:
// keepalive parameters and enforcement, the concurrent stream limit, and
// TLS and the authentication of callers when configured. Use
// them when building the *grpc.Server that Register is given.
func (s *Server) ServerOptions() []grpc.ServerOption {
	c := s.cfg
	params := keepalive.ServerParameters{
		Time:                  c.KeepaliveTime,
		Timeout:               c.KeepaliveTimeout,
		MaxConnectionAge:      c.MaxConnectionAge,
		MaxConnectionAgeGrace: c.MaxConnectionAgeGrace,
	}
	opts := []grpc.ServerOption{
		grpc.KeepaliveParams(params),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             c.MinClientPingInterval,
			PermitWithoutStream: true,
		}),
		grpc.MaxConcurrentStreams(c.MaxConcurrentStreams),
		// Most of a control plane's connections are idle between pushes
		// (gRPC already returns their write buffers to a pool once
		// flushed).
		grpc.ReadBufferSize(readBuffer),
	}
	if c.TLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(c.TLS)))
	}
	if c.Authenticate != nil {
		opts = append(opts, authInterceptors(c.Authenticate, c.Logger)...)
	}
	return opts
}

// readBuffer is the read buffer of each connection: proxies send small
// requests (a subscription, an ACK) now and then, so gRPC's default, 32 KiB
// held by every connection for its lifetime, is mostly idle memory.
const readBuffer = 4 << 10

// Server is the xDS management server. Create it with New, attach it to a
// gRPC server with Register (or let Serve do both), and feed it with Publish.
// All methods are safe for concurrent use.
type Server struct {
	cfg     Config
	cache   cachev3.SnapshotCache
	xds     serverv3.Server
	tracker *tracker

	mu        sync.Mutex // serialises Publish and guards published and undeclared
	published map[string]*published
	// undeclared are the nodes logged as connected with no published
	// proxy since they were last published (see noteUndeclared).
	undeclared map[string]bool

	// provision, when set, is told of a stream for a node with nothing
	// published (see SetProvisioner).
	provision atomic.Pointer[func(node string, f xds.Flavor, peer string)]
}

// SetProvisioner makes the server call fn, unlocked and from the stream's
// goroutine, when a stream's first request names a node the server
// publishes nothing for: the layer above then publishes what the node is
// served (PublishProxies), which answers the stream, or, when no dataplane
// declares the node, says so (NoteUndeclared). The stream waits for its
// first response meanwhile. fn must not block for long. Without a
// provisioner, such a node is logged as undeclared.
func (s *Server) SetProvisioner(fn func(node string, f xds.Flavor, peer string)) {
	s.provision.Store(&fn)
}

// New returns a server with no snapshots. The snapshot cache runs in non-ADS
// mode: it answers a request naming a subset of a type's resources with that
// subset, which both Envoy (wildcard LDS/CDS, named RDS/EDS/SDS) and
// proxyless gRPC (everything by name) need; ordering across types is the
// client's job, as the xDS protocol allows.
func New(cfg Config) (*Server, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, published: map[string]*published{}, undeclared: map[string]bool{}}
	s.tracker = newTracker(cfg.Now, cfg.Logger, cfg.EventBuffer)
	s.tracker.onIdle = s.forgetIfGone
	s.tracker.onAttach = s.streamAttached
	s.tracker.onResume = s.adopt
	s.cache = cachev3.NewSnapshotCache(false, nodeHash{}, gcpLogger{cfg.Logger})
	// The streams end when their gRPC server stops or their client leaves,
	// so the server's own context is never cancelled.
	s.xds = serverv3.NewServer(context.Background(), resumingCache{s.cache}, s.tracker)
	return s, nil
}

// nodeHash keys the snapshot cache by node id and flavour (snapshotKey).
// A node message naming an invalid flavour gets a key no proxy is published
// under; the tracker refuses its stream before the cache sees it anyway.
type nodeHash struct{}

var _ cachev3.NodeHash = nodeHash{}

// ID implements cachev3.NodeHash.
func (nodeHash) ID(n *corev3.Node) string {
	f, err := xds.FlavorOfNode(n)
	if err != nil {
		f = "invalid"
	}
	return snapshotKey(n.GetId(), f)
}

// snapshotKey is the cache key of node's snapshot for flavour f. Flavours
// hold no "/", so the key is the node id up to its last "/" and the
// flavour after it, whatever the id holds: two nodes or flavours never
// share a key.
func snapshotKey(node string, f xds.Flavor) string { return node + "/" + string(f) }

// Register adds the aggregated discovery service (state of the world and
// delta) and the separate cluster, listener, endpoint, route and secret
// discovery services to gs. Call it before gs.Serve.
func (s *Server) Register(gs *grpc.Server) {
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(gs, s.xds)
	clusterservice.RegisterClusterDiscoveryServiceServer(gs, s.xds)
	listenerservice.RegisterListenerDiscoveryServiceServer(gs, s.xds)
	endpointservice.RegisterEndpointDiscoveryServiceServer(gs, s.xds)
	routeservice.RegisterRouteDiscoveryServiceServer(gs, s.xds)
	secretservice.RegisterSecretDiscoveryServiceServer(gs, s.xds)
}

// Serve serves xDS on lis with a gRPC server built from the Config's
// ServerOptions until ctx is done, then stops it, closing every stream
// (clients reconnect, to this or another replica). It returns nil after a
// stop caused by ctx, or the error that ended serving.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	gs := grpc.NewServer(s.ServerOptions()...)
	s.Register(gs)
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			gs.Stop()
		case <-done:
		}
	}()
	err := gs.Serve(lis)
	close(done)
	if ctx.Err() != nil && (err == nil || errors.Is(err, grpc.ErrServerStopped)) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("serve xds: %w", err)
	}
	return nil
}

// gcpLogger sends go-control-plane's own logging to slog: its debug and info
// chatter at debug level.
type gcpLogger struct{ l *slog.Logger }

func (g gcpLogger) logf(level slog.Level, format string, args ...any) {
	if g.l.Enabled(context.Background(), level) {
		g.l.Log(context.Background(), level, fmt.Sprintf(format, args...), "component", "go-control-plane")
	}
}

func (g gcpLogger) Debugf(format string, args ...any) { g.logf(slog.LevelDebug, format, args...) }
func (g gcpLogger) Infof(format string, args ...any)  { g.logf(slog.LevelDebug, format, args...) }
func (g gcpLogger) Warnf(format string, args ...any)  { g.logf(slog.LevelWarn, format, args...) }
func (g gcpLogger) Errorf(format string, args ...any) { g.logf(slog.LevelError, format, args...) }
