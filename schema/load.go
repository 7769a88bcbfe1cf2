package schema

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// Defaults of Options.
const (
	DefaultMaxFileBytes = 8 << 20
	DefaultMaxFiles     = 50_000
	DefaultMaxDirDepth  = 32
)

// Options bound what one load may read. The zero value takes the defaults.
type Options struct {
	MaxFileBytes int64 // larger files are refused unread; default 8 MiB
	MaxFiles     int   // files per tree (all files, not only YAML); more and none is loaded; default 50,000
	MaxDirDepth  int   // directory levels below a tree's root; default 32
	MaxDepth     int   // nesting within a document; default 64
	MaxNodes     int   // YAML nodes per document, aliases expanded; default 100,000
	Workers      int   // files parsed at once; default GOMAXPROCS
	// Deprecations reports each legacy form that has a Kuma 2.x successor
	// as a warning (CodeDeprecated).
	Deprecations bool
}

func (o Options) withDefaults() Options {
	if o.MaxFileBytes <= 0 {
		o.MaxFileBytes = DefaultMaxFileBytes
	}
	if o.MaxFiles <= 0 {
		o.MaxFiles = DefaultMaxFiles
	}
	if o.MaxDirDepth <= 0 {
		o.MaxDirDepth = DefaultMaxDirDepth
	}
	if o.MaxDepth <= 0 {
		o.MaxDepth = 64
	}
	if o.MaxNodes <= 0 {
		o.MaxNodes = 100_000
	}
	if o.Workers <= 0 {
		o.Workers = runtime.GOMAXPROCS(0)
	}
	return o
}

// Loader loads trees of policy YAML into validated sets. It compiles the JSON
// Schemas once; a Loader is safe for concurrent use.
type Loader struct {
	opts    Options
	schemas *compiled
}

// NewLoader compiles the embedded schemas.
func NewLoader(opts Options) (*Loader, error) {
	c, err := compileSchemas()
	if err != nil {
		return nil, err
	}
	return &Loader{opts: opts.withDefaults(), schemas: c}, nil
}

// Result is the outcome of loading a tree.
type Result struct {
	// Set is the validated, normalised policy set; nil when any finding is an
	// error. Warnings do not prevent a set.
	Set       *Set
	Files     int // YAML files read
	Resources int // resources declared (documents that name a type)
	// Findings holds every error and warning of the tree, sorted by file,
	// document and position.
	Findings []Finding
}

// Valid reports whether the tree has no errors.
func (r *Result) Valid() bool { return !HasErrors(r.Findings) }

// Count returns the number of errors and warnings.
func (r *Result) Count() (errs, warnings int) { return CountFindings(r.Findings) }

// entry is one decoded resource with what later checks need to point at it.
type entry struct {
	typ, mesh, name string
	file            string
	doc             *document
	m               *Mesh
	dp              *Dataplane
	tp              *TrafficPermission
	mtp             *MeshTrafficPermission
	hr              *MeshHTTPRoute
	tr              *MeshTCPRoute
	conf            *ConfPolicy
	ruleBases       []string // per TrafficPermission rule: pointer prefix
	services        []string // per Dataplane inbound: its service tag
}

func (e *entry) finding(sev Severity, ptr string, code Code, msg, hint string) Finding {
	line, col := e.doc.positionOf(ptr)
	return Finding{Severity: sev, File: e.file, Document: e.doc.index, Line: line, Column: col,
		Pointer: ptr, Code: code, Message: msg, Hint: hint}
}

func (e *entry) origin() Origin {
	return Origin{File: e.file, Document: e.doc.index, Line: e.doc.line, Column: e.doc.col}
}

// fileResult is what one file contributes.
type fileResult struct {
	entries  []*entry
	findings []Finding
}

// Tree is one root to load: a directory, a git commit's tree, or a single
// file of one.
type Tree struct {
	FS fs.FS
	// Prefix is joined in front of every file name in findings and origins
	// (e.g. the directory a user named); "" keeps names relative to FS.
	Prefix string
	// Files, when set, lists the only files to read (a user named them);
	// otherwise the whole tree is walked.
	Files []string
}

// Load reads every *.yaml and *.yml file under fsys (recursively; hidden files
// and directories skipped), validates each document against its schema and
// rules, then checks the resources against each other. Every problem of the
// tree is reported in one pass. The returned error is for I/O failures of the
// tree's root only; problems with individual files are findings.
//
// Symbolic links are followed only when fsys implements fs.ReadLinkFS and the
// link resolves inside fsys; a link out of the tree is an error.
func (l *Loader) Load(fsys fs.FS) (*Result, error) {
	return l.LoadTrees([]Tree{{FS: fsys}})
}

