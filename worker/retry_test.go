package worker

import (
	"testing"
	"time"

	"github.com/laas-bridge/laas-bridge/schema"
)

// TestRetryDelay: the delay before another attempt is the attempt's
// backoff with jitter, uniform in [backoff/2, backoff], at least LaaS's
// Retry-After; no retry is made past MaxDeliver, or when it would start
// less than retryMargin before the deadline.
func TestRetryDelay(t *testing.T) {
	f := newStepFixture(t) // RetryBase 10ms, RetryMax 40ms, MaxDeliver 3
	f.p.cfg.RetryBase, f.p.cfg.RetryMax = 100*time.Millisecond, time.Second
	f.p.maxDeliver = 10
	t.Run("jitter in [backoff/2, backoff]", func(t *testing.T) {
		for attempt, backoff := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 4: 800 * time.Millisecond, 9: time.Second} {
			j, _ := stepJob(t, schema.SubjectInteractive, attempt)
			j.env.Deadline = time.Now().Add(time.Hour)
			const draws = 400
			var low, high int // below and above the middle of the range
			seen := map[time.Duration]bool{}
			for range draws {
				d, ok := f.p.retryDelay(j, 0)
				if !ok {
					t.Fatalf("attempt %d: no retry with an hour left", attempt)
				}
				if d < backoff/2 || d > backoff {
					t.Fatalf("attempt %d: delay %s outside [%s, %s]", attempt, d, backoff/2, backoff)
				}
				if d < backoff*3/4 {
					low++
				} else {
					high++
				}
				seen[d] = true
			}
			// Uniform over [b/2, b]: each half gets 200 of 400 draws on
			// average; fewer than 100 in either happens with probability
			// under 1e-20. No jitter puts all of them at one end.
			if low < draws/4 || high < draws/4 || len(seen) < draws/2 {
				t.Errorf("attempt %d: %d draws below the middle, %d above, %d distinct: not jittered over the range", attempt, low, high, len(seen))
			}
		}
	})
	t.Run("at least Retry-After", func(t *testing.T) {
		j, _ := stepJob(t, schema.SubjectInteractive, 1)
		j.env.Deadline = time.Now().Add(time.Hour)
		if d, ok := f.p.retryDelay(j, 5*time.Second); !ok || d != 5*time.Second {
			t.Errorf("delay %s (%v), want Retry-After's 5s", d, ok)
		}
	})
	for _, tc := range []struct {
		name    string
		attempt int
		left    time.Duration // before the deadline
		ok      bool
	}{
		// backoff 100ms: the delay is at most 100ms, at least 50ms.
		{"room for the longest delay and the margin", 1, 100*time.Millisecond + retryMargin + 2*time.Second, true},
		// Even the shortest delay (50ms) would start within the margin,
		// though it fits before the deadline: no retry.
		{"every delay would start inside the margin", 1, 50*time.Millisecond + retryMargin - 100*time.Millisecond, false},
		{"the deadline has passed", 1, -time.Second, false},
		{"MaxDeliver reached", 10, time.Hour, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			j, _ := stepJob(t, schema.SubjectInteractive, tc.attempt)
			j.env.Deadline = time.Now().Add(tc.left)
			for range 50 {
				if _, ok := f.p.retryDelay(j, 0); ok != tc.ok {
					t.Fatalf("retry %v, want %v", ok, tc.ok)
				}
			}
		})
	}
}

// TestThrottleFor: after a 429 every worker holds off for Retry-After, or
// without one for the attempt's backoff.
func TestThrottleFor(t *testing.T) {
	f := newStepFixture(t) // RetryBase 10ms, RetryMax 40ms
	for _, tc := range []struct {
		name       string
		attempt    int
		retryAfter time.Duration
		want       time.Duration
	}{
		{"Retry-After given", 1, 3 * time.Second, 3 * time.Second},
		{"first attempt", 1, 0, 10 * time.Millisecond},
		{"second attempt", 2, 0, 20 * time.Millisecond},
		{"capped at RetryMax", 30, 0, 40 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			j, _ := stepJob(t, schema.SubjectInteractive, tc.attempt)
			if got := f.p.throttleFor(j, tc.retryAfter); got != tc.want {
				t.Errorf("throttleFor = %s, want %s", got, tc.want)
			}
		})
	}
}
