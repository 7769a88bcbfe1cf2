package plane

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/gitmesh/gitmesh/xds/adstest"
)

// TestCertificate: the certificate info of a node is that of the identity
// its SDS secrets carry.
func TestCertificate(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.apply(t, commitA, policiesA(t))
	web := f.dial(t, "default.web-01")
	f.waitCommit(t, web, commitA)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := web.Wait(ctx, func(c *adstest.Client) bool { return len(c.Resources(resource.SecretType)) == 2 }); err != nil {
		t.Fatalf("web-01 never got its secrets: %v", err)
	}
	info, ok := f.plane.Certificate("default.web-01")
	if !ok {
		t.Fatal("no certificate for web-01")
	}
	if strings.Join(info.SANs, " ") != "spiffe://default/web" || info.NotAfter.Before(time.Now()) || info.Serial == "" {
		t.Errorf("web-01's certificate: %+v", info)
	}
	if v := web.Version(resource.SecretType); v != info.Version {
		t.Errorf("web-01 holds secrets %q, the certificate info is of %q", v, info.Version)
	}
	if _, ok := f.plane.Certificate("default.backend-01"); ok {
		t.Error("a certificate for a node never served")
	}

	bare := newFixtureWith(t, func(c *Config) { c.Authority = nil })
	if _, ok := bare.plane.Certificate("default.web-01"); ok {
		t.Error("a certificate without an Authority")
	}
}
