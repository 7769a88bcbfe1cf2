package xds

import (
	"fmt"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/proto"

	"github.com/gitmesh/gitmesh/schema"
)

// proxyEdit is a whole proxy once its inbounds and outbounds are made, for
// the proxy appliers. For Envoy, listeners lists the last filter of each
// inbound and outbound listener (an HTTP connection manager or a
// tcp_proxy); a gRPC proxy has none, and its appliers only add notes.
type proxyEdit struct {
	flavor Flavor
	dp     *schema.Dataplane
	mesh   *schema.Mesh
	rs     *resourceSet
	notes  []string
	// filters are what listeners returns, found the first time it is
	// called: most proxies have no policy a proxy applier applies.
	filters []*filterEdit
	found   bool
}

// filterEdit is the filter of one inbound or outbound listener an applier
// may edit. Until hcm or tcp is asked for it is the value translation
// made, perhaps shared by many proxies; once asked, it is the proxy's own
// copy, which finish packs into the listener.
type filterEdit struct {
	inbound bool
	index   int    // the inbound's or the outbound's in the dataplane
	service string // the inbound's service, or the outbound's destination
	http    bool   // an HTTP connection manager, else a tcp_proxy

	listener *listenerv3.Listener
	pos      int // in the listener's only filter chain
	msg      proto.Message
}

// applyProxy runs the proxy appliers on dp's proxy: rs holds its inbounds
// and outbounds.
func (rs *resourceSet) applyProxy(mi *meshIndex, dp *schema.Dataplane, flavor Flavor) error {
	var e *proxyEdit
	for _, a := range appliers {
		if a.proxy == nil {
			continue
		}
		if e == nil {
			e = &proxyEdit{flavor: flavor, dp: dp, mesh: mi.mesh, rs: rs}
		}
		if err := a.proxy(e, mi.confs.byType[a.typ]); err != nil {
			return fmt.Errorf("%s: %w", a.typ, err)
		}
	}
	if e == nil {
		return nil
	}
	rs.unsupported = addNotes(rs.unsupported, e.notes...)
	return e.finish()
}

// listeners is the filter of each inbound and outbound listener, inbounds
// first, in the dataplane's order; none for gRPC.
func (e *proxyEdit) listeners() []*filterEdit {
	if !e.found && e.flavor == FlavorEnvoy {
		e.filters = e.rs.listenerFilters(e.dp)
	}
	e.found = true
	return e.filters
}

// listenerFilters finds the filter of each inbound and outbound listener.
func (rs *resourceSet) listenerFilters(dp *schema.Dataplane) []*filterEdit {
	byName := make(map[string]*listenerv3.Listener, len(rs.byType[listenerIdx]))
	for _, n := range rs.byType[listenerIdx] {
		byName[n.name] = n.res.(*listenerv3.Listener)
	}
	var out []*filterEdit
	add := func(name string, f filterEdit) {
		l := byName[name]
		if l == nil || len(l.GetFilterChains()) != 1 {
			return
		}
		fs := l.GetFilterChains()[0].GetFilters()
		for i := len(fs) - 1; i >= 0; i-- {
			switch fs[i].GetName() {
			case wellknown.HTTPConnectionManager, wellknown.TCPProxy:
				f.listener, f.pos, f.http = l, i, fs[i].GetName() == wellknown.HTTPConnectionManager
				out = append(out, &f)
				return
			}
		}
	}
	for i, in := range dp.Inbound {
		add(InboundName(in), filterEdit{inbound: true, index: i, service: in.Service()})
	}
	for i, o := range dp.Outbound {
		add(OutboundName(o), filterEdit{index: i, service: o.Service})
	}
	return out
}

// own unpacks f's config into a message of the proxy's own, once.
func (e *proxyEdit) own(f *filterEdit) (proto.Message, error) {
	if f.msg != nil {
		return f.msg, nil
	}
	a := f.listener.GetFilterChains()[0].GetFilters()[f.pos].GetTypedConfig()
	if m, ok := e.rs.typed[a]; ok {
		f.msg = proto.Clone(m)
		delete(e.rs.typed, a)
	} else {
		m, err := a.UnmarshalNew()
		if err != nil {
			return nil, err
		}
		f.msg = m
	}
	return f.msg, nil
}

// hcm is f's HTTP connection manager, the proxy's own copy; nil for a
// tcp_proxy.
func (e *proxyEdit) hcm(f *filterEdit) (*hcmv3.HttpConnectionManager, error) {
	if !f.http {
		return nil, nil
	}
	m, err := e.own(f)
	if err != nil {
		return nil, err
	}
	return m.(*hcmv3.HttpConnectionManager), nil
}

// tcp is f's tcp_proxy, the proxy's own copy; nil for an HTTP connection
// manager.
func (e *proxyEdit) tcp(f *filterEdit) (*tcpproxyv3.TcpProxy, error) {
	if f.http {
		return nil, nil
	}
	m, err := e.own(f)
	if err != nil {
		return nil, err
	}
	return m.(*tcpproxyv3.TcpProxy), nil
}

// addCluster adds c, a cluster of the proxy's own made with err, unless
// the proxy has an equal one.
func (e *proxyEdit) addCluster(c *clusterv3.Cluster, err error) error {
	if err != nil {
		return err
	}
	if e.rs.has(clusterIdx, c.GetName()) {
		for _, n := range e.rs.byType[clusterIdx] {
			if n.name == c.GetName() && proto.Equal(n.res, c) {
				return nil
			}
		}
	}
	return e.rs.add(clusterIdx, c.GetName(), c, nil)
}

// addListener adds a listener of the proxy's own.
func (e *proxyEdit) addListener(l *listenerv3.Listener) error {
	return e.rs.add(listenerIdx, l.GetName(), l, nil)
}

// finish packs every edited filter into its listener (the listener is the
// proxy's own; its filter list is copied, as it may be shared).
func (e *proxyEdit) finish() error {
	for _, f := range e.filters {
		if f.msg == nil {
			continue
		}
		fc := f.listener.GetFilterChains()[0]
		packed, err := e.rs.filter(fc.GetFilters()[f.pos].GetName(), f.msg)
		if err != nil {
			return err
		}
		filters := append([]*listenerv3.Filter(nil), fc.GetFilters()...)
		filters[f.pos] = packed
		fc.Filters = filters
	}
	return nil
}
