package ads

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/gitmesh/gitmesh/xds"
)

// EventKind tells an ACK from a NACK and from a flavour change.
type EventKind string

// The kinds of Event.
const (
	ACK  EventKind = "ACK"
	NACK EventKind = "NACK"
	// FlavorChanged says the server learned a node's flavour (Event.Flavor)
	// for the first time, or that a new stream of the node declared another
	// flavour than the node had: see Server.FlavorOf.
	FlavorChanged EventKind = "FLAVOR"
)

// Event is one ACK or NACK of a proxy, or a change of its flavour.
type Event struct {
	Kind   EventKind
	NodeID string
	// Flavor is the node's new flavour (FlavorChanged only).
	Flavor xds.Flavor
	// TypeURL is the type ACKed or NACKed ("" for FlavorChanged).
	TypeURL string
	// Version is, for an ACK, the version the proxy now runs; for a NACK,
	// the version it rejected (found from the response nonce: the request's
	// own version_info names the last good version instead).
	Version string
	// Error is the NACK's error_detail message.
	Error string
	Delta bool // on a delta (incremental) stream
	At    time.Time
}

// ProxyStatus is what the server knows about one node: published or
// connected (or both).
type ProxyStatus struct {
	NodeID string
	// Flavor is the node's flavour as its streams declare it (FlavorOf); ""
	// when no stream of the node was ever seen.
	Flavor xds.Flavor
	// Published is true while the node has a snapshot from the last Publish;
	// Commit is the commit its current resource version comes from.
	Published bool
	Commit    string
	// PublishedFlavor is the flavour of the published translation ("" when
	// not published). Only the node's streams of that flavour are served
	// it: when Flavor differs, the node's latest stream waits for a
	// translation of its own flavour.
	PublishedFlavor xds.Flavor
	// Unsupported lists what the published flavour drops of the node's
	// policies (xds.Proxy.Unsupported).
	Unsupported []string
	// Hash is the xds.Proxy Hash of the published translation ("" when not
	// published): which translation the node is served.
	Hash string
	// Streams is the number of open xDS streams of the node; ConnectedSince
	// when the first of them opened (zero when none is open).
	Streams        int
	ConnectedSince time.Time
	// Types is per type URL, sorted.
	Types []TypeStatus
}

// TypeStatus is the state of one resource type of a node.
type TypeStatus struct {
	TypeURL string
	// Published is the version in the node's snapshot ("" when none);
	// Empty is set when that version holds no resource.
	Published string
	Empty     bool
	// Subscribed is set once a stream of the node has asked for the type,
	// and stays set (like Acked).
	Subscribed bool
	// Sent is the last version sent on any stream of the node.
	Sent   string
	SentAt time.Time
	// Acked is the last version the node ACKed.
	Acked   string
	AckedAt time.Time
	// LastNACK is the last rejection, kept after later ACKs (compare its
	// Version with Acked); nil when the type was never NACKed.
	LastNACK *NACKStatus
}

// NACKStatus describes a rejected version.
type NACKStatus struct {
	Version string
	Error   string
	At      time.Time
}

// InSync reports whether the node runs what is published for it: it is
// published, its streams run the published flavour (when a stream of it was
// ever seen: Flavor is PublishedFlavor), and every published type is in
// sync for its Flavor (TypeStatus.InSyncFor): ACKed at its published
// version, unless the node never subscribed to it and either
//
//   - the type is published empty: an Envoy with TCP listeners only never
//     asks for routes; or
//   - the node runs gRPC: a proxyless gRPC application asks only for what it
//     uses (a server that makes no calls never asks for clusters, routes or
//     endpoints).
//
// An Envoy node subscribes to every type it is given, so it must ACK every
// non-empty one. A node never seen (Flavor "") needs an ACK of every
// non-empty type.
func (p ProxyStatus) InSync() bool {
	if !p.Published || (p.Flavor != "" && p.PublishedFlavor != "" && p.Flavor != p.PublishedFlavor) {
		return false
	}
	for _, t := range p.Types {
		if t.Published != "" && !t.InSyncFor(p.Flavor) {
			return false
		}
	}
	return true
}

