package api_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/gitmesh/gitmesh/api"
	"github.com/gitmesh/gitmesh/xds/ads"
	"github.com/gitmesh/gitmesh/xds/ca"
)

// TestProxiesCertificate: a proxy served secrets shows the certificate they
// carry, its SANs, serial and validity; a proxy served none (no mTLS) shows
// none, even when a certificate is still held for its node.
func TestProxiesCertificate(t *testing.T) {
	b := daemon()
	// backend-01 and web-01 are served secrets, redis-01 is not.
	b.proxies[0].Types = append(b.proxies[0].Types, ads.TypeStatus{TypeURL: resource.SecretType, Published: "5e1a9c3b7d2f4e60", Acked: "5e1a9c3b7d2f4e60"})
	b.proxies[1].Types = append(b.proxies[1].Types, ads.TypeStatus{TypeURL: resource.SecretType, Published: "77aa00bb11cc22dd"})
	notAfter := at(2).Add(24 * time.Hour)
	b.certs = map[string]ca.CertificateInfo{
		"default.backend-01": {NodeID: "default.backend-01", SANs: []string{"spiffe://default/backend", "backend.mesh.internal"},
			Serial: "1F3A9C", NotBefore: at(1), NotAfter: notAfter, Version: "5e1a9c3b7d2f4e60"},
		"default.redis-01": {NodeID: "default.redis-01", SANs: []string{"spiffe://default/redis"}, Serial: "2B", NotBefore: at(1), NotAfter: notAfter},
	}
	base, _, _ := startAPI(t, api.Config{Backend: b})
	r := get(t, base+"/proxies")
	var got struct {
		Items []struct {
			NodeID      string          `json:"nodeId"`
			Certificate json.RawMessage `json:"certificate"`
		} `json:"items"`
	}
	r.wantJSON(t, http.StatusOK, &got)
	want := map[string]string{
		"default.backend-01": `{"sans":["spiffe://default/backend","backend.mesh.internal"],"serial":"1F3A9C",` +
			`"notBefore":"2026-03-14T09:01:00Z","notAfter":"2026-03-15T09:02:00Z"}`,
	}
	for _, p := range got.Items {
		var compact bytes.Buffer
		if len(p.Certificate) > 0 {
			if err := json.Compact(&compact, p.Certificate); err != nil {
				t.Fatal(err)
			}
		}
		if compact.String() != want[p.NodeID] {
			t.Errorf("%s: certificate %s, want %q", p.NodeID, compact.String(), want[p.NodeID])
		}
	}
}
