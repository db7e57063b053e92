package worker

// This file holds the rate-limit step: the call waits for the pool's
// Limiter (the shared requests-per-minute budget, a 429 cooldown), told
// the job's lane; a wait that ends early settles the job (handBack).

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/laas-bridge/laas-bridge/schema"
)

// waitForRateLimit lets the call start once the limiter does; with no
// limiter it starts at once.
func (p *Pool) waitForRateLimit(next handlerFunc) handlerFunc {
	return func(ctx context.Context, j *job) {
		if p.limiter != nil {
			var start time.Time
			if j.span != nil {
				start = time.Now()
			}
			err := p.limiter.Wait(ctx, j.model, j.lane)
			if j.span != nil {
				j.rateWait = time.Since(start)
			}
			if err != nil {
				p.handBack(ctx, j, err)
				return
			}
		}
		next(ctx, j)
	}
}

// handBack settles a job whose rate-limit or concurrency-slot wait ended
// with err before the call could start: dropped if its caller went away,
// answered 504 if its deadline passed, else handed back to the queue
// (retryLater).
func (p *Pool) handBack(callCtx context.Context, j *job, err error) {
	switch {
	case errors.Is(context.Cause(callCtx), errCallerGone):
		p.metrics.cancelled(cancelledBeforeStart)
		p.drop(j)
	case errors.Is(err, context.DeadlineExceeded) && !time.Now().Before(j.env.Deadline):
		p.finish(j, schema.ErrorReply(j.env.ID, &schema.Error{
			Status: http.StatusGatewayTimeout, Type: schema.TypeTimeout, Code: schema.CodeDeadlineExceeded,
			Message: fmt.Sprintf("The request passed its deadline waiting for the LaaS rate limit or concurrency cap, %s after it was queued.",
				time.Since(j.env.EnqueuedAt).Round(time.Millisecond)),
		}), 0)
	default:
		p.retryLater(j, 0, err)
	}
}
