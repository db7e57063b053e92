package laasmock

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/laas-bridge/laas-bridge/admission/multimodal/multimodaltest"
	"github.com/laas-bridge/laas-bridge/schema"
)

const (
	testProject = "proj-SECRET-1234"
	testKey     = "key-SECRET-abcdef"
)

// post builds a request to the chat path with both credentials set.
func post(body string) *http.Request {
	r := httptest.NewRequest(http.MethodPost, schema.LaaSChatPath, strings.NewReader(body))
	r.Header.Set(schema.LaaSHeaderProject, testProject)
	r.Header.Set(schema.LaaSHeaderAPIKey, testKey)
	return r
}

func newMock(t *testing.T, cfg Config) *Mock {
	t.Helper()
	m, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return m
}

func serve(m *Mock, r *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	m.ServeHTTP(rec, r)
	return rec
}

func mockID(body string) string {
	sum := sha256.Sum256([]byte(body))
	return "mock-" + hex.EncodeToString(sum[:])[:16]
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want []string // substrings of the error, in order; nil means valid
	}{
		{name: "zero value", cfg: Config{}},
		{name: "full", cfg: Config{ProjectCode: "p", APIKey: "k", Latency: time.Second, Rate429: 0.25, Rate500: 0.75, Seed: 7, Wild: true}},
		{name: "rates at bounds", cfg: Config{Rate429: 1}},
		{name: "negative latency", cfg: Config{Latency: -time.Millisecond}, want: []string{"laasmock: latency -1ms is negative"}},
		{name: "rate429 above 1", cfg: Config{Rate429: 1.5}, want: []string{"laasmock: Rate429 1.5 is outside [0, 1]", "laasmock: Rate429 + Rate500 = 1.5 exceeds 1"}},
		{name: "rate500 negative", cfg: Config{Rate500: -0.1}, want: []string{"laasmock: Rate500 -0.1 is outside [0, 1]"}},
		{name: "rate NaN", cfg: Config{Rate429: math.NaN()}, want: []string{"laasmock: Rate429 NaN is outside [0, 1]"}},
		{name: "sum above 1", cfg: Config{Rate429: 0.6, Rate500: 0.6}, want: []string{"laasmock: Rate429 + Rate500 = 1.2 exceeds 1"}},
		{name: "all problems joined", cfg: Config{Latency: -1, Rate429: 2, Rate500: -1}, want: []string{
			"laasmock: latency -1ns is negative", "laasmock: Rate429 2 is outside [0, 1]", "laasmock: Rate500 -1 is outside [0, 1]",
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				if _, err := New(tc.cfg); err != nil {
					t.Fatalf("New() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want %q", tc.want)
			}
			if got := strings.Split(err.Error(), "\n"); !slices.Equal(got, tc.want) {
				t.Fatalf("Validate() = %q, want %q", got, tc.want)
			}
			if m, err := New(tc.cfg); err == nil || m != nil {
				t.Fatalf("New() = %v, %v; want nil and an error", m, err)
			}
		})
	}
}

