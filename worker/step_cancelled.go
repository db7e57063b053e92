package worker

// This file holds the step that skips a job whose caller went away before
// it started: LaaS is not called, and the job leaves the queue unanswered.

import "context"

// skipCancelled drops a job whose caller cancelled it before it started
// (a job, Envelope.Job, gets a cancelled result instead).
func (p *Pool) skipCancelled(next handlerFunc) handlerFunc {
	return func(ctx context.Context, j *job) {
		if p.cancels.isCancelled(j.env.ID) {
			j.log.Info("job skipped: its caller went away before it started")
			p.metrics.cancelled(cancelledBeforeStart)
			p.drop(j)
			return
		}
		next(ctx, j)
	}
}
