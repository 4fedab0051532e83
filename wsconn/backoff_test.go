package wsconn

import (
	"testing"
	"time"
)

func TestBackoffStaysWithinBounds(t *testing.T) {
	b := Backoff{Min: 100 * time.Millisecond, Max: 2 * time.Second}
	for attempt := range 20 {
		limit := min(b.Min<<attempt, b.Max)
		if attempt > 5 {
			limit = b.Max
		}
		for range 50 {
			d := b.Delay(attempt)
			if d < b.Min || d > limit {
				t.Fatalf("Delay(%d) = %v, want within [%v, %v]", attempt, d, b.Min, limit)
			}
		}
	}
}
