// Package pipeline is the one way gitmesh judges a commit. It loads a tree of
// policy (a commit's or a directory's), validates every resource and the
// resources against each other, translates the set for every flavour each
// dataplane may run and checks what those data planes would reject. The
// pull-request gate (validate, diff, render) and the daemon (serve, rollback,
// resume) all call Run, so the gate's findings are the daemon's verdict.
package pipeline

import (
	"context"
	"fmt"
	"time"

	"github.com/gitmesh/gitmesh/schema"
	"github.com/gitmesh/gitmesh/xds"
)

// Options shape a Pipeline. The zero value loads with the default limits,
// translates every dataplane for every flavour, and keeps nothing between
// runs.
type Options struct {
	// Limits bound what one load may read (file size, file count, directory
	// depth, ...); zero fields take the schema defaults.
	Limits schema.Options
	// Cache keeps each file's loaded result and what the checks learnt for
	// the next Run, so that a commit that changes a few files costs a few
	// files: for the daemon, and for diff's second commit. A one-shot gate
	// leaves it off and frees each file's YAML as soon as it is loaded.
	Cache bool
	// Workers translate and check in parallel; GOMAXPROCS when zero.
	Workers int
	// Flavors, when set, lists the flavours a dataplane may run; nil means
	// every flavour (xds.Flavors).
	Flavors func(*schema.Dataplane) []xds.Flavor
	// VerdictOnly keeps no proxy: the Result's Translation has the nodes
	// but none of their proxies (so it serves as nobody's prev). For a gate
	// that prints findings alone.
	VerdictOnly bool
	// Keep, when set, lists the flavours of a dataplane whose proxies the
	// Result's Translation keeps from the run (the daemon: those of the
	// nodes connected); the others are checked, dropped and made again
	// when asked for. Nil keeps every proxy (see xds.BuilderOptions.Keep).
	Keep func(*schema.Dataplane) []xds.Flavor
}

// Pipeline runs the stages. It is safe for concurrent use; runs that share
// the cache are serialised where they touch it.
type Pipeline struct {
	loader  *schema.Loader
	cache   *schema.Cache // nil without Options.Cache
	builder *xds.Builder
}

// New compiles the schemas and returns a Pipeline.
func New(opts Options) (*Pipeline, error) {
	loader, err := schema.NewLoader(opts.Limits)
	if err != nil {
		return nil, err
	}
	p := &Pipeline{loader: loader, builder: xds.NewBuilder(xds.BuilderOptions{Workers: opts.Workers, Flavors: opts.Flavors,
		CheckOnly: opts.VerdictOnly, Keep: opts.Keep})}
	if opts.Cache {
		p.cache = schema.NewCache()
	}
	return p, nil
}

// Result is what Run made of a tree.
type Result struct {
	Files     int // policy files read
	Resources int // resources declared
	// Findings are every error and warning of every stage, sorted by file
	// and position: the schema's, the rules', the cross-resource checks',
	// and a translation-error at each dataplane that does not translate for
	// a flavour it may run.
	Findings []schema.Finding
	// Set and Translation are the validated policy and its proxies; both
	// nil when any finding is an error.
	Set         *schema.Set
	Translation *xds.Translation
	// Diff is what changed from the prev Result given to Run (everything is
	// added without one); set only when valid.
	Diff schema.SetDiff
	// Stats says how many dataplanes were translated again and reused.
	Stats xds.BuildStats
	// Durations of the stages.
	Load, Compare, Translate time.Duration
	// Lazy is set on a Result of Restore: its proxies are made when asked
	// for, and it has not been checked whole.
	Lazy bool
}

// Valid reports whether the tree has no error.
func (r *Result) Valid() bool { return !schema.HasErrors(r.Findings) }

// Count returns the number of errors and warnings.
func (r *Result) Count() (errs, warnings int) { return schema.CountFindings(r.Findings) }

// Run loads trees as one policy set and, when it is valid, translates and
// checks it. prev, when not nil, is an earlier valid Result (the commit
// served, or the other side of a diff): what the change cannot reach keeps
// prev's translation, and Diff is taken against it. The error is for what
// stops the run itself: the root of a tree cannot be read, or ctx ended;
// everything wrong with the policy is a finding.
func (p *Pipeline) Run(ctx context.Context, trees []schema.Tree, prev *Result) (*Result, error) {
	res, loaded, err := p.load(trees)
	if err != nil || loaded.Set == nil {
		return res, err
	}
	var before *xds.Translation
	var prevSet *schema.Set
	if prev != nil && prev.Translation != nil {
		before, prevSet = prev.Translation, prev.Set
	}
	start := time.Now()
	diff := schema.DiffSets(prevSet, loaded.Set)
	res.Compare = time.Since(start)

	start = time.Now()
	tr, stats, failures, err := p.builder.Build(ctx, loaded.Set, diff, before)
	res.Translate, res.Stats = time.Since(start), stats
	if err != nil {
		return nil, err
	}
	if len(failures) > 0 {
		for _, f := range failures {
			res.Findings = append(res.Findings, translationFinding(f))
		}
		schema.SortFindings(res.Findings)
		return res, nil
	}
	res.Set, res.Translation, res.Diff = loaded.Set, tr, diff
	return res, nil
}

// Restore loads trees, a commit that passed Run before (the commit a
// restarted daemon serves again), and translates it lazily: each proxy is
// translated and checked when first asked for (xds.Builder.Lazy), so that
// serving it again takes the load alone. A Result whose Load finds errors
// has no Translation, as with Run. Run it again, with Run, to check it
// whole.
func (p *Pipeline) Restore(trees []schema.Tree) (*Result, error) {
	res, loaded, err := p.load(trees)
	if err != nil || loaded.Set == nil {
		return res, err
	}
	start := time.Now()
	tr, err := p.builder.Lazy(loaded.Set)
	res.Translate = time.Since(start)
	if err != nil {
		return nil, err
	}
	res.Set, res.Translation, res.Diff = loaded.Set, tr, schema.DiffSets(nil, loaded.Set)
	res.Lazy = true
	return res, nil
}

// load is the load stage: the Result so far, and what was loaded (its Set
// nil when any finding is an error).
func (p *Pipeline) load(trees []schema.Tree) (*Result, *schema.Result, error) {
	start := time.Now()
	loaded, err := p.loader.LoadTreesCached(trees, p.cache)
	if err != nil {
		return nil, nil, err
	}
	return &Result{Files: loaded.Files, Resources: loaded.Resources, Findings: loaded.Findings, Load: time.Since(start)}, loaded, nil
}

// translationFinding reports a translation failure at the dataplane.
func translationFinding(f xds.Failure) schema.Finding {
	o := f.Dataplane.Origin
	dataPlane := "Envoy"
	if f.Flavor == xds.FlavorGRPC {
		dataPlane = "a proxyless gRPC application"
	}
	return schema.Finding{
		Severity: schema.SeverityError, File: o.File, Document: o.Document, Line: o.Line, Column: o.Column,
		Code: schema.CodeTranslationFailed, Message: f.Error(),
		Hint: fmt.Sprintf("the policy is valid but %s would reject what it becomes; please report it if the message does not say why", dataPlane),
	}
}
