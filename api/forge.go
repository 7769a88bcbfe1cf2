package api

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"
)

// The placeholders of a repository web URL template (Config.RepoWebURL):
// the commit's hash, the file's path in the repository, the line.
const (
	placeholderCommit = "{commit}"
	placeholderPath   = "{path}"
	placeholderLine   = "{line}"
)

var placeholderRE = regexp.MustCompile(`\{[^{}]*\}`)

// CheckRepoWebURL checks a template of the address of a file at a commit
// in the forge's web UI, such as
// https://github.com/org/repo/blob/{commit}/{path}#L{line}: an absolute
// http or https URL without credentials, holding {commit} and {path}
// ({line} is optional) after its host, and no other placeholder. The
// console fills it in to link each finding to its file and line.
func CheckRepoWebURL(tmpl string) error {
	for _, p := range placeholderRE.FindAllString(tmpl, -1) {
		if p != placeholderCommit && p != placeholderPath && p != placeholderLine {
			return fmt.Errorf("unknown placeholder %s: the placeholders are {commit}, {path} and {line}", p)
		}
	}
	if rest := placeholderRE.ReplaceAllString(tmpl, ""); strings.ContainsAny(rest, "{}") {
		return fmt.Errorf("a brace that opens or closes no placeholder: the placeholders are {commit}, {path} and {line}")
	}
	for _, p := range []string{placeholderCommit, placeholderPath} {
		if !strings.Contains(tmpl, p) {
			return fmt.Errorf("no %s: the template needs {commit} and {path}, as in https://github.com/org/repo/blob/{commit}/{path}#L{line}", p)
		}
	}
	sample := strings.NewReplacer(placeholderCommit, strings.Repeat("0", 40), placeholderPath, "dir/file.yaml", placeholderLine, "1").Replace(tmpl)
	u, err := url.Parse(sample)
	if err != nil {
		return fmt.Errorf("not a URL: %v", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Opaque != "" {
		return fmt.Errorf("want an absolute http:// or https:// URL, such as https://github.com/org/repo/blob/{commit}/{path}#L{line}")
	}
	if u.User != nil {
		return fmt.Errorf("credentials in the URL: every reader of the console would see them")
	}
	// The host is the operator's alone: no placeholder may fill it in.
	i := strings.Index(tmpl, "://")
	if i < 0 {
		return fmt.Errorf("want an absolute http:// or https:// URL, such as https://github.com/org/repo/blob/{commit}/{path}#L{line}")
	}
	authority := tmpl[i+len("://"):]
	end := strings.IndexAny(authority, "/?#")
	if end < 0 || strings.Contains(authority[:end], "{") {
		return fmt.Errorf("the placeholders must come after the host")
	}
	return nil
}
