package certagent

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
)

// dialOptions are the options of the agent's connection to gitmesh's xDS
// server, all in one place: TLS and the dataplane token when given, and
// keepalive pings that notice a connection that died silently, within the
// server's limits; then c.DialOptions.
func dialOptions(c Config) []grpc.DialOption {
	var opts []grpc.DialOption
	if c.TLS != nil {
		opts = append(opts, grpc.WithTransportCredentials(credentials.NewTLS(c.TLS)))
	} else {
		opts = append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))
	}
	if c.Token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearer{token: c.Token, secure: c.TLS != nil}))
	}
	opts = append(opts, grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}))
	return append(opts, c.DialOptions...)
}

// bearer sends "authorization: Bearer <token>" on every call.
type bearer struct {
	token  string
	secure bool
}

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.token}, nil
}

// RequireTransportSecurity is true over TLS, so that the token is never
// sent in plaintext on a connection that was meant to be secure; without
// TLS the operator chose a plaintext xDS port.
func (b bearer) RequireTransportSecurity() bool { return b.secure }

// String keeps the token out of any formatting of the credentials.
func (b bearer) String() string { return fmt.Sprintf("bearer{secure: %v}", b.secure) }

var _ credentials.PerRPCCredentials = bearer{}
