// Package schema is gitmesh's policy model: the JSON Schemas of Kuma's Mesh,
// Dataplane and TrafficPermission resources, their normalised Go types, and a
// loader that turns a tree of YAML (a directory or a git commit, through
// io/fs) into a validated Set or every problem found in it. It imports nothing
// else from gitmesh.
package schema
