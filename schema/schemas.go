package schema

import (
	"bytes"
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v5"
)

//go:embed schemas/*.json
var schemaFiles embed.FS

// SchemaBaseURL is the base of every schema's $id.
const SchemaBaseURL = "https://gitmesh.io/schemas/"

// schemaFileOf maps a resource type to its schema file.
var schemaFileOf = map[string]string{
	TypeMesh:                  "mesh.json",
	TypeDataplane:             "dataplane.json",
	TypeTrafficPermission:     "trafficpermission.json",
	TypeMeshTrafficPermission: "meshtrafficpermission.json",
	TypeMeshHTTPRoute:         "meshhttproute.json",
	TypeMeshTCPRoute:          "meshtcproute.json",
}

// resourceTypes lists the accepted `type` values, sorted.
var resourceTypes = []string{TypeDataplane, TypeMesh, TypeMeshHTTPRoute, TypeMeshTCPRoute, TypeMeshTrafficPermission, TypeTrafficPermission}

// SchemaFiles returns the embedded JSON Schemas (draft 2020-12), keyed by file
// name, for tools that validate with another implementation.
func SchemaFiles() (map[string][]byte, error) {
	out := map[string][]byte{}
	err := fs.WalkDir(schemaFiles, "schemas", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := schemaFiles.ReadFile(p)
		out[path.Base(p)] = b
		return err
	})
	return out, err
}

// compiled holds the compiled schemas and their raw JSON, which names the
// allowed properties for "did you mean" hints.
type compiled struct {
	byType map[string]*jsonschema.Schema
	raw    map[string]any // schema URL → decoded document
}

func compileSchemas() (*compiled, error) {
	files, err := SchemaFiles()
	if err != nil {
		return nil, fmt.Errorf("read embedded schemas: %w", err)
	}
	c := jsonschema.NewCompiler()
	c.Draft = jsonschema.Draft2020
	out := &compiled{byType: map[string]*jsonschema.Schema{}, raw: map[string]any{}}
	for name, b := range files {
		url := SchemaBaseURL + name
		if err := c.AddResource(url, bytes.NewReader(b)); err != nil {
			return nil, fmt.Errorf("add schema %s: %w", name, err)
		}
		var doc any
		if err := json.Unmarshal(b, &doc); err != nil {
			return nil, fmt.Errorf("decode schema %s: %w", name, err)
		}
		out.raw[url] = doc
	}
	for typ, name := range schemaFileOf {
		s, err := c.Compile(SchemaBaseURL + name)
		if err != nil {
			return nil, fmt.Errorf("compile schema %s: %w", name, err)
		}
		out.byType[typ] = s
	}
	return out, nil
}

// issue is a schema violation before it is given a file position.
type issue struct {
	pointer string
	code    Code
	message string
	hint    string
}

// validate checks one document against its type's schema and returns every
// violation, one per leaf of the validator's error tree.
func (c *compiled) validate(typ string, v map[string]any) []issue {
	err := c.byType[typ].Validate(v)
	if err == nil {
		return nil
	}
	ve, ok := err.(*jsonschema.ValidationError)
	if !ok {
		return []issue{{code: CodeSchema, message: err.Error()}}
	}
	var out []issue
	var walk func(e *jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if len(e.Causes) == 0 {
			out = append(out, c.describe(e, v)...)
			return
		}
		for _, cause := range e.Causes {
			walk(cause)
		}
	}
	walk(ve)
	return out
}

var quoted = regexp.MustCompile(`'((?:[^'\\]|\\.)*)'`)

