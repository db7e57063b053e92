package laas

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/laas-bridge/laas-bridge/laas/laasmock"
	"github.com/laas-bridge/laas-bridge/schema"
)

// Test credentials, with characters that JSON and URL encodings change.
const (
	testAPIKey  = `sk-LaaS/9f8e+7d6c"5b4a<x>`
	testProject = `proj-Zq81&w=1`
	// testPrompt marks the request body; it must not reach any error.
	testPrompt = "PROMPT-MARKER-7731"
)

func testRequest() *schema.LaaSRequest {
	return &schema.LaaSRequest{
		Hash:   "preset-h",
		Params: map[string]string{},
		Messages: []schema.LaaSMessage{
			{Role: "user", Content: []schema.ContentPart{{Type: "text", Text: "hello " + testPrompt}}},
		},
	}
}

func newTestClient(t *testing.T, baseURL string, timeout time.Duration) *Client {
	t.Helper()
	c, err := NewClient(Config{BaseURL: baseURL, ProjectCode: testProject, APIKey: testAPIKey, Timeout: timeout}, nil)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	return c
}

func TestLaaSConfigValidate(t *testing.T) {
	ok := Config{BaseURL: "https://api-laas.wanted.co.kr", ProjectCode: "p-VALUE", APIKey: "k-VALUE"}
	with := func(f func(*Config)) Config { c := ok; f(&c); return c }
	tests := []struct {
		name         string
		cfg          Config
		want         []string // the joined errors, one per line; nil means valid
		wantEndpoint string
	}{
		{name: "valid", cfg: ok, wantEndpoint: "https://api-laas.wanted.co.kr/api/preset/v2/chat/completions"},
		{name: "empty base URL means the default", cfg: with(func(c *Config) { c.BaseURL = "" }),
			wantEndpoint: "https://api-laas.wanted.co.kr/api/preset/v2/chat/completions"},
		{name: "http with port, path prefix and trailing slash", cfg: with(func(c *Config) { c.BaseURL = "http://127.0.0.1:8080/laas/" }),
			wantEndpoint: "http://127.0.0.1:8080/laas/api/preset/v2/chat/completions"},
		{name: "timeout set", cfg: with(func(c *Config) { c.Timeout = time.Minute }),
			wantEndpoint: "https://api-laas.wanted.co.kr/api/preset/v2/chat/completions"},
		{name: "no scheme", cfg: with(func(c *Config) { c.BaseURL = "api-laas.wanted.co.kr" }),
			want: []string{`LAAS_BASE_URL "api-laas.wanted.co.kr" must be an absolute http:// or https:// URL`}},
		{name: "ftp scheme", cfg: with(func(c *Config) { c.BaseURL = "ftp://example.com" }),
			want: []string{`LAAS_BASE_URL "ftp://example.com" must be an absolute http:// or https:// URL`}},
		{name: "no host", cfg: with(func(c *Config) { c.BaseURL = "https:///path" }),
			want: []string{`LAAS_BASE_URL "https:///path" has no host`}},
		{name: "query", cfg: with(func(c *Config) { c.BaseURL = "https://user:pw-VALUE@example.com/?a=1" }),
			want: []string{`LAAS_BASE_URL "https://user:xxxxx@example.com/?a=1" must not have a query or fragment`}},
		{name: "does not parse", cfg: with(func(c *Config) { c.BaseURL = "http://[::1%zz-VALUE" }),
			want: []string{"LAAS_BASE_URL does not parse as a URL"}},
		{name: "no project code", cfg: with(func(c *Config) { c.ProjectCode = "" }),
			want: []string{"LAAS_PROJECT_CODE is empty: the LaaS project code is required"}},
		{name: "no API key", cfg: with(func(c *Config) { c.APIKey = "" }),
			want: []string{"LAAS_API_KEY is empty: the LaaS API key is required"}},
		{name: "negative timeout", cfg: with(func(c *Config) { c.Timeout = -time.Second }),
			want: []string{"LaaS timeout -1s is negative"}},
		{name: "negative response header timeout", cfg: with(func(c *Config) { c.ResponseHeaderTimeout = -time.Second }),
			want: []string{"LaaS response header timeout -1s is negative"}},
		{name: "response header timeout set", cfg: with(func(c *Config) { c.ResponseHeaderTimeout = time.Hour }),
			wantEndpoint: "https://api-laas.wanted.co.kr/api/preset/v2/chat/completions"},
		{name: "everything wrong, joined", cfg: Config{BaseURL: "mailto:x", Timeout: -1},
			want: []string{
				`LAAS_BASE_URL "mailto:x" must be an absolute http:// or https:// URL`,
				"LAAS_PROJECT_CODE is empty: the LaaS project code is required",
				"LAAS_API_KEY is empty: the LaaS API key is required",
				"LaaS timeout -1ns is negative",
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			c, newErr := NewClient(tc.cfg, nil)
			if tc.want == nil {
				if err != nil || newErr != nil {
					t.Fatalf("Validate() = %v, NewClient() = %v; want nil", err, newErr)
				}
				if c.endpoint != tc.wantEndpoint {
					t.Fatalf("endpoint = %q, want %q", c.endpoint, tc.wantEndpoint)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want %q", tc.want)
			}
			if got := strings.Split(err.Error(), "\n"); !slices.Equal(got, tc.want) {
				t.Fatalf("Validate() = %q\nwant         %q", got, tc.want)
			}
			if strings.Contains(err.Error(), "VALUE") {
				t.Fatalf("a secret value leaked into %q", err)
			}
			if c != nil || newErr == nil || newErr.Error() != err.Error() {
				t.Fatalf("NewClient() = %v, %v; want nil and the validation error", c, newErr)
			}
		})
	}
}

func TestNewLaaSClientHTTPClient(t *testing.T) {
	cfg := Config{ProjectCode: "p", APIKey: "k"}
	t.Run("nil gets a tuned client", func(t *testing.T) {
		c, err := NewClient(cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		tr, ok := c.hc.Transport.(*http.Transport)
		if !ok {
			t.Fatalf("Transport = %T, want *http.Transport", c.hc.Transport)
		}
		if tr.MaxIdleConnsPerHost != 256 || tr.MaxIdleConns != 1024 || tr.Proxy == nil || c.hc.Timeout != 0 || c.hc.CheckRedirect == nil {
			t.Fatalf("client not tuned: MaxIdleConnsPerHost=%d MaxIdleConns=%d Timeout=%v", tr.MaxIdleConnsPerHost, tr.MaxIdleConns, c.hc.Timeout)
		}
		if tr.ResponseHeaderTimeout != DefaultResponseHeaderTimeout || tr.TLSHandshakeTimeout != 10*time.Second || tr.IdleConnTimeout != 90*time.Second {
			t.Fatalf("transport timeouts: response headers %v, TLS %v, idle %v", tr.ResponseHeaderTimeout, tr.TLSHandshakeTimeout, tr.IdleConnTimeout)
		}
		if tr == http.DefaultTransport {
			t.Fatal("the shared DefaultTransport was modified")
		}
	})
	t.Run("given client is copied, not modified", func(t *testing.T) {
		hc := &http.Client{Timeout: 3 * time.Second}
		c, err := NewClient(cfg, hc)
		if err != nil {
			t.Fatal(err)
		}
		if hc.CheckRedirect != nil {
			t.Fatal("the caller's client was modified")
		}
		if c.hc == hc || c.hc.Timeout != 3*time.Second || c.hc.CheckRedirect == nil {
			t.Fatalf("client = %+v", c.hc)
		}
	})
}

// TestCompleteWire reads the raw request off a TCP connection, to check the
// header spelling LaaS documents ("apiKey", not "Apikey").
func TestCompleteWire(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type capture struct {
		head string
		body []byte
	}
	got := make(chan capture, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		br := bufio.NewReader(conn)
		var head strings.Builder
		length := 0
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			head.WriteString(line)
			if line == "\r\n" {
				break
			}
			if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok && strings.EqualFold(k, "Content-Length") {
				fmt.Sscan(v, &length)
			}
		}
		body := make([]byte, length)
		if _, err := io.ReadFull(br, body); err != nil {
			return
		}
		answer := `{"choices":[{"message":{"content":"ok"}}]}`
		fmt.Fprintf(conn, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(answer), answer)
		got <- capture{head.String(), body}
	}()

	c := newTestClient(t, "http://"+ln.Addr().String(), 5*time.Second)
	req := testRequest()
	resp, err := c.Complete(context.Background(), req)
	if err != nil {
		t.Fatalf("Complete: %v", err)
	}
	if len(resp.Choices) != 1 || resp.Choices[0].Message.Content.Text != "ok" {
		t.Fatalf("answer = %+v", resp)
	}
	cap := <-got
	wantBody, _ := json.Marshal(req)
	tests := []struct {
		name string
		want string
	}{
		{name: "request line", want: "POST /api/preset/v2/chat/completions HTTP/1.1\r\n"},
		{name: "project header", want: "\r\nproject: " + testProject + "\r\n"},
		{name: "apiKey header", want: "\r\napiKey: " + testAPIKey + "\r\n"},
		{name: "content type", want: "\r\nContent-Type: application/json; charset=utf-8\r\n"},
		{name: "accept", want: "\r\nAccept: application/json\r\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(cap.head, tc.want) && !strings.HasPrefix(cap.head, tc.want) {
				t.Fatalf("request head lacks %q:\n%s", tc.want, cap.head)
			}
		})
	}
	t.Run("body", func(t *testing.T) {
		if string(cap.body) != string(wantBody) {
			t.Fatalf("body = %s\nwant   %s", cap.body, wantBody)
		}
	})
}

