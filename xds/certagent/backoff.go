package certagent

import (
	"time"

	"github.com/cenkalti/backoff/v5"
)

// Bounds of the wait between two streams.
const (
	minReconnect = 500 * time.Millisecond
	maxReconnect = 30 * time.Second
)

// newReconnectBackoff gives the wait before the next stream: its bound
// doubles from minReconnect to maxReconnect with each stream that ends
// without an answer, and each wait is drawn from the upper half of its
// bound, so agents cut off together do not all come back at once. Run
// resets it after a healthy stream.
//
// ExponentialBackOff draws each wait from interval × [1−f, 1+f] and caps
// the interval, not the wait: an interval of ¾ of the bound with f = ⅓ is
// the range [bound/2, bound].
func newReconnectBackoff() *backoff.ExponentialBackOff {
	return &backoff.ExponentialBackOff{
		InitialInterval:     minReconnect * 3 / 4,
		RandomizationFactor: 1.0 / 3,
		Multiplier:          2,
		MaxInterval:         maxReconnect * 3 / 4,
	}
}
