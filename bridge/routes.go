package bridge

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"github.com/laas-bridge/laas-bridge/admission"
	"github.com/laas-bridge/laas-bridge/schema"
)

// HeaderRequestID carries the request id on every answer.
const HeaderRequestID = "X-Request-Id"

func (g *Gateway) routes() *echo.Echo {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = g.handleError
	e.Use(middleware.RecoverWithConfig(middleware.RecoverConfig{DisablePrintStack: true}))
	e.Use(requestID)
	e.Use(g.traceRequests) // a server span per request, with Config.Tracer only (tracing.go)
	e.Use(g.accessLog)     // after requestID: the line names the request

	// Health: never behind the master key.
	e.GET("/health", g.health)
	e.GET("/health/liveliness", g.liveness)
	e.GET("/health/liveness", g.liveness)
	e.GET("/healthz", g.liveness)
	e.GET("/health/readiness", g.readiness)
	e.GET("/readyz", g.readiness)
	// Metrics name every virtual key's alias and usage: on the API port
	// only the master key may read them (BRIDGE_METRICS_LISTEN serves them
	// without a key, on an address the operator keeps private).
	if g.cfg.Metrics != nil {
		e.GET("/metrics", metricsHandler(g.cfg.Metrics, g.log), g.authenticate, adminOnly)
	}

	// API routes, under /v1 and at the root as LiteLLM serves them. The key
	// check is per route (not an echo Group, whose catch-all would turn every
	// unknown URL into 401 or 404 and hide 405).
	for _, prefix := range []string{"/v1", ""} {
		e.POST(prefix+"/chat/completions", g.chatCompletions, g.observe, g.authenticate)
		e.POST(prefix+"/responses", g.responses, g.observe, g.authenticate) // on the chat path (responses.go)
		e.GET(prefix+"/responses/:id", g.getResponse, g.authenticate)
		e.DELETE(prefix+"/responses/:id", g.deleteResponse, g.authenticate)
		e.POST(prefix+"/responses/:id/cancel", g.cancelResponse, g.authenticate)
		e.GET(prefix+"/models", g.listModels, g.authenticate)
		e.GET(prefix+"/models/*", g.getModel, g.authenticate)
		// Batch API (files.go, batches.go)
		e.POST(prefix+"/files", g.uploadFile, g.authenticate)
		e.GET(prefix+"/files", g.listFiles, g.authenticate)
		e.GET(prefix+"/files/:id", g.getFile, g.authenticate)
		e.DELETE(prefix+"/files/:id", g.deleteFile, g.authenticate)
		e.GET(prefix+"/files/:id/content", g.fileContent, g.authenticate)
		e.POST(prefix+"/batches", g.createBatch, g.authenticate)
		e.GET(prefix+"/batches", g.listBatches, g.authenticate)
		e.GET(prefix+"/batches/:id", g.getBatch, g.authenticate)
		e.POST(prefix+"/batches/:id/cancel", g.cancelBatch, g.authenticate)
	}
	g.jobRoutes(e) // async jobs, under /v1 only
	g.keyRoutes(e) // virtual keys (keys.go), at the root as LiteLLM serves them
	return e
}

// requestID gives every answer a fresh X-Request-Id. The id also names the
// job on the queue, so it is always generated here, never taken from the
// caller: two callers sending the same id must not share an answer. It is
// random (schema.NewID), so one caller's id tells nothing of another's job.
func requestID(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		c.Response().Header().Set(HeaderRequestID, schema.NewID())
		return next(c)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

// handleError is the one place errors become HTTP answers, in OpenAI's format.
func (g *Gateway) handleError(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	e := g.toError(err, c.Request())
	switch {
	case e.Status >= 500:
		g.log.Error("request failed", "request_id", c.Response().Header().Get(HeaderRequestID),
			"status", e.Status, "code", e.Code, "error", e.Message, "cause", e.Cause)
	case e.Status == statusClientClosed:
		g.log.Info("caller went away", "request_id", c.Response().Header().Get(HeaderRequestID))
		return
	}
	if e.RetryAfter > 0 {
		c.Response().Header().Set("Retry-After", itoa(e.RetryAfter))
	}
	if c.Request().Method == http.MethodHead {
		_ = c.NoContent(e.Status)
		return
	}
	_ = c.JSON(e.Status, e.Body())
}

// statusClientClosed marks a caller that disconnected before its answer
// (nginx's 499); nothing is written.
const statusClientClosed = admission.StatusClientClosed

func (g *Gateway) toError(err error, r *http.Request) *schema.Error {
	var he *echo.HTTPError
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return &schema.Error{Status: http.StatusRequestEntityTooLarge, Type: schema.TypeInvalidRequest, Code: schema.CodeRequestTooLarge,
			Message: "The request body is larger than the " + itoa(int(mbe.Limit)) + " bytes this bridge accepts."}
	case errors.As(err, &he):
		switch he.Code {
		case http.StatusNotFound:
			return &schema.Error{Status: http.StatusNotFound, Type: schema.TypeInvalidRequest, Code: "unknown_url",
				Message: "Unknown request URL: " + r.Method + " " + r.URL.Path + "."}
		case http.StatusMethodNotAllowed:
			return &schema.Error{Status: http.StatusMethodNotAllowed, Type: schema.TypeInvalidRequest, Code: "method_not_allowed",
				Message: "Method " + r.Method + " is not allowed on " + r.URL.Path + "."}
		}
		msg := http.StatusText(he.Code)
		if s, ok := he.Message.(string); ok {
			msg = s
		}
		typ := schema.TypeInvalidRequest
		if he.Code >= 500 {
			typ = schema.TypeServer
		}
		return &schema.Error{Status: he.Code, Type: typ, Message: msg, Cause: err}
	}
	return schema.AsError(err)
}
