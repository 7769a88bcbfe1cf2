package xds

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// Format is a text encoding of resources for people: golden files, the
// render command.
type Format string

// The formats Marshal writes.
const (
	FormatYAML Format = "yaml"
	FormatJSON Format = "json"
)

// MarshalProxy encodes a proxy for people, as one YAML or JSON document:
// node id, flavour, mTLS identities and hash, then its resources grouped by
// type (listeners, clusters, endpoints, routes), each group sorted by name,
// like `istioctl proxy-config all`.
func MarshalProxy(p *Proxy, f Format) ([]byte, error) {
	doc := struct {
		Node       string          `json:"node"`
		Flavor     Flavor          `json:"flavor"`
		MTLS       bool            `json:"mtls"`
		Identities []string        `json:"identities,omitempty"`
		Hash       string          `json:"hash"`
		Listeners  json.RawMessage `json:"listeners"`
		Clusters   json.RawMessage `json:"clusters"`
		Endpoints  json.RawMessage `json:"endpoints"`
		Routes     json.RawMessage `json:"routes"`
	}{Node: p.NodeID, Flavor: p.Flavor, MTLS: p.MTLS, Identities: p.Identities, Hash: p.Hash}
	for _, g := range []struct {
		typ resource.Type
		out *json.RawMessage
	}{
		{resource.ListenerType, &doc.Listeners},
		{resource.ClusterType, &doc.Clusters},
		{resource.EndpointType, &doc.Endpoints},
		{resource.RouteType, &doc.Routes},
	} {
		b, err := marshalJSONList(p.Resources[g.typ])
		if err != nil {
			return nil, fmt.Errorf("proxy %s: %w", p.NodeID, err)
		}
		*g.out = b
	}
	b, err := json.Marshal(doc)
	if err != nil {
		return nil, err
	}
	return reformat(b, f)
}

// Marshal encodes resources as a YAML or JSON list of their proto JSON
// mapping, with Envoy's snake_case field names as in its docs and config
// dumps, and Anys expanded with "@type".
// The output is deterministic, unlike protojson's own, whose whitespace
// varies on purpose.
func Marshal(resources []types.Resource, f Format) ([]byte, error) {
	list, err := marshalJSONList(resources)
	if err != nil {
		return nil, err
	}
	return reformat(list, f)
}

// MarshalMessage encodes any proto message (an Envoy bootstrap, say) as Marshal
// encodes a resource: proto JSON with snake_case names, as YAML or indented
// JSON.
func MarshalMessage(m proto.Message, f Format) ([]byte, error) {
	b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", m.ProtoReflect().Descriptor().FullName(), err)
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, b); err != nil { // protojson's spacing varies on purpose
		return nil, err
	}
	return reformat(compact.Bytes(), f)
}

// marshalJSONList encodes resources as a compact JSON list.
func marshalJSONList(resources []types.Resource) (json.RawMessage, error) {
	docs := make([]json.RawMessage, len(resources))
	for i, r := range resources {
		b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(r)
		if err != nil {
			return nil, fmt.Errorf("encode %s %q: %w", typeName(resource.Type(typeURL(r))), cache.GetResourceName(r), err)
		}
		docs[i] = b
	}
	return json.Marshal(docs) // compacts each document
}

func typeURL(r types.Resource) string {
	return "type.googleapis.com/" + string(r.ProtoReflect().Descriptor().FullName())
}

// reformat turns compact JSON into indented JSON or block YAML.
func reformat(b []byte, f Format) ([]byte, error) {
	switch f {
	case FormatJSON:
		var out bytes.Buffer
		if err := json.Indent(&out, b, "", "  "); err != nil {
			return nil, err
		}
		out.WriteByte('\n')
		return out.Bytes(), nil
	case FormatYAML:
		return jsonToYAML(b)
	}
	return nil, fmt.Errorf("unknown format %q (want %s or %s)", f, FormatYAML, FormatJSON)
}

// jsonToYAML re-encodes JSON as block-style YAML, keeping the key order.
func jsonToYAML(b []byte) ([]byte, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, err
	}
	blockStyle(&doc)
	var out bytes.Buffer
	enc := yaml.NewEncoder(&out)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// blockStyle clears the flow and quoting styles the JSON parse left, so
// the encoder writes block YAML and quotes only strings that need it.
func blockStyle(n *yaml.Node) {
	n.Style = 0
	for _, c := range n.Content {
		blockStyle(c)
	}
}
