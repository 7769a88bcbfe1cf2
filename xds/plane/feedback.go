package plane

import "time"

// Feedback is one thing the data plane said about what was published: a
// proxy's NACK (Rejection) or a publish that converged (Converged). Exactly
// one of the two is set.
type Feedback struct {
	Rejection *Rejection
	Converged *Converged
}

// Feedback returns the channel Run sends Feedback on, in the order Run
// learns it. The channel is never closed; Run waits while it is full, so its
// reader should drain it promptly and never take a lock an Apply holds
// while it waits.
func (p *Plane) Feedback() <-chan Feedback { return p.feedback }

// Rejection is a proxy's NACK of what a commit gave it.
type Rejection struct {
	// Commit is the commit whose translation the proxy rejected: the
	// plane's served commit when the NACK came or, for a proxy already put
	// back on an earlier commit, that commit.
	Commit  string    `json:"commit,omitempty"`
	Node    string    `json:"node"`
	Type    string    `json:"type"`    // type URL of the rejected resources
	Version string    `json:"version"` // the rejected version
	Error   string    `json:"error"`   // the proxy's error_detail
	At      time.Time `json:"at"`
	// RevertedTo is the commit whose translation the proxy was put back on
	// (RollbackOnNACK); empty when it was not: the option is off, the proxy
	// never accepted a whole commit in the flavour it runs, or it was put
	// back for this commit already.
	RevertedTo string `json:"revertedTo,omitempty"`
	// RevertError says why the proxy could not be put back (its secrets
	// could not be issued, Run ended); RevertedTo is then empty.
	RevertError string `json:"revertError,omitempty"`
}

// Converged is how a publish reached its proxies: Seconds from the publish
// until the last of the Proxies it changed (connected ones) ACKed it.
type Converged struct {
	Commit  string  `json:"commit,omitempty"`
	Proxies int     `json:"proxies"`
	Seconds float64 `json:"seconds"`
	// Reverted are the proxies among Proxies put back on an earlier commit
	// after rejecting this one (Config.RollbackOnNACK): they never ACK it,
	// so a publish with any is never Done.
	Reverted int `json:"reverted,omitempty"`
	// Done is false while some have yet to ACK.
	Done bool `json:"-"`
}

// Duration is Seconds as a time.Duration.
func (c Converged) Duration() time.Duration { return time.Duration(c.Seconds * float64(time.Second)) }

// Convergence counts how many of the served proxies hold what was
// published. Acked, Nacked and Reverted are connected proxies, each counted
// once: Acked hold what is served (every type they use ACKed), Nacked
// rejected it, and Reverted rejected the served commit and were put back on
// an earlier one (Config.RollbackOnNACK), whatever they answered since. The
// others have yet to answer.
type Convergence struct {
	Proxies   int `json:"proxies"`   // proxies the published commit configures
	Connected int `json:"connected"` // of those, with a stream open
	Acked     int `json:"acked"`
	Nacked    int `json:"nacked"`
	Reverted  int `json:"reverted,omitempty"`
}