// TestCompleteAgainstMock runs the client against laasmock in both answer
// shapes and normalises the answer.
func TestCompleteAgainstMock(t *testing.T) {
	tests := []struct {
		name string
		wild bool
	}{
		{name: "documented shape"},
		{name: "wild shape", wild: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mock, err := laasmock.New(laasmock.Config{ProjectCode: testProject, APIKey: testAPIKey, Wild: tc.wild})
			if err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewServer(mock)
			defer srv.Close()
			c := newTestClient(t, srv.URL, 0)
			req := testRequest()
			req.Messages = append([]schema.LaaSMessage{{Role: "system", Content: []schema.ContentPart{{Type: "text", Text: "be brief"}}}}, req.Messages...)
			before := time.Now()
			resp, err := c.Complete(context.Background(), req)
			if err != nil {
				t.Fatalf("Complete: %v", err)
			}
			cc, err := FromLaaS(resp, "chatcmpl-x", "alias", time.Now())
			if err != nil {
				t.Fatal(err)
			}
			if cc.Created < before.Unix() || cc.Created > time.Now().Unix() {
				t.Errorf("created = %d, not now in seconds", cc.Created)
			}
			cc.Created = 0
			b, _ := json.Marshal(cc)
			want := `{"id":"chatcmpl-x","object":"chat.completion","created":0,"model":"alias","choices":[{"index":0,"message":` +
				`{"role":"assistant","content":"mock[preset-h]: hello PROMPT-MARKER-7731","refusal":null},"finish_reason":"stop","logprobs":null}],` +
				`"usage":{"prompt_tokens":4,"completion_tokens":3,"total_tokens":7},"system_fingerprint":null}`
			if string(b) != want {
				t.Fatalf("completion = %s\nwant         %s", b, want)
			}
			log := mock.Log()
			if len(log) != 1 || log[0].Hash != "preset-h" || log[0].LastUser != "hello "+testPrompt || log[0].Status != 200 {
				t.Fatalf("mock log = %+v", log)
			}
		})
	}
}

