package worker

// This file holds the step that keeps a delivery from being handed out
// again while it is worked on: InProgress acks, about every second, from
// the moment it is decoded until it is settled.

import (
	"context"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// maxProgressPeriod is the longest time between two InProgress acks. The
// consumer's AckWait is short (seconds, queue.DefaultAckWait) so that a
// dead worker's jobs run again soon; a tick well inside it keeps a job
// held by a worker that is briefly short of CPU, and by a worker that read
// a longer AckWait at start while another process lowered it since.
const maxProgressPeriod = time.Second

// progressPeriod is how often a job held under ackWait is signalled in
// progress: a fifth of ackWait, at most maxProgressPeriod, so four ticks
// in a row may be late or lost before the server hands the job out again.
func progressPeriod(ackWait time.Duration) time.Duration {
	return min(ackWait/5, maxProgressPeriod)
}

// keepInProgress tells the server the job is being worked on from here to
// the end of the delivery: fetching a large body and waiting for the rate
// limit can take a while too, not only the LaaS call, and so can settling
// it (the reply, a kept answer, a dead letter) after the call, or after
// shutdown abandoned it.
func (p *Pool) keepInProgress(next handlerFunc) handlerFunc {
	return func(ctx context.Context, j *job) {
		p.beatOnce.Do(func() { p.beats = newHeartbeat(progressPeriod(p.ackWait)) })
		stop := p.beats.hold(j.msg)
		defer stop()
		next(ctx, j)
	}
}

// heartbeat signals every delivery it holds as in progress every period,
// from one goroutine for them all (a goroutine and a ticker per job cost
// about 8 KiB each, times the jobs in flight: thousands in a burst),
// which runs while it holds any and exits when it holds none. A busy
// handler does not delay it. A delivery is signalled until it is
// settled, whatever ended its call; once its stop returns, it is not
// signalled again.
type heartbeat struct {
	period time.Duration

	mu      sync.Mutex
	held    map[*beat]struct{}
	running bool
}

// beat is one delivery a heartbeat holds.
type beat struct {
	msg     jetstream.Msg
	mu      sync.Mutex // held while msg is signalled, so stop waits for it
	stopped bool
}

func newHeartbeat(period time.Duration) *heartbeat {
	return &heartbeat{period: period, held: map[*beat]struct{}{}}
}

// hold signals msg every period until the returned func is called.
func (h *heartbeat) hold(msg jetstream.Msg) (stop func()) {
	b := &beat{msg: msg}
	h.mu.Lock()
	h.held[b] = struct{}{}
	if !h.running {
		h.running = true
		go h.run()
	}
	h.mu.Unlock()
	return func() {
		b.mu.Lock()
		b.stopped = true
		b.mu.Unlock()
		h.mu.Lock()
		delete(h.held, b)
		h.mu.Unlock()
	}
}

func (h *heartbeat) run() {
	t := time.NewTicker(h.period)
	defer t.Stop()
	var due []*beat
	for range t.C {
		h.mu.Lock()
		if len(h.held) == 0 {
			h.running = false
			h.mu.Unlock()
			return
		}
		due = due[:0]
		for b := range h.held {
			due = append(due, b)
		}
		h.mu.Unlock()
		for _, b := range due {
			b.mu.Lock()
			if !b.stopped {
				_ = b.msg.InProgress()
			}
			b.mu.Unlock()
		}
		clear(due) // holds no settled delivery until the next tick
	}
}