func TestRefusals(t *testing.T) {
	const valid = `{"hash":"h1","messages":[{"role":"user","content":"hi"}]}`
	tests := []struct {
		name      string
		cfg       Config
		method    string
		path      string
		project   *string // nil: the default test value; "" removes the header
		apiKey    *string
		body      string
		status    int
		wantBody  string
		wantAllow string
	}{
		{
			name: "unknown path", method: http.MethodPost, path: "/api/preset/chat/completions", body: valid,
			status: 404, wantBody: `{"status":404,"error":"Not Found","message":"no route for /api/preset/chat/completions"}`,
		},
		{
			name: "root path", method: http.MethodGet, path: "/", body: "",
			status: 404, wantBody: `{"status":404,"error":"Not Found","message":"no route for /"}`,
		},
		{
			name: "GET on the chat path", method: http.MethodGet, path: schema.LaaSChatPath,
			status: 405, wantAllow: "POST", wantBody: `{"status":405,"error":"Method Not Allowed","message":"method GET is not allowed; use POST"}`,
		},
		{
			name: "PUT on the chat path", method: http.MethodPut, path: schema.LaaSChatPath, body: valid,
			status: 405, wantAllow: "POST", wantBody: `{"status":405,"error":"Method Not Allowed","message":"method PUT is not allowed; use POST"}`,
		},
		{
			name: "missing project", project: ptr(""), body: valid,
			status: 401, wantBody: `{"status":401,"error":"Unauthorized","message":"missing project header"}`,
		},
		{
			name: "missing apiKey", apiKey: ptr(""), body: valid,
			status: 401, wantBody: `{"status":401,"error":"Unauthorized","message":"missing apiKey header"}`,
		},
		{
			name: "wrong project when configured", cfg: Config{ProjectCode: testProject, APIKey: testKey}, project: ptr("other"), body: valid,
			status: 401, wantBody: `{"status":401,"error":"Unauthorized","message":"invalid project header"}`,
		},
		{
			name: "wrong apiKey when configured", cfg: Config{ProjectCode: testProject, APIKey: testKey}, apiKey: ptr(testKey + "x"), body: valid,
			status: 401, wantBody: `{"status":401,"error":"Unauthorized","message":"invalid apiKey header"}`,
		},
		{
			name: "body not JSON", body: `{"hash":`,
			status: 400, wantBody: `{"status":400,"error":"Bad Request","message":"request body is not a valid LaaS request: unexpected end of JSON input"}`,
		},
		{
			name: "body a JSON array", body: `[1]`,
			status: 400, wantBody: `{"status":400,"error":"Bad Request","message":"request body is not a valid LaaS request: json: cannot unmarshal array into Go value of type laasmock.request"}`,
		},
		{
			name: "params not strings", body: `{"hash":"h","params":{"n":1},"messages":[{"role":"user","content":"x"}]}`,
			status: 400, wantBody: `{"status":400,"error":"Bad Request","message":"request body is not a valid LaaS request: json: cannot unmarshal number into Go struct field request.params of type string"}`,
		},
		{
			name: "missing hash", body: `{"messages":[{"role":"user","content":"hi"}]}`,
			status: 400, wantBody: `{"status":400,"error":"Bad Request","message":"missing hash"}`,
		},
		{
			name: "empty body", body: ``,
			status: 400, wantBody: `{"status":400,"error":"Bad Request","message":"request body is not a valid LaaS request: unexpected end of JSON input"}`,
		},
		{
			name: "null body", body: `null`,
			status: 400, wantBody: `{"status":400,"error":"Bad Request","message":"missing hash"}`,
		},
		{
			name: "no messages", body: `{"hash":"h","messages":[]}`,
			status: 400, wantBody: `{"status":400,"error":"Bad Request","message":"messages must hold at least one message"}`,
		},
		{
			name: "tool role", body: `{"hash":"h","messages":[{"role":"user","content":"a"},{"role":"tool","content":"b"}]}`,
			status: 400, wantBody: `{"status":400,"error":"Bad Request","message":"messages[1] has role \"tool\"; only system, user and assistant are allowed"}`,
		},
		{
			name: "empty role", body: `{"hash":"h","messages":[{"content":"b"}]}`,
			status: 400, wantBody: `{"status":400,"error":"Bad Request","message":"messages[0] has role \"\"; only system, user and assistant are allowed"}`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var accessLog bytes.Buffer
			tc.cfg.AccessLog = &accessLog
			m := newMock(t, tc.cfg)
			method, path := tc.method, tc.path
			if method == "" {
				method, path = http.MethodPost, schema.LaaSChatPath
			}
			r := httptest.NewRequest(method, path, strings.NewReader(tc.body))
			r.Header.Set(schema.LaaSHeaderProject, deref(tc.project, testProject))
			r.Header.Set(schema.LaaSHeaderAPIKey, deref(tc.apiKey, testKey))
			rec := serve(m, r)

			if rec.Code != tc.status {
				t.Errorf("status = %d, want %d", rec.Code, tc.status)
			}
			if got := strings.TrimSpace(rec.Body.String()); got != tc.wantBody {
				t.Errorf("body = %s\nwant   %s", got, tc.wantBody)
			}
			if got := rec.Header().Get("Content-Type"); got != "application/json; charset=utf-8" {
				t.Errorf("Content-Type = %q", got)
			}
			if got := rec.Header().Get("Allow"); got != tc.wantAllow {
				t.Errorf("Allow = %q, want %q", got, tc.wantAllow)
			}
			if m.Calls() != 0 || m.Served() != 0 || len(m.Log()) != 0 {
				t.Errorf("Calls, Served, len(Log) = %d, %d, %d; a refused request must not reach the answer stage", m.Calls(), m.Served(), len(m.Log()))
			}
			for _, out := range []string{rec.Body.String(), accessLog.String()} {
				if strings.Contains(out, "SECRET") {
					t.Errorf("a credential leaked: %s", out)
				}
			}
		})
	}
}

func TestAnyCredentialsAcceptedWhenNotConfigured(t *testing.T) {
	m := newMock(t, Config{})
	r := httptest.NewRequest(http.MethodPost, schema.LaaSChatPath, strings.NewReader(`{"hash":"h","messages":[{"role":"user","content":"x"}]}`))
	r.Header.Set("Project", "anything")
	r.Header.Set("APIKEY", "at all") // header names are case-insensitive
	if rec := serve(m, r); rec.Code != http.StatusOK {
		t.Fatalf("status = %d, want 200: %s", rec.Code, rec.Body)
	}
}

