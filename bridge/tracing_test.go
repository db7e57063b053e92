package bridge

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/laas-bridge/laas-bridge/admission"
	"github.com/laas-bridge/laas-bridge/internal/tracing"
	"github.com/laas-bridge/laas-bridge/schema"
)

// traceWorker answers queued requests like fakeWorker and keeps each
// message's traceparent by request id.
func (f *fixture) traceWorker(t *testing.T, ctx context.Context) *sync.Map {
	t.Helper()
	nc := f.q.Connect(t)
	var seen sync.Map
	go func() {
		for ctx.Err() == nil {
			batch, err := f.q.Consumer.Fetch(1, jetstream.FetchMaxWait(100*time.Millisecond))
			if err != nil {
				continue
			}
			for m := range batch.Messages() {
				var env schema.Envelope
				if err := json.Unmarshal(m.Data(), &env); err != nil {
					t.Errorf("envelope: %v", err)
					continue
				}
				seen.Store(env.ID, m.Headers().Get(schema.HeaderTraceparent))
				data, _ := json.Marshal(echoAnswer(env))
				_ = nc.Publish(m.Headers().Get(schema.HeaderReplyTo), data)
				_ = m.Ack()
			}
		}
	}()
	return &seen
}

// With tracing on, a chat request runs in a server span that continues
// the caller's traceparent; a missing or malformed one starts a new trace
// and the request is answered all the same. The lane message carries the
// admission span's context, in the same trace.
func TestChatTraceContinuesOrStarts(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	f := newFixture(t, Config{Tracer: tracing.New(sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp)))})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	seen := f.traceWorker(t, ctx)
	const callerTrace, callerSpan = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	for _, tc := range []struct {
		name, traceparent string
		continues         bool
	}{
		{"caller's trace", "00-" + callerTrace + "-" + callerSpan + "-01", true},
		{"malformed", "00-not-a-trace-01", false},
		{"all-zero trace id", "00-00000000000000000000000000000000-" + callerSpan + "-01", false},
		{"none", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			exp.Reset()
			var hdr []string
			if tc.traceparent != "" {
				hdr = []string{"traceparent", tc.traceparent}
			}
			resp, body := f.do(t, "POST", "/v1/chat/completions", chatBody("claude-3.5-sonnet", "hi"), hdr...)
			if resp.StatusCode != 200 {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			id := resp.Header.Get(HeaderRequestID)
			// The server span ends just after the answer is written.
			var server, adm tracetest.SpanStub
			for end := time.Now().Add(5 * time.Second); !server.SpanContext.IsValid() && time.Now().Before(end); time.Sleep(time.Millisecond) {
				for _, s := range exp.GetSpans() {
					switch {
					case s.SpanKind == trace.SpanKindServer:
						server = s
					case s.Name == admission.SpanAdmission:
						adm = s
					}
				}
			}
			tid := server.SpanContext.TraceID()
			if !tid.IsValid() || server.Name != "POST /v1/chat/completions" {
				t.Fatalf("server span %q with trace %v", server.Name, tid)
			}
			if got := tid.String() == callerTrace && server.Parent.SpanID().String() == callerSpan; got != tc.continues {
				t.Errorf("server span in trace %v with parent %v: continues the caller's = %v, want %v",
					tid, server.Parent.SpanID(), got, tc.continues)
			}
			if !tc.continues && server.Parent.IsValid() {
				t.Errorf("a new trace's server span has a parent %v", server.Parent)
			}
			if adm.Parent.SpanID() != server.SpanContext.SpanID() {
				t.Errorf("admission span's parent %v, want the server span %v", adm.Parent.SpanID(), server.SpanContext.SpanID())
			}
			tp, _ := seen.Load(id)
			if want := "00-" + tid.String() + "-" + adm.SpanContext.SpanID().String() + "-01"; tp != want {
				t.Errorf("lane message traceparent %q, want %q", tp, want)
			}
		})
	}
}