// LoadTrees loads several trees as one policy set, as Load does for one.
func (l *Loader) LoadTrees(trees []Tree) (*Result, error) {
	return l.LoadTreesCached(trees, nil)
}

// LoadTreesCached is LoadTrees that takes the result of each file whose
// content the cache already holds from it, and keeps the others there for the
// next load. A nil cache is LoadTrees. The Result is the same as without the
// cache.
func (l *Loader) LoadTreesCached(trees []Tree, cache *Cache) (*Result, error) {
	files, findings, err := l.walkTrees(trees)
	if err != nil {
		return nil, err
	}
	return assemble(len(files), l.loadFiles(files, cache), findings), nil
}

// walkTrees lists the files of every tree, in order, and what is wrong with
// the entries that are not files it can read.
func (l *Loader) walkTrees(trees []Tree) ([]file, []Finding, error) {
	var files []file
	var findings []Finding
	for _, t := range trees {
		fs, fnd, err := l.walk(t)
		if err != nil {
			return nil, nil, err
		}
		files = append(files, fs...)
		findings = append(findings, fnd...)
	}
	return files, findings, nil
}

// loadFiles loads each file, in parallel, through the cache when there is one.
func (l *Loader) loadFiles(files []file, cache *Cache) []fileResult {
	load := l.loadFile
	var gen uint64
	if cache != nil {
		gen = cache.begin()
		load = func(f file) fileResult { return l.loadFileCached(f, cache, gen) }
	}
	results := make([]fileResult, len(files))
	var wg sync.WaitGroup
	var next atomic.Int64
	for range min(l.opts.Workers, max(len(files), 1)) {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < len(files); i = int(next.Add(1) - 1) {
				results[i] = load(files[i])
			}
		})
	}
	wg.Wait()
	if cache != nil {
		cache.end(gen)
	}
	return results
}

// assemble checks the files' resources against each other and makes the
// Result. It only reads the results, which may come from a cache.
func assemble(nfiles int, results []fileResult, findings []Finding) *Result {
	nentries, nfindings := 0, len(findings)
	for _, r := range results {
		nentries += len(r.entries)
		nfindings += len(r.findings)
	}
	entries := make([]*entry, 0, nentries)
	findings = slices.Grow(findings, nfindings-len(findings))
	for _, r := range results {
		entries = append(entries, r.entries...)
		findings = append(findings, r.findings...)
	}
	res := &Result{Files: nfiles, Resources: len(entries)}
	set, crossFindings := crossCheck(entries)
	findings = append(findings, crossFindings...)
	SortFindings(findings)
	res.Findings = findings
	if res.Valid() {
		res.Set = set
	}
	return res
}

// file is a YAML file to read: the name findings give it, and the path in
// fsys that holds its bytes (different when name is a symbolic link).
type file struct {
	fsys         fs.FS
	name, target string
}

func isYAML(name string) bool {
	ext := strings.ToLower(path.Ext(name))
	return ext == ".yaml" || ext == ".yml"
}

