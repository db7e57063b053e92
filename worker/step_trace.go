package worker

// This file holds the tracing step and the spans it starts (with
// WithTracer only; tracing off, the step is not in the chain and j.span
// stays nil): the job continues the trace whose context the lane message
// carries (traceparent, tracestate, set by the admission core), with
//   - SpanQueue, from the envelope's EnqueuedAt to the delivery's receipt:
//     the same two instants as the reply's QueueMs (X-Laas-Bridge-Queue-Ms);
//   - SpanJob, the delivery's handling, parent of
//   - SpanCall, the LaaS call (status, attempt, retry, rate-limit wait),
//   - SpanReply, the answer's publishing, keeping and ack (finish).

import (
	"context"
	"errors"
	"net/http"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/laas-bridge/laas-bridge/laas"
	"github.com/laas-bridge/laas-bridge/schema"
)

// Span names of a job.
const (
	SpanQueue = "laas-bridge.queue"
	SpanJob   = "laas-bridge.job"
	SpanCall  = "laas.call"
	SpanReply = "laas-bridge.reply"
)

// Span attributes of a job.
const (
	AttrRequestID     = "laas_bridge.request_id"
	AttrModel         = "laas_bridge.model"
	AttrLane          = "laas_bridge.lane"
	AttrQueueMs       = "laas_bridge.queue_ms"
	AttrAttempt       = "laas.attempt"
	AttrRetry         = "laas.retry" // this attempt retries an earlier one
	AttrRateLimitWait = "laas.rate_limit_wait_ms"
	AttrRetryDelay    = "laas.retry_delay_ms"
	AttrReplyStatus   = "laas_bridge.reply.status"
)

// traceJob starts the job's spans once its envelope is decoded.
func (p *Pool) traceJob(next handlerFunc) handlerFunc {
	t := p.tracer
	if !t.Enabled() {
		return next
	}
	return func(ctx context.Context, j *job) {
		parent := t.Extract(ctx, j.msg.Headers())
		ids := []attribute.KeyValue{
			attribute.String(AttrRequestID, j.env.ID),
			attribute.String(AttrModel, j.env.Model),
			attribute.String(AttrLane, string(j.lane)),
			attribute.Int(AttrAttempt, j.attempt),
		}
		if !j.env.EnqueuedAt.IsZero() {
			_, q := t.Start(parent, SpanQueue, trace.WithSpanKind(trace.SpanKindConsumer),
				trace.WithTimestamp(j.env.EnqueuedAt), trace.WithAttributes(ids...),
				trace.WithAttributes(attribute.String("messaging.system", "nats"),
					attribute.String("messaging.destination.name", j.msg.Subject()),
					attribute.Int64(AttrQueueMs, queueMs(j))))
			q.End(trace.WithTimestamp(j.received))
		}
		ctx, j.span = t.Start(parent, SpanJob, trace.WithSpanKind(trace.SpanKindConsumer),
			trace.WithTimestamp(j.received), trace.WithAttributes(ids...))
		defer j.span.End()
		next(ctx, j)
	}
}

// queueMs is how long j waited in the queue, in whole milliseconds: the
// reply's QueueMs, from the same two instants as SpanQueue.
func queueMs(j *job) int64 { return max(0, j.received.Sub(j.env.EnqueuedAt).Milliseconds()) }

// traceCall records the LaaS call that started at start and took upstream,
// ending with err.
func (p *Pool) traceCall(j *job, start time.Time, upstream time.Duration, err error) {
	status := http.StatusOK
	if err != nil {
		status = 0 // no answer: a timeout, a refused connection, a cancel
		if ue, ok := errors.AsType[*laas.UpstreamError](err); ok {
			status = ue.Status
		}
	}
	_, span := p.tracer.Start(trace.ContextWithSpan(context.Background(), j.span), SpanCall,
		trace.WithSpanKind(trace.SpanKindClient), trace.WithTimestamp(start),
		trace.WithAttributes(
			attribute.Int(AttrAttempt, j.attempt),
			attribute.Bool(AttrRetry, j.attempt > 1),
			attribute.Int64(AttrRateLimitWait, j.rateWait.Milliseconds()),
			attribute.String(AttrModel, j.model.Alias),
		))
	if status != 0 {
		span.SetAttributes(attribute.Int("http.response.status_code", status))
	}
	if err != nil {
		// The error's code only: its text may quote LaaS's answer, which
		// may echo the prompt, and traces often leave the company.
		code := schema.AsError(err).Code
		span.SetAttributes(attribute.String("error.type", code))
		span.SetStatus(codes.Error, code)
	}
	span.End(trace.WithTimestamp(start.Add(upstream)))
}

// traceRetry notes on the job's span that a failed call is handed back
// for another attempt after delay.
func traceRetry(j *job, delay time.Duration) {
	if j.span != nil {
		j.span.AddEvent("retry scheduled", trace.WithAttributes(attribute.Int64(AttrRetryDelay, delay.Milliseconds())))
	}
}

// startReplySpan starts the span of finish: the reply rep published (or
// kept, for a job), the delivery acknowledged.
func (p *Pool) startReplySpan(j *job, rep *schema.Reply) trace.Span {
	_, span := p.tracer.Start(trace.ContextWithSpan(context.Background(), j.span), SpanReply,
		trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(attribute.Int(AttrReplyStatus, rep.Status), attribute.Int64(AttrQueueMs, rep.QueueMs)))
	return span
}
