package worker

// This file holds the decode step: the delivery's envelope is read and
// checked, and a message that is not a valid request is terminated.

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/laas-bridge/laas-bridge/schema"
)

// decode fills j from its message (envelope, reply subject, attempt,
// lane) and terminates a message that is not a valid request.
func (p *Pool) decode(next handlerFunc) handlerFunc {
	return func(ctx context.Context, j *job) {
		j.replyTo = j.msg.Headers().Get(schema.HeaderReplyTo)
		j.lane = laneOf(j.msg.Subject())
		if md, err := j.msg.Metadata(); err == nil {
			j.attempt = int(md.NumDelivered)
		}
		if err := decodeEnvelope(j); err != nil {
			p.log.Error("dropping a message that is not a valid request", "subject", j.msg.Subject(), "error", err)
			_ = j.msg.Term()
			return
		}
		j.log = p.log.With("request_id", j.env.ID, "model", j.env.Model, "attempt", j.attempt)
		p.metrics.taken(j)
		next(ctx, j)
	}
}

// decodeEnvelope reads and checks the envelope. A producer that skipped the
// gateway is not trusted: the reply subject must be a reply subject, the
// large body must be the request's own, the id must be a plain token.
func decodeEnvelope(j *job) error {
	if err := json.Unmarshal(j.msg.Data(), &j.env); err != nil {
		return err
	}
	if !schema.ValidRequestID(j.env.ID) {
		return fmt.Errorf("request id %q is not 1-64 of [A-Za-z0-9_-]", j.env.ID)
	}
	if j.replyTo != "" && !schema.ValidReplySubject(j.replyTo) {
		return fmt.Errorf("%s %q is not a reply subject", schema.HeaderReplyTo, j.replyTo)
	}
	if j.env.RequestRef != "" && j.env.RequestRef != j.env.ID {
		return fmt.Errorf("request_ref %q is not the request's own id", j.env.RequestRef)
	}
	if j.env.Deadline.IsZero() { // a producer may leave it out: the default timeout
		start := j.env.EnqueuedAt
		if start.IsZero() {
			start = j.received
		}
		j.env.Deadline = start.Add(defaultTimeout(&j.env))
	}
	if j.env.Job {
		j.env.IdempotencyKey = "" // a job's id is its key
	}
	return nil
}
