package plan

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"strings"

	"github.com/gitmesh/gitmesh/schema"
	"github.com/gitmesh/gitmesh/xds"
)

// Formats are the formats Write prints a plan in.
var Formats = []string{"text", "json", "markdown"}

var writers = map[string]func(io.Writer, *Plan) error{
	"text":     writeText,
	"json":     writeJSON,
	"markdown": writeMarkdown,
}

// Write prints p in format, one of Formats: text for a terminal, json (the
// Plan's JSON form), or markdown for a pull-request comment. Everything
// that comes from a commit (subjects, names) is escaped for Markdown.
func Write(w io.Writer, p *Plan, format string) error {
	write, ok := writers[format]
	if !ok {
		return fmt.Errorf("unknown format %q: use one of %v", format, Formats)
	}
	return write(w, p)
}

func writeJSON(w io.Writer, p *Plan) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(p)
}

// Marks of what happened to a resource, a field or a proxy in text output.
const (
	markAdded   = "+"
	markChanged = "~"
	markRemoved = "-"
)

func writeText(w io.Writer, p *Plan) error {
	var b strings.Builder
	fmt.Fprintf(&b, "base  %s  %s\n", p.Base.Commit.Short(), p.Base.Subject)
	fmt.Fprintf(&b, "head  %s  %s\n", p.Head.Commit.Short(), p.Head.Subject)
	if !p.Changed() {
		b.WriteString("\nno change: both sides hold the same resources\n")
	}
	if p.Summary.Resources > 0 {
		writeResourcesText(&b, p.Resources)
	}
	if len(p.Proxies) > 0 || p.Summary.ProxiesUnchanged > 0 {
		writeProxiesText(&b, p)
	}
	fmt.Fprintf(&b, "\n%s\n", p.Summary)
	_, err := io.WriteString(w, b.String())
	return err
}

func writeResourcesText(b *strings.Builder, r ResourceDiff) {
	width := 0
	for _, k := range r.Added {
		width = max(width, len(k.Type))
	}
	for _, c := range r.Changed {
		width = max(width, len(c.Type))
	}
	for _, k := range r.Removed {
		width = max(width, len(k.Type))
	}
	line := func(mark string, k schema.Key) {
		fmt.Fprintf(b, "  %s %-*s  %s\n", mark, width, k.Type, keyName(k))
	}
	b.WriteString("\nresources:\n")
	for _, k := range r.Added {
		line(markAdded, k)
	}
	for _, c := range r.Changed {
		line(markChanged, c.Key)
		for _, f := range c.Fields {
			fmt.Fprintf(b, "      %s\n", fieldText(f))
		}
	}
	for _, k := range r.Removed {
		line(markRemoved, k)
	}
}

// keyName is how a reader names a resource: a mesh by its name, anything
// else as MESH/NAME.
func keyName(k schema.Key) string {
	if k.Type == schema.TypeMesh {
		return k.Name
	}
	return k.Mesh + "/" + k.Name
}

// fieldText is one field change: "~ path: old → new", "+ path: new" or
// "- path: old".
func fieldText(f schema.FieldChange) string {
	switch {
	case f.Old == nil:
		return fmt.Sprintf("%s %s: %s", markAdded, fieldPath(f), formatValue(f.New))
	case f.New == nil:
		return fmt.Sprintf("%s %s: %s", markRemoved, fieldPath(f), formatValue(f.Old))
	}
	return fmt.Sprintf("%s %s: %s → %s", markChanged, fieldPath(f), formatValue(f.Old), formatValue(f.New))
}

func fieldPath(f schema.FieldChange) string {
	if f.Path == "" {
		return "(the resource)"
	}
	return f.Path
}

// formatValue prints a string as it is (an empty one as ""), anything else
// as compact JSON with sorted keys.
func formatValue(v any) string {
	if s, ok := v.(string); ok {
		if s == "" {
			return `""`
		}
		return s
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return fmt.Sprint(v)
	}
	return strings.TrimSuffix(b.String(), "\n")
}

