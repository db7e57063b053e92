package worker

// This file holds what lets interactive calls go before batch calls at a
// KVLimiter: a rate gate's reach per lane, and the per-process turn that
// interactive callers take first (see KVLimiter's "Lanes" section).

import (
	"context"
	"slices"
	"sync"
	"time"
)

// rateScope is one shared schedule: a key and the spacing of its slots.
type rateScope struct {
	key      string
	interval time.Duration
}

// rateGate is what one kind of call waits for: the schedules it needs a slot in
// (the model's first), how far ahead a batch call may claim, and the turn
// that lets one caller in this process claim at a time.
type rateGate struct {
	scopes     []rateScope
	batchReach time.Duration
	turn       laneTurn
}

// batchReachMin is the shortest reach of a batch claim: time for a claim
// (one bucket round trip) and a timer's wake, with room to spare, so that
// a batch call claims its slot before the slot starts and batch work alone
// still uses the whole budget.
const batchReachMin = 20 * time.Millisecond

func newRateGate(horizon time.Duration, scopes ...rateScope) *rateGate {
	interval := scopes[0].interval
	for _, s := range scopes[1:] {
		interval = min(interval, s.interval)
	}
	return &rateGate{scopes: scopes, batchReach: min(horizon, max(interval, batchReachMin))}
}

// reach is how long before its start a call of lane may claim a slot.
func (g *rateGate) reach(lane Lane, horizon time.Duration) time.Duration {
	if lane == LaneBatch {
		return g.batchReach
	}
	return horizon
}

// laneTurn lets one caller of a rateGate in this process claim at a time:
// interactive callers before batch callers, each lane in arrival order. A
// batch holder is told (by take's channel) when an interactive caller
// waits, and gives the turn up with yield if it has not claimed yet.
type laneTurn struct {
	mu      sync.Mutex
	held    bool
	waiting [laneCount][]*turnWaiter
	urgent  chan struct{} // the batch holder's: closed when an interactive caller waits
}

type turnWaiter struct {
	granted chan struct{} // closed when the turn is this caller's
	urgent  chan struct{} // set before granted is closed
}

// take waits for the turn, or returns ctx's error. The channel it returns
// is closed when an interactive caller starts waiting for the turn; nil
// (never closed) for an interactive caller, who never gives it up.
func (t *laneTurn) take(ctx context.Context, lane Lane) (<-chan struct{}, error) {
	t.mu.Lock()
	if !t.held {
		t.held = true
		urgent := t.grant(lane)
		t.mu.Unlock()
		return urgent, nil
	}
	w := &turnWaiter{granted: make(chan struct{})}
	t.waiting[lane] = append(t.waiting[lane], w)
	if lane == LaneInteractive && t.urgent != nil {
		close(t.urgent)
		t.urgent = nil
	}
	t.mu.Unlock()
	return t.await(ctx, lane, w)
}

// yield hands a batch holder's turn to the interactive callers waiting and
// waits for it again, first of the batch callers; it keeps the turn if they
// have gone. On ctx's error the turn is no longer held.
func (t *laneTurn) yield(ctx context.Context) (<-chan struct{}, error) {
	t.mu.Lock()
	if len(t.waiting[LaneInteractive]) == 0 {
		urgent := t.grant(LaneBatch)
		t.mu.Unlock()
		return urgent, nil
	}
	w := &turnWaiter{granted: make(chan struct{})}
	t.waiting[LaneBatch] = slices.Insert(t.waiting[LaneBatch], 0, w)
	t.handOver()
	t.mu.Unlock()
	return t.await(ctx, LaneBatch, w)
}

// release gives the turn up.
func (t *laneTurn) release() {
	t.mu.Lock()
	t.handOver()
	t.mu.Unlock()
}

// await waits until w is given the turn; if ctx ends first, w leaves the
// queue (or passes on a turn given meanwhile).
func (t *laneTurn) await(ctx context.Context, lane Lane, w *turnWaiter) (<-chan struct{}, error) {
	select {
	case <-w.granted:
		return w.urgent, nil
	case <-ctx.Done():
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	select {
	case <-w.granted:
		t.handOver()
	default:
		t.waiting[lane] = slices.DeleteFunc(t.waiting[lane], func(x *turnWaiter) bool { return x == w })
	}
	return nil, ctx.Err()
}

// handOver gives the turn to the first waiter of the first lane that has
// one, or frees it; t.mu is held.
func (t *laneTurn) handOver() {
	for lane, q := range t.waiting {
		if len(q) > 0 {
			w := q[0]
			t.waiting[lane] = slices.Delete(q, 0, 1)
			w.urgent = t.grant(Lane(lane))
			close(w.granted)
			return
		}
	}
	t.held = false
	t.urgent = nil
}

// grant records a new holder of lane and returns its urgent channel; t.mu
// is held.
func (t *laneTurn) grant(lane Lane) chan struct{} {
	t.urgent = nil
	if lane == LaneBatch {
		t.urgent = make(chan struct{})
	}
	return t.urgent
}