// describe turns one leaf validation error into issues a person can act on.
func (c *compiled) describe(e *jsonschema.ValidationError, instance map[string]any) []issue {
	keyword := e.KeywordLocation[strings.LastIndexByte(e.KeywordLocation, '/')+1:]
	ptr := e.InstanceLocation
	field := fieldName(ptr)
	switch keyword {
	case "additionalProperties":
		obj, _ := valueAt(instance, ptr).(map[string]any)
		allowed := c.propertiesAt(strings.TrimSuffix(e.AbsoluteKeywordLocation, "/additionalProperties"))
		var unknown []string
		for k := range obj {
			if _, ok := allowed[k]; !ok {
				unknown = append(unknown, k)
			}
		}
		sort.Strings(unknown)
		names := make([]string, 0, len(allowed))
		for k := range allowed {
			names = append(names, k)
		}
		sort.Strings(names)
		var out []issue
		for _, k := range unknown {
			out = append(out, issue{
				pointer: ptr + "/" + escapePointer(k),
				code:    CodeUnknownField,
				message: fmt.Sprintf("unknown field %q in %s", k, orResource(field)),
				hint:    unknownFieldHint(k, names),
			})
		}
		return out
	case "required":
		var out []issue
		for _, m := range quoted.FindAllStringSubmatch(e.Message, -1) {
			name := m[1]
			out = append(out, issue{
				pointer: ptr + "/" + escapePointer(name),
				code:    CodeMissingField,
				message: fmt.Sprintf("%s is missing required field %q", orResource(field), name),
				hint:    requiredHint(ptr, name),
			})
		}
		return out
	case "type":
		return []issue{{pointer: ptr, code: CodeWrongType, message: fmt.Sprintf("%s: %s", field, e.Message)}}
	case "enum", "const", "pattern":
		return []issue{{pointer: ptr, code: CodeInvalidValue, message: fmt.Sprintf("%s: %s", field, e.Message)}}
	case "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength":
		return []issue{{pointer: ptr, code: CodeOutOfRange, message: fmt.Sprintf("%s: %s", field, e.Message)}}
	case "minItems":
		return []issue{{pointer: ptr, code: CodeTooFewItems, message: fmt.Sprintf("%s must not be empty", field)}}
	default:
		return []issue{{pointer: ptr, code: CodeSchema, message: fmt.Sprintf("%s: %s", orResource(field), e.Message)}}
	}
}

// propertiesAt returns the `properties` of the schema object at an absolute
// keyword location such as https://gitmesh.io/schemas/dataplane.json#/$defs/inbound.
func (c *compiled) propertiesAt(loc string) map[string]any {
	url, frag, _ := strings.Cut(loc, "#")
	node := c.raw[url]
	for _, tok := range strings.Split(strings.TrimPrefix(frag, "/"), "/") {
		if tok == "" {
			continue
		}
		m, ok := node.(map[string]any)
		if !ok {
			return nil
		}
		node = m[unescapePointer(tok)]
	}
	m, _ := node.(map[string]any)
	props, _ := m["properties"].(map[string]any)
	return props
}

// knownAlternatives explains fields users bring from other Kuma versions.
var knownAlternatives = map[string]string{
	"gateway":    "gateway dataplanes are not supported; declare inbound interfaces",
	"spec":       "resources are written in Kuma's universal form: the fields go at the top level, not under `spec`",
	"metadata":   "resources are written in Kuma's universal form: `name` and `mesh` go at the top level",
	"kind":       "the resource type is given by `type`, not `kind`",
	"apiVersion": "universal-mode resources have no `apiVersion`",
	"<<":         "YAML merge keys are not supported; write the fields out",
}

func unknownFieldHint(k string, allowed []string) string {
	if alt, ok := knownAlternatives[k]; ok && suggest(k, allowed) == "" {
		return alt
	}
	if s := suggest(k, allowed); s != "" {
		return fmt.Sprintf("did you mean %q?", s)
	}
	if len(allowed) == 0 {
		return "this mapping takes no fields"
	}
	return "allowed fields: " + strings.Join(allowed, ", ")
}

func requiredHint(ptr, name string) string {
	switch {
	case ptr == "" && name == "networking":
		return "a Dataplane needs `networking` with at least one inbound"
	case strings.HasSuffix(ptr, "/networking") && name == "inbound":
		return "declare at least one inbound, e.g. `inbound: [{port: 10001, servicePort: 8080, tags: {service: web}}]`"
	case name == "tags":
		return "an inbound needs `tags` with at least `service`"
	case name == "service":
		return "name the service this outbound reaches"
	case name == "match":
		return "a selector is `match: {service: NAME}`; use '*' to match any service"
	}
	return ""
}

// fieldName renders a JSON pointer the way people write YAML paths:
// /networking/inbound/0/port → networking.inbound[0].port.
func fieldName(ptr string) string {
	if ptr == "" {
		return ""
	}
	var b strings.Builder
	for _, tok := range strings.Split(strings.TrimPrefix(ptr, "/"), "/") {
		tok = unescapePointer(tok)
		if _, err := strconv.Atoi(tok); err == nil {
			b.WriteString("[" + tok + "]")
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(tok)
	}
	return b.String()
}

func orResource(field string) string {
	if field == "" {
		return "the resource"
	}
	return field
}

// valueAt returns the value a JSON pointer names in a generic document.
func valueAt(v any, ptr string) any {
	if ptr == "" {
		return v
	}
	for _, tok := range strings.Split(strings.TrimPrefix(ptr, "/"), "/") {
		switch t := v.(type) {
		case map[string]any:
			v = t[unescapePointer(tok)]
		case []any:
			i, err := strconv.Atoi(tok)
			if err != nil || i < 0 || i >= len(t) {
				return nil
			}
			v = t[i]
		default:
			return nil
		}
	}
	return v
}
