package ca

import (
	"fmt"
	"slices"
	"time"
)

// CertificateInfo is what may be shown of the certificate issued to a node:
// its names, serial number and validity, never its key.
type CertificateInfo struct {
	NodeID string
	// SANs are the certificate's subject alternative names: its URIs (the
	// node's identities, spiffe://<mesh>/<service>), then its DNS names,
	// e-mail addresses and IP addresses, each in the certificate's order.
	SANs []string
	// Serial is the serial number in upper-case hex, as openssl prints it.
	Serial              string
	NotBefore, NotAfter time.Time
	// Version names the certificate material as the node's SDS secrets
	// carry it (Certificate.Version).
	Version string
}

// IssuedTo returns the info of the certificate the Authority holds for node:
// the last one issued to it, or taken back from the state directory, which
// is what its SDS secrets carry. ok is false when it holds none: the node's
// mesh has no mTLS, or nothing has asked for the node's secrets since the
// start.
func (a *Authority) IssuedTo(nodeID string) (info CertificateInfo, ok bool) {
	a.mu.Lock()
	c := a.issued[nodeID]
	a.mu.Unlock()
	if c == nil || c.Cert == nil {
		return CertificateInfo{}, false
	}
	return infoOf(c), true
}

// infoOf reads the shown fields of c, which is immutable.
func infoOf(c *Certificate) CertificateInfo {
	cert := c.Cert
	sans := make([]string, 0, len(cert.URIs)+len(cert.DNSNames)+len(cert.EmailAddresses)+len(cert.IPAddresses))
	for _, u := range cert.URIs {
		sans = append(sans, u.String())
	}
	sans = append(sans, cert.DNSNames...)
	sans = append(sans, cert.EmailAddresses...)
	for _, ip := range cert.IPAddresses {
		sans = append(sans, ip.String())
	}
	serial := ""
	if cert.SerialNumber != nil {
		serial = fmt.Sprintf("%X", cert.SerialNumber)
	}
	return CertificateInfo{NodeID: c.NodeID, SANs: slices.Clip(sans), Serial: serial,
		NotBefore: cert.NotBefore, NotAfter: cert.NotAfter, Version: c.Version}
}
