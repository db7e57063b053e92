package laas

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/laas-bridge/laas-bridge/schema"
)

// DefaultBaseURL is LaaS's public base URL, used when Config.BaseURL
// is empty.
const DefaultBaseURL = "https://api-laas.wanted.co.kr"

const (
	// upstreamBodyLimit is how much of a non-2xx body UpstreamError keeps.
	upstreamBodyLimit = 2 << 10
	// upstreamExcerptLimit bounds, in characters, the upstream text quoted in
	// error messages.
	upstreamExcerptLimit = 200
	// maxAnswerBytes bounds a 2xx body; a larger one is an invalid answer.
	maxAnswerBytes = 16 << 20
	// drainLimit is how much of an error body is read and discarded so the
	// connection can be reused.
	drainLimit = 256 << 10
	// maxRetryAfter clamps absurd Retry-After values.
	maxRetryAfter = 24 * time.Hour
)

// ErrInvalidAnswer is wrapped by the UpstreamError returned when LaaS answers
// 2xx with a body that is not a chat completion: not JSON, too large, or
// without choices. Such a failure is not retried (LaaS did the work and would
// likely answer the same way again) and maps to a 502 upstream_error.
var ErrInvalidAnswer = errors.New("LaaS answer is not a chat completion")

// Config configures a Client.
type Config struct {
	// BaseURL is LaaS's absolute http(s) base URL, optionally with a path
	// prefix; empty means DefaultBaseURL. A trailing slash is ignored.
	BaseURL string
	// ProjectCode and APIKey are sent as the "project" and "apiKey" headers.
	// Both are required. They never appear in an error or a log.
	ProjectCode, APIKey schema.Secret
	// Timeout caps each call to Complete; zero means the caller's context
	// alone bounds it. Must be >= 0.
	Timeout time.Duration
	// ResponseHeaderTimeout is how long the client's own transport (the one
	// NewClient builds when given no *http.Client) waits for LaaS's response
	// headers once the request is sent; zero means
	// DefaultResponseHeaderTimeout. Must be >= 0.
	//
	// LaaS does not stream: its headers come with the whole answer, so this
	// must be at least the longest per-call timeout the client is used with
	// (see LongestTimeout), or it would cut a slow answer before its
	// deadline. Each call's context still ends the call at its deadline; this
	// is the backstop for a call made without one.
	ResponseHeaderTimeout time.Duration
}

// DefaultResponseHeaderTimeout is Config.ResponseHeaderTimeout's default:
// the timeout of a model that sets none.
const DefaultResponseHeaderTimeout = schema.DefaultTimeout

// LongestTimeout is the longest per-call timeout among models (each
// model's schema.Model.Deadline), or DefaultResponseHeaderTimeout when
// there are none: the Config.ResponseHeaderTimeout that never cuts a call
// before its own deadline.
func LongestTimeout(models []schema.Model) time.Duration {
	if len(models) == 0 {
		return DefaultResponseHeaderTimeout
	}
	var d time.Duration
	for _, m := range models {
		d = max(d, m.Deadline())
	}
	return d
}

// Validate reports every problem with c, joined. Its messages name the
// environment variables (LAAS_BASE_URL, LAAS_PROJECT_CODE, LAAS_API_KEY) but
// never the credentials' values.
func (c Config) Validate() error {
	var errs []error
	if _, err := c.endpoint(); err != nil {
		errs = append(errs, err)
	}
	if c.ProjectCode == "" {
		errs = append(errs, errors.New("LAAS_PROJECT_CODE is empty: the LaaS project code is required"))
	}
	if c.APIKey == "" {
		errs = append(errs, errors.New("LAAS_API_KEY is empty: the LaaS API key is required"))
	}
	if c.Timeout < 0 {
		errs = append(errs, fmt.Errorf("LaaS timeout %v is negative", c.Timeout))
	}
	if c.ResponseHeaderTimeout < 0 {
		errs = append(errs, fmt.Errorf("LaaS response header timeout %v is negative", c.ResponseHeaderTimeout))
	}
	return errors.Join(errs...)
}

