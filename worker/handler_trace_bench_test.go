package worker

import (
	"context"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/laas-bridge/laas-bridge/internal/tracing"
)

// BenchmarkHandleTracingOn is BenchmarkHandleTracingOff with tracing on:
// the four spans of a job made and handed to a batch processor whose
// exporter drops them.
func BenchmarkHandleTracingOn(b *testing.B) {
	tr := tracing.New(sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter())))
	defer func() { _ = tr.Shutdown(context.Background()) }()
	benchHandle(b, benchHandlerPool(b, WithTracer(tr)))
}