func TestAnswer(t *testing.T) {
	tests := []struct {
		name             string
		body             string
		wantModel        string
		wantContent      string
		wantLastUser     string
		prompt, complete int
	}{
		{
			name:        "string content",
			body:        `{"hash":"abc","messages":[{"role":"user","content":"hello there world"}]}`,
			wantModel:   "mock-model",
			wantContent: "mock[abc]: hello there world", wantLastUser: "hello there world",
			prompt: 3, complete: 4,
		},
		{
			name:        "model echoed",
			body:        `{"hash":"abc","model":"gpt-4o","params":{"x":"1"},"messages":[{"role":"user","content":"hi"}]}`,
			wantModel:   "gpt-4o",
			wantContent: "mock[abc]: hi", wantLastUser: "hi",
			prompt: 1, complete: 2,
		},
		{
			name: "last user message wins, all messages counted",
			body: `{"hash":"h","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"first question"},` +
				`{"role":"assistant","content":"an answer"},{"role":"user","content":[{"type":"text","text":"second"}]},{"role":"assistant","content":"x"}]}`,
			wantModel:   "mock-model",
			wantContent: "mock[h]: second", wantLastUser: "second",
			prompt: 8, complete: 2,
		},
		{
			// AAAA is three zero bytes, whose SHA-256 starts 709e80c88487a241.
			name: "parts joined with one space, placeholders for images and documents",
			body: `{"hash":"h","messages":[{"role":"user","content":[{"type":"text","text":"look at"},` +
				`{"type":"image_url","image_url":{"url":"https://example.com/a.png"}},{"type":"text","text":"and"},` +
				`{"type":"document","document_url":{"url":"data:application/pdf;base64,AAAA"}}]}]}`,
			wantModel:    "mock-model",
			wantContent:  "mock[h]: look at [image https://example.com/a.png] and [document sha256:709e80c88487a241]",
			wantLastUser: "look at [image https://example.com/a.png] and [document sha256:709e80c88487a241]",
			prompt:       7, complete: 8,
		},
		{
			// aGk= is "hi", whose SHA-256 starts 8f434346648f6b96.
			name: "image placeholders: data URL in any case, undecodable data, no url",
			body: `{"hash":"h","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png;base64,aGk="}},` +
				`{"type":"image_url","image_url":"DATA:image/png;BASE64,aGk="},{"type":"image_url","image_url":{"url":"data:image/png;base64,aGk"}},` +
				`{"type":"image_url","image_url":{"url":"data:image/png,hi"}},{"type":"image_url"},{"type":"document","document_url":{"url":""}}]}]}`,
			wantModel: "mock-model",
			wantContent: "mock[h]: [image sha256:8f434346648f6b96] [image sha256:8f434346648f6b96] [image invalid-base64] " +
				"[image invalid-base64] [image] [document]",
			wantLastUser: "[image sha256:8f434346648f6b96] [image sha256:8f434346648f6b96] [image invalid-base64] " +
				"[image invalid-base64] [image] [document]",
			prompt: 10, complete: 11,
		},
		{
			name:        "unknown part types contribute an empty string",
			body:        `{"hash":"h","messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"audio"},{"type":"text","text":"b"}]}]}`,
			wantModel:   "mock-model",
			wantContent: "mock[h]: a  b", wantLastUser: "a  b",
			prompt: 2, complete: 3,
		},
		{
			name:        "no user message",
			body:        `{"hash":"h","messages":[{"role":"system","content":"only a system prompt"}]}`,
			wantModel:   "mock-model",
			wantContent: "mock[h]: ", wantLastUser: "",
			prompt: 4, complete: 1,
		},
		{
			name:        "empty parts and null content",
			body:        `{"hash":"h","messages":[{"role":"user","content":null},{"role":"user","content":[]}]}`,
			wantModel:   "mock-model",
			wantContent: "mock[h]: ", wantLastUser: "",
			prompt: 0, complete: 1,
		},
	}
	for _, tc := range tests {
		for _, wild := range []bool{false, true} {
			name := tc.name
			if wild {
				name += " (wild)"
			}
			t.Run(name, func(t *testing.T) {
				m := newMock(t, Config{Wild: wild})
				before := time.Now()
				rec := serve(m, post(tc.body))
				after := time.Now()
				if rec.Code != http.StatusOK {
					t.Fatalf("status = %d: %s", rec.Code, rec.Body)
				}
				var got map[string]any
				if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
					t.Fatalf("answer is not JSON: %v", err)
				}
				created, _ := got["created"].(float64)
				delete(got, "created")
				id := mockID(tc.body)
				want := map[string]any{
					"id": id, "object": "chat.completion", "model": tc.wantModel,
					"choices": []any{map[string]any{
						"index": 0.0, "finish_reason": "stop",
						"message": map[string]any{"role": "assistant", "content": tc.wantContent},
					}},
					"usage": map[string]any{
						"prompt_tokens": float64(tc.prompt), "completion_tokens": float64(tc.complete),
						"total_tokens": float64(tc.prompt + tc.complete),
					},
				}
				lo, hi := before.Unix(), after.Unix()
				if wild {
					want["object"] = "chat.completion.chunk"
					want["session_id"] = id
					want["choices"] = []any{map[string]any{
						"index": 0.0, "finish_reason": "stop",
						"message": map[string]any{
							"role": "assistant", "tool_calls": []any{},
							"content": []any{map[string]any{"type": "text", "text": tc.wantContent}},
						},
					}}
					want["usage"] = map[string]any{"input_tokens": float64(tc.prompt), "output_tokens": float64(tc.complete)}
					lo, hi = before.UnixMilli(), after.UnixMilli()
				}
				if !reflect.DeepEqual(got, want) {
					t.Errorf("answer = %s\nwant     %s", jsonString(got), jsonString(want))
				}
				if c := int64(created); c < lo || c > hi {
					t.Errorf("created = %d, want within [%d, %d]", c, lo, hi)
				}
				if m.Calls() != 1 || m.Served() != 1 {
					t.Errorf("Calls, Served = %d, %d; want 1, 1", m.Calls(), m.Served())
				}
				log := m.Log()
				if len(log) != 1 {
					t.Fatalf("len(Log) = %d, want 1", len(log))
				}
				e := log[0]
				if e.Hash != mustHash(t, tc.body) || e.LastUser != tc.wantLastUser || e.Status != 200 || e.Time.Before(before) || e.Time.After(after) {
					t.Errorf("Log()[0] = %+v", e)
				}
			})
		}
	}
}

