package worker

// This file holds the concurrency-cap step: the call waits for a slot of
// every cap that applies to it (the project's, its model's), held until
// LaaS has answered (callLaaS gives them back then, before the reply is
// sent); a wait that ends early settles the job (handBack).

import (
	"context"
	"errors"
	"time"
)

// errSlotLost is the cause of a call's context ending because its slot's
// lease was lost (see KVCap): the call stops and the job is handed back.
var errSlotLost = errors.New("the call's concurrency slot was lost")

// waitForSlot lets the call start once it holds its slots. callLaaS gives
// them back as soon as LaaS has answered (j.endCall), so the next call may
// start while this one's reply is sent; any path that does not reach
// LaaS (the rate limit's wait ends, a panic) gives them back when the
// step returns. The pool runs it only with a cap (WithConcurrencyCap); a
// call no cap applies to passes straight on.
func (p *Pool) waitForSlot(next handlerFunc) handlerFunc {
	return func(ctx context.Context, j *job) {
		if !p.caps.Applies(j.model) {
			next(ctx, j)
			return
		}
		callCtx, stop := context.WithCancelCause(ctx)
		defer stop(nil)
		start := time.Now()
		doneWaiting := p.metrics.capWaiting(j.model.Alias, j.lane)
		release, err := p.caps.Acquire(callCtx, j.model, j.lane, func() { stop(errSlotLost) })
		doneWaiting(time.Since(start))
		if err != nil {
			p.handBack(ctx, j, err)
			return
		}
		if release != nil {
			doneHolding := p.metrics.capHolding(j.model.Alias, j.lane)
			j.slots = func() {
				release()
				doneHolding()
			}
			defer j.endCall()
		}
		next(callCtx, j)
	}
}

// endCall gives back the job's concurrency slots, if it holds any; once
// LaaS has answered, or the call will not be made. Safe to call again.
func (j *job) endCall() {
	if j.slots != nil {
		release := j.slots
		j.slots = nil
		release()
	}
}
