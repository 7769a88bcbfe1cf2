package xds

import (
	"fmt"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/structpb"
)

// FlavorMetadataKey is the node metadata field that sets a node's flavour
// ("envoy" or "grpc"), overriding what its user agent says.
const FlavorMetadataKey = "gitmesh.io/flavor"

// FlavorOfNode is the flavour of the node that sent n, a DiscoveryRequest's
// node. Its metadata field FlavorMetadataKey wins when present: a string
// naming a Flavor, anything else an error. Otherwise a user_agent_name
// starting with "gRPC" (gRPC-Go sends "gRPC Go", gRPC-Java "gRPC Java") is
// FlavorGRPC, and any other, "envoy" and an empty or nil node included, is
// FlavorEnvoy.
func FlavorOfNode(n *corev3.Node) (Flavor, error) {
	if v, ok := n.GetMetadata().GetFields()[FlavorMetadataKey]; ok {
		s, isString := v.GetKind().(*structpb.Value_StringValue)
		if !isString {
			return "", fmt.Errorf("node %q: metadata %s is not a string (want %q or %q)", n.GetId(), FlavorMetadataKey, FlavorEnvoy, FlavorGRPC)
		}
		switch f := Flavor(s.StringValue); f {
		case FlavorEnvoy, FlavorGRPC:
			return f, nil
		default:
			return "", fmt.Errorf("node %q: metadata %s: unknown flavour %q (want %q or %q)", n.GetId(), FlavorMetadataKey, f, FlavorEnvoy, FlavorGRPC)
		}
	}
	if strings.HasPrefix(n.GetUserAgentName(), "gRPC") {
		return FlavorGRPC, nil
	}
	return FlavorEnvoy, nil
}
