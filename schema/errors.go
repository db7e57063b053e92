package schema

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
)

// OpenAI error types used by the bridge (the "type" field of an error body).
const (
	TypeInvalidRequest = "invalid_request_error"
	TypeAuthentication = "authentication_error"
	TypeNotFound       = "not_found_error"
	TypeRateLimit      = "rate_limit_error"
	TypeServer         = "server_error"
	TypeUpstream       = "upstream_error"
	TypeTimeout        = "timeout_error"
)

// Error codes (the "code" field of an error body).
const (
	CodeModelNotFound     = "model_not_found"
	CodeInvalidAPIKey     = "invalid_api_key"
	CodeInvalidJSON       = "invalid_json"
	CodeInvalidValue      = "invalid_value"
	CodeUnsupported       = "unsupported_parameter"
	CodeRateLimitExceeded = "rate_limit_exceeded"
	CodeUpstreamAuth      = "upstream_auth_error"
	CodeUpstreamError     = "upstream_error"
	CodeUpstreamTimeout   = "upstream_timeout"
	CodeDeadlineExceeded  = "deadline_exceeded"
	CodeQueueUnavailable  = "queue_unavailable"
	CodeQueueFull         = "queue_full"
	CodeRequestTooLarge   = "request_too_large"
	CodePresetOverride    = "preset_override_disabled"
)

// Error is the bridge's one error type. It carries the HTTP status a client
// sees and the fields of OpenAI's error body, and wraps an optional cause that
// is never shown to clients. Match it with errors.As.
type Error struct {
	Status  int    // HTTP status, 4xx or 5xx
	Type    string // OpenAI error type
	Code    string // machine-readable code; may be empty
	Param   string // the offending request field; may be empty
	Message string // shown to the client: must never contain a secret
	// RetryAfter, in whole seconds, is sent as the Retry-After header when > 0.
	RetryAfter int
	Cause      error `json:"-"` // for logs only; never serialised
}

// Error returns the client-facing message with the status.
func (e *Error) Error() string { return fmt.Sprintf("%d %s: %s", e.Status, e.Type, e.Message) }

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Cause }

// Body returns OpenAI's error body for e; it shares no memory with e.
func (e *Error) Body() ErrorBody {
	d := ErrorDetail{Message: e.Message, Type: e.Type}
	if e.Param != "" {
		p := e.Param
		d.Param = &p
	}
	if e.Code != "" {
		c := e.Code
		d.Code = &c
	}
	return ErrorBody{Error: d}
}

// ErrorBody is OpenAI's error body: {"error": {...}}.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail is the inside of OpenAI's error body. Param and Code are null
// when not set, as OpenAI sends them.
type ErrorDetail struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

// MarshalJSON writes OpenAI's error body.
func (e Error) MarshalJSON() ([]byte, error) { return json.Marshal(e.Body()) }

// LogValue logs the status, type, code, message and cause.
func (e *Error) LogValue() slog.Value {
	attrs := []slog.Attr{slog.Int("status", e.Status), slog.String("type", e.Type), slog.String("message", e.Message)}
	if e.Code != "" {
		attrs = append(attrs, slog.String("code", e.Code))
	}
	if e.Cause != nil {
		attrs = append(attrs, slog.String("cause", e.Cause.Error()))
	}
	return slog.GroupValue(attrs...)
}

// AsError returns err as an *Error: itself if it is one (or wraps one), else a
// 500 server_error whose message does not reveal err.
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{Status: http.StatusInternalServerError, Type: TypeServer, Message: "internal error", Cause: err}
}

// Invalid returns a 400 invalid_request_error naming param.
func Invalid(param, code, format string, args ...any) *Error {
	return &Error{Status: http.StatusBadRequest, Type: TypeInvalidRequest, Code: code, Param: param, Message: fmt.Sprintf(format, args...)}
}

// PresetOverrideDisabled refuses a per-request preset_hash on a bridge whose
// config does not allow it.
func PresetOverrideDisabled() *Error {
	return &Error{
		Status: http.StatusBadRequest, Type: TypeInvalidRequest, Code: CodePresetOverride, Param: "preset_hash",
		Message: "This bridge does not allow a per-request 'preset_hash'; its operator can allow it with bridge_settings.allow_preset_override in config.yaml.",
	}
}

// ModelNotFound returns OpenAI's 404 for an unknown model.
func ModelNotFound(model string) *Error {
	return &Error{
		Status: http.StatusNotFound, Type: TypeInvalidRequest, Code: CodeModelNotFound, Param: "model",
		Message: fmt.Sprintf("The model '%s' does not exist or you do not have access to it.", model),
	}
}
