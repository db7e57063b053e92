package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/laas-bridge/laas-bridge/admission"
	"github.com/laas-bridge/laas-bridge/queue/jobstore"
	"github.com/laas-bridge/laas-bridge/schema"
)

// The direct producers' door. Programs publish a job's envelope on
// schema.SubjectSubmit (laas.requests.batch; see the queue contract); every
// gateway shares the durable consumer schema.ConsumerAdmission on those
// subjects and hands each envelope to the admission core, exactly as HTTP
// does. What the core sets is never taken from the message: an envelope
// that names a request_ref or an idempotency_key, or a message with a
// Laas-Reply-To header, is refused. A refusal is the job's failed result,
// on its results subject; a message with no job id to answer is dropped and
// logged. The message is acknowledged only once the job is queued on its
// lane or its refusal published, so nothing is lost on a crash.

// producerConcurrency bounds the envelopes one gateway admits at once.
const producerConcurrency = 16

// producerRetry is how long a message waits before it is admitted again
// after the queue was full or unavailable.
const producerRetry = time.Second

// producerDoor admits what direct producers publish.
type producerDoor struct {
	g    *Gateway
	cc   jetstream.ConsumeContext
	sem  chan struct{}
	busy sync.WaitGroup
}

// startProducers starts taking envelopes from the submit subjects.
func (g *Gateway) startProducers(ctx context.Context) (*producerDoor, error) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cons, err := g.js.Consumer(cctx, schema.StreamRequests, schema.ConsumerAdmission)
	if err != nil {
		return nil, fmt.Errorf("admission door consumer %s: %w", schema.ConsumerAdmission, err)
	}
	d := &producerDoor{g: g, sem: make(chan struct{}, producerConcurrency)}
	d.cc, err = cons.Consume(func(msg jetstream.Msg) {
		d.sem <- struct{}{} // a full door stops taking messages
		d.busy.Go(func() {
			defer func() { <-d.sem }()
			d.admit(ctx, msg)
		})
	}, jetstream.PullMaxMessages(producerConcurrency))
	if err != nil {
		return nil, fmt.Errorf("admission door: %w", err)
	}
	return d, nil
}

// stop takes no more envelopes and waits for those being admitted.
func (d *producerDoor) stop() {
	if d == nil {
		return
	}
	d.cc.Stop()
	<-d.cc.Closed()
	d.busy.Wait()
}

// admit admits one envelope, or answers its refusal, then acknowledges it;
// it hands the message back when the queue could not take it now.
func (d *producerDoor) admit(ctx context.Context, msg jetstream.Msg) {
	log := d.g.log.With("door", admission.DoorProducer, "subject", msg.Subject())
	var env schema.Envelope
	if err := json.Unmarshal(msg.Data(), &env); err != nil || !schema.ValidRequestID(env.ID) {
		log.Error("dropping a message that is not a job envelope with a valid id: there is nowhere to answer it", "error", err)
		_ = msg.Term()
		return
	}
	log = log.With("request_id", env.ID)
	ck, err := d.check(&env, msg)
	if err == nil {
		// A producer's traceparent, when tracing is on, is the admission span's parent.
		_, err = d.g.core.Admit(d.g.cfg.Tracer.Extract(ctx, msg.Headers()), ck)
	}
	var e *schema.Error
	switch {
	case err == nil:
		log.Info("job queued", "model", ck.Model.Alias)
	case ctx.Err() != nil:
		_ = msg.Nak()
		return
	case errors.As(err, &e) && (e.Code == schema.CodeQueueFull || e.Code == schema.CodeQueueUnavailable):
		log.Warn("job not queued yet; handed back", "status", e.Status, "code", e.Code)
		_ = msg.NakWithDelay(producerRetry)
		return
	case d.known(ctx, env.ID):
		log.Warn("dropping a refused envelope whose job id is running or finished; its result is left as it is", "error", err)
	default:
		if rerr := d.refuse(ctx, &env, err); rerr != nil {
			log.Warn("could not publish a job's refusal; handed back", "error", rerr)
			_ = msg.NakWithDelay(producerRetry)
			return
		}
		log.Info("job refused", "error", err)
	}
	if err := msg.Ack(); err != nil {
		log.Warn("ack failed; the envelope may be admitted again (its Nats-Msg-Id keeps the job queued once)", "error", err)
	}
}

