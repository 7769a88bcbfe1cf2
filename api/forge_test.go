package api_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/gitmesh/gitmesh/api"
)

func TestCheckRepoWebURL(t *testing.T) {
	for _, ok := range []string{
		"https://github.com/org/repo/blob/{commit}/{path}#L{line}",
		"https://gitlab.com/org/repo/-/blob/{commit}/{path}#L{line}",
		"http://git.example.internal:3000/org/repo/src/commit/{commit}/{path}",
		"https://forge.example.com/view?rev={commit}&file={path}&line={line}",
		"https://forge.example.com/{path}?at={commit}",
		"HTTPS://GitHub.com/org/repo/blob/{commit}/{path}",
	} {
		if err := api.CheckRepoWebURL(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, tc := range []struct{ tmpl, want string }{
		{"", "no {commit}"},
		{"https://github.com/org/repo/blob/main/{path}", "no {commit}"},
		{"https://github.com/org/repo/commit/{commit}", "no {path}"},
		{"https://github.com/org/repo/blob/{commit}/{file}#L{line}", "unknown placeholder {file}"},
		{"https://github.com/org/repo/blob/{commit}/{path}#L{Line}", "unknown placeholder {Line}"},
		{"https://github.com/org/repo/blob/{commit}/{path}#L{}", "unknown placeholder {}"},
		{"https://github.com/org/repo/blob/{commit}/{path}#L{line", "a brace that opens or closes no placeholder"},
		{"https://github.com/org/repo/blob/{commit}}/{path}", "a brace that opens or closes no placeholder"},
		{"https://github.com/org/repo/blob/{{commit}}/{path}", "a brace that opens or closes no placeholder"},
		{"javascript:alert(1)//{commit}{path}", "absolute http:// or https:// URL"},
		{"ftp://forge.example.com/{commit}/{path}", "absolute http:// or https:// URL"},
		{"/org/repo/blob/{commit}/{path}", "absolute http:// or https:// URL"},
		{"github.com/org/repo/blob/{commit}/{path}", "absolute http:// or https:// URL"},
		{"https:///blob/{commit}/{path}", "absolute http:// or https:// URL"},
		{"https:forge.example.com/{commit}/{path}", "absolute http:// or https:// URL"},
		{"https://bot:s3cret@github.com/org/repo/blob/{commit}/{path}", "credentials"},
		{"https://{commit}.example.com/{path}", "after the host"},
		{"https://forge.example.com{path}/{commit}", "after the host"},
		{"https://forge.example.com:{line}/{commit}/{path}", "after the host"},
		{"https://github.com/org/repo/blob/{commit}/{path}#L%zz", "not a URL"},
		{"https://github.com/org/repo/blob/{commit}/{path}\n", "not a URL"},
	} {
		err := api.CheckRepoWebURL(tc.tmpl)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want one saying %q", tc.tmpl, err, tc.want)
		}
	}
}

// TestStatusCarriesRepoWebURL: the console finds the template in GET
// /status; without one the field is left out.
func TestStatusCarriesRepoWebURL(t *testing.T) {
	const tmpl = "https://github.com/org/repo/blob/{commit}/{path}#L{line}"
	base, _, _ := startAPI(t, api.Config{Backend: daemon(), RepoWebURL: tmpl})
	var st struct {
		Branch     string `json:"branch"`
		RepoWebURL string `json:"repoWebUrl"`
	}
	get(t, base+"/status").wantJSON(t, http.StatusOK, &st)
	if st.RepoWebURL != tmpl || st.Branch != "main" {
		t.Errorf("GET /status: %+v, want the template beside the status", st)
	}
	base, _, _ = startAPI(t, api.Config{Backend: daemon()})
	if r := get(t, base+"/status"); strings.Contains(string(r.body), "repoWebUrl") {
		t.Errorf("GET /status without a template holds repoWebUrl: %s", r.body)
	}
}
