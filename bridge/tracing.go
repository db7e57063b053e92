package bridge

// This file holds the gateway's server span: with tracing on
// (Config.Tracer), every HTTP request runs in a span that continues the
// caller's traceparent, or starts a trace when it has none or a malformed
// one; the admission core's span and the lane message's trace context hang
// below it.

import (
	"github.com/labstack/echo/v4"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// traceRequests runs each request in a server span named by its method and
// route. With tracing off it is not in the chain at all.
func (g *Gateway) traceRequests(next echo.HandlerFunc) echo.HandlerFunc {
	t := g.cfg.Tracer
	if !t.Enabled() {
		return next
	}
	return func(c echo.Context) (err error) {
		r := c.Request()
		route := c.Path()
		if route == "" {
			route = "unmatched"
		}
		ctx := t.ExtractHTTP(r.Context(), propagation.HeaderCarrier(r.Header))
		ctx, span := t.Start(ctx, r.Method+" "+route, trace.WithSpanKind(trace.SpanKindServer),
			trace.WithAttributes(
				attribute.String("http.request.method", r.Method),
				attribute.String("http.route", route),
				attribute.String("url.path", r.URL.Path),
			))
		defer span.End()
		c.SetRequest(r.WithContext(ctx))
		err = next(c)
		status := c.Response().Status
		if err != nil {
			// What handleError will answer; a streamed answer under way
			// keeps its 200 unless the caller left (as observe counts it).
			if e := g.toError(err, r); !c.Response().Committed || e.Status == statusClientClosed {
				status = e.Status
			}
		}
		span.SetAttributes(attribute.Int("http.response.status_code", status),
			attribute.String("laas_bridge.request_id", c.Response().Header().Get(HeaderRequestID)))
		if status >= 500 {
			span.SetStatus(codes.Error, "")
		}
		return err
	}
}
