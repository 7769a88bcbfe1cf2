package main

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/gitmesh/gitmesh/reconcile/pipeline"
	"github.com/gitmesh/gitmesh/schema"
)

// A reporter prints a validation result in one format.
type reporter func(w io.Writer, res *pipeline.Result) error

var reporters = map[string]reporter{
	"text":   reportText,
	"json":   reportJSON,
	"github": reportGitHub,
	"sarif":  reportSARIF,
}

var reportFormats = []string{"text", "json", "github", "sarif"}

func reportText(w io.Writer, res *pipeline.Result) error {
	for _, f := range res.Findings {
		pos := f.File
		if f.Line > 0 {
			pos = fmt.Sprintf("%s:%d:%d", f.File, f.Line, max(f.Column, 1))
		}
		fmt.Fprintf(w, "%s: %s[%s]: %s\n", pos, f.Severity, f.Code, f.Message)
		var where []string
		if f.Document > 0 {
			where = append(where, fmt.Sprintf("document %d", f.Document))
		}
		if f.Pointer != "" {
			where = append(where, "at "+f.Pointer)
		}
		if len(where) > 0 {
			fmt.Fprintf(w, "    %s\n", strings.Join(where, ", "))
		}
		if f.Hint != "" {
			fmt.Fprintf(w, "    hint: %s\n", f.Hint)
		}
	}
	errs, warns := res.Count()
	verdict := "valid"
	if errs > 0 {
		verdict = "invalid"
	}
	_, err := fmt.Fprintf(w, "%s: %s, %s, %s, %s\n", verdict, plural(res.Files, "file"), plural(res.Resources, "resource"),
		plural(errs, "error"), plural(warns, "warning"))
	return err
}

func reportJSON(w io.Writer, res *pipeline.Result) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(struct {
		Valid     bool              `json:"valid"`
		Files     int               `json:"files"`
		Resources int               `json:"resources"`
		Errors    []validateFinding `json:"errors"`
		Warnings  []validateFinding `json:"warnings"`
	}{res.Valid(), res.Files, res.Resources,
		toJSONFindings(res.Findings, schema.SeverityError), toJSONFindings(res.Findings, schema.SeverityWarning)})
}

// GitHub workflow commands: https://docs.github.com/actions/reference/workflow-commands-for-github-actions
var (
	ghData     = strings.NewReplacer("%", "%25", "\r", "%0D", "\n", "%0A")
	ghProperty = strings.NewReplacer("%", "%25", "\r", "%0D", "\n", "%0A", ":", "%3A", ",", "%2C")
)

func reportGitHub(w io.Writer, res *pipeline.Result) error {
	for _, f := range res.Findings {
		msg := f.Message
		if f.Hint != "" {
			msg += " (" + f.Hint + ")"
		}
		props := []string{"file=" + ghProperty.Replace(f.File)}
		if f.Line > 0 {
			props = append(props, fmt.Sprintf("line=%d", f.Line), fmt.Sprintf("col=%d", max(f.Column, 1)))
		}
		props = append(props, "title="+ghProperty.Replace(string(f.Code)))
		if _, err := fmt.Fprintf(w, "::%s %s::%s\n", f.Severity, strings.Join(props, ","), ghData.Replace(msg)); err != nil {
			return err
		}
	}
	return nil
}

// reportSARIF prints SARIF 2.1.0, which GitHub code scanning and most CI
// systems read.
func reportSARIF(w io.Writer, res *pipeline.Result) error {
	type region struct {
		StartLine   int `json:"startLine,omitempty"`
		StartColumn int `json:"startColumn,omitempty"`
	}
	type location struct {
		PhysicalLocation struct {
			ArtifactLocation struct {
				URI string `json:"uri"`
			} `json:"artifactLocation"`
			Region *region `json:"region,omitempty"`
		} `json:"physicalLocation"`
	}
	type message struct {
		Text string `json:"text"`
	}
	type result struct {
		RuleID     schema.Code    `json:"ruleId"`
		Level      string         `json:"level"`
		Message    message        `json:"message"`
		Locations  []location     `json:"locations"`
		Properties map[string]any `json:"properties,omitempty"`
	}
	type rule struct {
		ID               schema.Code `json:"id"`
		ShortDescription message     `json:"shortDescription"`
	}
	var results []result
	ruleSeen := map[schema.Code]bool{}
	var rules []rule
	for _, f := range res.Findings {
		var loc location
		loc.PhysicalLocation.ArtifactLocation.URI = f.File
		if f.Line > 0 {
			loc.PhysicalLocation.Region = &region{StartLine: f.Line, StartColumn: max(f.Column, 1)}
		}
		text := f.Message
		if f.Hint != "" {
			text += " Hint: " + f.Hint
		}
		r := result{RuleID: f.Code, Level: string(f.Severity), Message: message{text}, Locations: []location{loc}}
		if f.Pointer != "" || f.Document > 0 {
			r.Properties = map[string]any{"pointer": f.Pointer, "document": f.Document}
		}
		results = append(results, r)
		if !ruleSeen[f.Code] {
			ruleSeen[f.Code] = true
			rules = append(rules, rule{ID: f.Code, ShortDescription: message{string(f.Code)}})
		}
	}
	sort.Slice(rules, func(i, j int) bool { return rules[i].ID < rules[j].ID })
	if results == nil {
		results = []result{}
	}
	doc := map[string]any{
		"$schema": "https://json.schemastore.org/sarif-2.1.0.json",
		"version": "2.1.0",
		"runs": []any{map[string]any{
			"tool": map[string]any{"driver": map[string]any{
				"name":           "gitmesh",
				"informationUri": "https://gitmesh.io",
				"rules":          rules,
			}},
			"results": results,
		}},
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(doc)
}
