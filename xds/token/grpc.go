package token

import (
	"context"
	"errors"
	"strings"

	"google.golang.org/grpc/metadata"
)

// ErrMissing is the error of a call that carries no token.
var ErrMissing = errors.New("no dataplane token: send the gRPC metadata \"authorization: Bearer <token>\" (gitmesh token issue)")

// Authenticate reads the bearer token of an incoming gRPC call (metadata
// "authorization: Bearer <token>", as Envoy's initial_metadata and gRPC's
// call credentials send it), verifies it, and returns the xDS node id it
// allows. It fits the Authenticate hook of the xDS server.
func (v *Verifier) Authenticate(ctx context.Context) (string, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	if len(vals) == 0 {
		return "", ErrMissing
	}
	if len(vals) > 1 {
		return "", errors.New("more than one authorization header")
	}
	scheme, tok, ok := strings.Cut(strings.TrimSpace(vals[0]), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", errors.New("the authorization header is not \"Bearer <token>\"")
	}
	c, err := v.Verify(tok)
	if err != nil {
		return "", err
	}
	return c.Node(), nil
}
