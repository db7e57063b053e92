package worker

// This file holds how a failed attempt is retried: the backoff with jitter
// between attempts, the margin a retry must leave before the deadline, how
// long every worker holds off after a 429, and what happens when no
// attempt is left (a dead letter and an error answer).

import (
	"context"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/laas-bridge/laas-bridge/schema"
)

// retryMargin is the time a retry must have left before the deadline: a
// retry that could only start as the caller gives up would turn the last
// real error (say a 429) into a timeout.
const retryMargin = time.Second

// backoff is the exponential backoff after attempt (from 1): RetryBase
// doubled per attempt, at most RetryMax.
func (p *Pool) backoff(attempt int) time.Duration {
	return min(p.cfg.RetryMax, p.cfg.RetryBase<<min(attempt-1, 20))
}

// retryDelay returns how long to wait before the next attempt, and false
// when no attempt is left: MaxDeliver is reached or the deadline would
// pass. The delay is the backoff with jitter, uniform in [backoff/2,
// backoff], and at least retryAfter (LaaS's Retry-After); a retry that
// would start less than retryMargin before the deadline is not made.
func (p *Pool) retryDelay(j *job, retryAfter time.Duration) (time.Duration, bool) {
	if p.maxDeliver > 0 && j.attempt >= p.maxDeliver {
		return 0, false
	}
	backoff := p.backoff(j.attempt)
	delay := backoff/2 + rand.N(backoff/2+1) // jitter in [backoff/2, backoff]
	delay = max(delay, retryAfter)
	if !j.env.Deadline.IsZero() && time.Now().Add(delay+retryMargin).After(j.env.Deadline) {
		return 0, false
	}
	return delay, true
}

// throttleFor is how long every worker holds off after a 429: Retry-After
// when LaaS gave one, else the job's backoff (no jitter).
func (p *Pool) throttleFor(j *job, retryAfter time.Duration) time.Duration {
	if retryAfter > 0 {
		return retryAfter
	}
	return p.backoff(j.attempt)
}

// retryLater hands a job back to the queue after delay, unless this was
// its last delivery: then it is answered with err as a 503 (and kept as a
// dead letter), so it never stays in the queue with no attempt left.
func (p *Pool) retryLater(j *job, delay time.Duration, err error) {
	if p.maxDeliver <= 0 || j.attempt < p.maxDeliver {
		j.log.Warn("job handed back to the queue", "delay", delay, "error", err)
		p.metrics.retried(j.env.Model, retryHandedBack)
		_ = j.msg.NakWithDelay(delay)
		return
	}
	e := &schema.Error{Status: http.StatusServiceUnavailable, Type: schema.TypeServer, Code: schema.CodeQueueUnavailable,
		Message: "The bridge could not run the request within its attempts; try again shortly.", RetryAfter: 1, Cause: err}
	p.deadLetter(j, e, time.Now())
	p.finish(j, schema.ErrorReply(j.env.ID, e), 0)
}

// deadLetter keeps a job that ran out of attempts, if the pool keeps them.
func (p *Pool) deadLetter(j *job, e *schema.Error, lastAttempt time.Time) {
	p.metrics.deadLettered()
	if p.dead == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dl := DeadLetter{Envelope: j.env, Reason: e.Body().Error, Status: e.Status, Attempts: j.attempt, LastAttempt: lastAttempt, FailedAt: time.Now()}
	if err := p.dead.DeadLetter(ctx, dl); err != nil {
		j.log.Error("could not keep the dead letter", "error", err)
	}
}
