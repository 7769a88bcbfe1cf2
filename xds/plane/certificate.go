package plane

import "github.com/gitmesh/gitmesh/xds/ca"

// Certificate is the info of the certificate the Authority holds for node,
// the one its SDS secrets carry; ok is false without an Authority or when
// none is held (see ca.Authority.IssuedTo). It takes none of the Plane's
// locks, so it never waits for a publish.
func (p *Plane) Certificate(node string) (ca.CertificateInfo, bool) {
	if p.cfg.Authority == nil {
		return ca.CertificateInfo{}, false
	}
	return p.cfg.Authority.IssuedTo(node)
}
