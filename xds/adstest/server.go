package adstest

import (
	"context"
	"net"
	"testing"

	"github.com/gitmesh/gitmesh/xds/ads"
)

// Serve runs an ADS server made from cfg on a free port of 127.0.0.1 until
// the test ends, and returns it and its address. The test fails when the
// server cannot start or ends with an error.
func Serve(t testing.TB, cfg ads.Config) (*ads.Server, string) {
	t.Helper()
	s, err := ads.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, lis) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("xDS server: %v", err)
		}
	})
	return s, lis.Addr().String()
}