// TestCompleteStatusErrors checks each upstream status against the exact
// UpstreamError and OpenAI error it becomes.
func TestCompleteStatusErrors(t *testing.T) {
	long := strings.Repeat("a", 1000) + strings.Repeat("é", 1000) + strings.Repeat("b", 1000)
	tests := []struct {
		name       string
		status     int
		header     map[string]string
		body       string
		wantBody   string // UpstreamError.Body; "=" means the body as sent
		wantRetry  time.Duration
		retryable  bool
		wantError  string // UpstreamError.Error()
		wantOpenAI schema.Error
	}{
		{
			name: "400 with a JSON message", status: 400, body: `{"status":400,"message":"hash is required"}`, wantBody: "=",
			wantError:  "laas: HTTP 400: hash is required",
			wantOpenAI: schema.Error{Status: 400, Type: "invalid_request_error", Message: "LaaS refused the request (HTTP 400): hash is required"},
		},
		{
			name: "422 with error.message", status: 422, body: `{"error":{"message":"messages[0].content\n is invalid","code":"x"}}`, wantBody: "=",
			wantError:  "laas: HTTP 422: messages[0].content is invalid",
			wantOpenAI: schema.Error{Status: 400, Type: "invalid_request_error", Message: "LaaS refused the request (HTTP 422): messages[0].content is invalid"},
		},
		{
			name: "400 with an empty body", status: 400, body: "", wantBody: "",
			wantError:  "laas: HTTP 400",
			wantOpenAI: schema.Error{Status: 400, Type: "invalid_request_error", Message: "LaaS refused the request (HTTP 400)."},
		},
		{
			name: "401 with error as a string", status: 401, body: `{"error":"Unauthorized"}`, wantBody: "=",
			wantError: "laas: HTTP 401: Unauthorized",
			wantOpenAI: schema.Error{Status: 502, Type: "upstream_error", Code: "upstream_auth_error",
				Message: "LaaS refused the bridge's credentials (HTTP 401); the LaaS project code or API key configured on the bridge is wrong, which the bridge's operator must fix: Unauthorized"},
		},
		{
			name: "403 plain text", status: 403, body: "Forbidden\n", wantBody: "=",
			wantError: "laas: HTTP 403: Forbidden",
			wantOpenAI: schema.Error{Status: 502, Type: "upstream_error", Code: "upstream_auth_error",
				Message: "LaaS refused the bridge's credentials (HTTP 403); the LaaS project code or API key configured on the bridge is wrong, which the bridge's operator must fix: Forbidden"},
		},
		{
			name: "404 preset unknown", status: 404, body: `{"detail":"preset not found"}`, wantBody: "=",
			wantError: "laas: HTTP 404: preset not found",
			wantOpenAI: schema.Error{Status: 502, Type: "upstream_error", Code: "upstream_error",
				Message: "LaaS answered HTTP 404: the preset hash is unknown to LaaS; the bridge's preset configuration for this model is wrong: preset not found"},
		},
		{
			name: "413", status: 413, body: "too big", wantBody: "=",
			wantError: "laas: HTTP 413: too big",
			wantOpenAI: schema.Error{Status: 413, Type: "invalid_request_error", Code: "request_too_large",
				Message: "LaaS refused the request as too large (HTTP 413): too big"},
		},
		{
			name: "429 with Retry-After seconds", status: 429, header: map[string]string{"Retry-After": "3"}, body: `{"message":"slow down"}`, wantBody: "=",
			wantRetry: 3 * time.Second, retryable: true,
			wantError: "laas: HTTP 429 (retry after 3s): slow down",
			wantOpenAI: schema.Error{Status: 429, Type: "rate_limit_error", Code: "rate_limit_exceeded", RetryAfter: 3,
				Message: "LaaS is rate limiting the bridge (HTTP 429); retry later: slow down"},
		},
		{
			name: "429 with a fractional Retry-After rounds up", status: 429, header: map[string]string{"Retry-After": "1.2"}, body: "", wantBody: "",
			wantRetry: 1200 * time.Millisecond, retryable: true,
			wantError: "laas: HTTP 429 (retry after 1.2s)",
			wantOpenAI: schema.Error{Status: 429, Type: "rate_limit_error", Code: "rate_limit_exceeded", RetryAfter: 2,
				Message: "LaaS is rate limiting the bridge (HTTP 429); retry later."},
		},
		{
			name: "429 without Retry-After still tells the caller 1s", status: 429, body: "", wantBody: "",
			retryable: true,
			wantError: "laas: HTTP 429",
			wantOpenAI: schema.Error{Status: 429, Type: "rate_limit_error", Code: "rate_limit_exceeded", RetryAfter: 1,
				Message: "LaaS is rate limiting the bridge (HTTP 429); retry later."},
		},
		{
			name: "500", status: 500, body: `{"message":"NullPointerException"}`, wantBody: "=", retryable: true,
			wantError:  "laas: HTTP 500: NullPointerException",
			wantOpenAI: schema.Error{Status: 502, Type: "upstream_error", Code: "upstream_error", Message: "LaaS failed (HTTP 500): NullPointerException"},
		},
		{
			name: "502 HTML page collapsed to one line", status: 502, body: "<html>\n  <body>\tBad   Gateway</body>\n</html>\n", wantBody: "=", retryable: true,
			wantError:  "laas: HTTP 502: <html> <body> Bad Gateway</body> </html>",
			wantOpenAI: schema.Error{Status: 502, Type: "upstream_error", Code: "upstream_error", Message: "LaaS failed (HTTP 502): <html> <body> Bad Gateway</body> </html>"},
		},
		{
			name: "503 with Retry-After", status: 503, header: map[string]string{"Retry-After": "5"}, body: "maintenance", wantBody: "=",
			wantRetry: 5 * time.Second, retryable: true,
			wantError:  "laas: HTTP 503 (retry after 5s): maintenance",
			wantOpenAI: schema.Error{Status: 503, Type: "upstream_error", Code: "upstream_error", RetryAfter: 5, Message: "LaaS is unavailable (HTTP 503): maintenance"},
		},
		{
			name: "503 without Retry-After", status: 503, body: "", wantBody: "", retryable: true,
			wantError:  "laas: HTTP 503",
			wantOpenAI: schema.Error{Status: 503, Type: "upstream_error", Code: "upstream_error", Message: "LaaS is unavailable (HTTP 503)."},
		},
		{
			name: "504 from a proxy", status: 504, body: "", wantBody: "", retryable: true,
			wantError:  "laas: HTTP 504",
			wantOpenAI: schema.Error{Status: 502, Type: "upstream_error", Code: "upstream_error", Message: "LaaS failed (HTTP 504)."},
		},
		{
			name: "405 is unexpected", status: 405, body: "nope", wantBody: "=",
			wantError:  "laas: HTTP 405: nope",
			wantOpenAI: schema.Error{Status: 502, Type: "upstream_error", Code: "upstream_error", Message: "LaaS answered with unexpected HTTP 405: nope"},
		},
		{
			name: "a redirect is not followed", status: 307, header: map[string]string{"Location": "http://127.0.0.1:1/elsewhere"}, body: "moved", wantBody: "=",
			wantError:  "laas: HTTP 307: moved",
			wantOpenAI: schema.Error{Status: 502, Type: "upstream_error", Code: "upstream_error", Message: "LaaS answered with unexpected HTTP 307: moved"},
		},
		{
			name: "long body: Body keeps 2 KB, the message 200 characters", status: 400, body: long,
			wantBody:  long[:1000] + strings.Repeat("é", 524),
			wantError: "laas: HTTP 400: " + strings.Repeat("a", 199) + "…",
			wantOpenAI: schema.Error{Status: 400, Type: "invalid_request_error",
				Message: "LaaS refused the request (HTTP 400): " + strings.Repeat("a", 199) + "…"},
		},
		{
			name: "200 that is not JSON", status: 200, body: "<html>oops</html>", wantBody: "=",
			wantError: "laas: HTTP 200: LaaS answer is not a chat completion: invalid character '<' looking for beginning of value: <html>oops</html>",
			wantOpenAI: schema.Error{Status: 502, Type: "upstream_error", Code: "upstream_error",
				Message: "LaaS answered HTTP 200 with a body that is not a chat completion: <html>oops</html>"},
		},
		{
			name: "200 without choices", status: 200, body: `{"id":"x","choices":[]}`, wantBody: "=",
			wantError: `laas: HTTP 200: LaaS answer is not a chat completion: no choices: {"id":"x","choices":[]}`,
			wantOpenAI: schema.Error{Status: 502, Type: "upstream_error", Code: "upstream_error",
				Message: `LaaS answered HTTP 200 with a body that is not a chat completion: {"id":"x","choices":[]}`},
		},
		{
			name: "200 with an error object and no choices", status: 200, body: `{"error":{"message":"quota exhausted"}}`, wantBody: "=",
			wantError: "laas: HTTP 200: LaaS answer is not a chat completion: no choices: quota exhausted",
			wantOpenAI: schema.Error{Status: 502, Type: "upstream_error", Code: "upstream_error",
				Message: "LaaS answered HTTP 200 with a body that is not a chat completion: quota exhausted"},
		},
		{
			name: "200 with a wrongly typed field", status: 200, body: `{"choices":"none"}`, wantBody: "=",
			wantError: `laas: HTTP 200: LaaS answer is not a chat completion: json: cannot unmarshal string into Go struct field LaaSResponse.choices of type []schema.LaaSChoice: {"choices":"none"}`,
			wantOpenAI: schema.Error{Status: 502, Type: "upstream_error", Code: "upstream_error",
				Message: `LaaS answered HTTP 200 with a body that is not a chat completion: {"choices":"none"}`},
		},
		{
			name: "204 no content", status: 204, body: "", wantBody: "",
			wantError: "laas: HTTP 204: LaaS answer is not a chat completion: unexpected end of JSON input",
			wantOpenAI: schema.Error{Status: 502, Type: "upstream_error", Code: "upstream_error",
				Message: "LaaS answered HTTP 204 with a body that is not a chat completion."},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				for k, v := range tc.header {
					w.Header().Set(k, v)
				}
				w.WriteHeader(tc.status)
				io.WriteString(w, tc.body)
			}))
			defer srv.Close()
			c := newTestClient(t, srv.URL, 5*time.Second)
			resp, err := c.Complete(context.Background(), testRequest())
			if resp != nil {
				t.Fatalf("Complete returned an answer with an error")
			}
			var ue *UpstreamError
			if !errors.As(err, &ue) {
				t.Fatalf("err = %T %v, want *UpstreamError", err, err)
			}
			wantBody := tc.wantBody
			if wantBody == "=" {
				wantBody = tc.body
			}
			if ue.Status != tc.status || ue.Body != wantBody || ue.RetryAfter != tc.wantRetry || ue.Timeout {
				t.Errorf("UpstreamError{Status: %d, Body: %q, RetryAfter: %v, Timeout: %v}\nwant Status %d, Body %q, RetryAfter %v",
					ue.Status, ue.Body, ue.RetryAfter, ue.Timeout, tc.status, wantBody, tc.wantRetry)
			}
			if !utf8.ValidString(ue.Body) || len(ue.Body) > 2048 {
				t.Errorf("Body is %d bytes, valid UTF-8 %v", len(ue.Body), utf8.ValidString(ue.Body))
			}
			if got := ue.Retryable(); got != tc.retryable {
				t.Errorf("Retryable() = %v, want %v", got, tc.retryable)
			}
			if got := err.Error(); got != tc.wantError {
				t.Errorf("Error() = %q\nwant      %q", got, tc.wantError)
			}
			if (tc.status >= 200 && tc.status < 300) != errors.Is(err, ErrInvalidAnswer) {
				t.Errorf("errors.Is(err, ErrInvalidAnswer) = %v", errors.Is(err, ErrInvalidAnswer))
			}
			oe := ue.OpenAI()
			if oe.Cause != ue {
				t.Errorf("OpenAI().Cause = %v, want the UpstreamError", oe.Cause)
			}
			oe.Cause = nil
			if *oe != tc.wantOpenAI {
				t.Errorf("OpenAI() = %+v\nwant       %+v", *oe, tc.wantOpenAI)
			}
			if n := utf8.RuneCountInString(oe.Message); n > 400 {
				t.Errorf("OpenAI message is %d characters", n)
			}
		})
	}
}

