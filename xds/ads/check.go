package ads

import (
	"fmt"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"

	"github.com/gitmesh/gitmesh/xds"
)

// checkSecrets checks the SDS secrets served next to p's resources (which
// xds.Check covers): each is a *tlsv3.Secret passing ValidateAll, their
// names are unique, and every secret p's resources need (p.SecretNames) is
// among them.
func checkSecrets(p *xds.Proxy, secrets []types.Resource) error {
	have := make(map[string]bool, len(secrets))
	for i, r := range secrets {
		s, ok := r.(*tlsv3.Secret)
		switch {
		case !ok:
			return fmt.Errorf("secret %d is a %T", i, r)
		case s.GetName() == "":
			return fmt.Errorf("secret %d has no name", i)
		case have[s.GetName()]:
			return fmt.Errorf("secret %q appears twice", s.GetName())
		}
		have[s.GetName()] = true
		if err := s.ValidateAll(); err != nil {
			return fmt.Errorf("secret %q: %w", s.GetName(), err)
		}
	}
	for _, name := range p.SecretNames() {
		if !have[name] {
			return fmt.Errorf("missing secret %q, which its resources reference", name)
		}
	}
	return nil
}