// TestAnswerGolden pins the id and body of one answer literally, so a change
// of the documented function cannot pass unnoticed.
func TestAnswerGolden(t *testing.T) {
	body := `{"hash":"golden","messages":[{"role":"user","content":"ping"}]}`
	m := newMock(t, Config{})
	rec := serve(m, post(body))
	got := rec.Body.String()
	i, j := strings.Index(got, `"created":`), strings.Index(got, `,"model"`)
	if i < 0 || j < i {
		t.Fatalf("unexpected body %s", got)
	}
	got = got[:i] + `"created":0` + got[j:]
	want := `{"id":"mock-af60dd75213a4060","object":"chat.completion","created":0,"model":"mock-model",` +
		`"choices":[{"index":0,"message":{"role":"assistant","content":"mock[golden]: ping"},"finish_reason":"stop"}],` +
		`"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}` + "\n"
	if got != want {
		t.Fatalf("body = %s\nwant   %s", got, want)
	}
}

func TestInjection(t *testing.T) {
	const n = 200
	tests := []struct {
		name             string
		rate429, rate500 float64
		seed             int64
		want429, want500 int // exact counts over n requests
	}{
		{name: "none", want429: 0, want500: 0},
		{name: "all 429", rate429: 1, want429: n},
		{name: "all 500", rate500: 1, want500: n},
		{name: "mixed seed 1", rate429: 0.3, rate500: 0.2, seed: 1, want429: -1, want500: -1},
		{name: "mixed seed 2", rate429: 0.3, rate500: 0.2, seed: 2, want429: -1, want500: -1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// The expected sequence, drawn from the documented source.
			rng := rand.New(rand.NewPCG(uint64(tc.seed), 0))
			want := make([]int, n)
			for i := range want {
				want[i] = 200
				if tc.rate429 == 0 && tc.rate500 == 0 {
					continue
				}
				switch p := rng.Float64(); {
				case p < tc.rate429:
					want[i] = 429
				case p < tc.rate429+tc.rate500:
					want[i] = 500
				}
			}
			m := newMock(t, Config{Rate429: tc.rate429, Rate500: tc.rate500, Seed: tc.seed})
			got := make([]int, n)
			for i := range got {
				rec := serve(m, post(`{"hash":"h","messages":[{"role":"user","content":"x"}]}`))
				got[i] = rec.Code
				switch rec.Code {
				case 429:
					if ra := rec.Header().Get("Retry-After"); ra != "1" {
						t.Fatalf("request %d: Retry-After = %q, want 1", i, ra)
					}
					if b := strings.TrimSpace(rec.Body.String()); b != `{"status":429,"error":"Too Many Requests","message":"rate limit exceeded (injected by laasmock)"}` {
						t.Fatalf("429 body = %s", b)
					}
				case 500:
					if b := strings.TrimSpace(rec.Body.String()); b != `{"status":500,"error":"Internal Server Error","message":"internal error (injected by laasmock)"}` {
						t.Fatalf("500 body = %s", b)
					}
				}
			}
			if !slices.Equal(got, want) {
				t.Fatalf("statuses = %v\nwant       %v", got, want)
			}
			count := func(s int) int {
				c := 0
				for _, v := range got {
					if v == s {
						c++
					}
				}
				return c
			}
			if tc.want429 >= 0 && (count(429) != tc.want429 || count(500) != tc.want500) {
				t.Fatalf("429s, 500s = %d, %d; want %d, %d", count(429), count(500), tc.want429, tc.want500)
			}
			if tc.want429 < 0 { // mixed: the fractions are near the rates
				if c := count(429); c < n*15/100 || c > n*45/100 {
					t.Errorf("429s = %d of %d, far from rate %v", c, n, tc.rate429)
				}
				if c := count(500); c < n*8/100 || c > n*35/100 {
					t.Errorf("500s = %d of %d, far from rate %v", c, n, tc.rate500)
				}
			}
			if m.Calls() != n || m.Served() != int64(count(200)) {
				t.Errorf("Calls, Served = %d, %d; want %d, %d", m.Calls(), m.Served(), n, count(200))
			}
			var logged []int
			for _, e := range m.Log() {
				logged = append(logged, e.Status)
			}
			if !slices.Equal(logged, got) {
				t.Errorf("Log statuses differ from the answers")
			}
		})
	}
}

