package schema

import (
	"fmt"
	"strings"
)

// NodeID names a dataplane across meshes. On the wire it is the xDS node id
// `<mesh>.<name>`; people type it as MESH/NAME. A mesh name has no dot, so
// the node id splits at its first dot even when the dataplane's name has
// dots of its own.
type NodeID struct {
	Mesh string
	Name string
}

// String is the xDS node id `<mesh>.<name>`.
func (n NodeID) String() string { return n.Mesh + "." + n.Name }

// Ref is the MESH/NAME form of the command line and the API's paths.
func (n NodeID) Ref() string { return n.Mesh + "/" + n.Name }

// ParseNodeID splits an xDS node id `<mesh>.<name>` at its first dot and
// checks both parts.
func ParseNodeID(s string) (NodeID, error) {
	mesh, name, ok := strings.Cut(s, ".")
	if !ok {
		return NodeID{}, fmt.Errorf("node id %q is not <mesh>.<name>", s)
	}
	return checkNodeID(NodeID{mesh, name}, s)
}

// ParseRef splits the MESH/NAME form of a dataplane and checks both parts.
func ParseRef(s string) (NodeID, error) {
	mesh, name, ok := strings.Cut(s, "/")
	if !ok {
		return NodeID{}, fmt.Errorf("%q is not MESH/NAME", s)
	}
	return checkNodeID(NodeID{mesh, name}, s)
}

func checkNodeID(n NodeID, s string) (NodeID, error) {
	if !ValidName(n.Mesh) {
		return NodeID{}, fmt.Errorf("%q: mesh %q: use lower-case letters, digits, '-' and '_'", s, n.Mesh)
	}
	if !ValidResourceName(n.Name) {
		return NodeID{}, fmt.Errorf("%q: name %q: use lower-case letters, digits, '-', '_' and '.'", s, n.Name)
	}
	return n, nil
}
