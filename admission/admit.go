package admission

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/laas-bridge/laas-bridge/queue/failover"
	"github.com/laas-bridge/laas-bridge/schema"
)

// Ticket is an admitted request.
type Ticket struct {
	// ID is the request id; Subject the lane it was published to.
	ID, Subject string
	// EnqueuedAt is when it was admitted; Deadline when its caller stops
	// waiting (no LaaS call starts after it).
	EnqueuedAt, Deadline time.Time
	// Answer is the kept answer of an earlier request with the same
	// idempotency key: nothing was queued.
	Answer []byte
	// Duplicate reports that nothing new was queued because the same
	// request is queued or running already: the same idempotency key (its
	// answer comes through WatchAnswer), or the same job id.
	Duplicate bool
	// JobState is a recorded job's state (Job.Record).
	JobState schema.JobState
	// Seq is the request stream's sequence of the queued message (0 when
	// nothing was queued): where it stands in its lane.
	Seq uint64
}

// Admit runs the multimodal check on a checked request (unless the door
// did, MediaChecked), answers it from a kept answer when its idempotency
// key has one, else stores a large body in the object store, builds the
// envelope and publishes it to its lane with failover. A door that waits on
// a reply subject registers there before calling Admit, so a fast answer is
// never missed. Errors are *schema.Error: a refusal (4xx), a full queue
// (429 queue_full) or an unavailable one (503 queue_unavailable), or the
// caller gone (ctx cancelled, CallerGone). With tracing on, it runs in
// an admission span (trace.go) whose context the lane message carries.
func (c *Core) Admit(ctx context.Context, ck *Checked) (Ticket, error) {
	if c.cfg.Tracer.Enabled() {
		return c.admitTraced(ctx, ck)
	}
	return c.admit(ctx, ck)
}

func (c *Core) admit(ctx context.Context, ck *Checked) (Ticket, error) {
	if !ck.MediaChecked {
		if err := c.checkMedia(ctx, ck); err != nil {
			return Ticket{}, err
		}
	}
	now := time.Now()
	t := Ticket{ID: ck.ID, Subject: ck.Lane.Subject(), EnqueuedAt: now, Deadline: now.Add(ck.Timeout)}
	if ck.AnswerKey != "" {
		raw, found, err := c.StoredAnswer(ctx, ck.AnswerKey)
		if err != nil || found {
			t.Answer = raw
			return t, err
		}
	}
	adm, err := c.limitKey(ctx, ck, t.Deadline)
	if err != nil {
		return t, err
	}
	env := schema.Envelope{ID: ck.ID, Model: ck.Model.Alias, EnqueuedAt: now, Deadline: t.Deadline, Request: ck.Body,
		IdempotencyKey: ck.AnswerKey, Owner: ck.Caller.Owner(), NotBefore: adm.NotBefore}
	t, err = c.queue(ctx, ck, &env, t)
	if err != nil || t.Duplicate {
		c.undoKey(ctx, adm) // not queued: its slot and lease are free again
	}
	return t, err
}

// queue records a job (Job.Record) and publishes env.
func (c *Core) queue(ctx context.Context, ck *Checked, env *schema.Envelope, t Ticket) (Ticket, error) {
	if ck.Job != nil {
		env.Job, env.ResultsSubject = true, ck.Job.ResultsSubject
		if ck.Job.Record {
			st, known, err := c.jobs.Record(ctx, env)
			if err != nil {
				return t, c.publishError(ctx, ck.ID, err)
			}
			if t.JobState = st; known {
				t.Duplicate = true
				return t, nil
			}
		}
	}
	seq, dup, err := c.publish(ctx, ck, env)
	if err != nil && ck.Job != nil && ck.Job.Record {
		c.jobs.Forget(context.WithoutCancel(ctx), ck.ID)
	}
	t.Seq, t.Duplicate = seq, dup
	if err == nil && !dup && ck.Job != nil && ck.Job.Record {
		// Where the job stands in its lane, for GET /v1/queue/jobs/{id};
		// without it the job only has no position.
		if st, err := c.jobs.Queued(ctx, ck.ID, seq, t.Subject); err != nil {
			c.log.Warn("could not record a job's place in the queue", "request_id", ck.ID, "error", err)
		} else {
			t.JobState = st
		}
	}
	return t, err
}

// CheckMedia runs the multimodal check (images, PDFs) on a checked
// request, for a door that keeps the outcome (a batch's plan) and then
// admits with MediaChecked.
func (c *Core) CheckMedia(ctx context.Context, ck *Checked) error { return c.checkMedia(ctx, ck) }

func (c *Core) checkMedia(ctx context.Context, ck *Checked) error {
	report, err := c.media.Check(ctx, ck.Chat)
	if err != nil {
		if ctx.Err() != nil {
			return CallerGone(ctx.Err())
		}
		return err
	}
	for _, w := range report.Warnings {
		c.log.Info("request accepted with a warning", "request_id", ck.ID, "door", ck.Door, "param", w.Param, "warning", w.Message)
	}
	return nil
}

// msgID is the Nats-Msg-Id of an admitted request: a retry within the
// duplicate window is not queued again. It never equals an id a producer
// publishes on the submit subjects, which share the stream's window.
func msgID(ck *Checked) string {
	switch {
	case ck.Job != nil:
		return "job." + ck.ID
	case ck.AnswerKey != "":
		return "idem." + ck.AnswerKey
	}
	return "req." + ck.ID
}

