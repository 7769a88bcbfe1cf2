package certagent

import (
	"bytes"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/gitmesh/gitmesh/schema"
	"github.com/gitmesh/gitmesh/xds"
	"github.com/gitmesh/gitmesh/xds/ca"
)

// issued returns a certificate and its CA from a new builtin mesh CA.
func issued(t *testing.T, mesh string, validity time.Duration) *ca.Certificate {
	t.Helper()
	a := &ca.Authority{StateDir: t.TempDir(), Validity: validity}
	c, err := a.Issue(mesh+".web-01", mesh, schema.CA{Kind: schema.CABuiltin}, []string{"spiffe://" + mesh + "/web"})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// secretsAny packs secrets as a response carries them.
func secretsAny(t *testing.T, secrets ...*tlsv3.Secret) []*anypb.Any {
	t.Helper()
	var out []*anypb.Any
	for _, s := range secrets {
		a, err := anypb.New(s)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, a)
	}
	return out
}

func identitySecret(cert, key []byte) *tlsv3.Secret {
	return &tlsv3.Secret{Name: xds.SecretIdentity, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
		CertificateChain: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: cert}},
		PrivateKey:       &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: key}},
	}}}
}

func caSecret(caPEM []byte) *tlsv3.Secret {
	return &tlsv3.Secret{Name: xds.SecretMeshCA, Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
		TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: caPEM}},
	}}}
}

func TestParseCertSecrets(t *testing.T) {
	c := issued(t, "default", time.Hour)
	other := issued(t, "default", time.Hour)
	now := time.Now()
	m, err := parseSecrets(secretsAny(t, identitySecret(c.CertPEM, c.KeyPEM), caSecret(c.CAPEM)), "default", now)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(m.cert, c.CertPEM) || !bytes.Equal(m.key, c.KeyPEM) || !bytes.Equal(m.ca, c.CAPEM) {
		t.Error("the material differs from the secrets")
	}
	// Only what was checked is written: text around the PEM goes.
	m, err = parseSecrets(secretsAny(t, identitySecret(append([]byte("leaf\n"), c.CertPEM...), c.KeyPEM),
		caSecret(c.CAPEM)), "default", now)
	if err != nil || !bytes.Equal(m.cert, c.CertPEM) {
		t.Errorf("PEM with text before it: %v", err)
	}

	fileCA := caSecret(nil)
	fileCA.GetValidationContext().TrustedCa = &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: "/etc/ca.pem"}}
	keyInChain := append(bytes.Clone(c.CertPEM), c.KeyPEM...)
	wrongType := identitySecret(c.CertPEM, c.KeyPEM)
	wrongType.Name = xds.SecretMeshCA
	for _, tc := range []struct {
		name    string
		secrets []*tlsv3.Secret
		mesh    string
		now     time.Time
		want    string
	}{
		{"no CA", []*tlsv3.Secret{identitySecret(c.CertPEM, c.KeyPEM)}, "default", now, `secret "mesh_ca" is missing`},
		{"no identity", []*tlsv3.Secret{caSecret(c.CAPEM)}, "default", now, `secret "identity_cert" is missing`},
		{"twice", []*tlsv3.Secret{identitySecret(c.CertPEM, c.KeyPEM), identitySecret(c.CertPEM, c.KeyPEM), caSecret(c.CAPEM)},
			"default", now, "appears twice"},
		{"CA of the wrong kind", []*tlsv3.Secret{identitySecret(c.CertPEM, c.KeyPEM), wrongType}, "default", now, "not a validation context"},
		{"key of another certificate", []*tlsv3.Secret{identitySecret(c.CertPEM, other.KeyPEM), caSecret(c.CAPEM)},
			"default", now, "private key does not match"},
		{"another CA", []*tlsv3.Secret{identitySecret(c.CertPEM, c.KeyPEM), caSecret(other.CAPEM)},
			"default", now, "does not chain to the mesh CA"},
		{"expired", []*tlsv3.Secret{identitySecret(c.CertPEM, c.KeyPEM), caSecret(c.CAPEM)},
			"default", c.Cert.NotAfter.Add(time.Second), "expired at"},
		{"not yet valid", []*tlsv3.Secret{identitySecret(c.CertPEM, c.KeyPEM), caSecret(c.CAPEM)},
			"default", c.Cert.NotBefore.Add(-time.Second), "not valid before"},
		{"another mesh", []*tlsv3.Secret{identitySecret(c.CertPEM, c.KeyPEM), caSecret(c.CAPEM)},
			"other", now, "spiffe://default/web is not of mesh other"},
		{"not PEM", []*tlsv3.Secret{identitySecret([]byte("garbage"), c.KeyPEM), caSecret(c.CAPEM)}, "default", now, "not PEM"},
		{"key in the chain", []*tlsv3.Secret{identitySecret(keyInChain, c.KeyPEM), caSecret(c.CAPEM)},
			"default", now, "PRIVATE KEY block among the certificates"},
		{"no key", []*tlsv3.Secret{identitySecret(c.CertPEM, c.CertPEM), caSecret(c.CAPEM)}, "default", now, "not a private key"},
		{"CA in a file", []*tlsv3.Secret{identitySecret(c.CertPEM, c.KeyPEM), fileCA}, "default", now, "not inline"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseSecrets(secretsAny(t, tc.secrets...), tc.mesh, tc.now)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "PRIVATE KEY-----") {
				t.Error("the error holds the key")
			}
		})
	}
	if _, err := parseSecrets([]*anypb.Any{{TypeUrl: resource.ClusterType}}, "default", now); err == nil {
		t.Error("a resource that is not a Secret: no error")
	}
}
