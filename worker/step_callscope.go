package worker

// This file holds the step that sets up the LaaS call's context: it ends
// at the call's deadline (see callDeadline: the model's timeout, capped by
// the request's deadline) or when the job's caller goes
// away (a cancel on schema.SubjectCancel), whichever comes first.

import "context"

// scopeCall runs the rest of the job (the rate-limit wait and the call)
// under the call's context, registered with the pool's cancels so that a
// caller's cancel aborts it (cause errCallerGone). A job whose caller went
// away before it could be registered is dropped.
func (p *Pool) scopeCall(next handlerFunc) handlerFunc {
	return func(ctx context.Context, j *job) {
		callCtx, stop := context.WithCancelCause(ctx)
		defer stop(nil)
		callCtx, cancel := context.WithDeadline(callCtx, callDeadline(j, j.model))
		defer cancel()
		if !p.cancels.start(j.env.ID, stop) {
			j.log.Info("job skipped: its caller went away before it started")
			p.metrics.cancelled(cancelledBeforeStart)
			p.drop(j)
			return
		}
		defer p.cancels.done(j.env.ID)
		next(callCtx, j)
	}
}
