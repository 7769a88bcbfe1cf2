package schema

import (
	"fmt"
	"sort"
	"strings"
)

// Severity of a finding: errors make a tree invalid, warnings do not.
type Severity string

// Severities.
const (
	SeverityError   Severity = "error"
	SeverityWarning Severity = "warning"
)

// Code names what a finding is about. Codes are stable: tools and tests
// match on them, so a code never changes meaning; new checks get new codes.
type Code string

// The finding codes.
const (
	// Reading and parsing.
	CodeFileTooLarge  Code = "file-too-large"
	CodeTooManyFiles  Code = "too-many-files"
	CodeTooDeepTree   Code = "tree-too-deep"
	CodeSubmodule     Code = "submodule"
	CodeLFSPointer    Code = "lfs-pointer"
	CodeBinaryFile    Code = "binary-file"
	CodeNotUTF8       Code = "not-utf8"
	CodeUnreadable    Code = "unreadable-file"
	CodeSymlinkEscape Code = "symlink-escape"
	CodeNotRegular    Code = "not-regular-file"
	CodeYAMLSyntax    Code = "yaml-syntax"
	CodeDuplicateKey  Code = "duplicate-key"
	CodeTooDeep       Code = "too-deep"
	CodeTooLarge      Code = "document-too-large"
	CodeNotMapping    Code = "not-a-mapping"
	CodeComplexKey    Code = "complex-key"
	CodeBadScalar     Code = "invalid-scalar"

	// Schema.
	CodeMissingType  Code = "missing-type"
	CodeUnknownType  Code = "unknown-type"
	CodeUnknownField Code = "unknown-field"
	CodeMissingField Code = "missing-field"
	CodeWrongType    Code = "wrong-type"
	CodeInvalidValue Code = "invalid-value"
	CodeOutOfRange   Code = "out-of-range"
	CodeTooFewItems  Code = "too-few-items"
	CodeSchema       Code = "schema"

	// Rules within one resource.
	CodeInvalidName      Code = "invalid-name"
	CodeInvalidInterface Code = "invalid-interface"
	CodeInvalidAddress   Code = "invalid-address"
	CodeMixedForms       Code = "mixed-forms"
	CodeMissingAddress   Code = "missing-address"
	CodeMissingPort      Code = "missing-port"
	CodeMissingService   Code = "missing-service"
	CodeConflictingTag   Code = "conflicting-tag"
	CodeInvalidTag       Code = "invalid-tag"
	CodeInvalidProtocol  Code = "invalid-protocol"
	CodeUnknownBackend   Code = "unknown-backend"
	CodeDuplicateBackend Code = "duplicate-backend"
	CodeInvalidBackend   Code = "invalid-backend"
	CodeConflictingCA    Code = "conflicting-ca"
	CodeMissingRules     Code = "missing-rules"
	CodeInvalidTargetRef Code = "invalid-target-ref"
	CodeUnsupported      Code = "unsupported"
	CodeInvalidLabel     Code = "invalid-label"
	CodeSecretInGit      Code = "secret-in-git"

	// Rules across resources.
	CodeUnknownMesh         Code = "unknown-mesh"
	CodeDuplicate           Code = "duplicate-resource"
	CodePortConflict        Code = "port-conflict"
	CodeEndpointConflict    Code = "endpoint-conflict"
	CodeNoEffect            Code = "no-effect"             // warning
	CodeUnknownService      Code = "unknown-service"       // warning
	CodeUnenforceableSource Code = "unenforceable-source"  // warning
	CodeKumaDiffers         Code = "kuma-differs"          // warning
	CodeUnsupportedByFlavor Code = "unsupported-by-flavor" // warning
	CodeTranslationFailed   Code = "translation-error"     // a translator or proto rule rejects the set
)

// Finding is one problem found in a tree, modelled on fs.PathError: what,
// where and why, in a form both people and tools can act on.
type Finding struct {
	Severity Severity `json:"severity"`
	File     string   `json:"file"`               // slash-separated, relative to the loaded root
	Document int      `json:"document,omitempty"` // 1-based YAML document index within File; 0 when not about one document
	Line     int      `json:"line,omitempty"`     // 1-based; 0 when unknown
	Column   int      `json:"column,omitempty"`   // 1-based; 0 when unknown
	Pointer  string   `json:"pointer,omitempty"`  // JSON pointer within the document ("" for the whole document)
	Code     Code     `json:"code"`
	Message  string   `json:"message"`
	Hint     string   `json:"hint,omitempty"` // what to do about it; may be empty
}

// Error formats the finding as "file:line:col: message (code)".
func (f Finding) Error() string {
	var b strings.Builder
	b.WriteString(f.File)
	if f.Line > 0 {
		fmt.Fprintf(&b, ":%d", f.Line)
		if f.Column > 0 {
			fmt.Fprintf(&b, ":%d", f.Column)
		}
	}
	fmt.Fprintf(&b, ": %s: %s", f.Severity, f.Message)
	if f.Pointer != "" {
		fmt.Fprintf(&b, " (at %s)", f.Pointer)
	}
	fmt.Fprintf(&b, " [%s]", f.Code)
	return b.String()
}

// IsError reports whether the finding makes the tree invalid.
func (f Finding) IsError() bool { return f.Severity == SeverityError }

// HasErrors reports whether any of fs is an error.
func HasErrors(fs []Finding) bool {
	for _, f := range fs {
		if f.IsError() {
			return true
		}
	}
	return false
}

// CountFindings returns the number of errors and warnings among fs.
func CountFindings(fs []Finding) (errs, warnings int) {
	for _, f := range fs {
		if f.IsError() {
			errs++
		} else {
			warnings++
		}
	}
	return errs, warnings
}

// SortFindings orders findings by file, document, line, column, pointer,
// then code, keeping the order of equal ones.
func SortFindings(fs []Finding) {
	sort.SliceStable(fs, func(i, j int) bool {
		a, b := fs[i], fs[j]
		if a.File != b.File {
			return a.File < b.File
		}
		if a.Document != b.Document {
			return a.Document < b.Document
		}
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		if a.Column != b.Column {
			return a.Column < b.Column
		}
		if a.Pointer != b.Pointer {
			return a.Pointer < b.Pointer
		}
		return a.Code < b.Code
	})
}

// escapePointer escapes one JSON-pointer reference token (RFC 6901).
func escapePointer(s string) string {
	if !strings.ContainsAny(s, "~/") {
		return s
	}
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}

func unescapePointer(s string) string {
	if !strings.Contains(s, "~") {
		return s
	}
	return strings.ReplaceAll(strings.ReplaceAll(s, "~1", "/"), "~0", "~")
}

// suggest returns the candidate closest to s, or "" when none is close enough
// to be a likely typo.
func suggest(s string, candidates []string) string {
	limit := max(len(s)/3, 2)
	ls := strings.ToLower(s)
	if len(ls) > 64 {
		return "" // not a typo, and keeps the work bounded
	}
	var rows [2][65]int
	best, bestDist := "", limit+1
	for _, c := range candidates {
		if d := len(c) - len(s); d > limit || -d > limit || len(c) > 64 {
			continue
		}
		if d := editDistance(ls, strings.ToLower(c), &rows); d < bestDist {
			best, bestDist = c, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance of a and b (each at most 64 bytes),
// computed in the caller's rows.
func editDistance(a, b string, rows *[2][65]int) int {
	prev, cur := rows[0][:len(b)+1], rows[1][:len(b)+1]
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
