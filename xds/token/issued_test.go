package token

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestTokenIssuedRecords(t *testing.T) {
	dir := t.TempDir()
	t0 := time.Unix(1_800_000_000, 0).UTC()
	issue := func(id string, now time.Time, ttl time.Duration) *Key {
		t.Helper()
		_, key, err := IssueRecorded(dir, Claims{Mesh: "demo", Name: "web-1", IssuedAt: now.Unix(), Expires: now.Add(ttl).Unix(), ID: id}, now)
		if err != nil {
			t.Fatal(err)
		}
		return key
	}
	key := issue("short", t0, time.Hour)
	issue("long", t0, 30*24*time.Hour)
	rec, ok, err := LookupIssued(dir, "short")
	if err != nil || !ok || rec != (Issued{ID: "short", Node: "demo.web-1", Expires: t0.Add(time.Hour), KeyID: key.ID}) {
		t.Errorf("LookupIssued: %+v, %v, %v", rec, ok, err)
	}
	if _, ok, err := LookupIssued(dir, "never"); ok || err != nil {
		t.Errorf("LookupIssued of an id never issued: %v, %v", ok, err)
	}
	// A token expired within IssuedRetention is still known; one expired
	// longer ago goes with the next issue.
	issue("later", t0.Add(time.Hour+IssuedRetention), time.Hour)
	if _, ok, _ := LookupIssued(dir, "short"); !ok {
		t.Error("a token expired exactly IssuedRetention ago was dropped")
	}
	issue("later2", t0.Add(time.Hour+IssuedRetention+time.Second), time.Hour)
	if _, ok, _ := LookupIssued(dir, "short"); ok {
		t.Error("a token expired longer than IssuedRetention ago is still recorded")
	}
	for _, id := range []string{"long", "later", "later2"} {
		if _, ok, _ := LookupIssued(dir, id); !ok {
			t.Errorf("%s is not recorded", id)
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, IssuedFile))
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(b), "\n"); n != 5 || !strings.Contains(string(b), `"kid":"`+key.ID+`"`) {
		t.Errorf("%s, %d lines:\n%s", IssuedFile, n, b)
	}
	checkModes(t, dir)
}
