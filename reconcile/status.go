// Package reconcile is the daemon's loop: it follows a branch through the git
// source, loads and validates each new commit, diffs it against what is
// served, hands the result to the xDS side through Target, and keeps the
// status, the history and the state file.
package reconcile

import (
	"time"

	"github.com/gitmesh/gitmesh/schema"
)

// CommitInfo identifies a commit for people.
type CommitInfo struct {
	Hash    string    `json:"hash"`
	Author  string    `json:"author,omitempty"`
	Subject string    `json:"subject,omitempty"`
	Time    time.Time `json:"time,omitzero"`
}

// Short is the commit's abbreviated hash.
func (c CommitInfo) Short() string {
	if len(c.Hash) > 12 {
		return c.Hash[:12]
	}
	return c.Hash
}

// Verdicts a commit can get.
const (
	VerdictPublished = "published" // its translation is what is served
	VerdictInvalid   = "invalid"   // it has errors; nothing served changed
	VerdictFailed    = "failed"    // translating or publishing it failed; nothing served changed
	VerdictHeld      = "held"      // valid, but not published because a pin holds the mesh
	// VerdictPending is the head's verdict in Status while it is checked.
	VerdictPending = "pending"
)

// Record is one commit's entry in the history, newest first in History.
type Record struct {
	Commit  CommitInfo `json:"commit"`
	At      time.Time  `json:"at"`                // when the outcome was decided
	Trigger string     `json:"trigger,omitempty"` // what made the daemon look: start, interval, webhook, watch, ...
	// Forced is set when the branch moved to this commit by a force push or
	// another rewrite: the previous head is not among its ancestors.
	Forced   bool   `json:"forced,omitempty"`
	Previous string `json:"previous,omitempty"` // head before this one, when Forced
	Verdict  string `json:"verdict"`
	Errors   int    `json:"errors"`
	Warnings int    `json:"warnings"`
	// Findings are the first of the commit's findings (errors first); the
	// full list is in the log and in `gitmesh validate`.
	Findings []schema.Finding `json:"findings,omitempty"`
	Error    string           `json:"error,omitempty"` // a failure that is not a finding
	Diff     *DiffSummary     `json:"diff,omitempty"`
	// Proxies counts what publishing did: translated and pushed, kept as
	// they were, and dropped.
	Changed   int `json:"changed"`
	Unchanged int `json:"unchanged"`
	Removed   int `json:"removed"`
	// Durations of the stages, in milliseconds.
	Durations map[string]float64 `json:"durationsMs,omitempty"`
}

// DiffSummary lists the resources a commit changes against what was served.
type DiffSummary struct {
	schema.SetDiff
	// Affected is the number of proxies translated again.
	Affected int `json:"affectedProxies"`
}

// Convergence says how many of the served proxies hold what was published.
type Convergence struct {
	Proxies   int `json:"proxies"`   // proxies the published commit configures
	Connected int `json:"connected"` // of those, with a stream open
	Acked     int `json:"acked"`     // connected and ACKed every type at its published version
	Nacked    int `json:"nacked"`    // connected and whose last answer to a published version was a NACK
}

// Status is the daemon's state for GET /status and `gitmesh status`.
type Status struct {
	Repo   string `json:"repo"` // credentials removed
	Branch string `json:"branch"`
	Path   string `json:"path,omitempty"`
	// Head is the newest commit seen on the branch; Published the commit
	// whose translation is served. They differ while the head is invalid
	// or pinned.
	Head         *CommitInfo `json:"head,omitempty"`
	HeadVerdict  string      `json:"headVerdict,omitempty"`
	Published    *CommitInfo `json:"published,omitempty"`
	PublishedAt  time.Time   `json:"publishedAt,omitzero"`
	Pinned       bool        `json:"pinned"`
	LastError    string      `json:"lastError,omitempty"` // of the last sync, cleared by a good one
	LastSync     time.Time   `json:"lastSync,omitzero"`
	LastGoodSync time.Time   `json:"lastGoodSync,omitzero"`
	// Ready is true once a commit is served.
	Ready       bool        `json:"ready"`
	Convergence Convergence `json:"convergence"`
}
