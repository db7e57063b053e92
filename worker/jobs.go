package worker

// This file holds what the pool keeps for jobs (schema.Envelope.Job), whose
// callers do not wait for a reply, and the deadlines of a call. The worker
// publishes a job's schema.JobResult on its results subject and keeps the
// job's state, both through jobstore. A job id is answered once: a job
// whose result exists is answered from it without calling LaaS, however
// long after the queue's duplicate window it is submitted again (see
// step_jobstate.go).

import (
	"context"
	"time"

	"github.com/laas-bridge/laas-bridge/schema"
)

// keepResult publishes a job's result and records its final state. It
// returns false when that failed and the job was handed back for another
// attempt (the last attempt goes on: its result is lost, and logged).
func (p *Pool) keepResult(j *job, rep *schema.Reply) bool {
	res := schema.JobResultOf(*rep, j.env.Model, time.Now())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := p.jobs.Finish(ctx, &j.env, &res, p.inlineMax)
	if err == nil {
		return true
	}
	if j.attempt < p.maxDeliver {
		j.log.Error("keeping the job's result failed; job handed back", "error", err)
		p.metrics.retried(j.env.Model, retryReplyFailed)
		_ = j.msg.NakWithDelay(time.Second)
		return false
	}
	j.log.Error("keeping the job's result failed on the last attempt; the result is lost", "error", err)
	return true
}

// defaultTimeout is the deadline of a request that came without one: a
// job waits in the batch lane as long as any request may (24 h), a
// request whose caller waits the default timeout.
func defaultTimeout(env *schema.Envelope) time.Duration {
	if env.Job {
		return schema.MaxRequestTimeout
	}
	return schema.DefaultTimeout
}

// callDeadline bounds one LaaS call: by the model's timeout from now, for
// every call (an interactive request, a job, a batch line), and by the
// request's own deadline when that comes first. A job's or a batch line's
// deadline may be hours away: a call that hangs then ends at the model's
// timeout and is retried, instead of pinning a worker slot for the whole
// window. An interactive request that asked for more than the model's
// timeout (X-Request-Timeout) gets each attempt bounded the same way.
func callDeadline(j *job, model schema.Model) time.Time {
	d := time.Now().Add(model.Deadline())
	if !j.env.Deadline.IsZero() && j.env.Deadline.Before(d) {
		d = j.env.Deadline
	}
	return d
}
