package worker

import (
	"context"
	"encoding/json"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/laas-bridge/laas-bridge/schema"
)

// benchHandlerPool is a pool without NATS whose LaaS answers at once and
// whose replies go nowhere: what is left is the worker's own work on a job.
func benchHandlerPool(b *testing.B, opts ...Option) *Pool {
	cfg := Config{}
	cfg.setDefaults()
	resp := &schema.LaaSResponse{ID: "up", Object: "chat.completion", Created: 1_700_000_000_000, Choices: []schema.LaaSChoice{{}}}
	resp.Choices[0].Message.Content = schema.Content{Text: "Hello, benchmark!"}
	p := &Pool{cfg: cfg, log: slog.New(slog.DiscardHandler), ackWait: 30 * time.Second, maxDeliver: 3,
		inlineMax: 512 << 10, answers: &fakeKV{values: map[string][]byte{}}, bodies: &fakeStore{objects: map[string][]byte{}},
		cancels: newCancelSet(time.Hour, maxCancelled, nil),
		up:      upstreamFunc(func(context.Context, *schema.LaaSRequest) (*schema.LaaSResponse, error) { return resp, nil })}
	p.catalog.Store(catalog(b))
	for _, o := range opts {
		o(p)
	}
	p.send = func(string, []byte) error { return nil }
	p.handler = p.newHandler()
	return p
}

// benchHandle runs b.N deliveries of one request through p's steps, each
// with a caller's traceparent on its message.
func benchHandle(b *testing.B, p *Pool) {
	now := time.Now()
	data, _ := json.Marshal(schema.Envelope{ID: "r1", Model: "m", EnqueuedAt: now, Deadline: now.Add(time.Hour), Request: json.RawMessage(benchChat)})
	ctx := context.Background()
	b.ReportAllocs()
	cpu := processCPU(b)
	for b.Loop() {
		msg := &fakeMsg{subject: schema.SubjectInteractive, data: data, header: nats.Header{
			schema.HeaderReplyTo:     []string{"laas.reply.bench.r1"},
			schema.HeaderTraceparent: []string{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
		}}
		p.handle(ctx, msg)
	}
	b.ReportMetric(float64(processCPU(b)-cpu)/float64(b.N), "cpu-ns/op")
}

// BenchmarkHandleTracingOff is one job through every step of the worker,
// decode to reply and ack, with tracing off (the default): the message's
// traceparent is not read. Compare with the same benchmark before tracing
// existed, and with BenchmarkHandleTracingOn.
func BenchmarkHandleTracingOff(b *testing.B) { benchHandle(b, benchHandlerPool(b)) }

// BenchmarkHandleNoConcurrencyCap is BenchmarkHandleTracingOff with the
// concurrency-cap step in place, as every worker runs it, and no cap set
// (no BRIDGE_LAAS_MAX_CONCURRENCY, no max_parallel_requests): the step
// must cost nothing a benchmark can see, no allocation and no bucket
// round trip (the zero KVCap has no bucket at all).
func BenchmarkHandleNoConcurrencyCap(b *testing.B) {
	benchHandle(b, benchHandlerPool(b, WithConcurrencyCap(&KVCap{})))
}
