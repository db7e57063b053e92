package bridge

// This file holds the access log: one JSON line per request answered, by
// the HTTP door (accessLog, a middleware) and the NATS door (micro.go).
// A line says who asked for what and how it went; it never holds a
// prompt, an answer, a key or its hash.

import (
	"io"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats.go/micro"
	"go.opentelemetry.io/otel/trace"

	"github.com/laas-bridge/laas-bridge/admission"
	"github.com/laas-bridge/laas-bridge/internal/accesslog"
	"github.com/laas-bridge/laas-bridge/keys"
)

// AccessLog writes one JSON line per request (internal/accesslog). A nil
// *AccessLog writes nothing and costs nothing.
type AccessLog = accesslog.Log

// NewAccessLog writes access lines to w.
func NewAccessLog(w io.Writer) *AccessLog { return accesslog.New(w) }

// The door field of an access line: where the request came in.
const (
	DoorHTTP = accesslog.DoorHTTP
	DoorNATS = accesslog.DoorNATS
)

// HeaderTraceparent is W3C Trace Context's header; its trace-id becomes
// the access line's trace_id.
const HeaderTraceparent = "traceparent"

// access is one access line (internal/accesslog: fields left zero are
// left out of it).
type access = accesslog.Line

// keyAlias is the alias of the caller's virtual key, "" for the admin.
func keyAlias(who keys.Caller) string {
	if who.Key == nil {
		return ""
	}
	return who.Key.KeyAlias
}

// traceID is the trace-id of a W3C traceparent header
// (version-traceid-parentid-flags, lowercase hex), or "" when the header
// is absent or invalid.
func traceID(tp string) string {
	// 2 + 1 + 32 + 1 + 16 + 1 + 2; a later version may append fields.
	if len(tp) < 55 || tp[2] != '-' || tp[35] != '-' || tp[52] != '-' || (len(tp) > 55 && tp[55] != '-') {
		return ""
	}
	version, id, parent, flags := tp[:2], tp[3:35], tp[36:52], tp[53:55]
	if !lowerHex(version) || version == "ff" || (version == "00" && len(tp) != 55) ||
		!lowerHex(id) || allZero(id) || !lowerHex(parent) || allZero(parent) || !lowerHex(flags) {
		return ""
	}
	return id
}

func lowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func allZero(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] != '0' {
			return false
		}
	}
	return true
}

// accessLog writes an access line for every request but the health probes
// and metrics scrapes. It answers the request's error itself (echo's
// HTTPErrorHandler), so the line counts the bytes of the error body too.
func (g *Gateway) accessLog(next echo.HandlerFunc) echo.HandlerFunc {
	if g.access == nil {
		return next
	}
	return func(c echo.Context) (err error) {
		switch c.Path() {
		case "/health", "/health/liveliness", "/health/liveness", "/healthz", "/health/readiness", "/readyz", "/metrics":
			return next(c)
		}
		r := c.Request()
		a := &access{Start: time.Now(), Door: DoorHTTP, Method: r.Method, Path: c.Path(),
			RequestID: c.Response().Header().Get(HeaderRequestID), TraceID: traceID(r.Header.Get(HeaderTraceparent))}
		if sc := trace.SpanContextFromContext(r.Context()); sc.IsValid() {
			a.TraceID = sc.TraceID().String() // tracing is on: the request's trace, started here or continued
		}
		body := &countingBody{ReadCloser: r.Body}
		if r.Body != nil {
			r.Body = body
		}
		o := &observation{}
		c.Set(observationKey, o)
		defer func() {
			if p := recover(); p != nil { // the recover middleware answers 500
				a.Status = http.StatusInternalServerError
				g.finishAccess(c, a, o, body)
				panic(p)
			}
		}()
		a.Status = c.Response().Status
		if err = next(c); err != nil {
			e := g.toError(err, r)
			// A streamed answer already under way keeps its 200, unless
			// the caller left.
			if !c.Response().Committed || e.Status == statusClientClosed {
				a.Status = e.Status
			}
			a.ErrorCode = e.Code
			c.Error(err)
		} else {
			a.Status = c.Response().Status
		}
		g.finishAccess(c, a, o, body)
		return nil
	}
}

// finishAccess fills a from what the handler learnt and writes it.
func (g *Gateway) finishAccess(c echo.Context, a *access, o *observation, body *countingBody) {
	a.Key = keyAlias(callerOf(c))
	a.Model, a.Lane, a.Stream, a.Timing, a.Tokens = o.model, o.lane, o.stream, o.Timing, o.Tokens
	if a.ErrorCode == "" {
		a.ErrorCode = o.errorCode
	}
	a.BytesIn, a.BytesOut = body.n, c.Response().Size
	g.access.Write(a)
}

// countingBody counts the bytes of a request body read.
type countingBody struct {
	io.ReadCloser
	n int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n += int64(n)
	return n, err
}

// startAccess begins the access line of a NATS request; nil when the
// gateway keeps no access log.
func (m *microEndpoint) startAccess(r micro.Request) *access {
	if m.g.access == nil {
		return nil
	}
	return &access{Start: time.Now(), Door: DoorNATS, Path: m.g.cfg.Micro.Subject,
		TraceID: traceID(r.Headers().Get(HeaderTraceparent)), BytesIn: int64(len(r.Data()))}
}

// finishAccess writes a NATS request's access line: model is the
// catalogue alias (or ModelUnknown), ck what the core checked (nil when
// it refused the request before), err the error answered, bytesOut the
// answer's body.
func (m *microEndpoint) finishAccess(a *access, model string, ck *admission.Checked, err error, bytesOut int) {
	if a == nil {
		return
	}
	if model != ModelUnknown {
		a.Model = model
	}
	if ck != nil {
		a.Key, a.Lane = keyAlias(ck.Caller), string(ck.Lane)
	}
	a.Status = http.StatusOK
	if err != nil {
		e := microError(err)
		a.Status, a.ErrorCode = e.Status, e.Code
	}
	a.BytesOut = int64(bytesOut)
	m.g.access.Write(a)
}