// InSyncFor reports whether the type is in sync on a node of flavour f (its
// ProxyStatus.Flavor, "" for a node never seen): ACKed at its published
// version, or never subscribed to and either published empty or f is
// FlavorGRPC. See ProxyStatus.InSync.
func (t TypeStatus) InSyncFor(f xds.Flavor) bool {
	if t.Published == "" {
		return false
	}
	if t.Acked == t.Published {
		return true
	}
	subscribed := t.Subscribed || t.Sent != "" // nothing is sent unasked
	return !subscribed && (t.Empty || f == xds.FlavorGRPC)
}

// InSync is InSyncFor(""), whatever the node runs: ACKed at its published
// version, or published empty and never subscribed to.
func (t TypeStatus) InSync() bool { return t.InSyncFor("") }

// Status returns every node the server published or saw, sorted by node id.
// It is a copy: safe to keep and modify.
func (s *Server) Status() []ProxyStatus {
	s.mu.Lock()
	pubs := maps.Clone(s.published)
	s.mu.Unlock()
	byNode := s.tracker.status()
	for node, pub := range pubs {
		ps, ok := byNode[node]
		if !ok {
			ps = &ProxyStatus{NodeID: node}
			byNode[node] = ps
		}
		ps.withPublished(pub)
	}
	out := make([]ProxyStatus, 0, len(byNode))
	for _, node := range slices.Sorted(maps.Keys(byNode)) {
		ps := byNode[node]
		ps.sortTypes()
		out = append(out, *ps)
	}
	return out
}

// StatusOf is Status for one node; false when the node is neither published
// nor ever seen.
func (s *Server) StatusOf(node string) (ProxyStatus, bool) {
	s.mu.Lock()
	pub := s.published[node]
	s.mu.Unlock()
	ps := s.tracker.statusOf(node)
	if ps == nil && pub == nil {
		return ProxyStatus{}, false
	}
	if ps == nil {
		ps = &ProxyStatus{NodeID: node}
	}
	if pub != nil {
		ps.withPublished(pub)
	}
	ps.sortTypes()
	return *ps, true
}

// withPublished adds what was published for the node.
func (ps *ProxyStatus) withPublished(pub *published) {
	ps.Published, ps.Commit, ps.Hash, ps.PublishedFlavor = true, pub.commit, pub.hash, pub.flavor
	ps.Unsupported = pub.unsupported
	for _, typ := range pub.types {
		i := slices.IndexFunc(ps.Types, func(t TypeStatus) bool { return t.TypeURL == typ })
		if i < 0 {
			ps.Types = append(ps.Types, TypeStatus{TypeURL: typ})
			i = len(ps.Types) - 1
		}
		ps.Types[i].Published, ps.Types[i].Empty = pub.versionOf(typ), pub.empty[typ]
	}
}

func (ps *ProxyStatus) sortTypes() {
	slices.SortFunc(ps.Types, func(a, b TypeStatus) int { return strings.Compare(a.TypeURL, b.TypeURL) })
}

// Subscribe returns a channel of every ACK, NACK and flavour change from
// now on, and a function that ends the subscription and closes the channel.
// Events are delivered without blocking the xDS streams: a subscriber that
// falls more than Config.EventBuffer events behind loses the newer ones
// (Status, FlavorOf and FlavorChanges stay exact).
func (s *Server) Subscribe() (<-chan Event, func()) {
	return s.tracker.subscribe()
}

// FlavorOf is the flavour of node: what xds.FlavorOfNode makes of the node
// message on the first request of the node's latest stream. It is kept after
// the node's streams close, so that the node is translated for what it runs
// when it comes back. False when no stream of the node was ever accepted.
//
// A stream whose first request carries an invalid flavour (node metadata
// xds.FlavorMetadataKey neither "envoy" nor "grpc") is refused with
// codes.InvalidArgument and a message naming the value, and logged at warn
// level: serving a proxy the resources of a flavour it does not run would
// only fail later, and less clearly. A node's flavour is read from the
// first request of each stream alone.
func (s *Server) FlavorOf(node string) (xds.Flavor, bool) {
	t := s.tracker
	t.mu.Lock()
	defer t.mu.Unlock()
	if ns := t.nodes[node]; ns != nil && ns.flavor != "" {
		return ns.flavor, true
	}
	return "", false
}

