package schema

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// document is one parsed YAML document of a file: the generic value the JSON
// Schemas validate, and the node tree that maps JSON pointers back to lines.
// Once the document is decoded, both are dropped (release): a position is
// then found by parsing the file's bytes again, which only a finding needs.
type document struct {
	index     int // 1-based position in the file
	line, col int // of the document's content node
	// root is the document's content node (a mapping); nil once released.
	root  *yaml.Node
	value map[string]any
	src   *source
}

// source is the content of a file, kept for the positions of its released
// documents.
type source struct {
	data []byte
	lim  parseLimits

	mu    sync.Mutex
	roots map[int]*yaml.Node // documents parsed again, by index
}

// release drops the document's node tree and value.
func (d *document) release() { d.root, d.value = nil, nil }

// positionOf is positionAt in the document, parsing its file again once it
// is released.
func (d *document) positionOf(ptr string) (line, col int) {
	if d.root != nil {
		return positionAt(d.root, ptr)
	}
	if ptr == "" || d.src == nil {
		return d.line, d.col
	}
	d.src.mu.Lock()
	defer d.src.mu.Unlock()
	if d.src.roots == nil {
		d.src.roots = make(map[int]*yaml.Node)
		docs, _ := parseFile("", d.src.data, d.src.lim)
		for _, doc := range docs {
			d.src.roots[doc.index] = doc.root
		}
	}
	if root := d.src.roots[d.index]; root != nil {
		return positionAt(root, ptr)
	}
	return d.line, d.col
}

// parseLimits bound the work one document may cause, whatever its input.
type parseLimits struct {
	maxDepth int // nesting of mappings and sequences
	maxNodes int // nodes visited, aliases expanded
}

var yamlErrLine = regexp.MustCompile(`line (\d+)(?:, column (\d+))?`)

// parseFile splits a file into YAML documents and converts each into a generic
// value. Empty documents are skipped. It never panics on any input; every
// problem becomes a finding, and a syntax error ends the file (the YAML parser
// cannot resynchronise after one).
func parseFile(file string, data []byte, lim parseLimits) ([]*document, []Finding) {
	fail := func(line, col int, code Code, msg, hint string) []Finding {
		return []Finding{{Severity: SeverityError, File: file, Line: line, Column: col, Code: code, Message: msg, Hint: hint}}
	}
	switch {
	case bytes.HasPrefix(data, []byte{0xFE, 0xFF}), bytes.HasPrefix(data, []byte{0xFF, 0xFE}):
		return nil, fail(1, 1, CodeNotUTF8, "file is UTF-16 encoded", "save it as UTF-8")
	}
	data = bytes.TrimPrefix(data, []byte{0xEF, 0xBB, 0xBF})
	if i := bytes.IndexByte(data, 0); i >= 0 {
		line, col := offsetPosition(data, i)
		return nil, fail(line, col, CodeBinaryFile, "file contains a NUL byte: it is binary, not YAML", "keep only YAML policy files under the policy path, or move this file elsewhere")
	}
	if !utf8.Valid(data) {
		i := firstInvalidUTF8(data)
		line, col := offsetPosition(data, i)
		return nil, fail(line, col, CodeNotUTF8, "file is not valid UTF-8", "save it as UTF-8")
	}

	var docs []*document
	var findings []Finding
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for index := 1; ; index++ {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			f := syntaxFinding(file, data, err)
			f.Document = index
			findings = append(findings, f)
			break
		}
		content := &n
		if n.Kind == yaml.DocumentNode {
			if len(n.Content) == 0 {
				continue
			}
			content = n.Content[0]
		}
		if content.Kind == yaml.ScalarNode && content.ShortTag() == "!!null" {
			continue // an empty document, or one holding only comments
		}
		c := converter{file: file, doc: index, lim: lim, budget: lim.maxNodes}
		if content.Kind != yaml.MappingNode {
			c.add(content, "", CodeNotMapping, fmt.Sprintf("document is a %s, not a resource", kindName(content)),
				"a resource is a mapping with at least `type` and `name`")
			findings = append(findings, c.findings...)
			continue
		}
		v, ok := c.convert(content, "", 0)
		findings = append(findings, c.findings...)
		if !ok {
			continue
		}
		docs = append(docs, &document{index: index, line: content.Line, col: content.Column, root: content, value: v.(map[string]any)})
	}
	if len(docs) > 0 {
		src := &source{data: data, lim: lim}
		for _, d := range docs {
			d.src = src
		}
	}
	return docs, findings
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.SequenceNode:
		return "list"
	case yaml.ScalarNode:
		return "scalar (" + strings.TrimPrefix(n.ShortTag(), "!!") + ")"
	case yaml.AliasNode:
		return "alias"
	default:
		return "mapping"
	}
}

