package ads

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
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
//
// Each refusal is logged at warn level with its reason, the caller's
// address and the node the request names when there is one (a stream
// refused for its credentials is refused before it says), never a
// credential: the reason is the Authenticator's error, whose text reaches
// the client too.
func authInterceptors(auth Authenticator, log *slog.Logger) []grpc.ServerOption {
	stream := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		node, err := auth(ss.Context())
		if err != nil {
			logRefused(ss.Context(), log, info.FullMethod, codes.Unauthenticated, err, "", "")
			return status.Errorf(codes.Unauthenticated, "xds: %v", err)
		}
		checked := &nodeCheckedStream{ServerStream: ss, node: node, log: log, method: info.FullMethod}
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
			logRefused(ctx, log, info.FullMethod, codes.Unauthenticated, err, requestNode(req), "")
			return nil, status.Errorf(codes.Unauthenticated, "xds: %v", err)
		}
		if err := checkNode(req, node, true); err != nil {
			logRefused(ctx, log, info.FullMethod, status.Code(err), err, requestNode(req), node)
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
	log     *slog.Logger
	method  string
	seen    bool                  // only the receiving goroutine touches it
	refused atomic.Pointer[error] // the refusal, read after the handler returns
}

func (s *nodeCheckedStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	if err := checkNode(m, s.node, !s.seen); err != nil {
		if s.refused.CompareAndSwap(nil, &err) {
			logRefused(s.Context(), s.log, s.method, status.Code(err), err, requestNode(m), s.node)
		}
		return err
	}
	s.seen = true
	return nil
}

// logRefused logs a refused call: its method, code and reason, the peer's
// address, and the node the request names and the one the credentials
// allow, when known.
func logRefused(ctx context.Context, log *slog.Logger, method string, code codes.Code, reason error, node, allowed string) {
	attrs := []any{"code", code.String(), "reason", status.Convert(reason).Message(), "peer", peerAddr(ctx), "method", method}
	if node != "" {
		attrs = append(attrs, "node", node)
	}
	if allowed != "" {
		attrs = append(attrs, "allowed", allowed)
	}
	log.Warn("xds call refused", attrs...)
}

// peerAddr is the address of the caller of ctx's call ("" when unknown).
func peerAddr(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}

// requestNode is the node id a request names ("" when none).
func requestNode(m any) string {
	if n, ok := m.(interface{ GetNode() *corev3.Node }); ok {
		return n.GetNode().GetId()
	}
	return ""
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
