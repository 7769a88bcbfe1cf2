package api

import (
	"net/http"
	"strings"
	"time"

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
	// for a node never seen.
	Flavor    string `json:"flavor,omitempty"`
	Published bool   `json:"published"`        // it has a snapshot of the served commit
	Commit    string `json:"commit,omitempty"` // the commit of that snapshot
	// InSync is true when every published type is ACKed at its published
	// version.
	InSync         bool       `json:"inSync"`
	Streams        int        `json:"streams"`
	ConnectedSince time.Time  `json:"connectedSince,omitzero"`
	Types          []typeJSON `json:"types"`
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
	out := proxyJSON{NodeID: p.NodeID, Flavor: string(p.Flavor), Published: p.Published, Commit: p.Commit, InSync: p.InSync(),
		Streams: p.Streams, ConnectedSince: p.ConnectedSince, Types: []typeJSON{}}
	if mesh, name, ok := strings.Cut(p.NodeID, "."); ok {
		out.Mesh, out.Name = mesh, name
	}
	for _, t := range p.Types {
		tj := typeJSON{TypeURL: t.TypeURL, Type: t.TypeURL[strings.LastIndexByte(t.TypeURL, '.')+1:],
			Published: t.Published, Sent: t.Sent, SentAt: t.SentAt, Acked: t.Acked, AckedAt: t.AckedAt,
			InSync: t.InSync()}
		if n := t.LastNACK; n != nil {
			tj.LastNACK = &nackJSON{Version: n.Version, Error: n.Error, At: n.At}
		}
		out.Types = append(out.Types, tj)
	}
	return out
}

func (s *server) proxies(w http.ResponseWriter, _ *http.Request) {
	ps := s.b.Proxies()
	out := proxiesList{Total: len(ps), Items: make([]proxyJSON, 0, len(ps))}
	for _, p := range ps {
		out.Items = append(out.Items, toProxy(p))
	}
	writeJSON(w, http.StatusOK, out)
}

// proxiesList is the answer of GET /proxies: every proxy, unpaged.
type proxiesList struct {
	Total int         `json:"total"`
	Items []proxyJSON `json:"items"`
}
