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
		stop := keepAlive(j.msg, progressPeriod(p.ackWait))
		defer stop()
		next(ctx, j)
	}
}

// keepAlive sends msg.InProgress every period, on a goroutine of its own
// (a busy handler does not delay it), until the returned func is called.
// It does not stop with the work context: a delivery is signalled until it
// is settled, whatever ended its call. Once stop returns, no more signal
// is sent.
func keepAlive(msg jetstream.Msg, period time.Duration) (stop func()) {
	done, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				select {
				case <-done: // a tick that raced the stop
					return
				default:
				}
				_ = msg.InProgress()
			}
		}
	}()
	return sync.OnceFunc(func() { close(done); <-stopped })
}
