package certagent

import (
	"testing"
	"time"
)

// TestCertAgentBackoff: the waits stay within [bound/2, bound] of a bound
// doubling from 500ms to 30s, vary, and start over after Reset.
func TestCertAgentBackoff(t *testing.T) {
	// The library computes in floating point: allow a rounding error.
	const slack = time.Microsecond
	bounds := []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second,
		8 * time.Second, 16 * time.Second, 30 * time.Second, 30 * time.Second}
	b := newReconnectBackoff()
	first := map[time.Duration]bool{}
	for round := range 200 {
		for i, bound := range bounds {
			d := b.NextBackOff()
			if d < bound/2-slack || d > bound {
				t.Fatalf("round %d, wait %d: %v, want within [%v, %v]", round, i, d, bound/2, bound)
			}
			if i == 0 {
				first[d] = true
			}
		}
		b.Reset()
	}
	if len(first) < 2 {
		t.Errorf("the first wait is always %v: no jitter", first)
	}
}