// TestSecretsNeverLeak has the upstream echo the credentials back, in every
// form and at every status, and checks no error output holds them or the
// request body.
func TestSecretsNeverLeak(t *testing.T) {
	jsonEsc := func(s string) string { b, _ := json.Marshal(s); return string(b[1 : len(b)-1]) }
	uEsc := func(s string) string { // every character \u-escaped, as some servers do
		var b strings.Builder
		for _, r := range s {
			fmt.Fprintf(&b, `\u%04x`, r)
		}
		return b.String()
	}
	echoes := []struct {
		name string
		body func(project, key string) string
	}{
		{name: "raw text", body: func(p, k string) string { return "bad credentials project=" + p + " apiKey=" + k }},
		{name: "JSON message", body: func(p, k string) string {
			return `{"message":"invalid apiKey ` + jsonEsc(k) + ` for project ` + jsonEsc(p) + `"}`
		}},
		{name: "JSON with every character escaped", body: func(p, k string) string {
			return `{"error":{"message":"key ` + uEsc(k) + ` project ` + uEsc(p) + `"}}`
		}},
		{name: "URL-encoded", body: func(p, k string) string {
			return "redirect to /login?project=" + urlQueryEscape(p) + "&apiKey=" + urlQueryEscape(k)
		}},
		{name: "headers dumped", body: func(p, k string) string {
			return fmt.Sprintf("Project: %s\nApikey: %s\n", p, k)
		}},
		{name: "key across the 2 KB cut", body: func(p, k string) string {
			return strings.Repeat("x", 2048-len(k)/2) + k + strings.Repeat("y", 100)
		}},
		{name: "project across the 2 KB cut", body: func(p, k string) string {
			return strings.Repeat("x", 2046) + p + strings.Repeat("y", 100)
		}},
		{name: "key repeated past the cut", body: func(p, k string) string {
			return strings.Repeat(k, 300)
		}},
		{name: "key and project alternating past the cut", body: func(p, k string) string {
			return strings.Repeat(k+p, 200)
		}},
		{name: "key at the very start of a long body", body: func(p, k string) string {
			return k + strings.Repeat(" ", 5000) + p
		}},
	}
	statuses := []int{200, 400, 401, 403, 404, 413, 422, 429, 500, 502, 503}
	for _, echo := range echoes {
		for _, status := range statuses {
			t.Run(fmt.Sprintf("%s/%d", echo.name, status), func(t *testing.T) {
				srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					w.WriteHeader(status)
					io.WriteString(w, echo.body(r.Header.Get("project"), r.Header.Get("apiKey")))
				}))
				defer srv.Close()
				c := newTestClient(t, srv.URL, 5*time.Second)
				_, err := c.Complete(context.Background(), testRequest())
				var ue *UpstreamError
				if !errors.As(err, &ue) {
					t.Fatalf("err = %v, want *UpstreamError", err)
				}
				checkNoSecrets(t, ue)
				// The body keeps 2 KB, which may cut the marker itself.
				if !strings.Contains(ue.Body, "[redacted]") && !strings.HasSuffix(ue.Body, "[r") {
					t.Errorf("Body = %q shows no redaction", ue.Body)
				}
			})
		}
	}
}

