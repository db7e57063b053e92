package worker

// This file holds the final handler: the LaaS call itself, and how its
// outcome settles the job (the answer, a retry with backoff, a 429's
// cooldown for every worker, a dead letter, an error answer).

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/laas-bridge/laas-bridge/laas"
	"github.com/laas-bridge/laas-bridge/schema"
)

// callLaaS runs the job's LaaS call under ctx (the call's context, see
// scopeCall) and answers with LaaS's completion; a failed call is settled
// by upstreamFailed. The call's concurrency slots are given back as soon
// as LaaS answers, before the job is settled.
func (p *Pool) callLaaS(ctx context.Context, j *job) {
	start := time.Now()
	resp, err := p.up.Complete(ctx, j.laasReq)
	upstream := time.Since(start)
	j.endCall() // LaaS is done with it: the slot is free before the reply goes out
	if j.span != nil {
		p.traceCall(j, start, upstream, err)
	}
	p.metrics.called(j.model.Alias, err, upstream)
	j.spent.Called = true
	if err != nil {
		p.upstreamFailed(ctx, j, err, start, upstream)
		return
	}
	cc, err := laas.FromLaaS(resp, "chatcmpl-"+j.env.ID, j.model.Alias, time.Now())
	if err != nil {
		e := &schema.Error{Status: http.StatusBadGateway, Type: schema.TypeUpstream, Code: schema.CodeUpstreamError,
			Message: "LaaS answered with something that is not a chat completion: " + err.Error(), Cause: err}
		p.finish(j, schema.ErrorReply(j.env.ID, e), upstream)
		return
	}
	cc.ServiceTier = schema.ServiceTierDefault // the tier that ran it: the lane
	if j.lane == LaneBatch {
		cc.ServiceTier = schema.ServiceTierFlex
	}
	j.spend(cc.Usage)
	p.finish(j, schema.Reply{ID: j.env.ID, Status: http.StatusOK, Completion: cc}, upstream)
}

// upstreamFailed settles a job whose call started at start and failed
// with err after upstream:
//   - shutdown abandoned the call: handed back at once, for another worker;
//   - its caller went away: dropped;
//   - LaaS answered 429: every worker holds off (Limiter.Throttled), and
//     the job is retried like any retryable failure;
//   - retryable (429, 5xx, timeout, no answer) with an attempt left before
//     the deadline: handed back after retryDelay's backoff;
//   - retryable with none left: kept as a dead letter and answered with
//     the error;
//   - anything else: answered with the error (LaaS's, as OpenAI's shape).
func (p *Pool) upstreamFailed(ctx context.Context, j *job, err error, start time.Time, upstream time.Duration) {
	switch cause := context.Cause(ctx); {
	case errors.Is(cause, errAbandoned):
		j.log.Warn("call abandoned at shutdown; job handed back", "error", err)
		_ = j.msg.Nak()
		return
	case errors.Is(cause, errSlotLost):
		j.log.Warn("call stopped: its concurrency slot was lost; job handed back", "error", err)
		p.metrics.retried(j.model.Alias, retryHandedBack)
		_ = j.msg.Nak()
		return
	case errors.Is(cause, errCallerGone):
		j.log.Info("LaaS call aborted: its caller went away", "upstream_ms", upstream.Milliseconds())
		p.metrics.cancelled(cancelledDuringCall)
		p.drop(j)
		return
	}
	e := schema.AsError(err)
	ue, isUp := errors.AsType[*laas.UpstreamError](err)
	if isUp {
		e = ue.OpenAI()
		if ue.Status == http.StatusTooManyRequests && p.limiter != nil {
			p.limiter.Throttled(ctx, p.throttleFor(j, ue.RetryAfter))
		}
		if ue.Retryable() {
			if delay, ok := p.retryDelay(j, ue.RetryAfter); ok {
				j.log.Warn("upstream failed; will retry", "status", ue.Status, "delay", delay, "error", err)
				p.metrics.retried(j.model.Alias, retryReason(ue))
				traceRetry(j, delay)
				_ = j.msg.NakWithDelay(delay)
				return
			}
			p.deadLetter(j, e, start)
		}
	}
	j.log.Warn("upstream failed; answering with an error", "status", e.Status, "code", e.Code, "error", err)
	p.finish(j, schema.ErrorReply(j.env.ID, e), upstream)
}
