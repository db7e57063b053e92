package tracing

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	sdkresource "go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// ScopeName is the instrumentation scope of every span the bridge makes.
const ScopeName = "github.com/laas-bridge/laas-bridge"

// DefaultServiceName is service.name when OTEL_SERVICE_NAME (or
// OTEL_RESOURCE_ATTRIBUTES) names none.
const DefaultServiceName = "laas-bridge"

// AttrRole is the resource attribute naming the process's role: serve,
// gateway or worker.
const AttrRole = "laas_bridge.role"

// Tracer makes the bridge's spans and carries their context across NATS.
// A nil *Tracer is tracing off: Start returns its context unchanged and a
// span that records nothing, Inject and Extract do nothing. Safe for
// concurrent use.
type Tracer struct {
	provider *sdktrace.TracerProvider
	tracer   trace.Tracer
	prop     propagation.TraceContext
}

// Configured reports whether the environment turns tracing on: an OTLP
// endpoint is set and the SDK is not disabled. getenv is os.Getenv in a
// process.
func Configured(getenv func(string) string) bool {
	if v, err := strconv.ParseBool(strings.TrimSpace(getenv("OTEL_SDK_DISABLED"))); err == nil && v {
		return false
	}
	return getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
}

// Setup starts tracing for a process in role (serve, gateway, worker) when
// the environment asks for it (Configured), exporting over OTLP/HTTP with
// a batch span processor; otherwise it returns nil, nil: tracing off.
// Setup does no network I/O. The caller must Shutdown a non-nil Tracer,
// which flushes the spans still buffered.
func Setup(ctx context.Context, role string) (*Tracer, error) {
	if !Configured(os.Getenv) {
		return nil, nil
	}
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		return nil, fmt.Errorf("OTLP trace exporter: %w", err)
	}
	// Later detectors win: OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES
	// override the default service name.
	res, err := sdkresource.New(ctx,
		sdkresource.WithAttributes(attribute.String("service.name", DefaultServiceName), attribute.String(AttrRole, role)),
		sdkresource.WithTelemetrySDK(),
		sdkresource.WithFromEnv(),
	)
	if err != nil {
		return nil, fmt.Errorf("trace resource: %w", err)
	}
	// The default sampler honours OTEL_TRACES_SAMPLER and _ARG, the batch
	// processor OTEL_BSP_*.
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	return New(tp), nil
}

// New is a Tracer over tp, whose processors and exporter are the
// caller's (a test's in-memory exporter); Setup builds one from the
// environment.
func New(tp *sdktrace.TracerProvider) *Tracer {
	return &Tracer{provider: tp, tracer: tp.Tracer(ScopeName)}
}

// Enabled reports whether t records spans: false for a nil Tracer.
func (t *Tracer) Enabled() bool { return t != nil }

// Shutdown exports the spans still buffered and stops the exporter; ctx
// bounds the flush. A nil Tracer has nothing to do.
func (t *Tracer) Shutdown(ctx context.Context) error {
	if t == nil {
		return nil
	}
	return t.provider.Shutdown(ctx)
}

// noopSpan is the span of a nil Tracer.
var noopSpan trace.Span = noop.Span{}

// Start starts a span named name, a child of the span in ctx if any. A nil
// Tracer returns ctx and a span that records nothing, without allocating.
func (t *Tracer) Start(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	if t == nil {
		return ctx, noopSpan
	}
	return t.tracer.Start(ctx, name, opts...)
}

// Inject writes the trace context of ctx into h as traceparent and
// tracestate (nothing when ctx holds no valid span context, or t is nil).
func (t *Tracer) Inject(ctx context.Context, h nats.Header) {
	if t == nil || h == nil {
		return
	}
	t.prop.Inject(ctx, headerCarrier(h))
}

// Extract returns ctx with the remote span context h carries, if it
// carries a valid one; a missing or malformed traceparent leaves ctx as
// it is, so the next span starts a new trace.
func (t *Tracer) Extract(ctx context.Context, h nats.Header) context.Context {
	if t == nil || h == nil {
		return ctx
	}
	return t.prop.Extract(ctx, headerCarrier(h))
}

// ExtractHTTP is Extract for an HTTP request's headers.
func (t *Tracer) ExtractHTTP(ctx context.Context, h propagation.HeaderCarrier) context.Context {
	if t == nil {
		return ctx
	}
	return t.prop.Extract(ctx, h)
}

// Traceparent is the W3C traceparent of the span in ctx, to keep with
// work that outlives the request (a batch): "" when t is nil or ctx holds
// no valid span context.
func (t *Tracer) Traceparent(ctx context.Context) string {
	if t == nil {
		return ""
	}
	c := propagation.MapCarrier{}
	t.prop.Inject(ctx, c)
	return c.Get("traceparent")
}

// LinkTo is a link to the span a kept Traceparent names; false when t is
// nil or traceparent is empty or malformed.
func (t *Tracer) LinkTo(traceparent string) (trace.Link, bool) {
	if t == nil || traceparent == "" {
		return trace.Link{}, false
	}
	sc := trace.SpanContextFromContext(t.prop.Extract(context.Background(), propagation.MapCarrier{"traceparent": traceparent}))
	return trace.Link{SpanContext: sc}, sc.IsValid()
}

// headerCarrier is a propagation.TextMapCarrier over NATS headers. NATS
// header names are case-sensitive: the keys are the propagator's own,
// lower case (schema.HeaderTraceparent, schema.HeaderTracestate).
type headerCarrier nats.Header

var _ propagation.TextMapCarrier = headerCarrier(nil)

func (c headerCarrier) Get(key string) string { return nats.Header(c).Get(key) }

func (c headerCarrier) Set(key, value string) { nats.Header(c).Set(key, value) }

func (c headerCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}