// checkNoSecrets fails if any output of ue holds a credential (or six
// characters of one in a row) or the request's marker.
func checkNoSecrets(t *testing.T, ue *UpstreamError) {
	t.Helper()
	oe := ue.OpenAI()
	body, _ := json.Marshal(oe)
	var decoded any // Body with any JSON escapes undone
	_ = json.Unmarshal([]byte(ue.Body), &decoded)
	outputs := map[string]string{
		"Body":             ue.Body,
		"Body decoded":     fmt.Sprint(decoded),
		"Error()":          ue.Error(),
		"%+v":              fmt.Sprintf("%+v", ue),
		"%#v":              fmt.Sprintf("%#v", ue),
		"OpenAI().Message": oe.Message,
		"OpenAI().Error()": oe.Error(),
		"OpenAI JSON":      string(body),
	}
	for name, out := range outputs {
		for _, secret := range []string{testAPIKey, testProject, urlQueryEscape(testAPIKey), urlQueryEscape(testProject)} {
			for i := 0; i+6 <= len(secret); i++ {
				if frag := secret[i : i+6]; strings.Contains(out, frag) {
					t.Fatalf("%s holds %q of a credential: %s", name, frag, out)
				}
			}
		}
		if strings.Contains(out, testPrompt) {
			t.Fatalf("%s holds the request body: %s", name, out)
		}
	}
}