// With tracing off, the lane message has no traceparent, whatever the
// caller sent.
func TestChatTracingOffNoHeader(t *testing.T) {
	f := newFixture(t, Config{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	seen := f.traceWorker(t, ctx)
	resp, body := f.do(t, "POST", "/v1/chat/completions", chatBody("claude-3.5-sonnet", "hi"),
		"traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	if tp, ok := seen.Load(resp.Header.Get(HeaderRequestID)); !ok || tp != "" {
		t.Errorf("lane message traceparent %q (seen %v), want none", tp, ok)
	}
}

// With tracing on, a batch keeps the trace context of the request that
// created it, for its lines' admission spans to link to.
func TestCreateBatchKeepsTraceparent(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	f := newFixture(t, Config{Tracer: tracing.New(sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp)))})
	file := f.upload(t, "any")
	const callerTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	resp, body := f.do(t, "POST", "/v1/batches", batchRequest(file), "traceparent", "00-"+callerTrace+"-00f067aa0ba902b7-01")
	var b schema.Batch
	if resp.StatusCode != 200 || json.Unmarshal(body, &b) != nil {
		t.Fatalf("create batch: %d %s", resp.StatusCode, body)
	}
	rec, _, err := f.gw.batches.Batch(context.Background(), b.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(rec.Traceparent, "00-"+callerTrace+"-") || strings.Contains(rec.Traceparent, "00f067aa0ba902b7") {
		t.Errorf("batch record traceparent %q, want the create request's server span in trace %s", rec.Traceparent, callerTrace)
	}
}

// A direct producer's traceparent is the parent of its job's admission
// span.
func TestProducerTraceparentContinued(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	f := newFixture(t, Config{Tracer: tracing.New(sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp)))})
	d, err := f.gw.startProducers(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer d.stop()
	const producerTrace, producerSpan = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	data, _ := json.Marshal(schema.Envelope{ID: "job1", Model: "claude-3.5-sonnet", Request: json.RawMessage(chatBody("claude-3.5-sonnet", "hi"))})
	msg := &nats.Msg{Subject: schema.SubjectSubmit, Data: data, Header: nats.Header{
		schema.HeaderMsgID: []string{"job1"}, schema.HeaderTraceparent: []string{"00-" + producerTrace + "-" + producerSpan + "-01"}}}
	if _, err := f.q.JS.PublishMsg(context.Background(), msg); err != nil {
		t.Fatal(err)
	}
	var adm tracetest.SpanStub
	for end := time.Now().Add(5 * time.Second); adm.Name == "" && time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		for _, s := range exp.GetSpans() {
			if s.Name == admission.SpanAdmission {
				adm = s
			}
		}
	}
	if adm.SpanContext.TraceID().String() != producerTrace || adm.Parent.SpanID().String() != producerSpan {
		t.Errorf("admission span %q in trace %v with parent %v, want the producer's %s/%s", adm.Name, adm.SpanContext.TraceID(), adm.Parent.SpanID(), producerTrace, producerSpan)
	}
}

// TestAccessLogTraceIDFromSpan: with tracing on, a request's access line
// names the trace its server span is in, also when the caller sent no
// traceparent (the trace started at the gateway).
func TestAccessLogTraceIDFromSpan(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	logs := &syncBuffer{}
	f := newFixture(t, Config{Tracer: tracing.New(sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))), AccessLog: NewAccessLog(logs)})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f.traceWorker(t, ctx)
	resp, body := f.do(t, "POST", "/v1/chat/completions", chatBody("claude-3.5-sonnet", "hi"))
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	var server trace.SpanContext
	for deadline := time.Now().Add(5 * time.Second); !server.IsValid(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no server span within 5s among %d", len(exp.GetSpans()))
		}
		for _, s := range exp.GetSpans() { // it ends once the answer is written
			if s.SpanKind == trace.SpanKindServer {
				server = s.SpanContext
			}
		}
	}
	if line := accessLineOf(t, logs, resp.Header.Get(HeaderRequestID)); line["trace_id"] != server.TraceID().String() {
		t.Fatalf("access line %v, want trace_id %s", line, server.TraceID())
	}
}
