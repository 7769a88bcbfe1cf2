package schema

import (
	"reflect"
	"sort"
)

// Key names a resource: its type, its mesh (empty for a Mesh) and its name.
type Key struct {
	Type string `json:"type"`
	Mesh string `json:"mesh,omitempty"`
	Name string `json:"name"`
}

// SetDiff lists the resources that differ between two Sets, each list sorted
// by type, mesh and name. Where a resource is declared (file, line) does not
// count: moving a resource to another file changes nothing.
type SetDiff struct {
	Added   []Key `json:"added,omitempty"`
	Changed []Key `json:"changed,omitempty"`
	Removed []Key `json:"removed,omitempty"`
}

// Empty reports whether the Sets hold the same resources.
func (d SetDiff) Empty() bool {
	return len(d.Added) == 0 && len(d.Changed) == 0 && len(d.Removed) == 0
}

// Len is the number of resources added, changed and removed.
func (d SetDiff) Len() int { return len(d.Added) + len(d.Changed) + len(d.Removed) }

// DiffSets compares prev with next; a nil prev is an empty Set. The implicit
// default mesh is not a declared resource: declaring it shows as added, and
// dropping the declaration as removed.
func DiffSets(prev, next *Set) SetDiff {
	if prev == nil {
		prev = &Set{}
	}
	if next == nil {
		next = &Set{}
	}
	var d SetDiff
	type item struct {
		key      Key
		value    any
		implicit bool
	}
	collect := func(s *Set) map[Key]item {
		m := make(map[Key]item, len(s.Meshes)+len(s.Dataplanes)+len(s.TrafficPermissions))
		for _, r := range s.Meshes {
			k := Key{Type: TypeMesh, Name: r.Name}
			m[k] = item{k, r, r.Implicit}
		}
		for _, r := range s.Dataplanes {
			k := Key{Type: TypeDataplane, Mesh: r.Mesh, Name: r.Name}
			m[k] = item{k, r, false}
		}
		for _, r := range s.TrafficPermissions {
			k := Key{Type: TypeTrafficPermission, Mesh: r.Mesh, Name: r.Name}
			m[k] = item{k, r, false}
		}
		return m
	}
	before, after := collect(prev), collect(next)
	for k, a := range after {
		b, ok := before[k]
		switch {
		case !ok || (b.implicit && !a.implicit):
			if !a.implicit {
				d.Added = append(d.Added, k)
			}
		case a.implicit && !b.implicit:
			d.Removed = append(d.Removed, k)
		case !sameResource(b.value, a.value):
			d.Changed = append(d.Changed, k)
		}
	}
	for k, b := range before {
		if _, ok := after[k]; !ok && !b.implicit {
			d.Removed = append(d.Removed, k)
		}
	}
	for _, list := range [][]Key{d.Added, d.Changed, d.Removed} {
		sort.Slice(list, func(i, j int) bool { return list[i].less(list[j]) })
	}
	return d
}

func (k Key) less(o Key) bool {
	if k.Type != o.Type {
		return k.Type < o.Type
	}
	if k.Mesh != o.Mesh {
		return k.Mesh < o.Mesh
	}
	return k.Name < o.Name
}

// sameResource compares two resources of one type without their Origin. The
// loader reuses the resources of unchanged files, so most pairs are the same
// pointer.
func sameResource(a, b any) bool {
	switch a := a.(type) {
	case *Mesh:
		b := b.(*Mesh)
		if a == b {
			return true
		}
		x, y := *a, *b
		x.Origin, y.Origin = Origin{}, Origin{}
		return reflect.DeepEqual(x, y)
	case *Dataplane:
		b := b.(*Dataplane)
		if a == b {
			return true
		}
		x, y := *a, *b
		x.Origin, y.Origin = Origin{}, Origin{}
		return reflect.DeepEqual(x, y)
	case *TrafficPermission:
		b := b.(*TrafficPermission)
		if a == b {
			return true
		}
		x, y := *a, *b
		x.Origin, y.Origin = Origin{}, Origin{}
		return reflect.DeepEqual(x, y)
	}
	return false
}