func urlQueryEscape(s string) string {
	r := strings.NewReplacer("/", "%2F", "+", "%2B", `"`, "%22", "<", "%3C", ">", "%3E", "&", "%26", "=", "%3D")
	return r.Replace(s)
}

func TestCompleteTransportErrors(t *testing.T) {
	// slow answers after a long time unless the client leaves first.
	// Each reads the body first: only then does the server watch the
	// connection and cancel r.Context() when the client leaves.
	slow := func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	}
	// stall sends the status and part of the body, then stalls.
	stall := func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(200)
		io.WriteString(w, `{"choices":[`)
		w.(http.Flusher).Flush()
		slow(w, r)
	}
	// hangUp closes the connection without answering.
	hangUp := func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
	}
	closedURL := func() string {
		srv := httptest.NewServer(http.NotFoundHandler())
		srv.Close()
		return srv.URL
	}()

	tests := []struct {
		name       string
		handler    http.HandlerFunc // nil: use closedURL
		timeout    time.Duration    // Config.Timeout
		ctx        func() (context.Context, context.CancelFunc)
		wantStatus int
		timedOut   bool
		retryable  bool
		wantIs     error
		wantOpenAI schema.Error
	}{
		{
			name: "client timeout", handler: slow, timeout: 50 * time.Millisecond,
			timedOut: true, retryable: true, wantIs: context.DeadlineExceeded,
			wantOpenAI: schema.Error{Status: 504, Type: "timeout_error", Code: "upstream_timeout", Message: "LaaS did not answer in time."},
		},
		{
			name: "context deadline", handler: slow,
			ctx: func() (context.Context, context.CancelFunc) {
				return context.WithTimeout(context.Background(), 50*time.Millisecond)
			},
			timedOut: true, retryable: true, wantIs: context.DeadlineExceeded,
			wantOpenAI: schema.Error{Status: 504, Type: "timeout_error", Code: "upstream_timeout", Message: "LaaS did not answer in time."},
		},
		{
			name: "context deadline already passed", handler: slow,
			ctx: func() (context.Context, context.CancelFunc) {
				return context.WithTimeout(context.Background(), -time.Second)
			},
			timedOut: true, retryable: true, wantIs: context.DeadlineExceeded,
			wantOpenAI: schema.Error{Status: 504, Type: "timeout_error", Code: "upstream_timeout", Message: "LaaS did not answer in time."},
		},
		{
			name: "timeout while reading the answer", handler: stall, timeout: 100 * time.Millisecond,
			wantStatus: 200, timedOut: true, retryable: true, wantIs: context.DeadlineExceeded,
			wantOpenAI: schema.Error{Status: 504, Type: "timeout_error", Code: "upstream_timeout", Message: "LaaS did not answer in time."},
		},
		{
			name: "context deadline while reading the answer", handler: stall,
			ctx: func() (context.Context, context.CancelFunc) {
				return context.WithTimeout(context.Background(), 100*time.Millisecond)
			},
			wantStatus: 200, timedOut: true, retryable: true, wantIs: context.DeadlineExceeded,
			wantOpenAI: schema.Error{Status: 504, Type: "timeout_error", Code: "upstream_timeout", Message: "LaaS did not answer in time."},
		},
		{
			name: "context cancelled", handler: slow,
			ctx: func() (context.Context, context.CancelFunc) {
				ctx, cancel := context.WithCancel(context.Background())
				time.AfterFunc(50*time.Millisecond, cancel)
				return ctx, cancel
			},
			retryable: false, wantIs: context.Canceled,
			wantOpenAI: schema.Error{Status: 502, Type: "upstream_error", Code: "upstream_error", Message: "The LaaS call was cancelled before LaaS answered."},
		},
		{
			name: "connection refused", retryable: true,
			wantOpenAI: schema.Error{Status: 502, Type: "upstream_error", Code: "upstream_error", Message: "The bridge could not get an answer from LaaS (connection error)."},
		},
		{
			name: "connection closed without an answer", handler: hangUp, retryable: true, wantIs: io.EOF,
			wantOpenAI: schema.Error{Status: 502, Type: "upstream_error", Code: "upstream_error", Message: "The bridge could not get an answer from LaaS (connection error)."},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			url := closedURL
			if tc.handler != nil {
				srv := httptest.NewServer(tc.handler)
				defer srv.Close()
				url = srv.URL
			}
			ctx, cancel := context.Background(), context.CancelFunc(func() {})
			if tc.ctx != nil {
				ctx, cancel = tc.ctx()
			}
			defer cancel()
			c := newTestClient(t, url, tc.timeout)
			start := time.Now()
			_, err := c.Complete(ctx, testRequest())
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("Complete took %v", took)
			}
			var ue *UpstreamError
			if !errors.As(err, &ue) {
				t.Fatalf("err = %T %v, want *UpstreamError", err, err)
			}
			if ue.Status != tc.wantStatus || ue.Timeout != tc.timedOut || ue.Err == nil || ue.Body != "" {
				t.Errorf("UpstreamError{Status: %d, Timeout: %v, Err: %v, Body: %q}", ue.Status, ue.Timeout, ue.Err, ue.Body)
			}
			if tc.wantIs != nil && !errors.Is(err, tc.wantIs) {
				t.Errorf("errors.Is(%v, %v) = false", err, tc.wantIs)
			}
			if got := ue.Retryable(); got != tc.retryable {
				t.Errorf("Retryable() = %v, want %v", got, tc.retryable)
			}
			if !strings.HasPrefix(err.Error(), "laas: ") || !strings.Contains(err.Error(), ue.Err.Error()) {
				t.Errorf("Error() = %q", err)
			}
			oe := ue.OpenAI()
			oe.Cause = nil
			if *oe != tc.wantOpenAI {
				t.Errorf("OpenAI() = %+v\nwant       %+v", *oe, tc.wantOpenAI)
			}
			checkNoSecrets(t, ue)
		})
	}
}

