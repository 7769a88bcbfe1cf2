// Package adstest is a small state-of-the-world ADS client for tests and
// benchmarks of the control plane: it opens one aggregated stream over a real
// gRPC connection, subscribes to every type by wildcard as Envoy does for
// listeners and clusters, ACKs what it accepts (or NACKs what a Reject
// function refuses) and remembers the last accepted version and resources of
// each type.
package adstest

import (
	"context"
	"fmt"
	"sync"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/gitmesh/gitmesh/xds"
	"github.com/gitmesh/gitmesh/xds/ads"
)

// AllTypes are the type URLs a Client subscribes to by default.
var AllTypes = []string{resource.ClusterType, resource.EndpointType, resource.ListenerType, resource.RouteType, resource.SecretType}

// Options tune a Client.
type Options struct {
	// Types to subscribe to; AllTypes when empty.
	Types []string
	// Reject, when set, is asked about every response: an error NACKs it
	// with that message, as a proxy refusing the configuration would.
	Reject func(resp *discoverygrpc.DiscoveryResponse) error
	// UserAgent is the node's user_agent_name ("envoy" when empty).
	UserAgent string
	// Names subscribes to a type by resource name instead of by wildcard.
	// Secrets are named as Envoy names them by default: the proxy's
	// identity and the mesh CA.
	Names map[string][]string
	// Resume makes the stream a reconnect: the first request of each type
	// names the version (and holds the resources) of the Client it comes
	// from, as a proxy that held them names them to another replica.
	Resume *Client
}

// Client is one proxy's ADS stream.
type Client struct {
	Node string

	opts   Options
	stream discoverygrpc.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	cancel context.CancelFunc
	done   chan struct{}

	mu        sync.Mutex
	changed   chan struct{} // closed and replaced on every change
	versions  map[string]string
	resources map[string][]*anypb.Any
	responses int
	nacks     int
	err       error
}

// Dial opens the stream of node over conn and subscribes.
func Dial(conn *grpc.ClientConn, node string, opts Options) (*Client, error) {
	if len(opts.Types) == 0 {
		opts.Types = AllTypes
	}
	if opts.UserAgent == "" {
		opts.UserAgent = "envoy"
	}
	if _, ok := opts.Names[resource.SecretType]; !ok {
		names := map[string][]string{resource.SecretType: {xds.SecretIdentity, xds.SecretMeshCA}}
		for typ, n := range opts.Names {
			names[typ] = n
		}
		opts.Names = names
	}
	ctx, cancel := context.WithCancel(context.Background())
	st, err := discoverygrpc.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("open ADS stream of %s: %w", node, err)
	}
	c := &Client{Node: node, opts: opts, stream: st, cancel: cancel, done: make(chan struct{}),
		changed: make(chan struct{}), versions: map[string]string{}, resources: map[string][]*anypb.Any{}}
	if r := opts.Resume; r != nil {
		r.mu.Lock()
		for typ, v := range r.versions {
			c.versions[typ], c.resources[typ] = v, r.resources[typ]
		}
		r.mu.Unlock()
	}
	nodeMsg := &corev3.Node{Id: node, UserAgentName: opts.UserAgent}
	for _, typ := range opts.Types {
		req := &discoverygrpc.DiscoveryRequest{Node: nodeMsg, TypeUrl: typ, ResourceNames: opts.Names[typ], VersionInfo: c.versions[typ]}
		if err := st.Send(req); err != nil {
			cancel()
			return nil, fmt.Errorf("subscribe %s to %s: %w", node, typ, err)
		}
	}
	go c.receive()
	return c, nil
}

func (c *Client) receive() {
	defer close(c.done)
	for {
		resp, err := c.stream.Recv()
		if err != nil {
			c.mu.Lock()
			c.err = err
			c.notifyLocked()
			c.mu.Unlock()
			return
		}
		req := &discoverygrpc.DiscoveryRequest{TypeUrl: resp.TypeUrl, ResponseNonce: resp.Nonce, ResourceNames: c.opts.Names[resp.TypeUrl]}
		var reject error
		if c.opts.Reject != nil {
			reject = c.opts.Reject(resp)
		}
		c.mu.Lock()
		c.responses++
		if reject != nil {
			c.nacks++
			req.VersionInfo = c.versions[resp.TypeUrl]
			req.ErrorDetail = &statuspb.Status{Code: int32(codes.InvalidArgument), Message: reject.Error()}
		} else {
			c.versions[resp.TypeUrl] = resp.VersionInfo
			c.resources[resp.TypeUrl] = resp.Resources
			req.VersionInfo = resp.VersionInfo
		}
		c.notifyLocked()
		c.mu.Unlock()
		if err := c.stream.Send(req); err != nil {
			c.mu.Lock()
			c.err = err
			c.notifyLocked()
			c.mu.Unlock()
			return
		}
	}
}

func (c *Client) notifyLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// Version is the last accepted version of a type ("" before any).
func (c *Client) Version(typeURL string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.versions[typeURL]
}

// Resources are the last accepted resources of a type.
func (c *Client) Resources(typeURL string) []*anypb.Any {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.resources[typeURL]
}

// Responses counts the responses received.
func (c *Client) Responses() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.responses
}

// NACKs counts the responses rejected.
func (c *Client) NACKs() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nacks
}

// Wait blocks until cond holds (checked on every change, under no lock of
// the Client's) or ctx ends or the stream fails.
func (c *Client) Wait(ctx context.Context, cond func(*Client) bool) error {
	for {
		c.mu.Lock()
		ch, err := c.changed, c.err
		c.mu.Unlock()
		if cond(c) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: stream ended: %w", c.Node, err)
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("%s: %w", c.Node, ctx.Err())
		}
	}
}

// Close ends the stream and waits for the receiver to stop.
func (c *Client) Close() {
	c.cancel()
	<-c.done
}

// WaitPublished waits until c holds every type at the version server
// published for its node, and that publication is of commit (the commit at
// which the node's configuration last changed).
func (c *Client) WaitPublished(ctx context.Context, server *ads.Server, commit string) error {
	err := c.Wait(ctx, func(c *Client) bool {
		st, ok := server.StatusOf(c.Node)
		if !ok || st.Commit != commit {
			return false
		}
		for _, t := range st.Types {
			if t.Published != "" && c.Version(t.TypeURL) != t.Published {
				return false
			}
		}
		return true
	})
	if err != nil {
		st, _ := server.StatusOf(c.Node)
		return fmt.Errorf("%w (published commit %.12s; listener %q, cluster %q, endpoints %q)", err, st.Commit,
			c.Version(resource.ListenerType), c.Version(resource.ClusterType), c.Version(resource.EndpointType))
	}
	return nil
}
