package schema

import "testing"

func TestNodeID(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want NodeID
		ok   bool
	}{
		{"default.web-01", NodeID{"default", "web-01"}, true},
		{"prod.billing.1", NodeID{"prod", "billing.1"}, true}, // split at the first dot: mesh names have none
		{"web-01", NodeID{}, false},
		{".web", NodeID{}, false},
		{"Prod.web", NodeID{}, false},
	} {
		got, err := ParseNodeID(tc.in)
		if (err == nil) != tc.ok || (tc.ok && got != tc.want) {
			t.Errorf("ParseNodeID(%q) = %+v, %v", tc.in, got, err)
		}
		if tc.ok && got.String() != tc.in {
			t.Errorf("%+v.String() = %q, want %q", got, got.String(), tc.in)
		}
	}
	id, err := ParseRef("default/web-01")
	if err != nil || id != (NodeID{"default", "web-01"}) || id.Ref() != "default/web-01" {
		t.Errorf("ParseRef = %+v, %v", id, err)
	}
	if _, err := ParseRef("default.web-01"); err == nil {
		t.Error("ParseRef accepted a node id")
	}
}
