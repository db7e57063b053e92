package admission

import (
	"context"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/laas-bridge/laas-bridge/internal/tracing"
	"github.com/laas-bridge/laas-bridge/queue"
	"github.com/laas-bridge/laas-bridge/schema"
)

// With tracing off (no Tracer), the lane message carries no trace
// context, even when the door's context holds a span.
func TestAdmitTracingOffAddsNoHeader(t *testing.T) {
	c, q := openCore(t, queue.Config{Memory: true}, Config{})
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	ctx, span := tp.Tracer("door").Start(context.Background(), "door")
	ck, err := c.Check(Request{ID: "off1", Door: DoorChat, Body: []byte(chat), Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Admit(ctx, ck); err != nil {
		t.Fatal(err)
	}
	span.End()
	m := queued(t, q.JS, schema.SubjectInteractive)[0]
	if m.Header.Get(schema.HeaderTraceparent) != "" || m.Header.Get(schema.HeaderTracestate) != "" {
		t.Errorf("tracing off, but the lane message has trace headers: %v", m.Header)
	}
	if got := len(exp.GetSpans()); got != 1 { // the test's own span only
		t.Errorf("%d spans recorded, want only the door's", got)
	}
}

// With tracing on, Admit runs in an admission span, a child of the door's,
// and the lane message carries its context.
func TestAdmitTracingOnInjectsContext(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tr := tracing.New(sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp)))
	c, q := openCore(t, queue.Config{Memory: true}, Config{Tracer: tr})
	ctx, door := tr.Start(context.Background(), "door")
	ck, err := c.Check(Request{ID: "on1", Door: DoorChat, Body: []byte(chat), Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Admit(ctx, ck); err != nil {
		t.Fatal(err)
	}
	door.End()
	var adm tracetest.SpanStub
	for _, s := range exp.GetSpans() {
		if s.Name == SpanAdmission {
			adm = s
		}
	}
	if adm.Parent.SpanID() != door.SpanContext().SpanID() || adm.SpanKind != trace.SpanKindProducer {
		t.Fatalf("admission span %+v: want a producer span, child of the door's", adm)
	}
	m := queued(t, q.JS, schema.SubjectInteractive)[0]
	want := "00-" + adm.SpanContext.TraceID().String() + "-" + adm.SpanContext.SpanID().String() + "-01"
	if got := m.Header.Get(schema.HeaderTraceparent); got != want {
		t.Errorf("traceparent %q, want the admission span's %q", got, want)
	}
}

// A Batch API line's admission span links to the span of the request that
// created its batch (BatchLine.Traceparent); it is in a trace of its own.
func TestAdmitBatchLineLinksToBatch(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tr := tracing.New(sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp)))
	c, _ := openCore(t, queue.Config{Memory: true}, Config{Tracer: tr})
	const batchTrace, batchSpan = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	ck, err := c.Check(Request{ID: "batch_b1-0", Door: DoorBatch, Lane: Batch, Body: []byte(chat), Timeout: time.Minute,
		Line: &BatchLine{BatchID: "batch_b1", Line: 0, Traceparent: "00-" + batchTrace + "-" + batchSpan + "-01"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Admit(context.Background(), ck); err != nil {
		t.Fatal(err)
	}
	spans := exp.GetSpans()
	if len(spans) != 1 || spans[0].Name != SpanAdmission {
		t.Fatalf("spans %v, want one admission span", spans)
	}
	s := spans[0]
	if len(s.Links) != 1 || s.Links[0].SpanContext.TraceID().String() != batchTrace || s.Links[0].SpanContext.SpanID().String() != batchSpan {
		t.Errorf("links %+v, want one to %s/%s", s.Links, batchTrace, batchSpan)
	}
	if s.SpanContext.TraceID().String() == batchTrace || s.Parent.IsValid() {
		t.Errorf("the line's span is in the batch's trace (%v) or has a parent (%v)", s.SpanContext.TraceID(), s.Parent)
	}
}
