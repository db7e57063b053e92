package worker

// This file holds the step that answers a request with an Idempotency-Key
// from the answer kept for that key, without calling LaaS again.

import (
	"context"
	"time"
)

// answerFromStore sends the kept answer of a request whose Idempotency-Key
// has one (schema.BucketAnswers) and drops the job. A kept answer that
// cannot be sent hands the job back to try again in a second.
func (p *Pool) answerFromStore(next handlerFunc) handlerFunc {
	return func(ctx context.Context, j *job) {
		if j.env.IdempotencyKey == "" {
			next(ctx, j)
			return
		}
		e, err := p.answers.Get(ctx, j.env.IdempotencyKey)
		if err != nil { // none kept (or the store is out of reach): run it
			next(ctx, j)
			return
		}
		j.log.Info("answered from the idempotency store; LaaS not called")
		p.settleKey(j) // before the answer: the caller's next request sees its lease free
		if j.replyTo != "" {
			if err := p.send(j.replyTo, e.Value()); err != nil {
				j.log.Warn("could not send the kept answer", "error", err)
				p.retryLater(j, time.Second, err)
				return
			}
		}
		p.drop(j)
	}
}
