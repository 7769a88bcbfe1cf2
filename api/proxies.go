package api

import (
	"net/http"
	"strings"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/gitmesh/gitmesh/schema"
	"github.com/gitmesh/gitmesh/xds/ads"
)

// proxyJSON is one proxy in GET /proxies.
type proxyJSON struct {
	NodeID string `json:"nodeId"`
	// Mesh and Name are split from the node id `<mesh>.<name>`; empty for
	// a node id of another form.
	Mesh string `json:"mesh,omitempty"`
	Name string `json:"name,omitempty"`
	// Flavor is what the node runs (envoy or grpc), from its streams; empty
	// for a node never seen. PublishedFlavor is the flavour of what it is
	// served.
	Flavor          string `json:"flavor,omitempty"`
	PublishedFlavor string `json:"publishedFlavor,omitempty"`
	// Unsupported lists what the published flavour drops of the node's
	// policies.
	Unsupported []string `json:"unsupported,omitempty"`
	Published   bool     `json:"published"`        // it has a snapshot of the served commit
	Commit      string   `json:"commit,omitempty"` // the commit of that snapshot
	// Unknown is set for a node that has a stream open but no dataplane of
	// the served commit: a typo in a bootstrap, or a dataplane removed from
	// git. It is served nothing.
	Unknown bool `json:"unknown,omitempty"`
	// InSync is true when the node runs what it is served: every type it
	// uses ACKed at its published version (see ads.ProxyStatus.InSync).
	InSync         bool       `json:"inSync"`
	Streams        int        `json:"streams"`
	ConnectedSince time.Time  `json:"connectedSince,omitzero"`
	Types          []typeJSON `json:"types"`
	// Certificate is the one its secrets carry, for a proxy of a mesh with
	// mTLS; omitted otherwise.
	Certificate *certificateJSON `json:"certificate,omitempty"`
}

// certificateJSON is what GET /proxies shows of a proxy's certificate:
// never its key.
type certificateJSON struct {
	// SANs are its URIs (spiffe://<mesh>/<service>), then any DNS names,
	// e-mail and IP addresses.
	SANs      []string  `json:"sans"`
	Serial    string    `json:"serial"` // upper-case hex
	NotBefore time.Time `json:"notBefore"`
	NotAfter  time.Time `json:"notAfter"`
}

type typeJSON struct {
	TypeURL   string    `json:"typeUrl"`
	Type      string    `json:"type"` // the last part of TypeURL, e.g. Listener
	Published string    `json:"published,omitempty"`
	Sent      string    `json:"sent,omitempty"`
	SentAt    time.Time `json:"sentAt,omitzero"`
	Acked     string    `json:"acked,omitempty"`
	AckedAt   time.Time `json:"ackedAt,omitzero"`
	InSync    bool      `json:"inSync"`
	// Subscribed is set once the node has asked for the type.
	Subscribed bool `json:"subscribed"`
	// LastNACK is the last rejection, kept after later ACKs: compare its
	// version with acked.
	LastNACK *nackJSON `json:"lastNack,omitempty"`
}

type nackJSON struct {
	Version string    `json:"version"`
	Error   string    `json:"error"`
	At      time.Time `json:"at,omitzero"`
}

func toProxy(p ads.ProxyStatus) proxyJSON {
	out := proxyJSON{NodeID: p.NodeID, Flavor: string(p.Flavor), PublishedFlavor: string(p.PublishedFlavor), Unsupported: p.Unsupported,
		Published: p.Published, Commit: p.Commit, Unknown: !p.Published && p.Streams > 0, InSync: p.InSync(),
		Streams: p.Streams, ConnectedSince: p.ConnectedSince, Types: []typeJSON{}}
	if id, err := schema.ParseNodeID(p.NodeID); err == nil {
		out.Mesh, out.Name = id.Mesh, id.Name
	}
	for _, t := range p.Types {
		tj := typeJSON{TypeURL: t.TypeURL, Type: t.TypeURL[strings.LastIndexByte(t.TypeURL, '.')+1:],
			Published: t.Published, Sent: t.Sent, SentAt: t.SentAt, Acked: t.Acked, AckedAt: t.AckedAt,
			InSync: t.InSyncFor(p.Flavor), Subscribed: t.Subscribed}
		if n := t.LastNACK; n != nil {
			tj.LastNACK = &nackJSON{Version: n.Version, Error: n.Error, At: n.At}
		}
		out.Types = append(out.Types, tj)
	}
	return out
}

// certificateOf is the certificate of p when it is served secrets (its
// mesh has mTLS): a certificate still held for a node whose mesh no longer
// has mTLS is not shown.
func (s *server) certificateOf(p ads.ProxyStatus) *certificateJSON {
	served := false
	for _, t := range p.Types {
		served = served || (t.TypeURL == resource.SecretType && t.Published != "")
	}
	if !served {
		return nil
	}
	info, ok := s.b.Certificate(p.NodeID)
	if !ok {
		return nil
	}
	sans := info.SANs
	if sans == nil {
		sans = []string{}
	}
	return &certificateJSON{SANs: sans, Serial: info.Serial, NotBefore: info.NotBefore.UTC(), NotAfter: info.NotAfter.UTC()}
}

func (s *server) proxies(w http.ResponseWriter, _ *http.Request) {
	ps := s.b.Proxies()
	out := proxiesList{Total: len(ps), Items: make([]proxyJSON, 0, len(ps))}
	for _, p := range ps {
		pj := toProxy(p)
		pj.Certificate = s.certificateOf(p)
		out.Items = append(out.Items, pj)
	}
	writeJSON(w, http.StatusOK, out)
}

// proxiesList is the answer of GET /proxies: every proxy, unpaged.
type proxiesList struct {
	Total int         `json:"total"`
	Items []proxyJSON `json:"items"`
}