// FlavorChanges counts the FlavorChanged events so far, delivered or not. A
// subscriber that may have lost events compares it with the value it last
// saw to know whether it must look at every node's FlavorOf again.
func (s *Server) FlavorChanges() uint64 { return s.tracker.flavorChanges.Load() }

// streamKey tells SotW and delta streams apart: their ids are counted
// separately.
type streamKey struct {
	delta bool
	id    int64
}

// streamState is an open stream. lastSent holds, per type URL, the nonce and
// version of the last response: go-control-plane ignores a request whose
// nonce is not the last one of its type, and so does the tracker.
type streamState struct {
	peer     string // the client's address, "" when unknown
	node     string
	flavor   xds.Flavor   // set with node
	first    *corev3.Node // the node message of the request that attached the stream
	lastSent map[string]sent
}

type sent struct{ nonce, version string }

type nodeState struct {
	streams  int
	byFlavor map[xds.Flavor]int // open streams per flavour they declared
	since    time.Time
	flavor   xds.Flavor // "" until a stream of the node is attached
	peer     string     // the address of the stream attached last
	types    map[string]*TypeStatus
}

// tracker implements the go-control-plane callbacks. Callbacks run on the
// stream goroutines and only take a short lock.
type tracker struct {
	now    func() time.Time
	log    *slog.Logger
	buffer int
	// onIdle is called, unlocked, when the last open stream of a node in
	// one flavour closes.
	onIdle func(node string)
	// onAttach is called, unlocked, when a stream's first request names its
	// node, with the node, the flavour and the peer's address.
	onAttach func(node string, f xds.Flavor, peer string)
	// onResume is called, unlocked, after onAttach, when a stream's first
	// request of a type names the version it holds.
	onResume func(node string, f xds.Flavor, typeURL, version string)

	mu      sync.Mutex
	streams map[streamKey]*streamState
	nodes   map[string]*nodeState
	subs    map[int]chan Event
	nextSub int

	flavorChanges atomic.Uint64 // FlavorChanged events, written under mu
}

var _ serverv3.Callbacks = (*tracker)(nil)

func newTracker(now func() time.Time, log *slog.Logger, buffer int) *tracker {
	return &tracker{now: now, log: log, buffer: buffer,
		streams: map[streamKey]*streamState{}, nodes: map[string]*nodeState{}, subs: map[int]chan Event{}}
}

func (t *tracker) subscribe() (<-chan Event, func()) {
	t.mu.Lock()
	defer t.mu.Unlock()
	id := t.nextSub
	t.nextSub++
	ch := make(chan Event, t.buffer)
	t.subs[id] = ch
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			t.mu.Lock()
			defer t.mu.Unlock()
			delete(t.subs, id)
			close(ch)
		})
	}
}

// ConnectedNodes returns the nodes with at least one open xDS stream, in no
// particular order.
func (s *Server) ConnectedNodes() []string {
	t := s.tracker
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]string, 0, len(t.nodes))
	for node, ns := range t.nodes {
		if ns.streams > 0 {
			out = append(out, node)
		}
	}
	return out
}

// connectedAs returns the flavour and peer address of node's latest
// stream, and whether the node has an open stream.
func (t *tracker) connectedAs(node string) (f xds.Flavor, peer string, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	ns := t.nodes[node]
	if ns == nil || ns.streams == 0 {
		return "", "", false
	}
	return ns.flavor, ns.peer, true
}

// flavors are the flavours a node's snapshot may be kept for.
var flavors = [...]xds.Flavor{xds.FlavorEnvoy, xds.FlavorGRPC}

// clearUnused calls clear with each flavour but keep in which node has no
// open stream. It holds the lock while it does, and a stream is counted at
// its first request, before the cache sees any watch of it: a snapshot
// cleared here (with its watches) has no watch of an open stream, and a
// stream that opens meanwhile waits for clear to return.
func (t *tracker) clearUnused(node string, keep xds.Flavor, clear func(xds.Flavor)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	ns := t.nodes[node]
	for _, f := range flavors {
		if f != keep && (ns == nil || ns.byFlavor[f] == 0) {
			clear(f)
		}
	}
}

func (t *tracker) status() map[string]*ProxyStatus {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[string]*ProxyStatus, len(t.nodes))
	for node, ns := range t.nodes {
		out[node] = ns.status(node)
	}
	return out
}

