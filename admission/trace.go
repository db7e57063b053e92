package admission

// This file holds the admission span: with tracing on, each Admit runs in
// a span named SpanAdmission, a child of the door's span (the HTTP
// request's), whose context publish puts on the lane message.

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/laas-bridge/laas-bridge/schema"
)

// SpanAdmission names the span of one Admit.
const SpanAdmission = "laas-bridge.admission"

// Span attributes set by the admission core (and by the worker, which
// names the same request).
const (
	AttrRequestID = "laas_bridge.request_id"
	AttrDoor      = "laas_bridge.door"
	AttrLane      = "laas_bridge.lane"
	AttrModel     = "laas_bridge.model"
	AttrOutcome   = "laas_bridge.admission.outcome" // queued, duplicate, answered (a kept answer), refused
	AttrBatchID   = "laas_bridge.batch_id"
	AttrBatchLine = "laas_bridge.batch_line" // from 0
)

// admitTraced is admit in an admission span.
func (c *Core) admitTraced(ctx context.Context, ck *Checked) (Ticket, error) {
	ctx, span := c.cfg.Tracer.Start(ctx, SpanAdmission, trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(
			attribute.String(AttrRequestID, ck.ID),
			attribute.String(AttrDoor, string(ck.Door)),
			attribute.String(AttrLane, string(ck.Lane)),
			attribute.String(AttrModel, ck.Model.Alias),
			attribute.String("messaging.system", "nats"),
			attribute.String("messaging.destination.name", ck.Lane.Subject()),
		))
	defer span.End()
	if ck.Line != nil {
		span.SetAttributes(attribute.String(AttrBatchID, ck.Line.BatchID), attribute.Int(AttrBatchLine, ck.Line.Line))
		if l, ok := c.cfg.Tracer.LinkTo(ck.Line.Traceparent); ok {
			span.AddLink(l) // to the span of the request that created the batch
		}
	}
	t, err := c.admit(ctx, ck)
	outcome := "queued"
	switch {
	case err != nil:
		outcome = "refused"
		e := schema.AsError(err)
		span.SetAttributes(attribute.Int("http.response.status_code", e.Status), attribute.String("error.type", e.Code))
		span.SetStatus(codes.Error, e.Message)
	case t.Answer != nil:
		outcome = "answered"
	case t.Duplicate:
		outcome = "duplicate"
	}
	span.SetAttributes(attribute.String(AttrOutcome, outcome))
	return t, err
}
