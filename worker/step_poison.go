package worker

// This file holds the outermost step: a delivery whose handling panics is
// terminated (a poison message), so it is neither retried forever nor able
// to take the worker down.

import "context"

// recoverPoison terminates a delivery whose handling panicked, and logs it.
func (p *Pool) recoverPoison(next handlerFunc) handlerFunc {
	return func(ctx context.Context, j *job) {
		defer func() {
			if r := recover(); r != nil {
				p.log.Error("panic while handling a job; the job is terminated", "request_id", j.env.ID, "subject", j.msg.Subject(), "panic", r)
				p.settleKey(j) // its key's lease is free again
				_ = j.msg.Term()
			}
		}()
		next(ctx, j)
	}
}