// endpoint returns the chat completions URL for c.BaseURL.
func (c Config) endpoint() (string, error) {
	base := c.BaseURL
	if base == "" {
		base = DefaultBaseURL
	}
	u, err := url.Parse(base)
	if err != nil {
		// err quotes the URL, which may hold userinfo: do not wrap it.
		return "", errors.New("LAAS_BASE_URL does not parse as a URL")
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return "", fmt.Errorf("LAAS_BASE_URL %q must be an absolute http:// or https:// URL", u.Redacted())
	case u.Host == "":
		return "", fmt.Errorf("LAAS_BASE_URL %q has no host", u.Redacted())
	case u.RawQuery != "" || u.Fragment != "":
		return "", fmt.Errorf("LAAS_BASE_URL %q must not have a query or fragment", u.Redacted())
	}
	return strings.TrimRight(u.String(), "/") + schema.LaaSChatPath, nil
}

// redactedEndpoint is the endpoint with any password in it hidden.
func redactedEndpoint(endpoint string) string {
	u, err := url.Parse(endpoint)
	if err != nil {
		return "[unparseable URL]"
	}
	return u.Redacted()
}

// Client calls LaaS's preset chat endpoint. It makes exactly one HTTP
// attempt per Complete call: retrying is the caller's job, guided by
// UpstreamError.Retryable. It is safe for concurrent use.
type Client struct {
	hc       *http.Client
	endpoint string
	project  schema.Secret
	apiKey   schema.Secret
	timeout  time.Duration
	secrets  []string // forms of the credentials to redact, longest first
	maxForm  int      // length of the longest form
}

// NewClient returns a client for cfg, or cfg's validation error.
//
// A nil hc gets a client tuned for many concurrent calls to one host (up to
// 256 idle connections kept per host; connect 30s, TLS handshake 10s,
// response headers cfg.ResponseHeaderTimeout, idle connections 90s; no
// overall timeout: LLM answers are slow, so the context and cfg.Timeout
// bound each call, body included). The client used is a
// copy of hc that never follows redirects, so the credentials cannot be sent
// to another host; a 3xx answer is an UpstreamError.
func NewClient(cfg Config, hc *http.Client) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	endpoint, _ := cfg.endpoint() // validated above
	var client http.Client
	if hc != nil {
		client = *hc
	} else {
		headers := cfg.ResponseHeaderTimeout
		if headers == 0 {
			headers = DefaultResponseHeaderTimeout
		}
		client.Transport = newLaaSTransport(headers)
	}
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

	c := &Client{
		hc: &client, endpoint: endpoint,
		project: cfg.ProjectCode, apiKey: cfg.APIKey, timeout: cfg.Timeout,
	}
	for _, s := range []schema.Secret{cfg.APIKey, cfg.ProjectCode} {
		c.secrets = append(c.secrets, secretForms(s.Reveal())...)
	}
	slices.SortFunc(c.secrets, func(a, b string) int {
		if len(a) != len(b) {
			return len(b) - len(a)
		}
		return strings.Compare(a, b)
	})
	c.secrets = slices.Compact(c.secrets)
	c.maxForm = len(c.secrets[0])
	return c, nil
}

// String describes c without its credentials, for logs.
func (c *Client) String() string { return "Client(" + redactedEndpoint(c.endpoint) + ")" }

// GoString is String, so that %#v cannot print the credentials.
func (c *Client) GoString() string { return c.String() }

// laasWriteBuffer and laasReadBuffer size the LaaS connections' buffers.
const laasWriteBuffer, laasReadBuffer = 1 << 10, 2 << 10

// newLaaSTransport returns http.DefaultTransport's settings (proxy from the
// environment, dial and TLS timeouts, HTTP/2) with a larger idle pool, a
// response header timeout of headers, and small per-connection buffers:
// over HTTP/1.1 every call in flight holds a connection, and the default
// 4 KiB each way cost 80 MiB with 10,000 calls at once (issue 14's burst;
// bodies larger than a buffer bypass it, so large requests do not pay).
func newLaaSTransport(headers time.Duration) *http.Transport {
	var t *http.Transport
	if dt, ok := http.DefaultTransport.(*http.Transport); ok {
		t = dt.Clone()
	} else {
		t = &http.Transport{Proxy: http.ProxyFromEnvironment, ForceAttemptHTTP2: true, TLSHandshakeTimeout: 10 * time.Second}
	}
	t.MaxIdleConns = 1024
	t.MaxIdleConnsPerHost = 256
	t.IdleConnTimeout = 90 * time.Second
	t.ResponseHeaderTimeout = headers
	t.WriteBufferSize, t.ReadBufferSize = laasWriteBuffer, laasReadBuffer
	return t
}