// statusOf is status for one node; nil when the node was never seen.
func (t *tracker) statusOf(node string) *ProxyStatus {
	t.mu.Lock()
	defer t.mu.Unlock()
	if ns := t.nodes[node]; ns != nil {
		return ns.status(node)
	}
	return nil
}

// status copies the node's state. Called locked.
func (ns *nodeState) status(node string) *ProxyStatus {
	ps := &ProxyStatus{NodeID: node, Flavor: ns.flavor, Streams: ns.streams, ConnectedSince: ns.since}
	for _, ts := range ns.types {
		c := *ts
		if c.LastNACK != nil {
			n := *c.LastNACK
			c.LastNACK = &n
		}
		ps.Types = append(ps.Types, c)
	}
	return ps
}

// stream returns the state of an open stream, created on first sight.
// Called locked.
func (t *tracker) stream(key streamKey) *streamState {
	st := t.streams[key]
	if st == nil {
		st = &streamState{lastSent: map[string]sent{}}
		t.streams[key] = st
	}
	return st
}

// attach returns the stream, registering it and its node on first sight.
// The node id is only certain on a stream's first request, and the node's
// flavour is read from it: an invalid one refuses the stream (nil and an
// InvalidArgument error). Called locked.
func (t *tracker) attach(key streamKey, node *corev3.Node) (*streamState, error) {
	id := node.GetId()
	if st := t.streams[key]; st != nil && (st.node != "" || id == "") {
		return st, nil
	}
	if id == "" {
		return t.stream(key), nil
	}
	f, err := xds.FlavorOfNode(node)
	if err != nil {
		t.log.Warn("xds stream refused", "node", id, "peer", t.streams[key].addr(), "stream", key.id, "delta", key.delta, "error", err)
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	st := t.stream(key)
	st.node, st.flavor, st.first = id, f, node
	ns := t.node(id)
	if ns.streams == 0 {
		ns.since = t.now()
	}
	ns.streams++
	ns.byFlavor[f]++
	ns.peer = st.peer
	t.log.Debug("xds stream opened", "node", id, "stream", key.id, "delta", key.delta, "flavor", f)
	if ns.flavor != f {
		if ns.flavor != "" {
			t.log.Info("xds node changed flavour", "node", id, "from", ns.flavor, "to", f)
		}
		ns.flavor = f
		t.flavorChanges.Add(1)
		t.sendLocked(Event{Kind: FlavorChanged, NodeID: id, Flavor: f, Delta: key.delta, At: t.now()})
	}
	return st, nil
}

// addr is the stream's peer address ("" for a nil stream).
func (st *streamState) addr() string {
	if st == nil {
		return ""
	}
	return st.peer
}

// opened registers a stream and its peer's address.
func (t *tracker) opened(ctx context.Context, key streamKey) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.stream(key).peer = peerAddr(ctx)
}

// sendLocked delivers e to every subscriber that has room for it. Called
// locked.
func (t *tracker) sendLocked(e Event) {
	for _, ch := range t.subs {
		select {
		case ch <- e:
		default:
		}
	}
}

func (t *tracker) node(node string) *nodeState {
	ns := t.nodes[node]
	if ns == nil {
		ns = &nodeState{types: map[string]*TypeStatus{}, byFlavor: map[xds.Flavor]int{}}
		t.nodes[node] = ns
	}
	return ns
}

func (ns *nodeState) typ(typeURL string) *TypeStatus {
	ts := ns.types[typeURL]
	if ts == nil {
		ts = &TypeStatus{TypeURL: typeURL}
		ns.types[typeURL] = ts
	}
	return ts
}

func (t *tracker) closed(key streamKey) {
	t.mu.Lock()
	st := t.streams[key]
	delete(t.streams, key)
	idle := ""
	if st != nil && st.node != "" {
		ns := t.nodes[st.node]
		ns.streams--
		if ns.streams == 0 {
			ns.since = time.Time{}
		}
		if ns.byFlavor[st.flavor]--; ns.byFlavor[st.flavor] == 0 {
			delete(ns.byFlavor, st.flavor)
			idle = st.node
		}
		t.log.Debug("xds stream closed", "node", st.node, "stream", key.id, "delta", key.delta)
	}
	onIdle := t.onIdle
	t.mu.Unlock()
	if idle != "" && onIdle != nil {
		onIdle(idle)
	}
}

