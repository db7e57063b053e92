package admission

import (
	"context"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/laas-bridge/laas-bridge/internal/tracing"
)

// BenchmarkAdmitTracingOn is BenchmarkAdmitTracingOff with tracing on,
// under a door's span: the admission span made (its spans dropped by the
// exporter) and the trace context put on the message.
func BenchmarkAdmitTracingOn(b *testing.B) {
	tr := tracing.New(sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter())))
	defer func() { _ = tr.Shutdown(context.Background()) }()
	ctx, span := tr.Start(context.Background(), "door")
	defer span.End()
	benchAdmit(b, Config{Tracer: tr}, ctx)
}