// secretForms returns the ways s may appear in an upstream body: as is,
// JSON-escaped and URL-escaped.
func secretForms(s string) []string {
	if s == "" {
		return nil
	}
	forms := []string{s, url.QueryEscape(s), url.PathEscape(s)}
	if b, err := json.Marshal(s); err == nil {
		forms = append(forms, string(b[1:len(b)-1]))
	}
	return forms
}

// redact replaces every form of the credentials in s with "[redacted]".
func (c *Client) redact(s string) string {
	for _, f := range c.secrets {
		s = strings.ReplaceAll(s, f, "[redacted]")
	}
	return s
}

// Complete sends req to LaaS and returns its answer. The answer is as LaaS
// sent it (see FromLaaS to normalise it) and has at least one choice.
//
// Every failure to get such an answer is an *UpstreamError: a non-2xx status,
// a transport error, a timeout (ctx's deadline or Config.Timeout), a
// cancelled ctx (Err wraps context.Canceled), or a 2xx body that is not a
// chat completion (Err wraps ErrInvalidAnswer). Only a request that cannot be
// encoded yields another error. No error carries the credentials or the
// request body.
func (c *Client) Complete(ctx context.Context, req *schema.LaaSRequest) (*schema.LaaSResponse, error) {
	if req == nil {
		return nil, errors.New("laas: nil request")
	}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("laas: encode request: %w", err)
	}
	if c.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, c.endpoint, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("laas: build request: %w", err)
	}
	// Set directly, not with Header.Set, to keep LaaS's spelling ("apiKey",
	// not "Apikey") on HTTP/1.1.
	hreq.Header[schema.LaaSHeaderProject] = []string{c.project.Reveal()}
	hreq.Header[schema.LaaSHeaderAPIKey] = []string{c.apiKey.Reveal()}
	hreq.Header.Set("Content-Type", "application/json; charset=utf-8")
	hreq.Header.Set("Accept", "application/json")

	resp, err := c.hc.Do(hreq)
	if err != nil {
		return nil, c.transportError(0, err)
	}
	defer resp.Body.Close()

	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, c.statusError(resp)
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes+1))
	if err != nil {
		return nil, c.transportError(resp.StatusCode, err)
	}
	if len(raw) > maxAnswerBytes {
		return nil, c.invalidAnswer(resp.StatusCode, raw, fmt.Errorf("%w: body exceeds %d bytes", ErrInvalidAnswer, maxAnswerBytes))
	}
	var out schema.LaaSResponse
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, c.invalidAnswer(resp.StatusCode, raw, fmt.Errorf("%w: %w", ErrInvalidAnswer, err))
	}
	if len(out.Choices) == 0 {
		return nil, c.invalidAnswer(resp.StatusCode, raw, fmt.Errorf("%w: no choices", ErrInvalidAnswer))
	}
	return &out, nil
}

// transportError wraps a failure to send the request or read the answer.
func (c *Client) transportError(status int, err error) *UpstreamError {
	var ne net.Error
	timeout := errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
	return &UpstreamError{Status: status, Err: err, Timeout: timeout}
}

// statusError builds the error for a non-2xx answer, keeping the start of its
// body with the credentials redacted.
func (c *Client) statusError(resp *http.Response) *UpstreamError {
	// Read enough past the limit to see whole any credential that straddles it.
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, int64(upstreamBodyLimit+c.maxForm)))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, drainLimit))
	e := &UpstreamError{
		Status:     resp.StatusCode,
		Body:       c.redactedPrefix(raw),
		RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()),
	}
	e.excerpt = upstreamExcerpt(e.Body, c.redact)
	return e
}

