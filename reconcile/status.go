// Package reconcile is the daemon's loop: it follows a branch through the git
// source, judges each new commit through the pipeline (the same one the
// pull-request gate runs), hands the result to the xDS side through Target,
// and keeps the status, the history and the state file.
package reconcile

import (
	"time"

	"github.com/gitmesh/gitmesh/reconcile/source"
	"github.com/gitmesh/gitmesh/schema"
	"github.com/gitmesh/gitmesh/xds/plane"
)

// CommitInfo identifies a commit for people.
type CommitInfo struct {
	Hash    source.Hash `json:"hash"`
	Author  string      `json:"author,omitempty"`
	Subject string      `json:"subject,omitempty"`
	Time    time.Time   `json:"time,omitzero"`
	// Signer is who signed the commit, "Name <email> (key KEYID)", when
	// commits are verified (serve --verify-commits).
	Signer string `json:"signer,omitempty"`
}

// Short is the commit's abbreviated hash.
func (c CommitInfo) Short() string { return c.Hash.Short() }

// Verdict is what the daemon decided about a commit.
type Verdict string

// The verdicts.
const (
	VerdictPublished Verdict = "published" // its translation is what is served
	VerdictInvalid   Verdict = "invalid"   // it has errors (schema, rules, translation); nothing served changed
	VerdictFailed    Verdict = "failed"    // reading or publishing it failed; nothing served changed; retried
	VerdictHeld      Verdict = "held"      // valid, but not published because a pin holds the mesh
	VerdictRejected  Verdict = "rejected"  // published, and rejected (NACKed) by at least one proxy
	// VerdictUnverified: commits are verified and its signature is missing,
	// by a key not in the keyring, or bad; nothing served changed.
	VerdictUnverified Verdict = "unverified"
	// VerdictPending is the head's verdict in Status while it is checked.
	VerdictPending Verdict = "pending"
)

// Verdicts lists every verdict a history record can have, in the order the
// help texts list them.
var Verdicts = []Verdict{VerdictPublished, VerdictRejected, VerdictInvalid, VerdictHeld, VerdictUnverified, VerdictFailed}

// final reports whether a head with verdict v is decided: it is not looked
// at again until the branch moves.
func (v Verdict) final() bool { return v != VerdictFailed && v != VerdictPending && v != "" }

// good reports whether v leaves the branch healthy for the status's last
// good sync.
func (v Verdict) good() bool {
	return v == VerdictPublished || v == VerdictHeld || v == VerdictRejected
}

// Stage is a step of a sync, timed in the history and the metrics.
type Stage string

// The stages, in order.
const (
	StageFetch     Stage = "fetch"
	StageLoad      Stage = "load"
	StageDiff      Stage = "diff"
	StageTranslate Stage = "translate"
	StagePublish   Stage = "publish"
)

// Stages lists the stages in order.
var Stages = []Stage{StageFetch, StageLoad, StageDiff, StageTranslate, StagePublish}