// syntaxFinding turns a yaml.v3 error into a finding with a position.
func syntaxFinding(file string, data []byte, err error) Finding {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	f := Finding{Severity: SeverityError, File: file, Code: CodeYAMLSyntax, Line: 1}
	if m := yamlErrLine.FindStringSubmatch(msg); m != nil {
		f.Line, _ = strconv.Atoi(m[1])
		if m[2] != "" {
			f.Column, _ = strconv.Atoi(m[2])
		}
		msg = strings.TrimPrefix(msg, m[0]+": ")
	}
	f.Message = "YAML syntax: " + msg
	// A tab in the indentation is the most common cause; say so.
	if tab := tabIndent(data, f.Line); tab[0] > 0 {
		f.Line, f.Column = tab[0], tab[1]
		f.Hint = "YAML does not allow tabs for indentation: indent with spaces"
	}
	if strings.Contains(msg, "exceeded max depth") {
		f.Code = CodeTooDeep
		f.Hint = "policy resources nest only a few levels deep"
	}
	return f
}

// tabIndent returns the line and column of a tab used as indentation on the
// given line or the one before it (yaml.v3 sometimes reports the next token),
// or zeros.
func tabIndent(data []byte, line int) [2]int {
	lines := bytes.Split(data, []byte("\n"))
	for _, l := range []int{line, line - 1} {
		if l < 1 || l > len(lines) {
			continue
		}
		text := lines[l-1]
		indent := len(text) - len(bytes.TrimLeft(text, " \t"))
		if i := bytes.IndexByte(text[:indent], '\t'); i >= 0 {
			return [2]int{l, i + 1}
		}
	}
	return [2]int{}
}

func offsetPosition(data []byte, off int) (line, col int) {
	line = 1 + bytes.Count(data[:off], []byte("\n"))
	col = off - bytes.LastIndexByte(data[:off], '\n')
	return line, col
}

func firstInvalidUTF8(data []byte) int {
	for i := 0; i < len(data); {
		r, size := utf8.DecodeRune(data[i:])
		if r == utf8.RuneError && size <= 1 {
			return i
		}
		i += size
	}
	return 0
}

// converter turns a node tree into map[string]any / []any / scalars, the
// shape the JSON Schema validator takes, enforcing the parse limits.
type converter struct {
	file     string
	doc      int
	lim      parseLimits
	budget   int
	findings []Finding
}

func (c *converter) add(n *yaml.Node, ptr string, code Code, msg, hint string) {
	c.findings = append(c.findings, Finding{
		Severity: SeverityError, File: c.file, Document: c.doc,
		Line: n.Line, Column: n.Column, Pointer: ptr, Code: code, Message: msg, Hint: hint,
	})
}