// invalidAnswer builds the error for a 2xx body that is not an answer.
func (c *Client) invalidAnswer(status int, raw []byte, err error) *UpstreamError {
	if len(raw) > upstreamBodyLimit+c.maxForm {
		raw = raw[:upstreamBodyLimit+c.maxForm]
	}
	e := &UpstreamError{Status: status, Body: c.redactedPrefix(raw), Err: err}
	e.excerpt = upstreamExcerpt(e.Body, c.redact)
	return e
}

// redactedPrefix returns about the first upstreamBodyLimit bytes of raw with
// the credentials redacted. raw must hold at least c.maxForm bytes beyond the
// limit when the body is longer, so that a credential crossing the limit is
// redacted whole rather than cut into a prefix that no longer matches.
func (c *Client) redactedPrefix(raw []byte) string {
	cut := min(len(raw), upstreamBodyLimit)
	for moved := true; moved; {
		moved = false
		for _, f := range c.secrets {
			from := max(0, cut-len(f)+1)
			if i := bytes.Index(raw[from:], []byte(f)); i >= 0 && from+i < cut && from+i+len(f) > cut {
				cut, moved = from+i+len(f), true
			}
		}
	}
	body := c.redact(string(raw[:cut]))
	// JSON escapes (\u0061...) can hide a credential from the plain search;
	// decode, redact the strings and re-encode when that is the case.
	var v any
	if json.Unmarshal([]byte(body), &v) == nil {
		if w, changed := c.redactJSON(v); changed {
			var buf bytes.Buffer
			enc := json.NewEncoder(&buf)
			enc.SetEscapeHTML(false)
			if enc.Encode(w) == nil {
				body = strings.TrimSuffix(buf.String(), "\n")
			}
		}
	}
	return truncateUTF8(strings.ToValidUTF8(body, "\uFFFD"), upstreamBodyLimit)
}

// redactJSON returns v with the credentials redacted from every string
// (object keys included), and whether anything changed.
func (c *Client) redactJSON(v any) (any, bool) {
	switch v := v.(type) {
	case string:
		r := c.redact(v)
		return r, r != v
	case []any:
		changed := false
		for i, e := range v {
			var ch bool
			v[i], ch = c.redactJSON(e)
			changed = changed || ch
		}
		return v, changed
	case map[string]any:
		out := make(map[string]any, len(v))
		changed := false
		for k, e := range v {
			rk := c.redact(k)
			re, ch := c.redactJSON(e)
			out[rk] = re
			changed = changed || ch || rk != k
		}
		return out, changed
	}
	return v, false
}

// truncateUTF8 cuts s to at most n bytes without splitting a character.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// upstreamExcerpt returns a one-line excerpt of an upstream body, at most
// upstreamExcerptLimit characters: the message of a JSON error body when it
// has one ("message", "error.message", "error" or "detail"), else the body.
// redact is applied after JSON decoding, which may have undone an escaping.
func upstreamExcerpt(body string, redact func(string) string) string {
	text := body
	var v map[string]any
	if json.Unmarshal([]byte(body), &v) == nil {
		if m := jsonMessage(v); m != "" {
			text = m
		}
	}
	text = strings.Join(strings.Fields(redact(text)), " ")
	if utf8.RuneCountInString(text) > upstreamExcerptLimit {
		r := []rune(text)
		text = string(r[:upstreamExcerptLimit-1]) + "…"
	}
	return text
}

func jsonMessage(v map[string]any) string {
	if s, ok := v["message"].(string); ok && s != "" {
		return s
	}
	switch e := v["error"].(type) {
	case string:
		if e != "" {
			return e
		}
	case map[string]any:
		if s, ok := e["message"].(string); ok && s != "" {
			return s
		}
	}
	if s, ok := v["detail"].(string); ok {
		return s
	}
	return ""
}

// parseRetryAfter reads a Retry-After value, in seconds or as an HTTP date,
// relative to now. It returns 0 when v is absent, invalid or in the past, and
// clamps values above a day.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	var d time.Duration
	if secs, err := strconv.ParseFloat(v, 64); err == nil {
		if math.IsNaN(secs) || secs <= 0 {
			return 0
		}
		d = time.Duration(math.Min(secs, maxRetryAfter.Seconds()) * float64(time.Second))
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	return min(max(d, 0), maxRetryAfter)
}