// responded records a response. Streams are attached by their requests,
// which come first.
func (t *tracker) responded(key streamKey, typeURL, nonce, version string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := t.stream(key)
	st.lastSent[typeURL] = sent{nonce, version}
	if st.node == "" {
		return
	}
	ts := t.node(st.node).typ(typeURL)
	ts.Sent, ts.SentAt = version, t.now()
}

// answer is what the tracker made of a request.
type answer struct {
	// rejected is the version a NACK rejected ("" for an ACK, a stale
	// nonce, or an unknown one).
	rejected string
	// first is the node message that attached the stream (nil until one
	// did). The caller puts it in the request: the snapshot cache keys a
	// request by node id and flavour (see nodeHash), and a stream's node
	// and flavour are those of its first request alone, whatever a later
	// request says.
	first *corev3.Node
	// attached is set when this request attached the stream, whose
	// flavour and peer follow.
	attached bool
	flavor   xds.Flavor
	peer     string
	// resumed is set on a stream's first request of a type that names
	// the version it holds (a reconnect): node, flavour, type and version.
	resumed                                  bool
	resumedNode, resumedType, resumedVersion string
	resumedFlavor                            xds.Flavor
}

// answered records a request: the stream's node on its first one, then
// ACKs and NACKs. It returns what it made of the request, or the error
// that refuses the stream.
func (t *tracker) answered(key streamKey, node *corev3.Node, typeURL, nonce, version string, nackMsg *string) (a answer, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	before := t.streams[key].nodeID()
	st, err := t.attach(key, node)
	if err != nil {
		return a, err
	}
	a.first = st.first
	if st.node != "" && before == "" {
		a.attached, a.flavor, a.peer = true, st.flavor, st.peer
	}
	if st.node != "" && typeURL != "" {
		t.node(st.node).typ(typeURL).Subscribed = true
	}
	if nonce == "" && version != "" && nackMsg == nil && !key.delta && st.node != "" {
		// A stream that resumes, after a reconnect (to this replica, or
		// to one restarted), names the version it runs: it holds it as
		// surely as if it had ACKed it here. The cache answers it only
		// when that version is not the one published.
		ts := t.node(st.node).typ(typeURL)
		ts.Acked, ts.AckedAt = version, t.now()
		t.sendLocked(Event{Kind: ACK, NodeID: st.node, TypeURL: typeURL, Version: version, At: ts.AckedAt})
		a.resumed, a.resumedNode, a.resumedFlavor, a.resumedType, a.resumedVersion = true, st.node, st.flavor, typeURL, version
		return a, nil
	}
	last, ok := st.lastSent[typeURL]
	if nonce == "" || !ok || last.nonce != nonce || st.node == "" {
		return a, nil
	}
	e := Event{Kind: ACK, NodeID: st.node, TypeURL: typeURL, Version: last.version, Delta: key.delta, At: t.now()}
	ts := t.node(st.node).typ(typeURL)
	if nackMsg != nil {
		e.Kind, e.Error = NACK, *nackMsg
		ts.LastNACK = &NACKStatus{Version: last.version, Error: *nackMsg, At: e.At}
		a.rejected = last.version
		t.log.Warn("xds NACK", "node", st.node, "type", typeURL, "version", last.version, "error", *nackMsg)
	} else {
		if !key.delta && version != "" {
			e.Version = version
		}
		ts.Acked, ts.AckedAt = e.Version, e.At
	}
	t.sendLocked(e)
	return a, nil
}

// nodeID is the stream's node id ("" for a nil stream or one not
// attached yet).
func (st *streamState) nodeID() string {
	if st == nil {
		return ""
	}
	return st.node
}

// request applies to a request what answered made of it, and calls the
// onAttach hook, unlocked, when the request attached its stream.
func (t *tracker) request(a answer, setNode func(*corev3.Node)) {
	if a.first != nil {
		setNode(a.first)
	}
	if a.attached && t.onAttach != nil {
		t.onAttach(a.first.GetId(), a.flavor, a.peer)
	}
	if a.resumed && t.onResume != nil {
		t.onResume(a.resumedNode, a.resumedFlavor, a.resumedType, a.resumedVersion)
	}
}