func writeProxiesText(b *strings.Builder, p *Plan) {
	kindWidth := 0
	for _, k := range kinds {
		kindWidth = max(kindWidth, len(k.name))
	}
	b.WriteString("\nproxies:\n")
	for i := range p.Proxies {
		pd := &p.Proxies[i]
		if pd.Status != StatusChanged {
			fmt.Fprintf(b, "  %s %s  %s: %s\n", statusMark(pd.Status), pd.Node, pd.Status, strings.Join(proxyCounts(pd), ", "))
			continue
		}
		fmt.Fprintf(b, "  %s %s\n", markChanged, pd.Node)
		for _, e := range proxyEntries(pd) {
			line := fmt.Sprintf("      %s %-*s  %s", statusMark(e.status), kindWidth, e.kind, e.name)
			if note := e.note(func(s string) string { return s }); note != "" {
				line += "  " + note
			}
			b.WriteString(line + "\n")
		}
	}
	if n := p.Summary.ProxiesUnchanged; n > 0 {
		fmt.Fprintf(b, "  (%s translated again: their resources do not change)\n", unchangedProxies(p))
	}
}

func statusMark(status string) string {
	switch status {
	case StatusAdded:
		return markAdded
	case StatusRemoved:
		return markRemoved
	}
	return markChanged
}

// unchangedProxies counts the proxies translated again with no change,
// "other" ones when some are listed.
func unchangedProxies(p *Plan) string {
	n, other := p.Summary.ProxiesUnchanged, ""
	if len(p.Proxies) > 0 {
		other = "other "
	}
	if n == 1 {
		return "1 " + other + "proxy"
	}
	return fmt.Sprintf("%d %sproxies", n, other)
}

// proxyCounts are "listeners 2", "clusters 1"... for every kind of resource
// the proxy has changes of.
func proxyCounts(pd *ProxyDiff) []string {
	var out []string
	for _, k := range kinds {
		d := k.of(pd)
		if n := len(d.Added) + len(d.Changed) + len(d.Removed); n > 0 {
			out = append(out, fmt.Sprintf("%s %d", k.plural, n))
		}
	}
	return out
}

// proxyEntry is one resource of a proxy that changes. For the identity
// certificate, sans are its SANs before (none when it is new) and after;
// newCA marks secrets issued again by the mesh's new CA.
type proxyEntry struct {
	status, kind, name string
	sans               *IdentityDiff
	newCA              bool
}

// proxyEntries lists a proxy's changes by kind, then added, changed,
// removed, then name.
func proxyEntries(pd *ProxyDiff) []proxyEntry {
	var out []proxyEntry
	for _, k := range kinds {
		d := k.of(pd)
		for _, l := range []struct {
			status string
			names  []string
		}{{StatusAdded, d.Added}, {StatusChanged, d.Changed}, {StatusRemoved, d.Removed}} {
			for _, n := range l.names {
				e := proxyEntry{status: l.status, kind: k.name, name: n}
				if k.typeURL == "" && l.status != StatusRemoved {
					if n == xds.SecretIdentity {
						e.sans = pd.Identities
					}
					e.newCA = l.status == StatusChanged && pd.CAChanged
				}
				out = append(out, e)
			}
		}
	}
	return out
}

// note says why a secret changes, each SAN formatted by san: the identity
// certificate's SANs, or the mesh's new CA.
func (e proxyEntry) note(san func(string) string) string {
	join := func(ids []string) string {
		out := make([]string, len(ids))
		for i, id := range ids {
			out[i] = san(id)
		}
		return strings.Join(out, ", ")
	}
	switch {
	case e.sans != nil && len(e.sans.Old) == 0:
		return "SANs " + join(e.sans.New)
	case e.sans != nil:
		return fmt.Sprintf("SANs %s → %s", join(e.sans.Old), join(e.sans.New))
	case e.newCA:
		return "issued by the mesh's new CA"
	}
	return ""
}

