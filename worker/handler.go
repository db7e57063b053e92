package worker

// This file holds how one delivery is handled: the job a delivery becomes,
// the handler and middleware types the steps are written in, and the order
// of the steps. Each step is in its own step_*.go file.

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/laas-bridge/laas-bridge/keys"
	"github.com/laas-bridge/laas-bridge/schema"
)

// job is one delivery of one request, as the steps see it. decode fills
// the envelope's fields; prepare the call's.
type job struct {
	msg      jetstream.Msg
	env      schema.Envelope
	replyTo  string
	attempt  int // this delivery's number, from 1
	received time.Time
	lane     Lane
	log      *slog.Logger // names the request once decoded

	model   schema.Model        // the catalogue's entry, as the request may override it
	laasReq *schema.LaaSRequest // the call prepare built

	spent   keys.Spent // what its LaaS call used, for its key
	settled bool       // its key's usage is counted (settleKey)

	span     trace.Span    // the job's span (step_trace.go); nil with tracing off
	rateWait time.Duration // its wait for the rate limit, kept for its span

	slots func() // gives back its concurrency slots (waitForSlot); nil: none held
}

// handlerFunc runs a delivery from one step to its end. Whatever path it
// takes, it settles the delivery once before it returns: a reply and an
// ack (finish), an ack without a reply (drop), a Nak for another attempt,
// or a Term. ctx is the pool's work context, which ends only when shutdown
// abandons calls in flight (its cause is then errAbandoned); below
// scopeCall it is the LaaS call's own context.
type handlerFunc func(ctx context.Context, j *job)

// middleware is one step, in the manner of Watermill's handler middleware:
// it returns a handler that does the step's work and then either settles
// the delivery itself or hands the job on to next.
type middleware func(next handlerFunc) handlerFunc

// chain composes steps around final; steps[0] runs first.
func chain(final handlerFunc, steps ...middleware) handlerFunc {
	h := final
	for i := len(steps) - 1; i >= 0; i-- {
		h = steps[i](h)
	}
	return h
}

// errAbandoned is the cause of the work context's end: shutdown's grace
// is over and the calls still running are abandoned to redelivery.
var errAbandoned = errors.New("shutdown abandoned the call")

// newHandler is the pool's handler: every step, in order, around the LaaS
// call. The order is the contract. Nothing reaches LaaS unless it decoded,
// is not a duplicate or a job answered already, nobody cancelled it, its
// deadline has not passed, it has no kept answer, its body is at hand, it
// translates, it holds its concurrency slots, and the limiter let it
// start.
//
// With a concurrency cap (WithConcurrencyCap), the call first holds its
// slots (waitForSlot) and then waits for the rate limit, so a slot of the
// rate schedule is not claimed while the call still waits for a slot of
// the cap. Without one, the step is not in the chain at all.
func (p *Pool) newHandler() handlerFunc {
	steps := []middleware{
		p.recoverPoison,   // a panic terminates the delivery
		p.decode,          // an envelope that is not a valid request is terminated
		p.traceJob,        // with tracing on: the queue wait's span and the job's
		p.keepInProgress,  // InProgress acks until the delivery is settled
		p.startJobState,   // jobs: a kept result, a duplicate, a cancelled job
		p.skipCancelled,   // the caller went away before the job started
		p.refuseLate,      // the deadline passed in the queue
		p.holdForSlot,     // its key's rpm slot, reserved ahead
		p.answerFromStore, // an Idempotency-Key whose answer is kept
		p.claimBody,       // a large body from the object store
		p.prepare,         // the catalogue and the translation to LaaS
		p.scopeCall,       // the call's context: its deadline, the caller's cancel
	}
	if p.caps != nil {
		steps = append(steps, p.waitForSlot) // the shared concurrency cap
	}
	steps = append(steps, p.waitForRateLimit) // the shared rate limit
	return chain(p.callLaaS, steps...)
}

// handle runs one delivery through the pool's steps.
func (p *Pool) handle(ctx context.Context, msg jetstream.Msg) {
	defer p.metrics.handling()()
	p.handler(ctx, &job{msg: msg, attempt: 1, received: time.Now(), log: p.log})
}
