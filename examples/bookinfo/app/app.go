// Package app is what the four bookinfo services share: each is a gRPC
// server created with gRPC-Go's xDS support (its listener, mTLS and
// authorization come from the control plane), and a client that dials the
// services it calls as xds:///<service>. The bootstrap comes from
// GRPC_XDS_BOOTSTRAP (written by `gitmesh bootstrap --grpc`), and the
// certificates from the files `gitmesh certs` keeps.
//
// The services speak one method, /bookinfo.Service/Get, with JSON messages,
// so that no generated code is needed. As in Istio's sample, the end user a
// page is for travels with the calls it makes, as the gRPC metadata header
// end-user, so that routes can match on it.
package app

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	xdscreds "google.golang.org/grpc/credentials/xds"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/xds"
)

// Method is the one RPC every service answers.
const Method = "/bookinfo.Service/Get"

// EndUserHeader is the gRPC metadata header (and the HTTP header of the
// product page) that names the end user a call is made for.
const EndUserHeader = "end-user"

// WithEndUser returns ctx with user as the end-user header of the calls
// made with it; an empty user adds nothing.
func WithEndUser(ctx context.Context, user string) context.Context {
	if user == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, EndUserHeader, user)
}

// EndUser is the end user a call a server got was made for: its end-user
// header, or "".
func EndUser(ctx context.Context) string {
	if v := metadata.ValueFromIncomingContext(ctx, EndUserHeader); len(v) > 0 {
		return v[0]
	}
	return ""
}

// Request asks a service for its part of a page.
type Request struct {
	Product string `json:"product"`
}

// Reply is a service's part of a page.
type Reply struct {
	Service string `json:"service"`
	Version string `json:"version"`
	Body    string `json:"body"`
	// User is the end user the reply is for, when the request named one.
	User string `json:"user,omitempty"`
	// Stars are the ratings reviews v2 and v3 got from ratings.
	Stars int `json:"stars,omitempty"`
	// Calls are what the service's own calls gave, in order.
	Calls []Call `json:"calls,omitempty"`
}

// Call is the outcome of one call to another service.
type Call struct {
	Service string `json:"service"`
	OK      bool   `json:"ok"`
	Code    string `json:"code"` // the gRPC status code: OK, PermissionDenied...
	Error   string `json:"error,omitempty"`
	Reply   *Reply `json:"reply,omitempty"`
}

// Handler answers Get.
type Handler func(ctx context.Context, req *Request) (*Reply, error)

// jsonCodec carries the messages as JSON.
type jsonCodec struct{}

func (jsonCodec) Marshal(v any) ([]byte, error)      { return json.Marshal(v) }
func (jsonCodec) Unmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }
func (jsonCodec) Name() string                       { return "json" }

func init() { encoding.RegisterCodec(jsonCodec{}) }

// service is the handler type of serviceDesc.
type service interface {
	get(ctx context.Context, req *Request) (*Reply, error)
}

func (h Handler) get(ctx context.Context, req *Request) (*Reply, error) { return h(ctx, req) }

var serviceDesc = grpc.ServiceDesc{
	ServiceName: "bookinfo.Service",
	HandlerType: (*service)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Get",
		Handler: func(srv any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			var req Request
			if err := dec(&req); err != nil {
				return nil, err
			}
			return srv.(service).get(ctx, &req)
		},
	}},
}

// Options are every service's flags.
type Options struct {
	Listen  string // the inbound address:port of the service's Dataplane
	Version string
	// HTTP is productpage's plain HTTP address for people and tests.
	HTTP string
}

// Flags parses the command line of service into Options.
func Flags(service string, args []string) (Options, error) {
	var o Options
	fs := flag.NewFlagSet(service, flag.ContinueOnError)
	fs.StringVar(&o.Listen, "listen", "", "address:port of the Dataplane's inbound to serve on (required)")
	fs.StringVar(&o.Version, "version", "v1", "the version this instance reports")
	if service == "productpage" {
		fs.StringVar(&o.HTTP, "http", "127.0.0.1:9080", "address of the product page (plain HTTP)")
	}
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if o.Listen == "" {
		return o, errors.New("--listen is required")
	}
	if os.Getenv("GRPC_XDS_BOOTSTRAP") == "" && os.Getenv("GRPC_XDS_BOOTSTRAP_CONFIG") == "" {
		return o, errors.New("GRPC_XDS_BOOTSTRAP is not set: write one with `gitmesh bootstrap --grpc`")
	}
	return o, nil
}

// Serve runs h as an xDS-managed gRPC server on listen until ctx ends.
func Serve(ctx context.Context, log *slog.Logger, listen string, h Handler) error {
	creds, err := xdscreds.NewServerCredentials(xdscreds.ServerOptions{FallbackCreds: insecure.NewCredentials()})
	if err != nil {
		return err
	}
	srv, err := xds.NewGRPCServer(grpc.Creds(creds), xds.ServingModeCallback(func(addr net.Addr, args xds.ServingModeChangeArgs) {
		log.Info("serving mode", "address", addr.String(), "mode", args.Mode.String(), "error", args.Err)
	}))
	if err != nil {
		return err
	}
	srv.RegisterService(&serviceDesc, h)
	lis, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	go func() {
		<-ctx.Done()
		srv.Stop()
	}()
	if err := srv.Serve(lis); err != nil && ctx.Err() == nil {
		return err
	}
	return nil
}

// Client calls other services through xDS.
type Client struct {
	conns map[string]*grpc.ClientConn
}

// Dial prepares calls to services (xds:///<service>); nothing connects
// until the first call.
func Dial(services ...string) (*Client, error) {
	creds, err := xdscreds.NewClientCredentials(xdscreds.ClientOptions{FallbackCreds: insecure.NewCredentials()})
	if err != nil {
		return nil, err
	}
	c := &Client{conns: map[string]*grpc.ClientConn{}}
	for _, s := range services {
		conn, err := grpc.NewClient("xds:///"+s, grpc.WithTransportCredentials(creds))
		if err != nil {
			c.Close()
			return nil, err
		}
		c.conns[s] = conn
	}
	return c, nil
}

// Call calls service's Get, within a second. The end user of ctx
// (WithEndUser) goes with the call.
func (c *Client) Call(ctx context.Context, service string, req *Request) Call {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	var reply Reply
	err := c.conns[service].Invoke(ctx, Method, req, &reply, grpc.CallContentSubtype("json"))
	call := Call{Service: service, OK: err == nil, Code: status.Code(err).String()}
	if err != nil {
		call.Error = status.Convert(err).Message()
		return call
	}
	call.Reply = &reply
	return call
}

// Close closes every connection.
func (c *Client) Close() {
	for _, conn := range c.conns {
		conn.Close()
	}
}

// Main runs a service's main: it parses flags, then runs run until SIGINT
// or SIGTERM, and exits non-zero on error.
func Main(service string, run func(ctx context.Context, log *slog.Logger, o Options) error) {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("service", service)
	o, err := Flags(service, os.Args[1:])
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", service, err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, log.With("version", o.Version), o); err != nil {
		log.Error("stopped", "error", err)
		os.Exit(1)
	}
}

// Denied is the status of a call the callee's authorization refused.
var Denied = codes.PermissionDenied.String()