// publish stores a large body, then publishes env, and returns its
// stream sequence. dup reports a request with the same Nats-Msg-Id
// already queued.
func (c *Core) publish(ctx context.Context, ck *Checked, env *schema.Envelope) (seq uint64, dup bool, err error) {
	if len(env.Request) > c.cfg.InlineMax {
		if err := c.storeBody(ctx, env.ID, env.Request); err != nil {
			return 0, false, err
		}
		env.Request, env.RequestRef = nil, env.ID
	}
	data, err := json.Marshal(env)
	if err != nil {
		return 0, false, fmt.Errorf("encode envelope: %w", err)
	}
	msg := &nats.Msg{Subject: ck.Lane.Subject(), Data: data, Header: nats.Header{}}
	if ck.ReplyTo != "" {
		msg.Header.Set(schema.HeaderReplyTo, ck.ReplyTo)
	}
	msg.Header.Set(schema.HeaderMsgID, msgID(ck))
	c.cfg.Tracer.Inject(ctx, msg.Header) // traceparent, tracestate; nothing with tracing off
	pctx, cancel := context.WithTimeout(ctx, c.cfg.PublishTimeout)
	defer cancel()
	// Retried across a stream leader election until PublishTimeout; the
	// Nats-Msg-Id keeps a retry from queuing it twice.
	ack, maybeStored, err := failover.Publish(pctx, c.js, msg)
	if err != nil {
		if env.RequestRef != "" {
			c.dropBody(env.RequestRef)
		}
		return 0, false, c.publishError(ctx, env.ID, err)
	}
	if !ack.Duplicate {
		return ack.Sequence, false, nil
	}
	// Another request with this idempotency key holds the queue: its body
	// is its own, under its own id. Not so where the id is the request's
	// own for good (a job, a batch line: one id, one body), nor after an
	// attempt that may have stored this very message.
	if env.RequestRef != "" && ck.Job == nil && ck.Line == nil && !maybeStored {
		c.dropBody(env.RequestRef)
	}
	// A plain request's Nats-Msg-Id is its own: a duplicate can only be
	// this very message, stored by an attempt whose ack was lost.
	return ack.Sequence, ck.Job != nil || ck.AnswerKey != "", nil
}

// retry runs op with failover.Retry within patience: a bucket's stream
// rides out a leader election as the request stream does.
func (c *Core) retry(ctx context.Context, patience, attempt time.Duration, op func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, patience)
	defer cancel()
	_, err := failover.Retry(ctx, attempt, op)
	return err
}

// storeBody puts a body too large for a queue message in the object store,
// under the request id; the worker deletes it when the job ends.
func (c *Core) storeBody(ctx context.Context, id string, body []byte) error {
	// A large body takes a while to store: one attempt may take all the
	// patience; only an attempt that fails fast (no leader, no responders)
	// is tried again.
	patience := c.cfg.PublishTimeout + time.Duration(len(body)>>20)*time.Second
	err := c.retry(ctx, patience, patience, func(ctx context.Context) error {
		_, err := c.bodies.PutBytes(ctx, id, body)
		return err
	})
	if err != nil {
		if errors.Is(err, context.Canceled) {
			return CallerGone(err)
		}
		return &schema.Error{
			Status: http.StatusServiceUnavailable, Type: schema.TypeServer, Code: schema.CodeQueueUnavailable,
			Message: "The store for large requests is unavailable or full; try again shortly.", RetryAfter: 1,
			Cause: fmt.Errorf("store body of %s (%d bytes): %w", id, len(body), err),
		}
	}
	return nil
}

// dropBody deletes a stored body whose request was not queued.
func (c *Core) dropBody(ref string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.bodies.Delete(ctx, ref); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
		c.log.Warn("could not delete the body of a request that was not queued", "request_id", ref, "error", err)
	}
}

// publishError maps a failed publish (or job record) to the caller's error.
func (c *Core) publishError(ctx context.Context, id string, err error) error {
	switch {
	case errors.Is(err, context.Canceled) && ctx.Err() != nil:
		return CallerGone(err)
	case queueFull(err):
		return &schema.Error{
			Status: http.StatusTooManyRequests, Type: schema.TypeRateLimit, Code: schema.CodeQueueFull,
			Message: "The request queue is full; retry after the time in Retry-After.", RetryAfter: 1,
			Cause: fmt.Errorf("publish %s: %w", id, err),
		}
	}
	return &schema.Error{
		Status: http.StatusServiceUnavailable, Type: schema.TypeServer, Code: schema.CodeQueueUnavailable,
		Message: "The request queue is unavailable; try again shortly.", RetryAfter: 1,
		Cause: fmt.Errorf("publish %s: %w", id, err),
	}
}

// StatusClientClosed is the status of a caller that went away before its
// answer: nginx's 499, as the HTTP API logs it.
const StatusClientClosed = 499

// CallerGone is the error of a caller that went away.
func CallerGone(cause error) *schema.Error {
	return &schema.Error{Status: StatusClientClosed, Type: schema.TypeInvalidRequest, Message: "client closed request", Cause: cause}
}

// queueFull reports a publish refused because the stream is at its
// MaxMsgs or MaxBytes (it discards new messages). The server gives these the
// generic store-failure code, so the description tells them apart.
func queueFull(err error) bool {
	var api *jetstream.APIError
	if !errors.As(err, &api) || api.ErrorCode != jsErrStoreFailed {
		return false
	}
	return strings.Contains(api.Description, "maximum messages exceeded") || strings.Contains(api.Description, "maximum bytes exceeded")
}

// jsErrStoreFailed is nats-server's JSStreamStoreFailedF.
const jsErrStoreFailed jetstream.ErrorCode = 10077