func TestCompleteNilRequest(t *testing.T) {
	c := newTestClient(t, "http://127.0.0.1:1", 0)
	if _, err := c.Complete(context.Background(), nil); err == nil || err.Error() != "laas: nil request" {
		t.Fatalf("err = %v", err)
	}
}

func TestRedirectNotFollowed(t *testing.T) {
	var hits sync.Map
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Store("other", r.Header.Get("apiKey"))
	}))
	defer other.Close()
	srv := httptest.NewServer(http.RedirectHandler(other.URL+schema.LaaSChatPath, http.StatusFound))
	defer srv.Close()
	_, err := newTestClient(t, srv.URL, 5*time.Second).Complete(context.Background(), testRequest())
	var ue *UpstreamError
	if !errors.As(err, &ue) || ue.Status != http.StatusFound {
		t.Fatalf("err = %v, want an UpstreamError with status 302", err)
	}
	if _, hit := hits.Load("other"); hit {
		t.Fatal("the redirect was followed and the credentials sent to another server")
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name  string
		value string
		want  time.Duration
	}{
		{name: "absent", value: "", want: 0},
		{name: "seconds", value: "7", want: 7 * time.Second},
		{name: "seconds with spaces", value: " 2 ", want: 2 * time.Second},
		{name: "fraction", value: "0.5", want: 500 * time.Millisecond},
		{name: "zero", value: "0", want: 0},
		{name: "negative", value: "-3", want: 0},
		{name: "NaN", value: "NaN", want: 0},
		{name: "huge is clamped", value: "99999999999999999999", want: 24 * time.Hour},
		{name: "HTTP date", value: "Thu, 02 Jan 2025 03:04:35 GMT", want: 30 * time.Second},
		{name: "RFC 850 date", value: "Thursday, 02-Jan-25 03:05:05 GMT", want: time.Minute},
		{name: "date in the past", value: "Thu, 02 Jan 2025 03:00:00 GMT", want: 0},
		{name: "date far ahead is clamped", value: "Fri, 02 Jan 2026 03:04:05 GMT", want: 24 * time.Hour},
		{name: "garbage", value: "soon", want: 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := parseRetryAfter(tc.value, now); got != tc.want {
				t.Fatalf("parseRetryAfter(%q) = %v, want %v", tc.value, got, tc.want)
			}
		})
	}
}

// TestUpstreamErrorByHand covers an UpstreamError built outside the client
// (as a test double would build it).
func TestUpstreamErrorByHand(t *testing.T) {
	tests := []struct {
		name      string
		err       *UpstreamError
		wantError string
		retryable bool
		status    int
		retry     int
	}{
		{name: "status and body", err: &UpstreamError{Status: 500, Body: `{"message":"boom"}`}, wantError: "laas: HTTP 500: boom", retryable: true, status: 502},
		{name: "429 with 1.5s", err: &UpstreamError{Status: 429, RetryAfter: 1500 * time.Millisecond}, wantError: "laas: HTTP 429 (retry after 1.5s)", retryable: true, status: 429, retry: 2},
		{name: "403", err: &UpstreamError{Status: 403}, wantError: "laas: HTTP 403", status: 502},
		{name: "timeout", err: &UpstreamError{Timeout: true, Err: context.DeadlineExceeded}, wantError: "laas: timeout: context deadline exceeded", retryable: true, status: 504},
		{name: "wrapped cancellation", err: &UpstreamError{Err: fmt.Errorf("post: %w", context.Canceled)}, wantError: "laas: post: context canceled", status: 502},
		{name: "invalid answer", err: &UpstreamError{Status: 200, Err: ErrInvalidAnswer}, wantError: "laas: HTTP 200: LaaS answer is not a chat completion", status: 502},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.err.Error(); got != tc.wantError {
				t.Errorf("Error() = %q, want %q", got, tc.wantError)
			}
			if got := tc.err.Retryable(); got != tc.retryable {
				t.Errorf("Retryable() = %v, want %v", got, tc.retryable)
			}
			oe := tc.err.OpenAI()
			if oe.Status != tc.status || oe.RetryAfter != tc.retry {
				t.Errorf("OpenAI() = %+v, want status %d retry %d", oe, tc.status, tc.retry)
			}
			var got *schema.Error
			if !errors.As(schema.AsError(oe), &got) || got != oe {
				t.Errorf("schema.AsError does not keep the mapped error")
			}
		})
	}
}