// check turns an envelope into the core's request, refusing the fields
// only the core may set.
func (d *producerDoor) check(env *schema.Envelope, msg jetstream.Msg) (*admission.Checked, error) {
	switch {
	case msg.Headers().Get(schema.HeaderReplyTo) != "":
		return nil, schema.Invalid("", schema.CodeInvalidValue, "The %s header is set by the bridge, not by a producer: collect the job's result from its results subject.", schema.HeaderReplyTo)
	case env.RequestRef != "":
		return nil, schema.Invalid("request_ref", schema.CodeInvalidValue, "request_ref is set by the bridge, not by a producer: put the request in 'request' (a larger one goes through POST /v1/queue/jobs).")
	case env.IdempotencyKey != "":
		return nil, schema.Invalid("idempotency_key", schema.CodeInvalidValue, "idempotency_key is set by the bridge, not by a producer: a job id is answered once, so the job id is the key.")
	case env.Owner != "":
		return nil, schema.Invalid("owner", schema.CodeInvalidValue, "owner is set by the bridge, not by a producer: a producer's jobs belong to the admin; callers with a virtual key submit through POST /v1/queue/jobs.")
	case !env.NotBefore.IsZero():
		return nil, schema.Invalid("not_before", schema.CodeInvalidValue, "not_before is set by the bridge, not by a producer: it is a virtual key's reserved rpm slot.")
	case len(env.Request) == 0:
		return nil, schema.Invalid("request", schema.CodeInvalidValue, "The envelope has no 'request': the OpenAI chat request to run.")
	}
	var timeout time.Duration
	if !env.Deadline.IsZero() {
		if timeout = time.Until(env.Deadline); timeout <= 0 {
			return nil, &schema.Error{Status: http.StatusGatewayTimeout, Type: schema.TypeTimeout, Code: schema.CodeDeadlineExceeded,
				Message: "The job's deadline passed before it was queued."}
		}
		timeout = min(timeout, schema.MaxRequestTimeout)
	}
	lane := admission.Batch
	if msg.Subject() == schema.SubjectSubmitInteractive {
		lane = admission.Interactive
	}
	ck, err := d.g.core.Check(admission.Request{ID: env.ID, Body: env.Request, Door: admission.DoorProducer, Lane: lane, Timeout: timeout,
		Job: &admission.Job{ResultsSubject: env.ResultsSubject}})
	if err == nil && env.Model != "" && env.Model != ck.Model.Alias {
		err = schema.Invalid("model", schema.CodeInvalidValue, "The envelope's model %q is not its request's, %q.", env.Model, ck.Model.Alias)
	}
	return ck, err
}

// known reports that job id is running or finished (or its state cannot
// be read): a refusal must not overwrite its result.
func (d *producerDoor) known(ctx context.Context, id string) bool {
	st, _, err := d.g.jobs.Get(ctx, id)
	switch {
	case errors.Is(err, jobstore.ErrNotFound):
		return false
	case err != nil:
		return true
	}
	return st.Status != schema.JobQueued
}

// refuse publishes a job's refusal as its failed result: on its results
// subject, or on laas.results.<id> when that subject is not valid.
func (d *producerDoor) refuse(ctx context.Context, env *schema.Envelope, err error) error {
	e := schema.AsError(err)
	if env.ResultsSubject != "" && !schema.ValidResultsSubject(env.ResultsSubject, env.ID) {
		env.ResultsSubject = ""
	}
	env.Job = true
	if env.EnqueuedAt.IsZero() {
		env.EnqueuedAt = time.Now()
	}
	res := schema.JobResultOf(schema.ErrorReply(env.ID, e), env.Model, time.Now())
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return d.g.jobs.Finish(rctx, env, &res, 0)
}
