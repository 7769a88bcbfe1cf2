package certagent

import (
	"fmt"
	"strings"
	"time"

	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
)

// handle checks one SDS response and writes it when it is good. It returns
// the ACK or NACK that answers it; done when a Once run may end (after a
// write, or with fatal, an ErrNoCertificate, for a mesh without mTLS);
// fatal when the stream must end.
func (a *Agent) handle(resp *discoverygrpc.DiscoveryResponse) (answer *discoverygrpc.DiscoveryRequest, done bool, fatal error) {
	version, nonce := resp.GetVersionInfo(), resp.GetNonce()
	a.mu.Lock()
	a.response = true
	a.mu.Unlock()
	if len(resp.GetResources()) == 0 {
		first := func() bool {
			a.mu.Lock()
			defer a.mu.Unlock()
			first := !a.noMTLS
			a.noMTLS, a.rejected = true, ""
			return first
		}()
		err := fmt.Errorf("mesh %s has no mTLS: no certificate to write", a.cfg.Node.Mesh)
		if a.cfg.Once {
			return a.request(version, nonce, nil), true, final(ErrNoCertificate, err)
		}
		if first {
			a.log.Warn(err.Error()+"; waiting for one", "node", a.node.Id, "version", version)
		}
		return a.request(version, nonce, nil), false, nil
	}
	a.mu.Lock()
	a.noMTLS = false
	a.mu.Unlock()

	m, err := parseSecrets(resp.GetResources(), a.cfg.Node.Mesh, a.now())
	if err != nil {
		a.mu.Lock()
		a.rejected = err.Error()
		a.mu.Unlock()
		a.log.Warn("rejected the certificate; keeping the files", "version", version, "error", err)
		return a.request(a.written, nonce, err), false, nil
	}
	m.version = version
	wrote, err := writeFiles(a.cfg.Dir, m)
	if err != nil {
		// Retrying on a new stream (which gets the material again) may
		// mend a full disk; with Once the error is the answer. Either way
		// Run reports it.
		err = fmt.Errorf("write certificate files (the old ones are kept): %w", err)
		if a.cfg.Once {
			fatal = final(ErrWrite, err)
		} else {
			fatal = err
		}
		return a.request(a.written, nonce, err), false, fatal
	}
	a.written = version
	a.mu.Lock()
	a.good, a.rejected = true, ""
	a.mu.Unlock()
	msg := "wrote the certificate"
	if !wrote {
		msg = "certificate files are up to date"
	}
	a.log.Info(msg, "dir", a.cfg.Dir, "sans", strings.Join(uriSANs(m.leaf), ","),
		"not_after", m.leaf.NotAfter.UTC().Format(time.RFC3339), "version", version)
	return a.request(version, nonce, nil), true, nil
}
