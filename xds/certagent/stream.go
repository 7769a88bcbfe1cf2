package certagent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/gitmesh/gitmesh/xds"
)

// stream runs one ADS stream: it subscribes to the node's secrets and
// answers every response, writing the good ones. healthy reports that the
// control plane answered on it and the agent could act on the answer. It
// returns nil when a Once run is done, a final error for what retrying
// cannot mend, and otherwise why the stream ended.
func (a *Agent) stream(ctx context.Context) (healthy bool, err error) {
	conn, err := grpc.NewClient(a.cfg.XDSAddress, a.dial...)
	if err != nil {
		return false, final(ErrAddress, err)
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
	a.log.Debug("subscribed to the secrets", "node", a.node.Id, "xds", a.cfg.XDSAddress)
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
		if a.cfg.Once && done {
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
func (a *Agent) request(version, nonce string, rejected error) *discoverygrpc.DiscoveryRequest {
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
