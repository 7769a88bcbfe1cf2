// Command gitmesh is a GitOps control plane for a Kuma-style service mesh: it
// validates mesh policy kept in git, and serves it to Envoy and gRPC proxies.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