func (l *Loader) walk(t Tree) ([]file, []Finding, error) {
	var files []file
	var findings []Finding
	display := func(p string) string { return path.Join(t.Prefix, p) }
	report := func(sev Severity, p string, code Code, msg, hint string) {
		findings = append(findings, Finding{Severity: sev, File: display(p), Code: code, Message: msg, Hint: hint})
	}
	visit := func(p string, typ fs.FileMode, info func() (fs.FileInfo, error)) {
		switch {
		case typ.IsRegular():
			files = append(files, file{fsys: t.FS, name: display(p), target: p})
		case typ&fs.ModeSymlink != 0:
			target, f := resolveLink(t.FS, p)
			if f != nil {
				f.File = display(p)
				findings = append(findings, *f)
				return
			}
			files = append(files, file{fsys: t.FS, name: display(p), target: target})
		case typ.IsDir():
			report(SeverityError, p, CodeNotRegular, "is a directory", "")
		default:
			if sm, ok := submodule(info); ok {
				report(SeverityError, p, CodeSubmodule, fmt.Sprintf("is a git submodule (commit %.12s); it is not followed", sm.Commit),
					"gitmesh reads only this repository's files: commit the policy files into it")
				return
			}
			report(SeverityWarning, p, CodeNotRegular, "not a regular file (a device or a pipe?); skipped", "")
		}
	}
	if t.Files != nil {
		for _, p := range t.Files {
			info, err := lstat(t.FS, p)
			if err != nil {
				return nil, nil, fmt.Errorf("read %s: %w", display(p), err)
			}
			visit(p, info.Mode().Type(), func() (fs.FileInfo, error) { return info, nil })
		}
		return files, findings, nil
	}
	seen := 0 // files of every kind, to refuse a huge tree before loading any
	tooMany := false
	err := fs.WalkDir(t.FS, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == "." {
				return err
			}
			report(SeverityError, p, CodeUnreadable, fmt.Sprintf("cannot read: %v", unwrapPathError(err)), "")
			return nil
		}
		if p == "." {
			return nil
		}
		if strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			if depth := strings.Count(p, "/") + 1; depth > l.opts.MaxDirDepth {
				report(SeverityError, p, CodeTooDeepTree, fmt.Sprintf("directories nest more than %d levels deep; nothing in %s was read", l.opts.MaxDirDepth, display(p)),
					"keep the policy tree shallow")
				return fs.SkipDir
			}
			return nil
		}
		if seen++; seen > l.opts.MaxFiles {
			tooMany = true
			return fs.SkipAll
		}
		switch {
		case isYAML(p):
			visit(p, d.Type(), d.Info)
		case d.Type()&fs.ModeIrregular != 0: // a submodule is refused whatever its name
			if _, ok := submodule(d.Info); ok {
				visit(p, d.Type(), d.Info)
			}
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("read policy tree: %w", err)
	}
	if tooMany {
		root := display(".")
		where := root + "/"
		if root == "." {
			where = "the policy root"
		}
		return nil, []Finding{{Severity: SeverityError, File: root, Code: CodeTooManyFiles,
			Message: fmt.Sprintf("more than %d files under %s; none of them was loaded", l.opts.MaxFiles, where),
			Hint:    "point the policy path at the directory that holds only the policies, or raise the limit"}}, nil
	}
	return files, findings, nil
}

// GitSubmodule is the fs.FileInfo.Sys of a git submodule (a gitlink entry)
// in a tree read from git: Commit is the submodule's commit, which lives in
// another repository.
type GitSubmodule struct{ Commit string }

// submodule reports whether the entry is a git submodule.
func submodule(info func() (fs.FileInfo, error)) (GitSubmodule, bool) {
	fi, err := info()
	if err != nil {
		return GitSubmodule{}, false
	}
	sm, ok := fi.Sys().(GitSubmodule)
	return sm, ok
}

// lstat is fs.Lstat where the FS has it, fs.Stat otherwise.
func lstat(fsys fs.FS, name string) (fs.FileInfo, error) {
	if rl, ok := fsys.(fs.ReadLinkFS); ok {
		return rl.Lstat(name)
	}
	return fs.Stat(fsys, name)
}

// maxLinkHops bounds symbolic-link chains, as the kernel does.
const maxLinkHops = 40

// resolveLink follows a symbolic link within fsys and returns the path of the
// regular file it names, or a finding when it leaves the tree, dangles, loops
// or names something else.
func resolveLink(fsys fs.FS, name string) (string, *Finding) {
	bad := func(code Code, msg, hint string) (string, *Finding) {
		return "", &Finding{Severity: SeverityError, File: name, Code: code, Message: msg, Hint: hint}
	}
	rl, ok := fsys.(fs.ReadLinkFS)
	if !ok {
		return bad(CodeNotRegular, "symbolic link, and this tree cannot resolve links", "replace the link with the file it points to")
	}
	cur := name
	for range maxLinkHops {
		target, err := rl.ReadLink(cur)
		if err != nil {
			return bad(CodeUnreadable, fmt.Sprintf("cannot read symbolic link: %v", unwrapPathError(err)), "")
		}
		if path.IsAbs(target) || strings.HasPrefix(target, "/") {
			return bad(CodeSymlinkEscape, fmt.Sprintf("symbolic link to %q points outside the policy tree", target),
				"links may only point at files inside the tree; gitmesh never follows them out")
		}
		next := path.Join(path.Dir(cur), target)
		if next == ".." || strings.HasPrefix(next, "../") {
			return bad(CodeSymlinkEscape, fmt.Sprintf("symbolic link to %q points outside the policy tree", target),
				"links may only point at files inside the tree; gitmesh never follows them out")
		}
		info, err := rl.Lstat(next)
		if err != nil {
			return bad(CodeUnreadable, fmt.Sprintf("symbolic link to %q does not resolve: %v", target, unwrapPathError(err)), "")
		}
		switch {
		case info.Mode().IsRegular():
			return next, nil
		case info.Mode()&fs.ModeSymlink != 0:
			cur = next
		default:
			return bad(CodeNotRegular, fmt.Sprintf("symbolic link to %q does not name a regular file", target), "")
		}
	}
	return bad(CodeUnreadable, "too many levels of symbolic links", "")
}