func TestLatency(t *testing.T) {
	const latency = 80 * time.Millisecond
	tests := []struct {
		name       string
		rate429    float64
		cancelAt   time.Duration // 0: never
		wantStatus int           // in the log
		minTime    time.Duration
		maxTime    time.Duration
		wantBody   bool
	}{
		{name: "answer waits the latency", wantStatus: 200, minTime: latency, maxTime: 5 * time.Second, wantBody: true},
		{name: "injected failure waits too", rate429: 1, wantStatus: 429, minTime: latency, maxTime: 5 * time.Second, wantBody: true},
		{name: "client gone returns early", cancelAt: 10 * time.Millisecond, wantStatus: StatusClientClosed, minTime: 10 * time.Millisecond, maxTime: 10 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := newMock(t, Config{Latency: latency, Rate429: tc.rate429})
			if tc.cancelAt > 0 {
				m.cfg.Latency = time.Hour // make an early return unmistakable
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tc.cancelAt > 0 {
				time.AfterFunc(tc.cancelAt, cancel)
			}
			start := time.Now()
			rec := serve(m, post(`{"hash":"h","messages":[{"role":"user","content":"x"}]}`).WithContext(ctx))
			took := time.Since(start)
			if took < tc.minTime || took > tc.maxTime {
				t.Errorf("took %v, want within [%v, %v]", took, tc.minTime, tc.maxTime)
			}
			if got := rec.Body.Len() > 0; got != tc.wantBody {
				t.Errorf("body written = %v, want %v", got, tc.wantBody)
			}
			log := m.Log()
			if len(log) != 1 || log[0].Status != tc.wantStatus {
				t.Errorf("Log = %+v, want one entry with status %d", log, tc.wantStatus)
			}
			if m.Calls() != 1 {
				t.Errorf("Calls = %d, want 1", m.Calls())
			}
			wantServed := int64(0)
			if tc.wantStatus == 200 {
				wantServed = 1
			}
			if m.Served() != wantServed {
				t.Errorf("Served = %d, want %d", m.Served(), wantServed)
			}
		})
	}
}