func (c *converter) convert(n *yaml.Node, ptr string, depth int) (any, bool) {
	c.budget--
	if c.budget < 0 {
		c.add(n, ptr, CodeTooLarge, fmt.Sprintf("document expands to more than %d YAML nodes", c.lim.maxNodes),
			"a policy resource is small; look for YAML aliases that expand recursively")
		return nil, false
	}
	if depth > c.lim.maxDepth {
		c.add(n, ptr, CodeTooDeep, fmt.Sprintf("document nests deeper than %d levels", c.lim.maxDepth),
			"policy resources nest only a few levels deep")
		return nil, false
	}
	switch n.Kind {
	case yaml.AliasNode:
		if n.Alias == nil {
			c.add(n, ptr, CodeYAMLSyntax, "alias to an unknown anchor", "")
			return nil, false
		}
		return c.convert(n.Alias, ptr, depth+1)
	case yaml.MappingNode:
		m := make(map[string]any, len(n.Content)/2)
		ok := true
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Kind == yaml.AliasNode && k.Alias != nil {
				k = k.Alias
			}
			if k.Kind != yaml.ScalarNode {
				c.add(k, ptr, CodeComplexKey, "mapping key is a "+kindName(k)+", not a string", "use plain strings as keys")
				ok = false
				continue
			}
			key := k.Value
			kptr := ptr + "/" + escapePointer(key)
			if _, dup := m[key]; dup {
				c.add(k, kptr, CodeDuplicateKey, fmt.Sprintf("key %q appears twice in the same mapping", key),
					"YAML keeps only one of them; delete or merge the duplicate")
				ok = false
				continue
			}
			val, vok := c.convert(v, kptr, depth+1)
			if !vok {
				ok = false
				if c.budget < 0 {
					return nil, false
				}
			}
			m[key] = val
		}
		return m, ok
	case yaml.SequenceNode:
		s := make([]any, 0, len(n.Content))
		ok := true
		for i, item := range n.Content {
			val, vok := c.convert(item, ptr+"/"+strconv.Itoa(i), depth+1)
			if !vok {
				ok = false
				if c.budget < 0 {
					return nil, false
				}
			}
			s = append(s, val)
		}
		return s, ok
	case yaml.ScalarNode:
		return c.scalar(n, ptr)
	default:
		c.add(n, ptr, CodeYAMLSyntax, "unexpected YAML node", "")
		return nil, false
	}
}

func (c *converter) scalar(n *yaml.Node, ptr string) (any, bool) {
	switch n.ShortTag() {
	case "!!null":
		return nil, true
	case "!!bool":
		var b bool
		if err := n.Decode(&b); err != nil {
			c.add(n, ptr, CodeBadScalar, fmt.Sprintf("%q is not a boolean", n.Value), "write true or false")
			return nil, false
		}
		return b, true
	case "!!int":
		if i, err := strconv.ParseInt(strings.ReplaceAll(n.Value, "_", ""), 0, 64); err == nil {
			return i, true
		}
		var i int64
		if err := n.Decode(&i); err == nil {
			return i, true
		}
		var f float64
		if err := n.Decode(&f); err == nil {
			return f, true // too large for int64: the schema's range check reports it
		}
		c.add(n, ptr, CodeBadScalar, fmt.Sprintf("%q is not a number", n.Value), "")
		return nil, false
	case "!!float":
		if f, err := strconv.ParseFloat(n.Value, 64); err == nil && !math.IsInf(f, 0) && !math.IsNaN(f) {
			return f, true
		}
		var f float64
		if err := n.Decode(&f); err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
			c.add(n, ptr, CodeBadScalar, fmt.Sprintf("%q is not a finite number", n.Value), "")
			return nil, false
		}
		return f, true
	default: // !!str, !!timestamp, !!binary and custom tags keep their text
		return n.Value, true
	}
}

// positionAt returns the line and column a JSON pointer names within a
// document: for a mapping entry, its key (that is where a person looks),
// unless the value is a flow collection on the key's line; for a list item,
// the item. When part of the pointer does not exist, it returns the position
// of the deepest part that does.
func positionAt(root *yaml.Node, ptr string) (line, col int) {
	n := root
	line, col = n.Line, n.Column
	if ptr == "" {
		return line, col
	}
	for _, tok := range strings.Split(strings.TrimPrefix(ptr, "/"), "/") {
		for n.Kind == yaml.AliasNode && n.Alias != nil {
			n = n.Alias
		}
		switch n.Kind {
		case yaml.MappingNode:
			key, val := mappingEntry(n, unescapePointer(tok))
			if key == nil {
				return line, col
			}
			line, col = key.Line, key.Column
			if (val.Kind == yaml.MappingNode || val.Kind == yaml.SequenceNode) && val.Line == key.Line {
				line, col = val.Line, val.Column
			}
			n = val
		case yaml.SequenceNode:
			i, err := strconv.Atoi(tok)
			if err != nil || i < 0 || i >= len(n.Content) {
				return line, col
			}
			n = n.Content[i]
			line, col = n.Line, n.Column
		default:
			return line, col
		}
	}
	return line, col
}

// mappingEntry returns the key and value nodes of name in a mapping, or nils.
func mappingEntry(m *yaml.Node, name string) (key, val *yaml.Node) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == name {
			return m.Content[i], m.Content[i+1]
		}
	}
	return nil, nil
}
