package ads

import (
	"context"
	"fmt"
	"sync/atomic"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Authenticator decides who a call comes from: it returns the only node id
// the call may use, or an error saying why its credentials are refused. The
// error's text reaches the client (never put a credential in it).
type Authenticator func(ctx context.Context) (node string, err error)

// authInterceptors refuse a call whose credentials auth refuses
// (Unauthenticated), and a request naming another node than the one they
// allow (PermissionDenied). A stream's node is known only at its first
// request, so streams are checked as their requests arrive.
func authInterceptors(auth Authenticator) []grpc.ServerOption {
	stream := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		node, err := auth(ss.Context())
		if err != nil {
			return status.Errorf(codes.Unauthenticated, "xds: %v", err)
		}
		checked := &nodeCheckedStream{ServerStream: ss, node: node}
		err = handler(srv, checked)
		// go-control-plane ends a stream whose RecvMsg failed as if the
		// client had closed it: the refusal is the stream's status.
		if refused := checked.refused.Load(); refused != nil {
			return *refused
		}
		return err
	}
	unary := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		node, err := auth(ctx)
		if err != nil {
			return nil, status.Errorf(codes.Unauthenticated, "xds: %v", err)
		}
		if err := checkNode(req, node, true); err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
	return []grpc.ServerOption{grpc.ChainStreamInterceptor(stream), grpc.ChainUnaryInterceptor(unary)}
}

// nodeCheckedStream checks the node of every request against the node the
// stream's credentials allow. The first request must name it; later ones
// may leave it out (Envoy's set_node_on_first_message_only) but must not
// name another.
type nodeCheckedStream struct {
	grpc.ServerStream
	node    string
	seen    bool                  // only the receiving goroutine touches it
	refused atomic.Pointer[error] // the refusal, read after the handler returns
}

func (s *nodeCheckedStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	if err := checkNode(m, s.node, !s.seen); err != nil {
		s.refused.Store(&err)
		return err
	}
	s.seen = true
	return nil
}

// checkNode refuses a request whose node is not allowed, or which has none
// when required is set.
func checkNode(m any, allowed string, required bool) error {
	n, ok := m.(interface{ GetNode() *corev3.Node })
	if !ok {
		return status.Errorf(codes.InvalidArgument, "xds: unexpected request type %T", m)
	}
	id := n.GetNode().GetId()
	if id == "" && !required {
		return nil
	}
	if id != allowed {
		return status.Error(codes.PermissionDenied, fmt.Sprintf("xds: node %q is not the node %q the token was issued for", id, allowed))
	}
	return nil
}