// TestClientGoneOverHTTP checks the early return with a real connection
// that the client closes.
func TestClientGoneOverHTTP(t *testing.T) {
	m := newMock(t, Config{Latency: time.Hour})
	srv := httptest.NewServer(m)
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+schema.LaaSChatPath,
		strings.NewReader(`{"hash":"h","messages":[{"role":"user","content":"x"}]}`))
	req.Header.Set(schema.LaaSHeaderProject, "p")
	req.Header.Set(schema.LaaSHeaderAPIKey, "k")
	if resp, err := srv.Client().Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("got status %d, want the client's deadline to pass", resp.StatusCode)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if log := m.Log(); len(log) == 1 && log[0].Status == StatusClientClosed {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the handler did not notice the client left: Log = %+v", m.Log())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestLogInFlightAndBounded(t *testing.T) {
	tests := []struct {
		name     string
		capacity int
		requests int
		want     []string // LastUser of the kept entries, oldest first
	}{
		{name: "below capacity", capacity: 3, requests: 2, want: []string{"m0", "m1"}},
		{name: "at capacity", capacity: 3, requests: 3, want: []string{"m0", "m1", "m2"}},
		{name: "wrapped", capacity: 3, requests: 7, want: []string{"m4", "m5", "m6"}},
		{name: "wrapped twice exactly", capacity: 2, requests: 6, want: []string{"m4", "m5"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := newMock(t, Config{})
			m.logCap = tc.capacity
			for i := range tc.requests {
				serve(m, post(`{"hash":"h`+string(rune('0'+i))+`","messages":[{"role":"user","content":"m`+string(rune('0'+i))+`"}]}`))
			}
			var got []string
			for _, e := range m.Log() {
				got = append(got, e.LastUser)
				if e.Status != 200 || e.Hash != "h"+e.LastUser[1:] {
					t.Errorf("entry %+v", e)
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("Log LastUser = %q, want %q", got, tc.want)
			}
			if m.Calls() != int64(tc.requests) {
				t.Fatalf("Calls = %d, want %d", m.Calls(), tc.requests)
			}
		})
	}

	t.Run("in flight shows status 0", func(t *testing.T) {
		m := newMock(t, Config{Latency: time.Hour})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			serve(m, post(`{"hash":"h","messages":[{"role":"user","content":"x"}]}`).WithContext(ctx))
		}()
		deadline := time.Now().Add(5 * time.Second)
		for len(m.Log()) == 0 {
			if time.Now().After(deadline) {
				t.Fatal("the request never reached the log")
			}
			time.Sleep(time.Millisecond)
		}
		if e := m.Log()[0]; e.Status != 0 || e.LastUser != "x" {
			t.Fatalf("in-flight entry = %+v, want status 0", e)
		}
		cancel()
		<-done
		if e := m.Log()[0]; e.Status != StatusClientClosed {
			t.Fatalf("finished entry = %+v, want status %d", e, StatusClientClosed)
		}
	})

	t.Run("an entry dropped while in flight is not resurrected", func(t *testing.T) {
		m := newMock(t, Config{})
		m.logCap = 2
		seq := m.record(Entry{LastUser: "old"})
		m.record(Entry{LastUser: "a"})
		m.record(Entry{LastUser: "b"}) // overwrites "old"
		m.finish(seq, 200)
		for _, e := range m.Log() {
			if e.Status != 0 {
				t.Fatalf("Log = %+v: finishing a dropped entry changed another", m.Log())
			}
		}
	})
}

func TestAccessLog(t *testing.T) {
	var buf bytes.Buffer
	m := newMock(t, Config{AccessLog: &buf, ProjectCode: testProject, APIKey: testKey})
	ok := post(`{"hash":"h-ok","messages":[{"role":"user","content":"x"}]}`)
	bad := post(`{"hash":"h-bad","messages":[]}`)
	wrongKey := post(`{"hash":"h","messages":[{"role":"user","content":"x"}]}`)
	wrongKey.Header.Set(schema.LaaSHeaderAPIKey, "key-SECRET-wrong")
	notFound := httptest.NewRequest(http.MethodPost, "/nope", nil)

	tests := []struct {
		name   string
		req    *http.Request
		status int
		hash   string
	}{
		{name: "answered", req: ok, status: 200, hash: "h-ok"},
		{name: "invalid body keeps the hash", req: bad, status: 400, hash: "h-bad"},
		{name: "refused credentials", req: wrongKey, status: 401, hash: ""},
		{name: "unknown path", req: notFound, status: 404, hash: ""},
	}
	for _, tc := range tests {
		serve(m, tc.req)
	}
	sc := bufio.NewScanner(&buf)
	var lines []string
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if len(lines) != len(tests) {
		t.Fatalf("access log has %d lines, want %d:\n%s", len(lines), len(tests), strings.Join(lines, "\n"))
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			line := lines[i]
			if strings.Contains(line, "SECRET") {
				t.Fatalf("a credential leaked into the access log: %s", line)
			}
			var got map[string]any
			if err := json.Unmarshal([]byte(line), &got); err != nil {
				t.Fatalf("line %q is not JSON: %v", line, err)
			}
			keys := slices.Sorted(func(yield func(string) bool) {
				for k := range got {
					if !yield(k) {
						return
					}
				}
			})
			if !slices.Equal(keys, []string{"hash", "in_flight", "latency_ms", "max_in_flight", "status", "time"}) {
				t.Errorf("keys = %q", keys)
			}
			if got["status"] != float64(tc.status) || got["hash"] != tc.hash {
				t.Errorf("line = %s, want status %d hash %q", line, tc.status, tc.hash)
			}
			if got["in_flight"] != float64(1) || got["max_in_flight"] != float64(1) {
				t.Errorf("line = %s, want one request in flight, at most one", line)
			}
			if ms, _ := got["latency_ms"].(float64); ms < 0 {
				t.Errorf("latency_ms = %v", ms)
			}
			if ts, _ := got["time"].(string); ts == "" {
				t.Errorf("time missing")
			} else if _, err := time.Parse(time.RFC3339Nano, ts); err != nil {
				t.Errorf("time %q: %v", ts, err)
			}
		})
	}
}

