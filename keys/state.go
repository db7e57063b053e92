package keys

// This file holds a key's shared limit state, as one value in the
// LAAS_KEY_STATE bucket, and the pure arithmetic on it: the rpm schedule,
// the parallel leases, the token and spend counters of the current budget
// period. limits.go reads and writes it with compare-and-set.

import (
	"maps"
	"time"
)

// window is the rate limits' window: rpm and tpm count what falls in any
// window of this length.
const window = time.Minute

// spanSecs is how many whole seconds a window can overlap: a window that
// starts inside second s ends inside second s+60, so it overlaps 61 of
// them. Counting every second a window can touch makes the count exact
// for every window, wherever it starts, at the cost of one second of slack.
const spanSecs = int64(window/time.Second) + 1

// skewMargin is how many seconds of clock disagreement between processes
// prune tolerates (NTP-synced hosts agree to milliseconds).
const skewMargin = 5

// state is one key's shared limit state.
type state struct {
	// Period is when the budget period the counters below belong to
	// began, unix milliseconds; 0 for a key whose budget never resets.
	Period int64 `json:"period,omitempty"`
	// Spend, InputTokens, OutputTokens and Requests are the period's
	// totals.
	Spend        float64 `json:"spend,omitempty"`
	InputTokens  int64   `json:"input_tokens,omitempty"`
	OutputTokens int64   `json:"output_tokens,omitempty"`
	Requests     int64   `json:"requests,omitempty"`
	// Slots counts the calls scheduled to start in each second (unix
	// seconds), for rpm: the past window's and any reserved ahead.
	Slots map[int64]int64 `json:"slots,omitempty"`
	// Tokens counts the tokens LaaS reported per second of completion,
	// for tpm: the past window's.
	Tokens map[int64]int64 `json:"tokens,omitempty"`
	// Leases are the requests in flight, for max_parallel_requests: id ->
	// when the lease lapses (unix milliseconds) if nothing releases it.
	Leases map[string]int64 `json:"leases,omitempty"`
}

// prune forgets what no window at now (unix seconds) can see any more:
// seconds older than the span, and lapsed leases.
func (s *state) prune(now time.Time) {
	// Another process's clock may run behind this one's: keep a few
	// seconds more than the span, so it still counts what it should.
	sec := now.Unix() - skewMargin
	maps.DeleteFunc(s.Slots, func(at, _ int64) bool { return at <= sec-spanSecs })
	maps.DeleteFunc(s.Tokens, func(at, _ int64) bool { return at <= sec-spanSecs })
	ms := now.UnixMilli()
	maps.DeleteFunc(s.Leases, func(_ string, until int64) bool { return until <= ms })
}

// spans holds the calls scheduled per second over a range, for span
// sums in constant time.
type spans struct {
	lo  int64   // the first second of the range
	sum []int64 // sum[i] is the calls in seconds lo .. lo+i-1
}

// spansOver covers seconds from-spanSecs+1 .. to+spanSecs-1: every span
// that contains a second in from .. to.
func (s *state) spansOver(from, to int64) spans {
	lo, hi := from-spanSecs+1, to+spanSecs-1
	sum := make([]int64, hi-lo+2)
	for at, c := range s.Slots {
		if at >= lo && at <= hi {
			sum[at-lo+1] += c
		}
	}
	for i := 1; i < len(sum); i++ {
		sum[i] += sum[i-1]
	}
	return spans{lo: lo, sum: sum}
}

// count is the calls in the spanSecs seconds ending with second end.
func (sp spans) count(end int64) int64 {
	i := end - sp.lo + 1
	return sp.sum[i] - sp.sum[max(0, i-spanSecs)]
}

// fits says whether one more call in second at keeps every span of
// spanSecs seconds that contains it within rpm.
func (sp spans) fits(at, rpm int64) bool {
	for end := at; end < at+spanSecs; end++ {
		if sp.count(end)+1 > rpm {
			return false
		}
	}
	return true
}

// firstSlot is the earliest second from from (unix seconds) up to until
// where a call fits under rpm, and false when there is none.
func (s *state) firstSlot(from, until, rpm int64) (int64, bool) {
	if until < from {
		return 0, false
	}
	sp := s.spansOver(from, until)
	for at := from; at <= until; at++ {
		if sp.fits(at, rpm) {
			return at, true
		}
	}
	return 0, false
}

// nextFree is when a call could next start under rpm, after from: the
// first second with room, within two spans (Retry-After). At least from+1.
func (s *state) nextFree(from, rpm int64) int64 {
	at, ok := s.firstSlot(from+1, from+2*spanSecs, rpm)
	if !ok {
		return from + 2*spanSecs
	}
	return at
}

// tokensInWindow is the tokens reported in the span ending with second
// end.
func (s *state) tokensInWindow(end int64) int64 {
	var n int64
	for at, c := range s.Tokens {
		if at > end-spanSecs && at <= end {
			n += c
		}
	}
	return n
}

// tokensFreeAt is the second at which the oldest tokens counted in the
// span ending with second end leave it, for Retry-After.
func (s *state) tokensFreeAt(end int64) int64 {
	oldest := end
	for at := range s.Tokens {
		if at > end-spanSecs && at < oldest {
			oldest = at
		}
	}
	return oldest + spanSecs
}

// roll starts a new budget period when the one the counters belong to
// has ended: period is the start of the period now falls in (0 for a
// budget that never resets).
func (s *state) roll(period int64) {
	if period > s.Period {
		s.Period, s.Spend, s.InputTokens, s.OutputTokens, s.Requests = period, 0, 0, 0, 0
	}
}

// period is the budget period now falls in, for a key created at
// created whose budget resets every every (zero: never): its start and
// end. Periods are counted from the key's creation, calendar months for
// "mo". ok is false for a budget that never resets.
func period(created time.Time, every Duration, now time.Time) (start, end time.Time, ok bool) {
	if every.N == 0 || created.IsZero() || now.Before(created) {
		return time.Time{}, time.Time{}, false
	}
	nth := func(k int) time.Time { return Duration{N: k * every.N, Unit: every.Unit}.After(created) }
	var k int
	if every.Unit == "mo" {
		now := now.In(created.Location()) // months as the key's creation counts them
		k = ((now.Year()-created.Year())*12 + int(now.Month()-created.Month())) / every.N
		for k > 0 && nth(k).After(now) {
			k--
		}
		for !nth(k + 1).After(now) {
			k++
		}
	} else {
		k = int(now.Sub(created) / every.Fixed())
	}
	return nth(k), nth(k + 1), true
}

// periodStart is the start, unix milliseconds, of the budget period now
// falls in (0 for a budget that never resets).
func periodStart(created time.Time, every Duration, now time.Time) int64 {
	start, _, ok := period(created, every, now)
	if !ok {
		return 0
	}
	return start.UnixMilli()
}
