package tracing

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

func TestConfigured(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		want bool
	}{
		{"nothing set", nil, false},
		{"endpoint", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, true},
		{"traces endpoint", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, true},
		{"service name alone", map[string]string{"OTEL_SERVICE_NAME": "gw"}, false},
		{"sdk disabled", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}, false},
		{"sdk not disabled", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "false"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Configured(func(k string) string { return tc.env[k] }); got != tc.want {
				t.Errorf("Configured = %v, want %v", got, tc.want)
			}
		})
	}
}

// With no endpoint in the environment, Setup installs nothing.
func TestSetupOffWhenUnset(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
	tr, err := Setup(context.Background(), "gateway")
	if err != nil || tr != nil || tr.Enabled() {
		t.Fatalf("Setup = %v, %v; want nil, nil (off)", tr, err)
	}
	if err := tr.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// A nil Tracer costs nothing: no header written, no allocation.
func TestNilTracerDoesNothing(t *testing.T) {
	var tr *Tracer
	ctx := context.Background()
	h := nats.Header{}
	allocs := testing.AllocsPerRun(100, func() {
		c, span := tr.Start(ctx, "x")
		span.End()
		tr.Inject(c, h)
		_ = tr.Extract(c, h)
	})
	if allocs != 0 || len(h) != 0 {
		t.Errorf("nil tracer: %v allocations, headers %v; want none", allocs, h)
	}
}

func newTestTracer(t *testing.T) (*Tracer, *tracetest.InMemoryExporter) {
	exp := tracetest.NewInMemoryExporter()
	tr := New(sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp)))
	t.Cleanup(func() { _ = tr.Shutdown(context.Background()) })
	return tr, exp
}

// The context crosses a NATS header as lower-case traceparent and
// tracestate, and a span started from the extracted context is in the
// same trace.
func TestInjectExtractRoundTrip(t *testing.T) {
	tr, _ := newTestTracer(t)
	ctx, span := tr.Start(context.Background(), "gateway")
	defer span.End()
	h := nats.Header{}
	tr.Inject(ctx, h)
	if h["traceparent"] == nil {
		t.Fatalf("no lower-case traceparent header: %v", h)
	}
	_, child := tr.Start(tr.Extract(context.Background(), h), "worker")
	defer child.End()
	got, want := child.SpanContext(), span.SpanContext()
	if got.TraceID() != want.TraceID() || got.SpanID() == want.SpanID() {
		t.Errorf("child %v of %v: want the same trace, another span", got, want)
	}
}

// A malformed traceparent is ignored: the next span starts a new trace.
func TestMalformedTraceparentStartsNewTrace(t *testing.T) {
	tr, _ := newTestTracer(t)
	for _, v := range []string{"garbage", "00-00000000000000000000000000000000-0000000000000000-01", "00-abc-def-01"} {
		ctx := tr.Extract(context.Background(), nats.Header{"traceparent": []string{v}})
		if trace.SpanContextFromContext(ctx).IsValid() {
			t.Errorf("%q extracted as a valid span context", v)
		}
		_, span := tr.Start(ctx, "s")
		if !span.SpanContext().IsValid() {
			t.Errorf("%q: the span after it has no valid context", v)
		}
		span.End()
	}
}

// A span's Traceparent, kept and linked to later, names that span; an
// empty or malformed one links nowhere, and a nil Tracer keeps nothing.
func TestTraceparentAndLinkTo(t *testing.T) {
	tr, _ := newTestTracer(t)
	ctx, span := tr.Start(context.Background(), "create batch")
	span.End()
	tp := tr.Traceparent(ctx)
	l, ok := tr.LinkTo(tp)
	if !ok || l.SpanContext.TraceID() != span.SpanContext().TraceID() || l.SpanContext.SpanID() != span.SpanContext().SpanID() {
		t.Errorf("LinkTo(%q) = %v, %v; want the span %v", tp, l.SpanContext, ok, span.SpanContext())
	}
	for _, bad := range []string{"", "garbage"} {
		if _, ok := tr.LinkTo(bad); ok {
			t.Errorf("LinkTo(%q) links", bad)
		}
	}
	var off *Tracer
	if off.Traceparent(ctx) != "" {
		t.Error("a nil Tracer keeps a traceparent")
	}
	if _, ok := off.LinkTo(tp); ok {
		t.Error("a nil Tracer links")
	}
}
