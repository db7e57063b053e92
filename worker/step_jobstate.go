package worker

// This file holds the job-state step: a job (Envelope.Job) has a state and
// a result kept in jobstore, and is answered once per job id. A job whose
// result is kept, that was cancelled, or that another message is running
// already does not reach LaaS.

import (
	"context"
	"time"

	"github.com/laas-bridge/laas-bridge/queue/jobstore"
	"github.com/laas-bridge/laas-bridge/schema"
)

// startJobState runs startJob's checks for a job; other requests pass.
func (p *Pool) startJobState(next handlerFunc) handlerFunc {
	return func(ctx context.Context, j *job) {
		if j.env.Job && p.startJob(ctx, j) {
			return
		}
		next(ctx, j)
	}
}

// startJob runs the job-only checks before a job may call LaaS. It returns
// true when it has dealt with the job: answered from the job's kept
// result, answered cancelled, refused (a bad results subject), dropped as
// a duplicate, or handed back.
func (p *Pool) startJob(ctx context.Context, j *job) bool {
	// A bad results subject (the id is valid: decodeEnvelope checked it) is
	// refused, on the default subject, unless the job has a result there.
	badSubject := ""
	if jobstore.Check(&j.env) != nil {
		badSubject, j.env.ResultsSubject = j.env.ResultsSubject, ""
	}
	res, err := p.jobs.Existing(ctx, &j.env)
	if err != nil {
		p.retryLater(j, time.Second, err)
		return true
	}
	if res != nil {
		j.log.Info("job answered from its kept result; LaaS not called", "status", res.Status)
		if err := j.msg.Ack(); err != nil {
			j.log.Warn("ack failed; the job may be redelivered", "error", err)
		}
		p.deleteBody(j)
		return true
	}
	if badSubject != "" {
		j.log.Warn("job refused: bad results subject", "results_subject", badSubject)
		p.finish(j, schema.ErrorReply(j.env.ID, schema.Invalid("results_subject", schema.CodeInvalidValue,
			"The results subject %q is not %s.<job id> or %s.<tokens>.<job id>; the result was published on %s instead.",
			badSubject, schema.SubjectResults, schema.SubjectResults, j.env.ResultsTo())), 0)
		return true
	}
	var seq uint64
	if md, err := j.msg.Metadata(); err == nil {
		seq = md.Sequence.Stream
	}
	st, run, err := p.jobs.Start(ctx, &j.env, seq, j.attempt)
	switch {
	case err != nil:
		p.retryLater(j, time.Second, err)
		return true
	case run:
		return false
	case st.Status == schema.JobCancelled:
		j.log.Info("job skipped: it was cancelled before it started")
		p.metrics.cancelled(cancelledBeforeStart)
		p.drop(j)
		return true
	}
	// Another message with this job id is running it; its body, if any,
	// is that message's too.
	j.log.Warn("duplicate job dropped: another message with its id is running", "seq", seq, "running_seq", st.Seq)
	if err := j.msg.Ack(); err != nil {
		j.log.Warn("ack failed; the job may be redelivered", "error", err)
	}
	return true
}
