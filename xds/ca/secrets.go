package ca

import (
	"fmt"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"

	"github.com/gitmesh/gitmesh/schema"
	"github.com/gitmesh/gitmesh/xds"
)

// Secrets returns the SDS secrets of a proxy in a mesh with mTLS, in name
// order: xds.SecretIdentity (its certificate and key) and xds.SecretMeshCA
// (the mesh CA as trusted CA), with the version of the certificate material.
// The version changes on renewal and never depends on p.Hash. A proxy
// without identities (its mesh has no mTLS) gets no secrets and an empty
// version. The result fits the secrets argument of the ADS server's Publish
// once the caller has bound spec, the CA of p.Mesh.
func (a *Authority) Secrets(p *xds.Proxy, spec schema.CA) ([]types.Resource, string, error) {
	if len(p.Identities) == 0 {
		return nil, "", nil
	}
	c, err := a.Issue(p.NodeID, p.Mesh, spec, p.Identities)
	if err != nil {
		return nil, "", err
	}
	a.mu.Lock()
	cached, ok := a.secrets[p.NodeID]
	a.mu.Unlock()
	if ok && cached.cert == c {
		return cached.resources, c.Version, nil
	}
	secrets := SecretsOf(c)
	for _, s := range secrets {
		if err := s.(*tlsv3.Secret).ValidateAll(); err != nil {
			return nil, "", fmt.Errorf("secrets of %s: %w", p.NodeID, err)
		}
	}
	a.mu.Lock()
	if a.secrets == nil {
		a.secrets = map[string]issuedSecrets{}
	}
	a.secrets[p.NodeID] = issuedSecrets{cert: c, resources: secrets}
	a.mu.Unlock()
	return secrets, c.Version, nil
}

// issuedSecrets are the checked SDS secrets built from one certificate:
// built once, served to every publish until the certificate changes.
type issuedSecrets struct {
	cert      *Certificate
	resources []types.Resource
}

// SecretsOf builds the SDS secrets for a certificate, in name order.
func SecretsOf(c *Certificate) []types.Resource {
	identity := &tlsv3.Secret{
		Name: xds.SecretIdentity,
		Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: inline(c.CertPEM),
			PrivateKey:       inline(c.KeyPEM),
		}},
	}
	meshCA := &tlsv3.Secret{
		Name: xds.SecretMeshCA,
		Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: inline(c.CAPEM),
		}},
	}
	return []types.Resource{identity, meshCA}
}

func inline(b []byte) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: b}}
}
