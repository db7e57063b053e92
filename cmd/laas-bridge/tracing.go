package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/laas-bridge/laas-bridge/internal/tracing"
)

// traceFlushTimeout bounds the export of the spans still buffered at exit.
const traceFlushTimeout = 5 * time.Second

// startTracing starts OpenTelemetry tracing for role when the standard
// OTEL_* environment asks for it (tracing.Setup); stop flushes the spans
// still buffered. Off, the tracer is nil and stop does nothing.
func startTracing(ctx context.Context, role string, log *slog.Logger) (t *tracing.Tracer, stop func(), err error) {
	if t, err = tracing.Setup(ctx, role); err != nil || t == nil {
		return nil, func() {}, err
	}
	log.Info("tracing on: spans are exported over OTLP/HTTP")
	return t, func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), traceFlushTimeout)
		defer cancel()
		if err := t.Shutdown(ctx); err != nil {
			log.Warn("could not export the last spans", "error", err)
		}
	}, nil
}
