package laas

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strings"
	"time"

	"github.com/laas-bridge/laas-bridge/schema"
)

// UpstreamError is a failed LaaS call. Exactly one of these holds:
//   - Err != nil: the call failed without a usable answer: a transport error,
//     a timeout (Timeout is set), a cancelled context, or, wrapping
//     ErrInvalidAnswer, a 2xx body that is not an answer. Status is the
//     upstream status when one was received, else 0.
//   - Err == nil: LaaS answered Status, a non-2xx status.
//
// No field or message holds the LaaS credentials or the request body.
type UpstreamError struct {
	// Status is the upstream HTTP status; 0 when none was received.
	Status int
	// Body is the first 2 KB of the upstream body, with every occurrence of
	// the API key or project code replaced by "[redacted]". For logs.
	Body string
	// RetryAfter is the upstream Retry-After (seconds or HTTP date), 0 when
	// absent.
	RetryAfter time.Duration
	// Err is the transport, timeout or invalid-answer error.
	Err error
	// Timeout reports that the context's deadline or Config.Timeout
	// passed before LaaS answered.
	Timeout bool

	excerpt string // redacted one-line excerpt of Body; derived when empty
}

var _ error = (*UpstreamError)(nil)

// Error describes the failure for logs: the status, the error and a short
// redacted excerpt of the upstream body.
func (e *UpstreamError) Error() string {
	var head []string
	if e.Status != 0 {
		head = append(head, fmt.Sprintf("HTTP %d", e.Status))
	}
	if e.Timeout {
		head = append(head, "timeout")
	}
	if e.RetryAfter > 0 {
		head = append(head, fmt.Sprintf("(retry after %v)", e.RetryAfter))
	}
	parts := []string{"laas"}
	if len(head) > 0 {
		parts = append(parts, strings.Join(head, " "))
	}
	if e.Err != nil {
		parts = append(parts, e.Err.Error())
	}
	if x := e.excerptText(); x != "" {
		parts = append(parts, x)
	}
	return strings.Join(parts, ": ")
}

// Unwrap returns Err.
func (e *UpstreamError) Unwrap() error { return e.Err }

func (e *UpstreamError) excerptText() string {
	if e.excerpt != "" || e.Body == "" {
		return e.excerpt
	}
	return upstreamExcerpt(e.Body, func(s string) string { return s })
}

// Retryable reports whether another attempt may succeed: true for timeouts,
// transport errors, 429 and 5xx; false for other statuses, an invalid 2xx
// answer and a cancelled context. The caller still decides whether its
// deadline leaves room for another attempt.
func (e *UpstreamError) Retryable() bool {
	switch {
	case e.Timeout:
		return true
	case errors.Is(e.Err, ErrInvalidAnswer), errors.Is(e.Err, context.Canceled):
		return false
	case e.Err != nil:
		return true
	}
	return e.Status == http.StatusTooManyRequests || e.Status >= 500
}

// OpenAI maps e to the error the bridge's caller sees, as laas-api.md's table
// says:
//
//	timeout                    504 timeout_error     upstream_timeout
//	400, 422                   400 invalid_request_error (upstream message quoted)
//	401, 403                   502 upstream_error    upstream_auth_error
//	404                        502 upstream_error    upstream_error (preset unknown)
//	413                        413 invalid_request_error request_too_large
//	429                        429 rate_limit_error  rate_limit_exceeded, Retry-After
//	503                        503 upstream_error    upstream_error, Retry-After if sent
//	other 5xx, 3xx, other 4xx  502 upstream_error    upstream_error
//	transport error, cancelled 502 upstream_error    upstream_error
//	invalid 2xx answer         502 upstream_error    upstream_error
//
// Retry-After is in whole seconds, rounded up, at least 1. The message names
// the upstream status and quotes at most 200 characters of the upstream body,
// redacted; it never holds the credentials or the request body. Cause is e.
func (e *UpstreamError) OpenAI() *schema.Error {
	x := e.excerptText()
	quote := func(prefix string) string {
		if x == "" {
			return prefix + "."
		}
		return prefix + ": " + x
	}
	upstream := func(status int, code, msg string) *schema.Error {
		return &schema.Error{Status: status, Type: schema.TypeUpstream, Code: code, Message: msg, Cause: e}
	}
	switch {
	case e.Timeout:
		return &schema.Error{
			Status: http.StatusGatewayTimeout, Type: schema.TypeTimeout, Code: schema.CodeUpstreamTimeout,
			Message: "LaaS did not answer in time.", Cause: e,
		}
	case errors.Is(e.Err, ErrInvalidAnswer):
		return upstream(http.StatusBadGateway, schema.CodeUpstreamError,
			quote(fmt.Sprintf("LaaS answered HTTP %d with a body that is not a chat completion", e.Status)))
	case errors.Is(e.Err, context.Canceled):
		return upstream(http.StatusBadGateway, schema.CodeUpstreamError, "The LaaS call was cancelled before LaaS answered.")
	case e.Err != nil:
		return upstream(http.StatusBadGateway, schema.CodeUpstreamError, "The bridge could not get an answer from LaaS (connection error).")
	}
	switch s := e.Status; {
	case s == http.StatusBadRequest || s == http.StatusUnprocessableEntity:
		return &schema.Error{
			Status: http.StatusBadRequest, Type: schema.TypeInvalidRequest,
			Message: quote(fmt.Sprintf("LaaS refused the request (HTTP %d)", s)), Cause: e,
		}
	case s == http.StatusUnauthorized || s == http.StatusForbidden:
		return upstream(http.StatusBadGateway, schema.CodeUpstreamAuth, quote(fmt.Sprintf(
			"LaaS refused the bridge's credentials (HTTP %d); the LaaS project code or API key configured on the bridge is wrong, which the bridge's operator must fix", s)))
	case s == http.StatusNotFound:
		return upstream(http.StatusBadGateway, schema.CodeUpstreamError,
			quote("LaaS answered HTTP 404: the preset hash is unknown to LaaS; the bridge's preset configuration for this model is wrong"))
	case s == http.StatusRequestEntityTooLarge:
		return &schema.Error{
			Status: http.StatusRequestEntityTooLarge, Type: schema.TypeInvalidRequest, Code: schema.CodeRequestTooLarge,
			Message: quote("LaaS refused the request as too large (HTTP 413)"), Cause: e,
		}
	case s == http.StatusTooManyRequests:
		return &schema.Error{
			Status: http.StatusTooManyRequests, Type: schema.TypeRateLimit, Code: schema.CodeRateLimitExceeded,
			Message: quote("LaaS is rate limiting the bridge (HTTP 429); retry later"), RetryAfter: retrySeconds(e.RetryAfter), Cause: e,
		}
	case s == http.StatusServiceUnavailable:
		err := upstream(http.StatusServiceUnavailable, schema.CodeUpstreamError, quote("LaaS is unavailable (HTTP 503)"))
		if e.RetryAfter > 0 {
			err.RetryAfter = retrySeconds(e.RetryAfter)
		}
		return err
	case s >= 500:
		return upstream(http.StatusBadGateway, schema.CodeUpstreamError, quote(fmt.Sprintf("LaaS failed (HTTP %d)", s)))
	}
	return upstream(http.StatusBadGateway, schema.CodeUpstreamError, quote(fmt.Sprintf("LaaS answered with unexpected HTTP %d", e.Status)))
}

// retrySeconds rounds d up to whole seconds, at least 1.
func retrySeconds(d time.Duration) int {
	return max(1, int(math.Ceil(d.Seconds())))
}
