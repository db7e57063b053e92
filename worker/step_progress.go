package worker

// This file holds the step that keeps a delivery from being handed out
// again while it is worked on: InProgress acks, every AckWait/3, from the
// moment it is decoded until it is settled.

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// keepInProgress tells the server the job is being worked on from here to
// the end of the delivery: fetching a large body and waiting for the rate
// limit can take a while too, not only the LaaS call.
func (p *Pool) keepInProgress(next handlerFunc) handlerFunc {
	return func(ctx context.Context, j *job) {
		stop := keepAlive(ctx, j.msg, p.ackWait/3)
		defer stop()
		next(ctx, j)
	}
}

// keepAlive sends msg.InProgress every period until the returned func is
// called or ctx ends, so AckWait never redelivers a long call.
func keepAlive(ctx context.Context, msg jetstream.Msg, period time.Duration) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				_ = msg.InProgress()
			}
		}
	}()
	return cancel
}