func TestConcurrentRequests(t *testing.T) {
	const n = 64
	m := newMock(t, Config{Latency: 5 * time.Millisecond, Rate429: 0.2, Rate500: 0.2, Seed: 3, AccessLog: &syncBuffer{}})
	srv := httptest.NewServer(m)
	defer srv.Close()
	var wg sync.WaitGroup
	statuses := make([]int, n)
	for i := range n {
		wg.Go(func() {
			req, _ := http.NewRequest(http.MethodPost, srv.URL+schema.LaaSChatPath,
				strings.NewReader(`{"hash":"h","messages":[{"role":"user","content":"x"}]}`))
			req.Header.Set(schema.LaaSHeaderProject, "p")
			req.Header.Set(schema.LaaSHeaderAPIKey, "k")
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			statuses[i] = resp.StatusCode
		})
	}
	wg.Wait()
	ok := 0
	for _, s := range statuses {
		if s == 200 {
			ok++
		}
	}
	if m.Calls() != n || m.Served() != int64(ok) || len(m.Log()) != n {
		t.Fatalf("Calls, Served, len(Log) = %d, %d, %d; want %d, %d, %d", m.Calls(), m.Served(), len(m.Log()), n, ok, n)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func ptr[T any](v T) *T { return &v }

func deref(p *string, def string) string {
	if p == nil {
		return def
	}
	return *p
}

func mustHash(t *testing.T, body string) string {
	t.Helper()
	var r struct {
		Hash string `json:"hash"`
	}
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		t.Fatal(err)
	}
	return r.Hash
}

func jsonString(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestBodyTooLarge(t *testing.T) {
	tests := []struct {
		name     string
		limit    int64
		bodySize int64
		want     int
	}{
		{name: "at the limit", limit: 1000, bodySize: 1000, want: 200},
		{name: "one byte over", limit: 1000, bodySize: 1001, want: 413},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := newMock(t, Config{})
			m.maxBody = tc.limit
			head := `{"hash":"h","messages":[{"role":"user","content":"x"}]}`
			body := head + strings.Repeat(" ", int(tc.bodySize)-len(head))
			rec := serve(m, post(body))
			if rec.Code != tc.want {
				t.Fatalf("status = %d, want %d: %s", rec.Code, tc.want, rec.Body)
			}
			if tc.want == 413 {
				want := `{"status":413,"error":"Request Entity Too Large","message":"request body exceeds 1000 bytes"}`
				if got := strings.TrimSpace(rec.Body.String()); got != want || m.Calls() != 0 {
					t.Fatalf("body = %s (Calls %d), want %s", got, m.Calls(), want)
				}
			}
		})
	}
	t.Run("default limit", func(t *testing.T) {
		if m := newMock(t, Config{}); m.maxBody != MaxBodyBytes || MaxBodyBytes != 64<<20 {
			t.Fatalf("maxBody = %d", m.maxBody)
		}
	})
}

// TestCountersSetBeforeTheAnswer checks that a client holding its answer
// sees Calls, Served, Log and the access log already updated.
func TestCountersSetBeforeTheAnswer(t *testing.T) {
	tests := []struct {
		name       string
		cfg        Config
		wantStatus int
	}{
		{name: "answer", wantStatus: 200},
		{name: "injected 429", cfg: Config{Rate429: 1}, wantStatus: 429},
		{name: "injected 500", cfg: Config{Rate500: 1}, wantStatus: 500},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			access := &syncBuffer{}
			tc.cfg.AccessLog = access
			m := newMock(t, tc.cfg)
			srv := httptest.NewServer(m)
			defer srv.Close()
			for i := 1; i <= 20; i++ {
				req, _ := http.NewRequest(http.MethodPost, srv.URL+schema.LaaSChatPath,
					strings.NewReader(`{"hash":"h","messages":[{"role":"user","content":"x"}]}`))
				req.Header.Set(schema.LaaSHeaderProject, "p")
				req.Header.Set(schema.LaaSHeaderAPIKey, "k")
				resp, err := srv.Client().Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != tc.wantStatus {
					t.Fatalf("status = %d, want %d", resp.StatusCode, tc.wantStatus)
				}
				served := int64(0)
				if tc.wantStatus == 200 {
					served = int64(i)
				}
				log := m.Log()
				access.mu.Lock()
				lines := strings.Count(access.b.String(), "\n")
				access.mu.Unlock()
				if m.Calls() != int64(i) || m.Served() != served || len(log) != i || log[i-1].Status != tc.wantStatus || lines != i {
					t.Fatalf("after answer %d: Calls %d, Served %d, Log %+v, access lines %d", i, m.Calls(), m.Served(), log[len(log)-1], lines)
				}
			}
		})
	}
}

