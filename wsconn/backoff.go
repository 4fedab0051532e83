package wsconn

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff is exponential backoff with full jitter between Min and an
// exponentially growing cap that stops at Max.
type Backoff struct {
	Min, Max time.Duration
}

// Delay returns how long to wait before retry number attempt (0 first).
func (b Backoff) Delay(attempt int) time.Duration {
	limit := b.Min
	for i := 0; i < attempt && limit < b.Max; i++ {
		limit *= 2
	}
	limit = min(limit, b.Max)
	if limit <= b.Min {
		return b.Min
	}
	return b.Min + rand.N(limit-b.Min+1)
}

// Loop calls session until ctx is done, waiting Delay between calls. The
// attempt counter grows with every session that ended sooner than Max after it
// started and is reset by one that stayed up at least Max, so a flapping peer
// backs off while a long-lived connection that drops is retried at once.
// session reports whether it connected at all; only connected sessions can
// reset the counter.
func (b Backoff) Loop(ctx context.Context, session func(ctx context.Context) (connected bool)) {
	attempt := 0
	for ctx.Err() == nil {
		start := time.Now()
		if session(ctx) && time.Since(start) >= b.Max {
			attempt = 0
		}
		if ctx.Err() != nil {
			return
		}
		t := time.NewTimer(b.Delay(attempt))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		attempt++
	}
}
