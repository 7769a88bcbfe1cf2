package certagent

import (
	"testing"
	"time"
)

func TestCertAgentBackoff(t *testing.T) {
	const ms = time.Millisecond
	b := backoff{min: 100 * ms, max: time.Second}
	for i, bound := range []time.Duration{100 * ms, 200 * ms, 400 * ms, 800 * ms, time.Second, time.Second} {
		if d := b.next(); d < bound/2 || d > bound {
			t.Errorf("wait %d: %v, want within [%v, %v]", i, d, bound/2, bound)
		}
	}
	b.reset()
	if d := b.next(); d > 100*time.Millisecond {
		t.Errorf("after reset: %v", d)
	}
}