func writeMarkdown(w io.Writer, p *Plan) error {
	var b strings.Builder
	fmt.Fprintf(&b, "### gitmesh diff `%s`..`%s`\n\n", p.Base.Commit.Short(), p.Head.Commit.Short())
	fmt.Fprintf(&b, "**%s**\n\n", p.Summary)
	fmt.Fprintf(&b, "- base `%s` %s\n", p.Base.Commit.Short(), mdText(p.Base.Subject))
	fmt.Fprintf(&b, "- head `%s` %s\n", p.Head.Commit.Short(), mdText(p.Head.Subject))
	if !p.Changed() {
		b.WriteString("\nNo change: both sides hold the same resources.\n")
	}
	if p.Summary.Resources > 0 {
		writeResourcesMarkdown(&b, p.Resources)
	}
	if len(p.Proxies) > 0 || p.Summary.ProxiesUnchanged > 0 {
		writeProxiesMarkdown(&b, p)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func writeResourcesMarkdown(b *strings.Builder, r ResourceDiff) {
	b.WriteString("\n#### Resources\n\n| Change | Resource | Fields |\n|---|---|---|\n")
	row := func(status string, k schema.Key, fields []string) {
		fmt.Fprintf(b, "| %s | %s %s | %s |\n", status, k.Type, mdCode(keyName(k)), strings.Join(fields, "<br>"))
	}
	for _, k := range r.Added {
		row(StatusAdded, k, nil)
	}
	for _, c := range r.Changed {
		fields := make([]string, 0, len(c.Fields))
		for _, f := range c.Fields {
			fields = append(fields, fieldMarkdown(f))
		}
		row(StatusChanged, c.Key, fields)
	}
	for _, k := range r.Removed {
		row(StatusRemoved, k, nil)
	}
}

func fieldMarkdown(f schema.FieldChange) string {
	path := mdCode(fieldPath(f))
	switch {
	case f.Old == nil:
		return fmt.Sprintf("%s: added %s", path, mdCode(formatValue(f.New)))
	case f.New == nil:
		return fmt.Sprintf("%s: removed %s", path, mdCode(formatValue(f.Old)))
	}
	return fmt.Sprintf("%s: %s → %s", path, mdCode(formatValue(f.Old)), mdCode(formatValue(f.New)))
}

func writeProxiesMarkdown(b *strings.Builder, p *Plan) {
	b.WriteString("\n#### Proxies\n")
	for i := range p.Proxies {
		pd := &p.Proxies[i]
		fmt.Fprintf(b, "\n<details><summary><code>%s</code> %s: %s</summary>\n\n", html.EscapeString(pd.Node), pd.Status,
			strings.Join(proxyCounts(pd), ", "))
		b.WriteString("| Change | Kind | Name |\n|---|---|---|\n")
		for _, e := range proxyEntries(pd) {
			name := mdCode(e.name)
			if note := e.note(mdCode); note != "" {
				name += ": " + note
			}
			fmt.Fprintf(b, "| %s | %s | %s |\n", e.status, e.kind, name)
		}
		b.WriteString("\n</details>\n")
	}
	if n := p.Summary.ProxiesUnchanged; n > 0 {
		fmt.Fprintf(b, "\n%s translated again: their resources do not change.\n", unchangedProxies(p))
	}
}

// mdCode is s as a code span in a Markdown table cell: fenced by more
// backticks than s has in a row, `|` escaped (GitHub splits cells on it even
// inside code), line breaks as spaces.
func mdCode(s string) string {
	s = strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ", "|", `\|`).Replace(s)
	longest, run := 0, 0
	for _, r := range s {
		if r == '`' {
			run++
			longest = max(longest, run)
		} else {
			run = 0
		}
	}
	fence := strings.Repeat("`", longest+1)
	if longest > 0 || (strings.HasPrefix(s, " ") && strings.HasSuffix(s, " ")) {
		s = " " + s + " " // one space each side is stripped again
	}
	return fence + s + fence
}

// mdText is s as Markdown text: the characters that start markup, links,
// mentions or issue references escaped, line breaks as spaces.
func mdText(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '\n' || r == '\r':
			b.WriteByte(' ')
			continue
		case r < 0x80 && strings.ContainsRune("\\`*_[]<>!&|~@#", r):
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}
