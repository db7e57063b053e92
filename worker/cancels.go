package worker

// This file holds how the pool hears that a caller went away: the cancel
// broadcast every pool subscribes to, the calls it aborts and the ids it
// remembers so a job not yet started is skipped.

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/laas-bridge/laas-bridge/schema"
)

// errCallerGone is the cause of a call cancelled because its caller left.
var errCallerGone = errors.New("the caller went away")

// maxCancelled is how many cancelled ids a pool remembers at most (about
// 250 bytes each). Past it the id that would be kept longest goes first:
// its job, if it is still queued, then runs and its answer is discarded
// (an async job's state or a batch line's kept answer still stops it).
const maxCancelled = 50_000

// cancelSlack is how long past a job's deadline its cancelled id is still
// remembered: the deadline is the gateway's clock, refuseLate reads the
// worker's, and clocks differ a little.
const cancelSlack = time.Minute

// cancels tracks the jobs this pool is running and the request ids whose
// callers went away. Gateways broadcast a cancel on core NATS
// (schema.SubjectCancel.<id>, its payload the job's deadline); every pool
// hears it. A running call is aborted; a job not yet started is skipped
// when it is pulled. An id is remembered until its job's deadline (plus
// cancelSlack: past it refuseLate refuses the job anyway), or for
// rememberFor when the cancel names no deadline, and at most max ids at
// once. When the set is full, the id that would be kept longest goes
// first (counted by dropped): a flood of cancels with far deadlines
// (async jobs and batch lines, which their job state and kept answers
// stop anyway, or callers asking for a day) never pushes out the
// interactive ones, whose deadlines are near. Safe for concurrent use.
type cancels struct {
	sub         *nats.Subscription
	rememberFor time.Duration
	max         int
	dropped     func() // an id forgotten early because the set was full

	mu        sync.Mutex
	running   map[string]context.CancelCauseFunc
	cancelled map[string]*cancelledID
	expiry    expiryHeap // the cancelled ids, soonest forgotten first
	latest    expiryHeap // the same ids, latest forgotten first
}

// cancelledID is a cancelled id and when to forget it.
type cancelledID struct {
	id    string
	until time.Time
	index [2]int // in expiry and in latest
}

func newCancelSet(rememberFor time.Duration, max int, dropped func()) *cancels {
	if dropped == nil {
		dropped = func() {}
	}
	return &cancels{rememberFor: rememberFor, max: max, dropped: dropped,
		running: map[string]context.CancelCauseFunc{}, cancelled: map[string]*cancelledID{},
		latest: expiryHeap{latest: true}}
}

// newCancels subscribes a cancel set to the cancel broadcast on nc.
func newCancels(nc *nats.Conn, rememberFor time.Duration, max int, dropped func()) (*cancels, error) {
	c := newCancelSet(rememberFor, max, dropped)
	prefix := schema.SubjectCancel + "."
	sub, err := nc.Subscribe(prefix+"*", func(m *nats.Msg) {
		if id, ok := strings.CutPrefix(m.Subject, prefix); ok {
			deadline, _ := schema.CancelDeadline(m.Data)
			c.cancel(id, deadline, time.Now())
		}
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe to cancellations: %w", err)
	}
	if err := nc.Flush(); err != nil {
		_ = sub.Unsubscribe()
		return nil, err
	}
	c.sub = sub
	return c, nil
}

// cancel aborts id's call if it runs here and remembers id: until deadline
// plus cancelSlack, or for rememberFor when deadline is zero (never longer).
func (c *cancels) cancel(id string, deadline time.Time, now time.Time) {
	until := now.Add(c.rememberFor)
	if !deadline.IsZero() && deadline.Add(cancelSlack).Before(until) {
		until = deadline.Add(cancelSlack)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if stop, ok := c.running[id]; ok {
		stop(errCallerGone)
	}
	c.forget(now)
	if !until.After(now) {
		return // refuseLate refuses the job anyway
	}
	if e, ok := c.cancelled[id]; ok {
		if until.After(e.until) {
			e.until = until
			heap.Fix(&c.expiry, e.index[0])
			heap.Fix(&c.latest, e.index[1])
		}
		return
	}
	if len(c.cancelled) >= c.max {
		c.dropped()
		if c.max < 1 || !until.Before(c.latest.ids[0].until) {
			return // this one would be kept longest
		}
		c.remove(c.latest.ids[0])
	}
	e := &cancelledID{id: id, until: until}
	heap.Push(&c.expiry, e)
	heap.Push(&c.latest, e)
	c.cancelled[id] = e
}

// forget drops the ids whose time is over.
func (c *cancels) forget(now time.Time) {
	for len(c.expiry.ids) > 0 && !c.expiry.ids[0].until.After(now) {
		c.remove(c.expiry.ids[0])
	}
}

// remove forgets e.
func (c *cancels) remove(e *cancelledID) {
	heap.Remove(&c.expiry, e.index[0])
	heap.Remove(&c.latest, e.index[1])
	delete(c.cancelled, e.id)
}

// gone reports whether id is remembered as cancelled at now.
func (c *cancels) gone(id string, now time.Time) bool {
	e, ok := c.cancelled[id]
	return ok && e.until.After(now)
}

// isCancelled reports whether id's caller went away.
func (c *cancels) isCancelled(id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gone(id, time.Now())
}

// start registers a running job; false means its caller already went away.
func (c *cancels) start(id string, stop context.CancelCauseFunc) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gone(id, time.Now()) {
		return false
	}
	c.running[id] = stop
	return true
}

// done forgets a running job.
func (c *cancels) done(id string) {
	c.mu.Lock()
	delete(c.running, id)
	c.mu.Unlock()
}

// size is how many cancelled ids are remembered.
func (c *cancels) size() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.cancelled)
}

func (c *cancels) close() {
	if c.sub != nil {
		_ = c.sub.Unsubscribe()
	}
}

// expiryHeap orders cancelled ids by when they are forgotten, soonest
// first, or latest first when latest is set (a container/heap). Each id
// is in both of a set's heaps: its index[0] is its place in the first,
// index[1] in the second.
type expiryHeap struct {
	ids    []*cancelledID
	latest bool
}

func (h *expiryHeap) slot() int {
	if h.latest {
		return 1
	}
	return 0
}

func (h *expiryHeap) Len() int { return len(h.ids) }
func (h *expiryHeap) Less(i, j int) bool {
	if h.latest {
		return h.ids[i].until.After(h.ids[j].until)
	}
	return h.ids[i].until.Before(h.ids[j].until)
}
func (h *expiryHeap) Swap(i, j int) {
	h.ids[i], h.ids[j] = h.ids[j], h.ids[i]
	h.ids[i].index[h.slot()], h.ids[j].index[h.slot()] = i, j
}
func (h *expiryHeap) Push(x any) {
	e := x.(*cancelledID)
	e.index[h.slot()] = len(h.ids)
	h.ids = append(h.ids, e)
}
func (h *expiryHeap) Pop() any {
	old := h.ids
	e := old[len(old)-1]
	old[len(old)-1] = nil
	h.ids = old[:len(old)-1]
	return e
}
