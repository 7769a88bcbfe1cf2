package xds

import (
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/structpb"
)

func TestFlavorOfNode(t *testing.T) {
	meta := func(fields map[string]any) *structpb.Struct {
		s, err := structpb.NewStruct(fields)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	for _, tc := range []struct {
		name string
		node *corev3.Node
		want Flavor
		err  string // a substring of the error; "" for none
	}{
		{"nil node", nil, FlavorEnvoy, ""},
		{"no user agent", &corev3.Node{Id: "m.a"}, FlavorEnvoy, ""},
		{"envoy", &corev3.Node{Id: "m.a", UserAgentName: "envoy"}, FlavorEnvoy, ""},
		{"gRPC-Go", &corev3.Node{Id: "m.a", UserAgentName: "gRPC Go"}, FlavorGRPC, ""},
		{"gRPC-Java", &corev3.Node{Id: "m.a", UserAgentName: "gRPC Java"}, FlavorGRPC, ""},
		{"another agent", &corev3.Node{Id: "m.a", UserAgentName: "kuma-dp"}, FlavorEnvoy, ""},
		{"lower-case grpc is not gRPC", &corev3.Node{Id: "m.a", UserAgentName: "grpc-go"}, FlavorEnvoy, ""},
		{"metadata grpc over envoy", &corev3.Node{Id: "m.a", UserAgentName: "envoy",
			Metadata: meta(map[string]any{FlavorMetadataKey: "grpc"})}, FlavorGRPC, ""},
		{"metadata envoy over gRPC", &corev3.Node{Id: "m.a", UserAgentName: "gRPC Go",
			Metadata: meta(map[string]any{FlavorMetadataKey: "envoy", "other": 1})}, FlavorEnvoy, ""},
		{"other metadata only", &corev3.Node{Id: "m.a", UserAgentName: "gRPC Go",
			Metadata: meta(map[string]any{"cluster": "x"})}, FlavorGRPC, ""},
		{"unknown flavour", &corev3.Node{Id: "m.a", UserAgentName: "gRPC Go",
			Metadata: meta(map[string]any{FlavorMetadataKey: "grcp"})}, "",
			`node "m.a": metadata gitmesh.io/flavor: unknown flavour "grcp" (want "envoy" or "grpc")`},
		{"flavour names are lower-case", &corev3.Node{Id: "m.a",
			Metadata: meta(map[string]any{FlavorMetadataKey: "gRPC"})}, "", `unknown flavour "gRPC"`},
		{"empty flavour", &corev3.Node{Id: "m.a",
			Metadata: meta(map[string]any{FlavorMetadataKey: ""})}, "", `unknown flavour ""`},
		{"not a string", &corev3.Node{Id: "m.a",
			Metadata: meta(map[string]any{FlavorMetadataKey: true})}, "", "metadata gitmesh.io/flavor is not a string"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := FlavorOfNode(tc.node)
			switch {
			case tc.err == "" && err != nil:
				t.Fatalf("error %v", err)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Fatalf("error %v, want one containing %q", err, tc.err)
			case got != tc.want:
				t.Errorf("flavour %q, want %q", got, tc.want)
			}
		})
	}
}
