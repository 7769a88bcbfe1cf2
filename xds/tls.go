package xds

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// adsSource is the config source of every dynamic reference (EDS, RDS,
// SDS): the ADS stream the proxy is already on.
func adsSource() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
		ResourceApiVersion:    corev3.ApiVersion_V3,
	}
}

// sdsSecret references a secret served over SDS on the ADS stream.
func sdsSecret(name string) *tlsv3.SdsSecretConfig {
	return &tlsv3.SdsSecretConfig{Name: name, SdsConfig: adsSource()}
}

// downstreamTLS is the transport socket of an inbound listener in a mesh
// with mTLS: the proxy presents its identity certificate and requires a
// client certificate issued by the mesh CA. Which clients may connect is
// then up to the RBAC filter, by the certificate's SPIFFE id.
func downstreamTLS() (*corev3.TransportSocket, error) {
	return transportSocket(&tlsv3.DownstreamTlsContext{
		RequireClientCertificate: wrapperspb.Bool(true),
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{sdsSecret(SecretIdentity)},
			ValidationContextType: &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{
				ValidationContextSdsSecretConfig: sdsSecret(SecretMeshCA),
			},
		},
	})
}

// grpcDownstreamTLS is the transport socket of every gRPC server listener
// in a mesh with mTLS: like downstreamTLS, with the certificates from
// CertProviderInstance.
func grpcDownstreamTLS() (*corev3.TransportSocket, error) {
	return transportSocket(&tlsv3.DownstreamTlsContext{
		RequireClientCertificate: wrapperspb.Bool(true),
		CommonTlsContext:         grpcTLSContext(""),
	})
}

// upstreamTLS is the transport socket of an outbound cluster in a mesh with
// mTLS: the proxy presents its identity certificate and accepts only a peer
// whose certificate, issued by the mesh CA, carries the service's SPIFFE id.
func upstreamTLS(mesh, service string) (*corev3.TransportSocket, error) {
	return transportSocket(&tlsv3.UpstreamTlsContext{
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{sdsSecret(SecretIdentity)},
			ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{
				CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
					DefaultValidationContext: &tlsv3.CertificateValidationContext{
						MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{
							SanType: tlsv3.SubjectAltNameMatcher_URI,
							Matcher: &matcherv3.StringMatcher{
								MatchPattern: &matcherv3.StringMatcher_Exact{Exact: SpiffeID(mesh, service)},
							},
						}},
					},
					ValidationContextSdsSecretConfig: sdsSecret(SecretMeshCA),
				},
			},
		},
	})
}

func transportSocket(m proto.Message) (*corev3.TransportSocket, error) {
	a, err := toAny(m)
	if err != nil {
		return nil, err
	}
	return &corev3.TransportSocket{
		Name:       wellknown.TransportSocketTLS,
		ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: a},
	}, nil
}
