package schema

import (
	"reflect"
	"slices"
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
// dropping the declaration as removed. It walks the Sets' sorted lists side
// by side, so it costs a comparison per resource, most of them of the same
// pointer (the loader reuses the resources of unchanged files).
func DiffSets(prev, next *Set) SetDiff {
	if prev == nil {
		prev = &Set{}
	}
	if next == nil {
		next = &Set{}
	}
	var d SetDiff // types in name order, so each list is sorted
	meshKey := func(m *Mesh) Key { return Key{Type: TypeMesh, Name: m.Name} }
	mergeDiff(&d, prev.Dataplanes, next.Dataplanes,
		func(dp *Dataplane) Key { return Key{Type: TypeDataplane, Mesh: dp.Mesh, Name: dp.Name} },
		func(*Dataplane) bool { return false }, sameDataplane)
	mergeDiff(&d, prev.Meshes, next.Meshes, meshKey, func(m *Mesh) bool { return m.Implicit }, sameMesh)
	mergeDiff(&d, prev.MeshHTTPRoutes, next.MeshHTTPRoutes,
		func(p *MeshHTTPRoute) Key { return Key{Type: TypeMeshHTTPRoute, Mesh: p.Mesh, Name: p.Name} },
		func(*MeshHTTPRoute) bool { return false },
		func(a, b *MeshHTTPRoute) bool { return sameBut(a, b, (*MeshHTTPRoute).clearPositions) })
	mergeDiff(&d, prev.MeshTCPRoutes, next.MeshTCPRoutes,
		func(p *MeshTCPRoute) Key { return Key{Type: TypeMeshTCPRoute, Mesh: p.Mesh, Name: p.Name} },
		func(*MeshTCPRoute) bool { return false },
		func(a, b *MeshTCPRoute) bool { return sameBut(a, b, (*MeshTCPRoute).clearPositions) })
	mergeDiff(&d, prev.MeshTrafficPermissions, next.MeshTrafficPermissions,
		func(p *MeshTrafficPermission) Key {
			return Key{Type: TypeMeshTrafficPermission, Mesh: p.Mesh, Name: p.Name}
		},
		func(*MeshTrafficPermission) bool { return false },
		func(a, b *MeshTrafficPermission) bool {
			return sameBut(a, b, func(p *MeshTrafficPermission) { p.Origin = Origin{} })
		})
	mergeDiff(&d, prev.TrafficPermissions, next.TrafficPermissions,
		func(tp *TrafficPermission) Key { return Key{Type: TypeTrafficPermission, Mesh: tp.Mesh, Name: tp.Name} },
		func(*TrafficPermission) bool { return false }, samePermission)
	if len(prev.Policies)+len(next.Policies) > 0 {
		mergeDiff(&d, prev.Policies, next.Policies,
			func(p *ConfPolicy) Key { return Key{Type: p.Type, Mesh: p.Mesh, Name: p.Name} },
			func(*ConfPolicy) bool { return false },
			func(a, b *ConfPolicy) bool { return sameBut(a, b, (*ConfPolicy).clearPositions) })
		// The conf types fall between the others in name order.
		for _, l := range []*[]Key{&d.Added, &d.Changed, &d.Removed} {
			slices.SortFunc(*l, func(a, b Key) int {
				if a.less(b) {
					return -1
				}
				if b.less(a) {
					return 1
				}
				return 0
			})
		}
	}
	return d
}

// mergeDiff compares two lists sorted by key (within one type, mesh then
// name) and appends what differs to d.
func mergeDiff[T any](d *SetDiff, before, after []T, key func(T) Key, implicit func(T) bool, same func(a, b T) bool) {
	i, j := 0, 0
	for i < len(before) || j < len(after) {
		switch {
		case j == len(after) || (i < len(before) && key(before[i]).less(key(after[j]))):
			if !implicit(before[i]) {
				d.Removed = append(d.Removed, key(before[i]))
			}
			i++
		case i == len(before) || key(after[j]).less(key(before[i])):
			if !implicit(after[j]) {
				d.Added = append(d.Added, key(after[j]))
			}
			j++
		default:
			b, a := before[i], after[j]
			switch {
			case implicit(b) && !implicit(a):
				d.Added = append(d.Added, key(a))
			case implicit(a) && !implicit(b):
				d.Removed = append(d.Removed, key(b))
			case !same(b, a):
				d.Changed = append(d.Changed, key(a))
			}
			i++
			j++
		}
	}
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

// sameMesh, sameDataplane and samePermission compare two resources of one
// type without their Origin.
func sameMesh(a, b *Mesh) bool { return sameBut(a, b, func(m *Mesh) { m.Origin = Origin{} }) }

func sameDataplane(a, b *Dataplane) bool {
	return sameBut(a, b, func(dp *Dataplane) { dp.Origin = Origin{} })
}

func samePermission(a, b *TrafficPermission) bool {
	return sameBut(a, b, func(tp *TrafficPermission) { tp.Origin = Origin{} })
}

// sameBut compares copies of *a and *b after clear has reset, in each, what
// does not count.
func sameBut[T any](a, b *T, clear func(*T)) bool {
	if a == b {
		return true
	}
	x, y := *a, *b
	clear(&x)
	clear(&y)
	return reflect.DeepEqual(x, y)
}
