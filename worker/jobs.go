package worker

import (
	"context"
	"log/slog"
	"time"

	"github.com/laas-bridge/laas-bridge/queue/jobstore"
	"github.com/laas-bridge/laas-bridge/schema"
)

// Jobs (schema.Envelope.Job): nobody waits for a reply. The worker
// publishes a schema.JobResult on the job's results subject and keeps the
// job's state, both through jobstore. A job id is answered once: a job
// whose result exists is answered from it without calling LaaS, however
// long after the queue's duplicate window it is submitted again.

// startJob runs the job-only checks before a job may call LaaS. It returns
// true when it has dealt with the job: answered from the job's kept
// result, answered cancelled, refused (a bad results subject), dropped as
// a duplicate, or handed back.
func (p *Pool) startJob(ctx context.Context, log *slog.Logger, j *job) bool {
	// A bad results subject (the id is valid: decodeJob checked it) is
	// refused, on the default subject, unless the job has a result there.
	badSubject := ""
	if jobstore.Check(&j.env) != nil {
		badSubject, j.env.ResultsSubject = j.env.ResultsSubject, ""
	}
	res, err := p.jobs.Existing(ctx, &j.env)
	if err != nil {
		p.retryLater(log, j, time.Second, err)
		return true
	}
	if res != nil {
		log.Info("job answered from its kept result; LaaS not called", "status", res.Status)
		if err := j.msg.Ack(); err != nil {
			log.Warn("ack failed; the job may be redelivered", "error", err)
		}
		p.deleteBody(log, j)
		return true
	}
	if badSubject != "" {
		log.Warn("job refused: bad results subject", "results_subject", badSubject)
		p.finish(log, j, schema.ErrorReply(j.env.ID, schema.Invalid("results_subject", schema.CodeInvalidValue,
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
		p.retryLater(log, j, time.Second, err)
		return true
	case run:
		return false
	case st.Status == schema.JobCancelled:
		log.Info("job skipped: it was cancelled before it started")
		p.metrics.cancelled(cancelledBeforeStart)
		p.drop(log, j)
		return true
	}
	// Another message with this job id is running it; its body, if any,
	// is that message's too.
	log.Warn("duplicate job dropped: another message with its id is running", "seq", seq, "running_seq", st.Seq)
	if err := j.msg.Ack(); err != nil {
		log.Warn("ack failed; the job may be redelivered", "error", err)
	}
	return true
}

// keepResult publishes a job's result and records its final state. It
// returns false when that failed and the job was handed back for another
// attempt (the last attempt goes on: its result is lost, and logged).
func (p *Pool) keepResult(log *slog.Logger, j *job, rep *schema.Reply) bool {
	res := schema.JobResultOf(*rep, j.env.Model, time.Now())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := p.jobs.Finish(ctx, &j.env, &res, p.inlineMax)
	if err == nil {
		return true
	}
	if j.attempt < p.maxDeliver {
		log.Error("keeping the job's result failed; job handed back", "error", err)
		p.metrics.retried(j.env.Model, retryReplyFailed)
		_ = j.msg.NakWithDelay(time.Second)
		return false
	}
	log.Error("keeping the job's result failed on the last attempt; the result is lost", "error", err)
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

// callDeadline bounds one LaaS call: by the request's deadline, and for a
// job, whose deadline may be hours away, also by the model's timeout, so a
// call that hangs is retried instead of held for the whole window.
func callDeadline(j *job, model schema.Model) time.Time {
	d := j.env.Deadline
	if j.env.Job {
		if per := time.Now().Add(model.Deadline()); per.Before(d) {
			d = per
		}
	}
	return d
}