// TestCompleteConcurrent runs many calls at once against the mock, with
// injected failures, under the race detector.
func TestCompleteConcurrent(t *testing.T) {
	const n = 100
	mock, err := laasmock.New(laasmock.Config{ProjectCode: testProject, APIKey: testAPIKey, Latency: 10 * time.Millisecond, Rate429: 0.2, Rate500: 0.1, Seed: 9})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(mock)
	defer srv.Close()
	c := newTestClient(t, srv.URL, 10*time.Second)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		statuses = map[int]int{}
	)
	for range n {
		wg.Go(func() {
			_, err := c.Complete(context.Background(), testRequest())
			status := 200
			if err != nil {
				var ue *UpstreamError
				if !errors.As(err, &ue) {
					t.Errorf("err = %v", err)
					return
				}
				status = ue.Status
			}
			mu.Lock()
			statuses[status]++
			mu.Unlock()
		})
	}
	wg.Wait()
	if statuses[200]+statuses[429]+statuses[500] != n || int64(statuses[200]) != mock.Served() || mock.Calls() != n {
		t.Fatalf("statuses = %v, mock served %d of %d calls", statuses, mock.Served(), mock.Calls())
	}
}

func TestCompleteAnswerTooLarge(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"choices":[{"message":{"content":"`)
		io.Copy(w, io.LimitReader(strings.NewReader(strings.Repeat("a", maxAnswerBytes)), maxAnswerBytes))
		io.WriteString(w, `"}}]}`)
	}))
	defer srv.Close()
	_, err := newTestClient(t, srv.URL, 10*time.Second).Complete(context.Background(), testRequest())
	var ue *UpstreamError
	if !errors.As(err, &ue) || ue.Status != 200 || !errors.Is(err, ErrInvalidAnswer) || ue.Retryable() {
		t.Fatalf("err = %v, want a non-retryable invalid answer", err)
	}
	if want := "LaaS answer is not a chat completion: body exceeds 16777216 bytes"; ue.Err.Error() != want {
		t.Fatalf("Err = %q, want %q", ue.Err, want)
	}
	if len(ue.Body) != 2048 || ue.OpenAI().Status != 502 {
		t.Fatalf("Body is %d bytes, OpenAI status %d", len(ue.Body), ue.OpenAI().Status)
	}
}

func TestLaaSClientPrintsNoSecrets(t *testing.T) {
	c := newTestClient(t, "http://127.0.0.1:1/", 0)
	for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
		t.Run(verb, func(t *testing.T) {
			got := fmt.Sprintf(verb, c)
			if want := "Client(http://127.0.0.1:1/api/preset/v2/chat/completions)"; got != want {
				t.Fatalf("Sprintf(%q) = %q, want %q", verb, got, want)
			}
		})
	}
}

func TestLaaSClientPrintsNoPassword(t *testing.T) {
	c, err := NewClient(Config{BaseURL: "https://user:pw-SECRET@laas.example", ProjectCode: "p", APIKey: "k"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{fmt.Sprint(c), fmt.Sprintf("%+v", c), fmt.Sprintf("%#v", c)} {
		if strings.Contains(s, "pw-SECRET") || !strings.Contains(s, "laas.example") {
			t.Errorf("printed %q", s)
		}
	}
}

// TestCompleteThroughSmallBuffers: the LaaS connections' buffers are small
// (laasWriteBuffer, laasReadBuffer) to keep thousands of calls in flight
// cheap; a request, a response header line and an answer each many times
// their size still go through whole, on one connection reused.
func TestCompleteThroughSmallBuffers(t *testing.T) {
	longHeader := strings.Repeat("h", 8*laasReadBuffer)
	answer := strings.Repeat("answer ", 64*laasReadBuffer)
	var gotUser []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req schema.LaaSRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		gotUser = append(gotUser, req.Messages[len(req.Messages)-1].Content[0].Text)
		w.Header().Set("X-Long", longHeader)
		fmt.Fprintf(w, `{"id":"x","choices":[{"index":0,"message":{"role":"assistant","content":%q},"finish_reason":"stop"}]}`, answer)
	}))
	defer srv.Close()
	c := newTestClient(t, srv.URL, 5*time.Second)
	long := strings.Repeat("q", 16*laasWriteBuffer)
	for i := range 2 {
		req := testRequest()
		req.Messages[len(req.Messages)-1].Content[0].Text = long
		resp, err := c.Complete(context.Background(), req)
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		got, err := json.Marshal(resp.Choices[0].Message.Content)
		if err != nil || string(got) != fmt.Sprintf("%q", answer) {
			t.Fatalf("call %d: answer of %d bytes (%v), want %d", i, len(got), err, len(answer)+2)
		}
	}
	if len(gotUser) != 2 || gotUser[0] != long || gotUser[1] != long {
		t.Fatalf("LaaS read %d requests, of lengths %v; want 2 of %d", len(gotUser), lens(gotUser), len(long))
	}
}

func lens(ss []string) []int {
	out := make([]int, len(ss))
	for i, s := range ss {
		out[i] = len(s)
	}
	return out
}
