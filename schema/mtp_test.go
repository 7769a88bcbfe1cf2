package schema

import (
	"testing"
)

func fromItem(kind TargetKind, name string, tags map[string]string, a Action) PermissionFrom {
	return PermissionFrom{TargetRef: TargetRef{Kind: kind, Name: name, Tags: tags}, Action: a}
}

func mtp(name string, top TargetKind, from ...PermissionFrom) *MeshTrafficPermission {
	return &MeshTrafficPermission{PolicyMeta: PolicyMeta{Mesh: "default", Name: name, TargetRef: TargetRef{Kind: top, Name: "backend"}}, From: from}
}

// TestMergePermissions checks Kuma's merge order and the fail-closed reading
// of items that select clients by tags a certificate does not carry.
func TestMergePermissions(t *testing.T) {
	canary := map[string]string{"version": "canary"}
	cases := []struct {
		name     string
		policies []*MeshTrafficPermission
		want     map[string]Action // service -> action; "*" for others
	}{
		{"more specific policy wins", []*MeshTrafficPermission{
			mtp("b", KindMeshService, fromItem(KindMeshService, "web", nil, ActionAllow)),
			mtp("a", KindMesh, fromItem(KindMesh, "", nil, ActionDeny), fromItem(KindMeshService, "web", nil, ActionDeny)),
		}, map[string]Action{"web": ActionAllow, "*": ActionDeny}},
		{"smaller name wins among equals", []*MeshTrafficPermission{
			mtp("a", KindMesh, fromItem(KindMeshService, "web", nil, ActionAllow)),
			mtp("b", KindMesh, fromItem(KindMeshService, "web", nil, ActionDeny)),
		}, map[string]Action{"web": ActionAllow, "*": ""}},
		{"later item of a policy wins", []*MeshTrafficPermission{
			mtp("a", KindMesh, fromItem(KindMeshService, "web", nil, ActionDeny), fromItem(KindMesh, "", nil, ActionAllow)),
		}, map[string]Action{"web": ActionAllow, "*": ActionAllow}},
		{"a tagged deny denies the whole service", []*MeshTrafficPermission{
			mtp("a", KindMesh, fromItem(KindMesh, "", nil, ActionAllow), fromItem(KindMeshServiceSubset, "web", canary, ActionDeny)),
		}, map[string]Action{"web": ActionDeny, "*": ActionAllow}},
		{"a tagged allow alone allows nobody", []*MeshTrafficPermission{
			mtp("a", KindMesh, fromItem(KindMeshSubset, "", canary, ActionAllow)),
		}, map[string]Action{"*": ""}},
		{"shadow over allow", []*MeshTrafficPermission{
			mtp("a", KindMesh, fromItem(KindMeshService, "web", nil, ActionAllow), fromItem(KindMeshSubset, "", canary, ActionAllowWithShadowDeny)),
		}, map[string]Action{"web": ActionAllowWithShadowDeny, "*": ""}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ps := append([]*MeshTrafficPermission(nil), c.policies...)
			SortPermissions(ps)
			got := MergePermissions(ps)
			if w := c.want["*"]; got.Others.Action != w {
				t.Errorf("others: %q, want %q", got.Others.Action, w)
			}
			for _, sv := range got.Services {
				if w, ok := c.want[sv.Service]; !ok || sv.Action != w {
					t.Errorf("%s: %q, want %q", sv.Service, sv.Action, w)
				}
			}
			if len(got.Services) != len(c.want)-1 {
				t.Errorf("services %+v, want %d", got.Services, len(c.want)-1)
			}
		})
	}
}
