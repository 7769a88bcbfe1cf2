package certagent

import (
	"math/rand/v2"
	"time"
)

// Bounds of the wait between two streams.
const (
	minReconnect = 500 * time.Millisecond
	maxReconnect = 30 * time.Second
)

// backoff is the wait before the next stream: it doubles from min to max
// with each stream that ends without an answer, and each wait is drawn from
// the upper half of its bound, so agents cut off together do not all come
// back at once.
type backoff struct {
	min, max, cur time.Duration
}

func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	} else {
		b.cur = min(2*b.cur, b.max)
	}
	return b.cur/2 + rand.N(b.cur/2+1)
}

func (b *backoff) reset() { b.cur = 0 }