func unwrapPathError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// readBounded reads a file, refusing it unread when it is larger than max.
func readBounded(fsys fs.FS, name string, max int64) ([]byte, error) {
	f, err := fsys.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if info, err := f.Stat(); err == nil && info.Size() > max {
		return nil, errTooLarge
	}
	data, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > max {
		return nil, errTooLarge
	}
	return data, nil
}

var errTooLarge = errors.New("file too large")

// readFile reads a file within the size limit; a file it cannot read becomes
// a finding.
func (l *Loader) readFile(f file) ([]byte, *Finding) {
	data, err := readBounded(f.fsys, f.target, l.opts.MaxFileBytes)
	if err != nil {
		fnd := Finding{Severity: SeverityError, File: f.name, Code: CodeUnreadable, Message: fmt.Sprintf("cannot read: %v", unwrapPathError(err))}
		if errors.Is(err, errTooLarge) {
			fnd.Code = CodeFileTooLarge
			fnd.Message = fmt.Sprintf("file is larger than %d bytes; it was not read", l.opts.MaxFileBytes)
			fnd.Hint = "split it into smaller files, or raise the limit"
		}
		return nil, &fnd
	}
	return data, nil
}

func (l *Loader) loadFile(f file) fileResult {
	data, fnd := l.readFile(f)
	if fnd != nil {
		return fileResult{findings: []Finding{*fnd}}
	}
	return l.loadBytes(f.name, data)
}

// loadBytes parses, validates and decodes the content of the named file.
func (l *Loader) loadBytes(name string, data []byte) fileResult {
	if f := lfsPointer(name, data); f != nil {
		return fileResult{findings: []Finding{*f}}
	}
	docs, findings := parseFile(name, data, parseLimits{maxDepth: l.opts.MaxDepth, maxNodes: l.opts.MaxNodes})
	out := fileResult{findings: findings}
	for _, doc := range docs {
		e, fs := l.loadDocument(name, doc)
		doc.release() // decoded: what is left to find is a position
		out.findings = append(out.findings, fs...)
		if e != nil {
			out.entries = append(out.entries, e)
		}
	}
	return out
}

// lfsPrefixes start every Git LFS pointer file (git-lfs spec v1; "hawser" was
// its name before the release).
var lfsPrefixes = []string{"version https://git-lfs.github.com/spec/", "version https://hawser.github.com/spec/"}

// lfsPointer returns a finding when data is a Git LFS pointer rather than the
// file: gitmesh reads git objects and never fetches from an LFS server.
func lfsPointer(name string, data []byte) *Finding {
	if len(data) > 1024 {
		return nil
	}
	for _, p := range lfsPrefixes {
		if strings.HasPrefix(string(data), p) {
			msg := "is a Git LFS pointer; gitmesh reads files from git objects: store policy files in git itself"
			return &Finding{Severity: SeverityError, File: name, Line: 1, Column: 1, Code: CodeLFSPointer, Message: msg,
				Hint: "stop tracking the policy files with LFS (`git lfs untrack`, then `git add --renormalize`) and commit them"}
		}
	}
	return nil
}