// nackMessage returns the error_detail message of a NACK, or nil for a
// request that is not one (an ACK or a first request).
func nackMessage(req interface{ GetErrorDetail() *statuspb.Status }) *string {
	ed := req.GetErrorDetail()
	if ed == nil {
		return nil
	}
	m := ed.GetMessage()
	return &m
}

// OnStreamOpen implements serverv3.Callbacks: it notes the peer's address;
// the node is not known yet.
func (t *tracker) OnStreamOpen(ctx context.Context, id int64, _ string) error {
	t.opened(ctx, streamKey{false, id})
	return nil
}

// OnStreamClosed implements serverv3.Callbacks.
func (t *tracker) OnStreamClosed(id int64, _ *corev3.Node) { t.closed(streamKey{false, id}) }

// OnStreamRequest implements serverv3.Callbacks. It records ACKs and NACKs
// and stops the NACK re-send loop: the snapshot cache answers whenever a
// request's version_info differs from the snapshot's, and a NACK carries the
// last good version, so the cache would send the rejected snapshot again at
// once, forever. Setting version_info to the rejected version (the cache
// reads this same request next) makes it wait for a newer snapshot.
//
// The first request of a stream gives the node and its flavour; an invalid
// flavour ends the stream with the error returned (see Server.FlavorOf).
// Every request is then given that first request's node message, which the
// snapshot cache keys by: a stream is served the snapshot of the node and
// flavour the tracker counts it for.
func (t *tracker) OnStreamRequest(id int64, req *discoverygrpc.DiscoveryRequest) error {
	a, err := t.answered(streamKey{false, id}, req.GetNode(), req.GetTypeUrl(), req.GetResponseNonce(), req.GetVersionInfo(), nackMessage(req))
	if err != nil {
		return err
	}
	if a.rejected != "" {
		req.VersionInfo = a.rejected
	}
	t.request(a, func(n *corev3.Node) { req.Node = n })
	return nil
}

// OnStreamResponse implements serverv3.Callbacks: it maps the response
// nonce to the version sent.
func (t *tracker) OnStreamResponse(_ context.Context, id int64, req *discoverygrpc.DiscoveryRequest, resp *discoverygrpc.DiscoveryResponse) {
	t.responded(streamKey{false, id}, resp.GetTypeUrl(), resp.GetNonce(), resp.GetVersionInfo())
}

// OnDeltaStreamOpen implements serverv3.Callbacks, as OnStreamOpen.
func (t *tracker) OnDeltaStreamOpen(ctx context.Context, id int64, _ string) error {
	t.opened(ctx, streamKey{true, id})
	return nil
}

// OnDeltaStreamClosed implements serverv3.Callbacks.
func (t *tracker) OnDeltaStreamClosed(id int64, _ *corev3.Node) { t.closed(streamKey{true, id}) }

// OnStreamDeltaRequest implements serverv3.Callbacks. A delta NACK does not
// make the cache re-send, so there is nothing to rewrite. The node and its
// flavour come as in OnStreamRequest.
func (t *tracker) OnStreamDeltaRequest(id int64, req *discoverygrpc.DeltaDiscoveryRequest) error {
	a, err := t.answered(streamKey{true, id}, req.GetNode(), req.GetTypeUrl(), req.GetResponseNonce(), "", nackMessage(req))
	if err != nil {
		return err
	}
	t.request(a, func(n *corev3.Node) { req.Node = n })
	return nil
}

// OnStreamDeltaResponse implements serverv3.Callbacks.
func (t *tracker) OnStreamDeltaResponse(id int64, req *discoverygrpc.DeltaDiscoveryRequest, resp *discoverygrpc.DeltaDiscoveryResponse) {
	t.responded(streamKey{true, id}, resp.GetTypeUrl(), resp.GetNonce(), resp.GetSystemVersionInfo())
}

// OnFetchRequest implements serverv3.Callbacks (REST is not served).
func (t *tracker) OnFetchRequest(context.Context, *discoverygrpc.DiscoveryRequest) error { return nil }

// OnFetchResponse implements serverv3.Callbacks.
func (t *tracker) OnFetchResponse(*discoverygrpc.DiscoveryRequest, *discoverygrpc.DiscoveryResponse) {
}
