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
	// Signer is who signed the commit, "Name <email> (key KEYID)", when
	// commits are verified (serve --verify-commits).
	Signer string `json:"signer,omitempty"`
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
	VerdictRejected  = "rejected"  // published, and rejected (NACKed) by at least one proxy
	// VerdictUnverified: commits are verified and its signature is missing,
	// by a key not in the keyring, or bad; nothing served changed.
	VerdictUnverified = "unverified"
	// VerdictPending is the head's verdict in Status while it is checked.
	VerdictPending = "pending"
)

// Record is one commit's entry in the history, newest first in History.
type Record struct {
	// ID numbers the records of a state directory in the order they were
	// made; an update of a record keeps its id.
	ID      int64      `json:"id"`
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
	// By and Reason say who asked for a rollback or a resume, and why.
	By     string `json:"by,omitempty"`
	Reason string `json:"reason,omitempty"`
	// Pinned is set on the record of a rollback: it pinned the mesh.
	Pinned bool `json:"pinned,omitempty"`
	// Rejections are the proxies that NACKed what this commit published
	// (the first maxRejections of them); RejectedProxies counts them all.
	Rejections      []Rejection `json:"rejections,omitempty"`
	RejectedProxies int         `json:"rejectedProxies,omitempty"`
	// Convergence says how long the connected proxies the publish changed
	// took to ACK it; nil until they all have.
	Convergence *Converged `json:"convergence,omitempty"`
}

// Rejection is one proxy's NACK of the configuration a commit gave it.
type Rejection struct {
	Commit  string    `json:"commit,omitempty"`
	Node    string    `json:"node"`
	Type    string    `json:"type"`    // type URL of the rejected resources
	Version string    `json:"version"` // the rejected version
	Error   string    `json:"error"`   // the proxy's error_detail
	At      time.Time `json:"at"`
	// RevertedTo is the commit whose configuration the proxy was put back
	// on (with --rollback-on-nack); empty when it was not.
	RevertedTo string `json:"revertedTo,omitempty"`
}

// Converged is how a publish reached its proxies.
type Converged struct {
	Commit  string  `json:"commit,omitempty"`
	Proxies int     `json:"proxies"` // connected proxies the publish changed
	Seconds float64 `json:"seconds"` // from the publish to the last of their ACKs
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
	// Reverted are connected proxies put back on the last commit they
	// accepted after they NACKed the published one (--rollback-on-nack).
	Reverted int `json:"reverted,omitempty"`
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
	Pin          *Pin        `json:"pin,omitempty"`       // the rollback that holds the mesh
	LastError    string      `json:"lastError,omitempty"` // of the last sync, cleared by a good one
	LastSync     time.Time   `json:"lastSync,omitzero"`
	LastGoodSync time.Time   `json:"lastGoodSync,omitzero"`
	// Ready is true once a commit is served.
	Ready       bool        `json:"ready"`
	Convergence Convergence `json:"convergence"`
	// Rejections are the proxies that NACKed the published commit (the
	// first of them).
	Rejections []Rejection `json:"rejections,omitempty"`
}