// TestLargestLegalRequest sends what LaaS's limits allow in one message, a
// 32 MB PDF and three 4 MB images, and checks that the mock admits it and
// names the bytes it received.
func TestLargestLegalRequest(t *testing.T) {
	pdf := multimodaltest.PDF(20, 32<<20)
	images := [][]byte{multimodaltest.PNG(1, 1, 4<<20), multimodaltest.PNG(2, 1, 4<<20), multimodaltest.PNG(3, 1, 4<<20)}
	// The body is written by hand: base64 needs no JSON escaping, and
	// json.Marshal of 60 MB is slow under the race detector.
	var b bytes.Buffer
	b.WriteString(`{"hash":"h","params":{},"messages":[{"role":"user","content":[{"type":"text","text":"compare"},`)
	b.WriteString(`{"type":"document","document_url":{"url":"` + multimodaltest.DataURL("application/pdf", pdf) + `"}}`)
	want := "mock[h]: compare [document sha256:" + multimodaltest.Digest(pdf) + "]"
	for _, img := range images {
		b.WriteString(`,{"type":"image_url","image_url":{"url":"` + multimodaltest.DataURL("image/png", img) + `"}}`)
		want += " [image sha256:" + multimodaltest.Digest(img) + "]"
	}
	b.WriteString(`]}]}`)
	body := b.Bytes()
	if len(body) > MaxBodyBytes {
		t.Fatalf("the largest legal request is %d bytes, above MaxBodyBytes %d", len(body), MaxBodyBytes)
	}
	t.Logf("largest legal request: %d bytes, %d below MaxBodyBytes", len(body), MaxBodyBytes-len(body))

	m := newMock(t, Config{})
	srv := httptest.NewServer(m)
	defer srv.Close()
	req, _ := http.NewRequest(http.MethodPost, srv.URL+schema.LaaSChatPath, bytes.NewReader(body))
	req.Header.Set(schema.LaaSHeaderProject, "p")
	req.Header.Set(schema.LaaSHeaderAPIKey, "k")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got struct {
		Choices []struct {
			Message struct{ Content string } `json:"message"`
		} `json:"choices"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, %v", resp.StatusCode, err)
	}
	if len(got.Choices) != 1 || got.Choices[0].Message.Content != want {
		t.Fatalf("answer = %+v\nwant content %s", got, want)
	}
}

func TestDigest(t *testing.T) {
	// The first 16 hex digits of sha256("hi") and of the empty input.
	for in, want := range map[string]string{"hi": "8f434346648f6b96", "": "e3b0c44298fc1c14"} {
		if got := Digest([]byte(in)); got != want {
			t.Errorf("Digest(%q) = %s, want %s", in, got, want)
		}
		if got := multimodaltest.Digest([]byte(in)); got != want {
			t.Errorf("multimodaltest.Digest(%q) = %s, want %s", in, got, want)
		}
	}
}

// TestInFlight: the mock counts the requests it handles at once, in each
// log entry (at its arrival, itself included) and at most; a request that
// got its answer no longer counts.
func TestInFlight(t *testing.T) {
	m := newMock(t, Config{Latency: 300 * time.Millisecond})
	srv := httptest.NewServer(m)
	defer srv.Close()
	post := func(text string) {
		body := fmt.Sprintf(`{"hash":"h","messages":[{"role":"user","content":%q}]}`, text)
		req, _ := http.NewRequest(http.MethodPost, srv.URL+schema.LaaSChatPath, strings.NewReader(body))
		req.Header.Set(schema.LaaSHeaderProject, "p")
		req.Header.Set(schema.LaaSHeaderAPIKey, "k")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Error(err)
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Go(func() { post(fmt.Sprintf("at once %d", i)) })
	}
	wg.Wait()
	post("alone")
	if got := m.MaxInFlight(); got != 3 {
		t.Errorf("MaxInFlight = %d, want 3", got)
	}
	counts := map[int]int{}
	for _, e := range m.Log() {
		if e.LastUser == "alone" {
			if e.InFlight != 1 {
				t.Errorf("the call made alone has InFlight %d, want 1", e.InFlight)
			}
			continue
		}
		counts[e.InFlight]++
	}
	if counts[1] != 1 || counts[2] != 1 || counts[3] != 1 {
		t.Errorf("InFlight of the three calls at once: %v, want one each of 1, 2 and 3", counts)
	}
}
