// Package tracing sets up OpenTelemetry traces for a laas-bridge process
// and carries a trace's context across the queue, in the W3C Trace Context
// headers (traceparent, tracestate) of a NATS message.
//
// Tracing is on only when an OTLP endpoint is configured
// (OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) and
// OTEL_SDK_DISABLED is not true. Off, Setup returns a nil *Tracer, and
// every method of a nil *Tracer does nothing: callers check Enabled (or a
// nil Tracer) and skip their tracing work, so the request path pays
// nothing for it. On, the standard SDK reads the rest of the standard
// environment itself: the exporter's endpoint, headers, compression and
// timeout (OTEL_EXPORTER_OTLP_*), the service name (OTEL_SERVICE_NAME,
// OTEL_RESOURCE_ATTRIBUTES), the sampler (OTEL_TRACES_SAMPLER,
// OTEL_TRACES_SAMPLER_ARG) and the batch processor (OTEL_BSP_*).
package tracing
