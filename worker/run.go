package worker

// This file holds the pool's run loop: free slots, the goroutines that run
// jobs, the pullers that take jobs only for free slots, and shutdown (stop
// pulling, hand back what arrives, give calls in flight ShutdownGrace).

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// runnerIdle is how long a goroutine that finished a job waits for the
// next one before it exits.
const runnerIdle = 5 * time.Second

// maxIdleRunners is how many goroutines that finished a job may wait for
// the next one; the others exit at once. Reuse saves CPU under steady load,
// where a few idle runners suffice; after a burst of thousands of calls,
// idle runners would hold their grown stacks (16-32 KiB each) for
// runnerIdle while the answers go out (issue 14: 10,000 callers at once).
const maxIdleRunners = 128

// Run pulls and runs jobs until ctx is done. Then it stops pulling, hands
// jobs that arrive from a pull still open back to the queue at once (Nak),
// and waits up to ShutdownGrace for calls in flight; calls still running
// then are abandoned and handed back (Nak), to be redelivered to another
// worker. It returns once every job it took is settled.
//
// A job is pulled only for a slot that is free: a job the server has handed
// out but no slot has taken would wait without InProgress acks, and past
// AckWait the server would hand it out again (and LaaS be called twice).
func (p *Pool) Run(ctx context.Context) error {
	defer p.cancels.close()
	// In-flight calls outlive ctx by up to ShutdownGrace.
	work, abandon := context.WithCancelCause(context.WithoutCancel(ctx))
	defer abandon(nil)
	r := newRunners(p, work, p.cfg.Concurrency)
	p.log.Info("worker pool started", "concurrency", p.cfg.Concurrency, "max_deliver", p.maxDeliver, "ack_wait", p.ackWait)
	// Two pullers, so a pull is open while the other is being set up: a job
	// published between two pulls does not wait for a round trip.
	var pullers sync.WaitGroup
	for range min(2, p.cfg.Concurrency) {
		pullers.Go(func() { r.pullLoop(ctx) })
	}
	pullers.Wait()
	close(r.quit)

	done := make(chan struct{})
	go func() { r.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(p.cfg.ShutdownGrace):
		p.log.Warn("shutdown grace over; abandoning calls in flight to redelivery")
		abandon(errAbandoned)
		<-done
	}
	p.log.Info("worker pool stopped")
	return nil
}

// runners runs pulled jobs, one per slot. A goroutine that finished a job
// waits a while for the next one rather than exit: a fresh goroutine per
// job grew its stack again while decoding every request (about 5% of a
// busy worker's CPU).
type runners struct {
	p     *Pool
	work  context.Context // the jobs' context (see handlerFunc)
	slots chan struct{}   // one token per job taken and not finished
	idle  chan jetstream.Msg
	quit  chan struct{} // closed once pulling has stopped
	wg    sync.WaitGroup

	idleFor time.Duration // runnerIdle
	maxIdle int32         // maxIdleRunners
	idling  atomic.Int32  // runners waiting for a job
	alive   atomic.Int32  // runner goroutines
}

func newRunners(p *Pool, work context.Context, concurrency int) *runners {
	return &runners{p: p, work: work, slots: make(chan struct{}, concurrency),
		idle: make(chan jetstream.Msg), quit: make(chan struct{}), idleFor: runnerIdle, maxIdle: maxIdleRunners}
}

// run handles msg, then the jobs handed to it while it waits idle, unless
// maxIdle runners wait already.
func (r *runners) run(msg jetstream.Msg) {
	defer r.alive.Add(-1)
	t := time.NewTimer(r.idleFor)
	defer t.Stop()
	for {
		r.p.handle(r.work, msg)
		<-r.slots
		r.wg.Done()
		if r.idling.Add(1) > r.maxIdle {
			r.idling.Add(-1)
			return
		}
		t.Reset(r.idleFor)
		select {
		case msg = <-r.idle:
			r.idling.Add(-1)
		case <-t.C:
			r.idling.Add(-1)
			return
		case <-r.quit:
			r.idling.Add(-1)
			return
		}
	}
}

// start runs msg in a slot its puller reserved, on an idle goroutine or a
// new one; once ctx is done it hands msg back instead and returns false.
func (r *runners) start(ctx context.Context, msg jetstream.Msg) bool {
	if ctx.Err() != nil { // shutting down: the job goes back
		_ = msg.Nak()
		return false
	}
	r.wg.Add(1)
	select {
	case r.idle <- msg: // unbuffered: only a waiting runner takes a job
	default:
		r.alive.Add(1)
		go r.run(msg)
	}
	return true
}

// pullLoop waits for a free slot, reserves every free one, pulls at most
// that many jobs and frees the slots no job took, until ctx is done.
func (r *runners) pullLoop(ctx context.Context) {
	batchBusy := false // the batch lane had jobs at the last look
	start := func(msg jetstream.Msg) bool { return r.start(ctx, msg) }
	for ctx.Err() == nil {
		select { // wait for one free slot, then take every free one
		case r.slots <- struct{}{}:
		case <-ctx.Done():
			continue
		}
		free := 1
	reserve:
		for free < cap(r.slots) {
			select {
			case r.slots <- struct{}{}:
				free++
			default:
				break reserve
			}
		}
		var started int
		started, batchBusy = r.p.pull(ctx, free, batchBusy, start)
		for range free - started {
			<-r.slots
		}
	}
}