// Record is one commit's entry in the history, newest first in History.
type Record struct {
	// ID numbers the records of a state directory in the order they were
	// made; an update of a record keeps its id, and an id is never given
	// twice.
	ID      int64      `json:"id"`
	Commit  CommitInfo `json:"commit"`
	At      time.Time  `json:"at"`                // when the outcome was decided
	Trigger string     `json:"trigger,omitempty"` // what made the daemon look: start, interval, webhook, watch, rollback, resume
	// Forced is set when the branch moved to this commit by a force push or
	// another rewrite: the previous head is not among its ancestors.
	Forced   bool        `json:"forced,omitempty"`
	Previous source.Hash `json:"previous,omitempty"` // head before this one, when Forced
	Verdict  Verdict     `json:"verdict"`
	Errors   int         `json:"errors"`
	Warnings int         `json:"warnings"`
	// Findings are the first of the commit's findings (errors first); the
	// full list is in `gitmesh validate`.
	Findings []schema.Finding `json:"findings,omitempty"`
	Error    string           `json:"error,omitempty"` // a failure that is not a finding
	Diff     *DiffSummary     `json:"diff,omitempty"`
	// Changed, Unchanged and Removed count what publishing did to the
	// proxies: pushed, kept as they were, dropped.
	Changed   int `json:"changed"`
	Unchanged int `json:"unchanged"`
	Removed   int `json:"removed"`
	// Translated counts the dataplanes translated (and checked) again; the
	// others kept the translation of the commit served before.
	Translated int `json:"translated,omitempty"`
	// Durations of the stages, in milliseconds.
	Durations map[Stage]float64 `json:"durationsMs,omitempty"`
	// By and Reason say who asked for a rollback or a resume, and why.
	By     string `json:"by,omitempty"`
	Reason string `json:"reason,omitempty"`
	// Pinned is set on the record of a rollback: it pinned the mesh.
	Pinned bool `json:"pinned,omitempty"`
	// Request is the id of the request through which another replica
	// handed the decider this rollback or resume (a shared store), so that
	// a decider taking over from one that ran it does not run it again.
	Request int64 `json:"request,omitempty"`
	// Rejections are the proxies that NACKed what this commit published
	// (the first maxRejections of them); RejectedProxies counts them all.
	Rejections      []plane.Rejection `json:"rejections,omitempty"`
	RejectedProxies int               `json:"rejectedProxies,omitempty"`
	// Convergence says how long the connected proxies the publish changed
	// took to ACK it; nil until they all have.
	Convergence *plane.Converged `json:"convergence,omitempty"`
}

// DiffSummary lists the resources a commit changes against what was served.
type DiffSummary struct {
	schema.SetDiff
	// Affected counts the proxies whose configuration the commit changes.
	Affected int `json:"affectedProxies"`
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
	HeadVerdict  Verdict     `json:"headVerdict,omitempty"`
	Published    *CommitInfo `json:"published,omitempty"`
	PublishedAt  time.Time   `json:"publishedAt,omitzero"`
	Pinned       bool        `json:"pinned"`
	Pin          *Pin        `json:"pin,omitempty"`       // the rollback that holds the mesh
	LastError    string      `json:"lastError,omitempty"` // of the last sync, cleared by a good one
	LastSync     time.Time   `json:"lastSync,omitzero"`
	LastGoodSync time.Time   `json:"lastGoodSync,omitzero"`
	// Ready is true once a commit is served.
	Ready       bool              `json:"ready"`
	Convergence plane.Convergence `json:"convergence"`
	// Rejections are the proxies that NACKed the published commit (the
	// first of them).
	Rejections []plane.Rejection `json:"rejections,omitempty"`

	// With several replicas on a shared store: this replica's id, the one
	// that decides ("" while none does), every replica heard of lately,
	// and whether they all serve the same commit.
	Replica string `json:"replica,omitempty"`
	// Decides: this replica holds the lease now. Decider is the replica
	// the lease names ("" while none holds it): for up to a lease duration
	// after a replica is killed, that is the killed process's id.
	Decides       bool            `json:"decides,omitempty"`
	Decider       string          `json:"decider,omitempty"`
	Replicas      []ReplicaStatus `json:"replicas,omitempty"`
	ReplicasAgree *bool           `json:"replicasAgree,omitempty"`
}

// ReplicaStatus is one replica as the registry shows it.
type ReplicaStatus struct {
	ID string `json:"id"`
	// Address is where its HTTP API is reached (serve --advertise-address).
	Address   string      `json:"address,omitempty"`
	Decides   bool        `json:"decides"`
	Published *CommitInfo `json:"published,omitempty"`
	Pinned    bool        `json:"pinned,omitempty"`
	// Proxies and Connected count what its xDS server serves.
	Proxies     int       `json:"proxies"`
	Connected   int       `json:"connected"`
	StartedAt   time.Time `json:"startedAt"`
	HeartbeatAt time.Time `json:"heartbeatAt"`
	// Self marks the replica that answered.
	Self bool `json:"self,omitempty"`
}

// published is the hash of the commit r serves; "" when none.
func (r ReplicaStatus) published() source.Hash {
	if r.Published == nil {
		return ""
	}
	return r.Published.Hash
}
