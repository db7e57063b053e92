package worker

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/laas-bridge/laas-bridge/internal/tracing"
	"github.com/laas-bridge/laas-bridge/laas"
	"github.com/laas-bridge/laas-bridge/schema"
)

// attr is a span's attribute key's value, or an empty Value.
func attr(s tracetest.SpanStub, key string) attribute.Value {
	for _, kv := range s.Attributes {
		if string(kv.Key) == key {
			return kv.Value
		}
	}
	return attribute.Value{}
}

// A job continues the trace its message carries: per delivery a queue
// span (from EnqueuedAt to the delivery, the reply's QueueMs to the
// millisecond), a job span, a LaaS call span with its status, attempt and
// retry; a retry scheduled on the first; the reply's span on the last.
func TestPoolTracesJob(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tr := tracing.New(sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp)))
	up := &recorder{script: []error{&laas.UpstreamError{Status: 500, Body: "boom"}, nil}}
	f := startPool(t, up, Config{}, WithTracer(tr))
	const traceID, parentID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	now := time.Now()
	data, _ := json.Marshal(schema.Envelope{ID: "t1", Model: "m", EnqueuedAt: now, Deadline: now.Add(time.Minute), Request: json.RawMessage(hello)})
	msg := &nats.Msg{Subject: schema.SubjectInteractive, Data: data, Header: nats.Header{}}
	msg.Header.Set(schema.HeaderReplyTo, "laas.reply.test.t1")
	msg.Header.Set(schema.HeaderTraceparent, "00-"+traceID+"-"+parentID+"-01")
	if _, err := f.q.JS.PublishMsg(context.Background(), msg); err != nil {
		t.Fatal(err)
	}
	r := f.reply(t)
	if r.Status != 200 || r.Attempts != 2 {
		t.Fatalf("reply %+v", r)
	}
	byName := map[string][]tracetest.SpanStub{}
	waitUntil(t, "the job spans", func() bool {
		clear(byName)
		for _, s := range exp.GetSpans() {
			byName[s.Name] = append(byName[s.Name], s)
		}
		return len(byName[SpanJob]) == 2 && len(byName[SpanReply]) == 1
	})
	for name, spans := range byName {
		for _, s := range spans {
			if s.SpanContext.TraceID().String() != traceID {
				t.Errorf("%s span in trace %v, want the message's %s", name, s.SpanContext.TraceID(), traceID)
			}
		}
	}
	queue, calls := byName[SpanQueue], byName[SpanCall]
	if len(queue) != 2 || len(calls) != 2 {
		t.Fatalf("%d queue spans and %d call spans, want 2 each", len(queue), len(calls))
	}
	for _, q := range queue {
		if q.Parent.SpanID().String() != parentID || q.StartTime.UnixNano() != now.UnixNano() {
			t.Errorf("queue span parent %v start %v; want %s, %v", q.Parent.SpanID(), q.StartTime, parentID, now)
		}
	}
	last := queue[1]
	if got := last.EndTime.Sub(last.StartTime).Milliseconds(); got != r.QueueMs || attr(last, AttrQueueMs).AsInt64() != r.QueueMs {
		t.Errorf("last queue span lasted %d ms (attribute %d), reply QueueMs %d", got, attr(last, AttrQueueMs).AsInt64(), r.QueueMs)
	}
	for i, want := range []struct {
		status, attempt int64
		retry           bool
	}{{500, 1, false}, {200, 2, true}} {
		c := calls[i]
		if attr(c, "http.response.status_code").AsInt64() != want.status || attr(c, AttrAttempt).AsInt64() != want.attempt ||
			attr(c, AttrRetry).AsBool() != want.retry || attr(c, AttrRateLimitWait).Type() != attribute.INT64 {
			t.Errorf("call %d attributes %v, want status %d attempt %d retry %v", i, c.Attributes, want.status, want.attempt, want.retry)
		}
	}
	first := byName[SpanJob][0]
	if len(first.Events) != 1 || first.Events[0].Name != "retry scheduled" {
		t.Errorf("first job span's events %v, want a retry scheduled", first.Events)
	}
}
