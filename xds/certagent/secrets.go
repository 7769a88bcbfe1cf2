package certagent

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/gitmesh/gitmesh/xds"
)

// material is a checked identity: the contents of the three files.
type material struct {
	version       string
	cert, key, ca []byte // PEM
	leaf          *x509.Certificate
}

// parseSecrets checks the secrets of an SDS response: xds.SecretIdentity
// holds a certificate chain and the private key of its leaf,
// xds.SecretMeshCA the mesh CA; the leaf chains to that CA, is valid at now
// and is a SPIFFE identity of mesh. The material returned is re-encoded from
// what was checked, so the files hold exactly that.
func parseSecrets(resources []*anypb.Any, mesh string, now time.Time) (*material, error) {
	var identity *tlsv3.TlsCertificate
	var validation *tlsv3.CertificateValidationContext
	seen := map[string]bool{}
	for i, r := range resources {
		var s tlsv3.Secret
		if err := r.UnmarshalTo(&s); err != nil {
			return nil, fmt.Errorf("resource %d is not a Secret: %w", i, err)
		}
		if seen[s.GetName()] {
			return nil, fmt.Errorf("secret %q appears twice", s.GetName())
		}
		seen[s.GetName()] = true
		switch s.GetName() {
		case xds.SecretIdentity:
			if identity = s.GetTlsCertificate(); identity == nil {
				return nil, fmt.Errorf("secret %q is not a TLS certificate", s.GetName())
			}
		case xds.SecretMeshCA:
			if validation = s.GetValidationContext(); validation == nil {
				return nil, fmt.Errorf("secret %q is not a validation context", s.GetName())
			}
		}
	}
	for _, name := range []string{xds.SecretIdentity, xds.SecretMeshCA} {
		if !seen[name] {
			return nil, fmt.Errorf("secret %q is missing", name)
		}
	}
	chainPEM, err := inlineData(identity.GetCertificateChain())
	if err != nil {
		return nil, fmt.Errorf("%s: certificate chain: %w", xds.SecretIdentity, err)
	}
	keyPEM, err := inlineData(identity.GetPrivateKey())
	if err != nil {
		return nil, fmt.Errorf("%s: private key: %w", xds.SecretIdentity, err)
	}
	caPEM, err := inlineData(validation.GetTrustedCa())
	if err != nil {
		return nil, fmt.Errorf("%s: trusted CA: %w", xds.SecretMeshCA, err)
	}

	m := &material{}
	var chain, roots []*x509.Certificate
	if chain, m.cert, err = pemCertificates(chainPEM); err != nil {
		return nil, fmt.Errorf("%s: certificate chain: %w", xds.SecretIdentity, err)
	}
	if m.key, err = pemPrivateKey(keyPEM); err != nil {
		return nil, fmt.Errorf("%s: private key: %w", xds.SecretIdentity, err)
	}
	if _, err := tls.X509KeyPair(m.cert, m.key); err != nil {
		return nil, fmt.Errorf("%s: %w", xds.SecretIdentity, err)
	}
	if roots, m.ca, err = pemCertificates(caPEM); err != nil {
		return nil, fmt.Errorf("%s: trusted CA: %w", xds.SecretMeshCA, err)
	}
	m.leaf = chain[0]
	switch {
	case now.After(m.leaf.NotAfter):
		return nil, fmt.Errorf("%s: the certificate expired at %s", xds.SecretIdentity, m.leaf.NotAfter.UTC().Format(time.RFC3339))
	case now.Before(m.leaf.NotBefore):
		return nil, fmt.Errorf("%s: the certificate is not valid before %s (is this host's clock right?)",
			xds.SecretIdentity, m.leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	opts := x509.VerifyOptions{Roots: x509.NewCertPool(), Intermediates: x509.NewCertPool(),
		CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}
	for _, c := range roots {
		opts.Roots.AddCert(c)
	}
	for _, c := range chain[1:] {
		opts.Intermediates.AddCert(c)
	}
	if _, err := m.leaf.Verify(opts); err != nil {
		return nil, fmt.Errorf("%s: the certificate does not chain to the mesh CA: %w", xds.SecretIdentity, err)
	}
	if len(m.leaf.URIs) == 0 {
		return nil, fmt.Errorf("%s: the certificate has no SPIFFE identity (no URI SAN)", xds.SecretIdentity)
	}
	for _, u := range m.leaf.URIs {
		if u.Scheme != "spiffe" || u.Host != mesh {
			return nil, fmt.Errorf("%s: the certificate's identity %s is not of mesh %s", xds.SecretIdentity, u, mesh)
		}
	}
	return m, nil
}

// inlineData is the content of a data source carried in the response; the
// agent cannot read files or variables of the control plane's host.
func inlineData(ds *corev3.DataSource) ([]byte, error) {
	switch s := ds.GetSpecifier().(type) {
	case *corev3.DataSource_InlineBytes:
		return s.InlineBytes, nil
	case *corev3.DataSource_InlineString:
		return []byte(s.InlineString), nil
	case nil:
		return nil, errors.New("empty")
	default:
		return nil, fmt.Errorf("not inline (%T)", s)
	}
}

// pemCertificates parses data, which must hold CERTIFICATE blocks only
// (and at least one), and returns them re-encoded.
func pemCertificates(data []byte) ([]*x509.Certificate, []byte, error) {
	var certs []*x509.Certificate
	var out bytes.Buffer
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			if len(bytes.TrimSpace(rest)) > 0 {
				return nil, nil, errors.New("data that is not PEM")
			}
			break
		}
		if b.Type != "CERTIFICATE" {
			return nil, nil, fmt.Errorf("a %s block among the certificates", b.Type)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, nil, err
		}
		certs = append(certs, c)
		if err := pem.Encode(&out, &pem.Block{Type: b.Type, Bytes: b.Bytes}); err != nil {
			return nil, nil, err
		}
	}
	if len(certs) == 0 {
		return nil, nil, errors.New("no PEM CERTIFICATE block")
	}
	return certs, out.Bytes(), nil
}

// pemPrivateKey checks that data is a single PEM private key block and
// returns it re-encoded.
func pemPrivateKey(data []byte) ([]byte, error) {
	b, rest := pem.Decode(data)
	switch {
	case b == nil:
		return nil, errors.New("no PEM block")
	case !strings.HasSuffix(b.Type, "PRIVATE KEY"):
		return nil, fmt.Errorf("a %s block, not a private key", b.Type)
	case len(bytes.TrimSpace(rest)) > 0:
		return nil, errors.New("more than the private key")
	}
	return pem.EncodeToMemory(&pem.Block{Type: b.Type, Bytes: b.Bytes}), nil
}

func uriSANs(c *x509.Certificate) []string {
	out := make([]string, len(c.URIs))
	for i, u := range c.URIs {
		out[i] = u.String()
	}
	return out
}