// loadDocument validates one document and decodes it into the model. It
// returns a nil entry when the document does not name a known type.
func (l *Loader) loadDocument(file string, doc *document) (*entry, []Finding) {
	e := &entry{file: file, doc: doc}
	toFindings := func(issues []issue) []Finding {
		out := make([]Finding, 0, len(issues))
		for _, is := range issues {
			out = append(out, e.finding(SeverityError, is.pointer, is.code, is.message, is.hint))
		}
		return out
	}
	rawType, present := doc.value["type"]
	typ, _ := rawType.(string)
	if _, known := schemaFileOf[typ]; !known {
		if !present {
			return nil, toFindings([]issue{{code: CodeMissingType, message: "document has no `type`",
				hint: "start each resource with `type: " + strings.Join(resourceTypes, "|") + "`"}})
		}
		hint := "gitmesh reads " + strings.Join(resourceTypes, ", ")
		if s := suggest(typ, resourceTypes); s != "" {
			hint = fmt.Sprintf("did you mean %q?", s)
		}
		return nil, toFindings([]issue{{pointer: "/type", code: CodeUnknownType,
			message: fmt.Sprintf("unknown resource type %v", quoteValue(rawType)), hint: hint}})
	}
	e.typ = typ
	schemaIssues := l.schemas.validate(typ, doc.value)
	var issues []issue
	switch typ {
	case TypeMesh:
		e.m, issues = decodeMesh(doc.value)
		e.m.Origin = e.origin()
		e.name, e.mesh = e.m.Name, e.m.Name
	case TypeDataplane:
		e.dp, issues = decodeDataplane(doc.value)
		e.dp.Origin = e.origin()
		e.name, e.mesh = e.dp.Name, e.dp.Mesh
		e.services = make([]string, len(e.dp.Inbound))
		for i, in := range e.dp.Inbound {
			e.services[i] = in.Service()
		}
	case TypeTrafficPermission:
		e.tp, e.ruleBases, issues = decodeTrafficPermission(doc.value)
		e.tp.Origin = e.origin()
		e.name, e.mesh = e.tp.Name, e.tp.Mesh
	case TypeMeshTrafficPermission:
		e.mtp, issues = decodeMeshTrafficPermission(doc.value)
		e.mtp.Origin = e.origin()
		e.name, e.mesh = e.mtp.Name, e.mtp.Mesh
	case TypeMeshHTTPRoute:
		e.hr, issues = decodeMeshHTTPRoute(doc.value)
		e.hr.Origin = e.origin()
		e.name, e.mesh = e.hr.Name, e.hr.Mesh
		for i := range e.hr.To {
			for j := range e.hr.To[i].Rules {
				r := &e.hr.To[i].Rules[j]
				r.Line, _ = doc.positionOf(r.Pointer)
			}
		}
	case TypeMeshTCPRoute:
		e.tr, issues = decodeMeshTCPRoute(doc.value)
		e.tr.Origin = e.origin()
		e.name, e.mesh = e.tr.Name, e.tr.Mesh
		for i := range e.tr.To {
			to := &e.tr.To[i]
			ptr := to.Rule
			if ptr == "" {
				ptr = to.Pointer
			}
			to.Line, _ = doc.positionOf(ptr)
		}
	default:
		if k := confKinds[typ]; k != nil {
			e.conf, issues = decodeConfPolicy(k, doc.value)
			e.conf.Origin = e.origin()
			e.name, e.mesh = e.conf.Name, e.conf.Mesh
			for _, list := range [][]ConfItem{e.conf.To, e.conf.From, e.conf.Rules} {
				for i := range list {
					list[i].Line, _ = doc.positionOf(list[i].Pointer)
				}
			}
			if e.conf.Default != nil {
				e.conf.DefaultLine, _ = doc.positionOf(e.conf.DefaultPointer)
			}
		}
	}
	out := toFindings(append(schemaIssues, withoutOverlap(issues, schemaIssues)...))
	if l.opts.Deprecations {
		for _, is := range deprecations(typ, doc.value) {
			out = append(out, e.finding(SeverityWarning, is.pointer, is.code, is.message, is.hint))
		}
	}
	return e, out
}

// withoutOverlap drops rule issues about a value the schema already reported
// (the same field, one inside it, or one containing it), so a wrong value is
// reported once, by the more precise check.
func withoutOverlap(rules, schema []issue) []issue {
	if len(schema) == 0 {
		return rules
	}
	out := rules[:0:0]
	for _, r := range rules {
		overlaps := false
		for _, s := range schema {
			if within(r.pointer, s.pointer) || within(s.pointer, r.pointer) {
				overlaps = true
				break
			}
		}
		if !overlaps {
			out = append(out, r)
		}
	}
	return out
}

// within reports whether pointer p is q or inside it.
func within(p, q string) bool {
	return p == q || (q != "" && strings.HasPrefix(p, q+"/")) || (q == "" && p == "")
}

func quoteValue(v any) string {
	if s, ok := v.(string); ok {
		return fmt.Sprintf("%q", s)
	}
	return fmt.Sprintf("%v (not a string)", v)
}

// sortEntries orders resources by (mesh, name), then by file position so
// duplicates are reported against the first declaration.
func sortEntries(es []*entry) {
	if !slices.IsSortedFunc(es, compareEntries) { // often they are: a file per resource
		slices.SortStableFunc(es, compareEntries)
	}
}

func compareEntries(a, b *entry) int {
	if c := strings.Compare(a.mesh, b.mesh); c != 0 {
		return c
	}
	if c := strings.Compare(a.name, b.name); c != 0 {
		return c
	}
	if c := strings.Compare(a.file, b.file); c != 0 {
		return c
	}
	return cmp.Compare(a.doc.index, b.doc.index)
}
