package bridge

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/laas-bridge/laas-bridge/queue"
	"github.com/laas-bridge/laas-bridge/queue/queuetest"
	"github.com/laas-bridge/laas-bridge/schema"
)

// fixture is a gateway on an embedded NATS server, served by httptest.
type fixture struct {
	q   *queuetest.Queue
	gw  *Gateway
	srv *httptest.Server
}

func testCatalog(t *testing.T) *schema.Catalog {
	t.Helper()
	c, err := schema.NewCatalog([]schema.Model{
		{Alias: "claude-3.5-sonnet", LaaSModel: "claude-3.5-sonnet", PresetHash: "p1"},
		{Alias: "team/fast", LaaSModel: "claude-4-sonnet", PresetHash: "p2", Timeout: 300 * time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func newFixture(t *testing.T, cfg Config) *fixture {
	t.Helper()
	return newFixtureQueue(t, cfg, queue.Config{Memory: true})
}

func newFixtureQueue(t *testing.T, cfg Config, qcfg queue.Config) *fixture {
	t.Helper()
	q := queuetest.Start(t, qcfg)
	gw, err := New(cfg, q.Conn, q.JS, testCatalog(t), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = gw.Close() })
	srv := httptest.NewServer(gw.Handler())
	t.Cleanup(srv.Close)
	return &fixture{q: q, gw: gw, srv: srv}
}

// fakeWorker answers every queued request with answer(env) until ctx ends.
// Replies to a batch of up to n jobs are sent in random order.
func (f *fixture) fakeWorker(t *testing.T, ctx context.Context, n int, answer func(schema.Envelope) schema.Reply) {
	t.Helper()
	nc := f.q.Connect(t)
	go func() {
		for ctx.Err() == nil {
			batch, err := f.q.Consumer.Fetch(n, jetstream.FetchMaxWait(100*time.Millisecond))
			if err != nil {
				continue
			}
			var msgs []jetstream.Msg
			for m := range batch.Messages() {
				msgs = append(msgs, m)
			}
			rand.Shuffle(len(msgs), func(i, j int) { msgs[i], msgs[j] = msgs[j], msgs[i] })
			for _, m := range msgs {
				var env schema.Envelope
				if err := json.Unmarshal(m.Data(), &env); err != nil {
					t.Errorf("envelope: %v", err)
					continue
				}
				if env.RequestRef != "" {
					store, err := f.q.JS.ObjectStore(ctx, schema.BucketBodies)
					if err == nil {
						env.Request, err = store.GetBytes(ctx, env.RequestRef)
					}
					if err != nil {
						t.Errorf("large body %s: %v", env.RequestRef, err)
						continue
					}
				}
				data, _ := json.Marshal(answer(env))
				_ = nc.Publish(m.Headers().Get(schema.HeaderReplyTo), data)
				_ = m.Ack()
			}
		}
	}()
}

// echoAnswer answers with the last message's text.
func echoAnswer(env schema.Envelope) schema.Reply {
	var req schema.ChatCompletionRequest
	_ = json.Unmarshal(env.Request, &req)
	text := req.Messages[len(req.Messages)-1].Content.Text
	return schema.Reply{ID: env.ID, Status: 200, Attempts: 1, QueueMs: 7, UpstreamMs: 11, Completion: &schema.ChatCompletion{
		ID: "chatcmpl-" + env.ID, Object: "chat.completion", Created: 1, Model: env.Model,
		Choices: []schema.Choice{{Message: schema.AssistantMessage{Role: "assistant", Content: "echo: " + text}, FinishReason: "stop"}},
	}}
}

func (f *fixture) do(t *testing.T, method, path, body string, header ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, f.srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

func chatBody(model, text string) string {
	b, _ := json.Marshal(map[string]any{"model": model, "messages": []map[string]string{{"role": "user", "content": text}}})
	return string(b)
}

func TestChatRoundTrip(t *testing.T) {
	f := newFixture(t, Config{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	var seen []schema.Envelope
	f.fakeWorker(t, ctx, 1, func(env schema.Envelope) schema.Reply {
		mu.Lock()
		seen = append(seen, env)
		mu.Unlock()
		return echoAnswer(env)
	})

	for _, path := range []string{"/v1/chat/completions", "/chat/completions"} {
		t.Run(path, func(t *testing.T) {
			resp, body := f.do(t, "POST", path, chatBody("claude-3.5-sonnet", "안녕하세요!"))
			if resp.StatusCode != 200 {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			var cc schema.ChatCompletion
			if err := json.Unmarshal(body, &cc); err != nil {
				t.Fatal(err)
			}
			id := resp.Header.Get(HeaderRequestID)
			if id == "" || cc.ID != "chatcmpl-"+id {
				t.Errorf("request id %q, completion id %q", id, cc.ID)
			}
			if cc.Model != "claude-3.5-sonnet" || cc.Choices[0].Message.Content != "echo: 안녕하세요!" {
				t.Errorf("answer = %+v", cc)
			}
			for h, want := range map[string]string{HeaderQueueMs: "7", HeaderUpstreamMs: "11", HeaderAttempts: "1"} {
				if got := resp.Header.Get(h); got != want {
					t.Errorf("%s = %q, want %q", h, got, want)
				}
			}
		})
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 2 {
		t.Fatalf("worker saw %d jobs, want 2", len(seen))
	}
	env := seen[0]
	if env.Model != "claude-3.5-sonnet" || env.Deadline.Sub(env.EnqueuedAt) != schema.DefaultTimeout {
		t.Errorf("envelope model %q, deadline after %s", env.Model, env.Deadline.Sub(env.EnqueuedAt))
	}
	if !json.Valid(env.Request) || !bytes.Contains(env.Request, []byte("안녕하세요!")) {
		t.Errorf("envelope request = %s", env.Request)
	}
}

// TestConcurrentCallersGetTheirOwnAnswers: 200 callers at once, answered in
// shuffled order, each receive the answer to their own text.
func TestConcurrentCallersGetTheirOwnAnswers(t *testing.T) {
	f := newFixture(t, Config{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f.fakeWorker(t, ctx, 50, echoAnswer)

	const n = 200
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			text := fmt.Sprintf("caller %d", i)
			resp, err := http.Post(f.srv.URL+"/v1/chat/completions", "application/json", strings.NewReader(chatBody("claude-3.5-sonnet", text)))
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			var cc schema.ChatCompletion
			if err := json.NewDecoder(resp.Body).Decode(&cc); err != nil || resp.StatusCode != 200 {
				errs <- fmt.Errorf("caller %d: status %d, %v", i, resp.StatusCode, err)
				return
			}
			if got := cc.Choices[0].Message.Content; got != "echo: "+text {
				errs <- fmt.Errorf("caller %d got %q", i, got)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if p := f.gw.corr.pending(); p != 0 {
		t.Errorf("%d callers still registered after all answered", p)
	}
}

func TestErrors(t *testing.T) {
	f := newFixture(t, Config{MasterKey: "sk-master", MaxBodyBytes: 1 << 20})
	auth := []string{"Authorization", "Bearer sk-master"}
	big := `{"model":"claude-3.5-sonnet","messages":[{"role":"user","content":"` + strings.Repeat("x", 1<<20) + `"}]}`
	cases := []struct {
		name, method, path, body string
		header                   []string
		status                   int
		typ, code, param         string
		msgHas                   string
	}{
		{"malformed JSON", "POST", "/v1/chat/completions", `{"model":`, auth, 400, "invalid_request_error", "invalid_json", "", "not valid JSON"},
		{"empty body", "POST", "/v1/chat/completions", ``, auth, 400, "invalid_request_error", "invalid_json", "", "empty"},
		{"wrong type", "POST", "/v1/chat/completions", `{"model":1,"messages":[]}`, auth, 400, "invalid_request_error", "invalid_json", "model", "'model'"},
		{"no messages", "POST", "/v1/chat/completions", `{"model":"claude-3.5-sonnet","messages":[]}`, auth, 400, "invalid_request_error", "invalid_value", "messages", "at least one"},
		{"tool role", "POST", "/v1/chat/completions", `{"model":"claude-3.5-sonnet","messages":[{"role":"tool","content":"x"}]}`, auth, 400, "invalid_request_error", "invalid_value", "messages[0].role", "role 'tool'"},
		{"developer role", "POST", "/chat/completions", `{"model":"claude-3.5-sonnet","messages":[{"role":"user","content":"a"},{"role":"developer","content":"x"}]}`, auth, 400, "invalid_request_error", "invalid_value", "messages[1].role", "only system, user and assistant"},
		{"preset override not allowed", "POST", "/v1/chat/completions", `{"model":"claude-3.5-sonnet","preset_hash":"x","messages":[{"role":"user","content":"x"}]}`, auth, 400, "invalid_request_error", "preset_override_disabled", "preset_hash", "allow_preset_override"},
		{"idempotency key too long", "POST", "/v1/chat/completions", chatBody("claude-3.5-sonnet", "hi"), append([]string{"Idempotency-Key", strings.Repeat("k", 256)}, auth...), 400, "invalid_request_error", "invalid_value", "", "at most 255"},
		{"unknown lane", "POST", "/v1/chat/completions", chatBody("claude-3.5-sonnet", "hi"), append([]string{"X-Laas-Bridge-Lane", "fast"}, auth...), 400, "invalid_request_error", "invalid_value", "", "interactive or batch"},
		{"unknown model", "POST", "/v1/chat/completions", chatBody("gpt-9", "hi"), auth, 404, "invalid_request_error", "model_not_found", "model", "'gpt-9' does not exist"},
		{"unknown model GET", "GET", "/v1/models/gpt-9", "", auth, 404, "invalid_request_error", "model_not_found", "model", "'gpt-9'"},
		{"no key", "POST", "/v1/chat/completions", chatBody("claude-3.5-sonnet", "hi"), nil, 401, "invalid_request_error", "invalid_api_key", "", "didn't provide"},
		{"wrong key", "GET", "/v1/models", "", []string{"Authorization", "Bearer sk-wrong"}, 401, "invalid_request_error", "invalid_api_key", "", "Incorrect API key"},
		{"key without Bearer", "GET", "/models", "", []string{"Authorization", "sk-master"}, 401, "invalid_request_error", "invalid_api_key", "", "Incorrect"},
		{"unknown route", "GET", "/v1/nothing", "", auth, 404, "invalid_request_error", "unknown_url", "", "GET /v1/nothing"},
		{"wrong method", "GET", "/v1/chat/completions", "", auth, 405, "invalid_request_error", "method_not_allowed", "", "GET"},
		{"too large", "POST", "/v1/chat/completions", big, auth, 413, "invalid_request_error", "request_too_large", "", "larger than"},
		{"stream_options without stream", "POST", "/v1/chat/completions", `{"model":"claude-3.5-sonnet","stream_options":{"include_usage":true},"messages":[{"role":"user","content":"x"}]}`, auth, 400, "invalid_request_error", "invalid_value", "stream_options", "only allowed when 'stream' is enabled"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := f.do(t, tc.method, tc.path, tc.body, tc.header...)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, body)
			}
			var eb struct {
				Error struct {
					Message string  `json:"message"`
					Type    string  `json:"type"`
					Code    *string `json:"code"`
					Param   *string `json:"param"`
				} `json:"error"`
			}
			if err := json.Unmarshal(body, &eb); err != nil {
				t.Fatalf("not an OpenAI error body: %s", body)
			}
			e := eb.Error
			if e.Type != tc.typ || deref(e.Code) != tc.code || deref(e.Param) != tc.param || !strings.Contains(e.Message, tc.msgHas) {
				t.Errorf("error = %+v code=%q param=%q; want type %q code %q param %q message containing %q",
					e, deref(e.Code), deref(e.Param), tc.typ, tc.code, tc.param, tc.msgHas)
			}
			if resp.Header.Get(HeaderRequestID) == "" {
				t.Error("no X-Request-Id on an error answer")
			}
			if strings.Contains(string(body), "sk-master") {
				t.Error("the master key leaked into an answer")
			}
		})
	}
	if n, _ := f.q.Consumer.Info(context.Background()); n.NumPending != 0 {
		t.Errorf("%d refused requests reached the queue", n.NumPending)
	}
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func TestAuth(t *testing.T) {
	t.Run("no master key: no auth needed", func(t *testing.T) {
		f := newFixture(t, Config{})
		if resp, body := f.do(t, "GET", "/v1/models", ""); resp.StatusCode != 200 {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
	})
	t.Run("master key: health needs none, API needs it", func(t *testing.T) {
		f := newFixture(t, Config{MasterKey: "sk-master"})
		for _, p := range []string{"/health", "/health/liveliness", "/health/readiness", "/healthz", "/readyz"} {
			if resp, body := f.do(t, "GET", p, ""); resp.StatusCode != 200 {
				t.Errorf("%s: status %d: %s", p, resp.StatusCode, body)
			}
		}
		if resp, _ := f.do(t, "GET", "/v1/models", "", "Authorization", "Bearer sk-master"); resp.StatusCode != 200 {
			t.Errorf("with key: status %d", resp.StatusCode)
		}
	})
}

func TestModels(t *testing.T) {
	f := newFixture(t, Config{})
	for _, path := range []string{"/v1/models", "/models"} {
		resp, body := f.do(t, "GET", path, "")
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d", path, resp.StatusCode)
		}
		var list schema.ModelList
		if err := json.Unmarshal(body, &list); err != nil {
			t.Fatal(err)
		}
		if list.Object != "list" || len(list.Data) != 2 || list.Data[0].ID != "claude-3.5-sonnet" || list.Data[1].ID != "team/fast" ||
			list.Data[0].Object != "model" || list.Data[0].OwnedBy != "laas" || list.Data[0].Created == 0 {
			t.Errorf("%s = %s", path, body)
		}
	}
	resp, body := f.do(t, "GET", "/v1/models/team/fast", "")
	var m schema.ModelObject
	if err := json.Unmarshal(body, &m); err != nil || resp.StatusCode != 200 || m.ID != "team/fast" {
		t.Errorf("GET /v1/models/team/fast = %d %s", resp.StatusCode, body)
	}
}

// TestLargeBodyThroughObjectStore: a body too large for a NATS message goes
// through the object store (a claim check) and arrives intact.
func TestLargeBodyThroughObjectStore(t *testing.T) {
	f := newFixture(t, Config{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var ref string
	f.fakeWorker(t, ctx, 1, func(env schema.Envelope) schema.Reply {
		ref = env.RequestRef
		var req schema.ChatCompletionRequest
		_ = json.Unmarshal(env.Request, &req)
		rep := echoAnswer(env)
		rep.Completion.Choices[0].Message.Content = fmt.Sprintf("%x", sha256.Sum256([]byte(req.Messages[0].Content.Text)))
		return rep
	})
	text := strings.Repeat("큰 요청 ", 300_000) // ~3 MB, over NATS's 1 MB max payload
	resp, body := f.do(t, "POST", "/v1/chat/completions", chatBody("claude-3.5-sonnet", text))
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %.300s", resp.StatusCode, body)
	}
	var cc schema.ChatCompletion
	if err := json.Unmarshal(body, &cc); err != nil || cc.Choices[0].Message.Content != fmt.Sprintf("%x", sha256.Sum256([]byte(text))) {
		t.Fatalf("the worker did not receive the whole text (%v): %s", err, body)
	}
	if ref != resp.Header.Get(HeaderRequestID) {
		t.Errorf("request_ref = %q, want the request id", ref)
	}
}

func TestWorkerErrorReachesCaller(t *testing.T) {
	f := newFixture(t, Config{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f.fakeWorker(t, ctx, 1, func(env schema.Envelope) schema.Reply {
		r := schema.ErrorReply(env.ID, &schema.Error{Status: 429, Type: schema.TypeRateLimit, Code: schema.CodeRateLimitExceeded, Message: "LaaS is rate limiting", RetryAfter: 7})
		r.Attempts = 5
		return r
	})
	resp, body := f.do(t, "POST", "/v1/chat/completions", chatBody("claude-3.5-sonnet", "hi"))
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "7" || resp.Header.Get(HeaderAttempts) != "5" {
		t.Fatalf("status %d, Retry-After %q, attempts %q: %s", resp.StatusCode, resp.Header.Get("Retry-After"), resp.Header.Get(HeaderAttempts), body)
	}
	want := `{"error":{"message":"LaaS is rate limiting","type":"rate_limit_error","param":null,"code":"rate_limit_exceeded"}}`
	if got := strings.TrimSpace(string(body)); got != want {
		t.Errorf("body = %s\nwant   %s", got, want)
	}
}

func TestDeadlineWithoutWorker(t *testing.T) {
	f := newFixture(t, Config{})
	resp, body := f.do(t, "POST", "/v1/chat/completions", chatBody("team/fast", "nobody will answer"))
	if resp.StatusCode != 504 || !strings.Contains(string(body), `"code":"deadline_exceeded"`) || !strings.Contains(string(body), "300ms timeout") {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	if p := f.gw.corr.pending(); p != 0 {
		t.Errorf("%d callers still registered", p)
	}
}

func TestQueueUnavailable(t *testing.T) {
	f := newFixture(t, Config{PublishTimeout: time.Second})
	if err := f.q.JS.DeleteStream(context.Background(), schema.StreamRequests); err != nil {
		t.Fatal(err)
	}
	resp, body := f.do(t, "POST", "/v1/chat/completions", chatBody("claude-3.5-sonnet", "hi"))
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "1" || !strings.Contains(string(body), `"code":"queue_unavailable"`) {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	for _, p := range []string{"/health/readiness", "/readyz", "/health"} {
		if resp, body := f.do(t, "GET", p, ""); resp.StatusCode != 503 || !strings.Contains(string(body), "request stream") {
			t.Errorf("%s: status %d: %s", p, resp.StatusCode, body)
		}
	}
	if resp, _ := f.do(t, "GET", "/healthz", ""); resp.StatusCode != 200 {
		t.Errorf("liveness should stay 200, got %d", resp.StatusCode)
	}
}

func TestHealthDetail(t *testing.T) {
	f := newFixture(t, Config{})
	resp, body := f.do(t, "GET", "/health", "")
	var h Health
	if err := json.Unmarshal(body, &h); err != nil || resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	if h.Status != "ok" || h.NATS != "CONNECTED" || h.Stream != schema.StreamRequests || h.Consumer == nil ||
		h.Consumer.Name != schema.ConsumerWorkers || h.WaitingCallers == nil || *h.WaitingCallers != 0 {
		t.Errorf("health = %s", body)
	}
	f.gw.draining.Store(true)
	if resp, body := f.do(t, "GET", "/readyz", ""); resp.StatusCode != 503 || !strings.Contains(string(body), "shutting down") {
		t.Errorf("draining readiness = %d %s", resp.StatusCode, body)
	}
}

// startCorrelator starts a queue and a correlator of gateway instance
// "test" on it, closed when the test ends.
func startCorrelator(t *testing.T) (*queuetest.Queue, *correlator) {
	t.Helper()
	q := queuetest.Start(t, queue.Config{Memory: true})
	c, err := newCorrelator(q.Conn, "test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.close() })
	return q, c
}

func TestCorrelatorDropsDuplicatesAndStrangers(t *testing.T) {
	q, c := startCorrelator(t)
	ch := c.expect("a")
	pub := q.Connect(t)
	for _, s := range []string{"laas.reply.test.stranger", "laas.reply.test.a", "laas.reply.test.a"} {
		if err := pub.Publish(s, []byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	_ = pub.Flush()
	select {
	case got := <-ch:
		if string(got) != "laas.reply.test.a" {
			t.Errorf("got %q", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no reply")
	}
	time.Sleep(50 * time.Millisecond)
	select {
	case got := <-ch:
		t.Errorf("second reply delivered: %q", got)
	default:
	}
	if c.pending() != 0 {
		t.Errorf("pending = %d", c.pending())
	}
}

// TestCorrelatorAnswersDirectReplies: a reply on the direct subject is
// handed to its caller and answered with an empty message, as is one nobody
// waits for; a reply published through the stream still gets the stream's
// own ack, not the correlator's.
func TestCorrelatorAnswersDirectReplies(t *testing.T) {
	q, c := startCorrelator(t)
	ch := c.expect("a")
	worker := q.Connect(t)
	for _, id := range []string{"a", "gone"} {
		ack, err := worker.Request("laas.direct.test."+id, []byte("reply "+id), 5*time.Second)
		if err != nil || len(ack.Data) != 0 {
			t.Fatalf("direct reply %s: ack %v, %v", id, ack, err)
		}
	}
	select {
	case got := <-ch:
		if string(got) != "reply a" {
			t.Errorf("got %q", got)
		}
	default:
		t.Fatal("the caller did not have its reply when the worker got the ack")
	}
	js, err := jetstream.New(worker)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		ack, err := js.Publish(context.Background(), fmt.Sprintf("laas.reply.test.s%d", i), []byte("stored"))
		if err != nil || ack.Stream != schema.StreamReplies || ack.Sequence != uint64(i+1) {
			t.Fatalf("stream publish %d: ack %+v, %v", i, ack, err)
		}
	}
}

// TestRequestTimeoutHeaders: x-litellm-timeout and X-Request-Timeout set the
// deadline in seconds; a bad value is a 400.
func TestRequestTimeoutHeaders(t *testing.T) {
	f := newFixture(t, Config{})
	for _, h := range []string{"x-litellm-timeout", "X-Request-Timeout"} {
		t.Run(h, func(t *testing.T) {
			start := time.Now()
			resp, body := f.do(t, "POST", "/v1/chat/completions", chatBody("claude-3.5-sonnet", "nobody answers"), h, "0.25")
			if resp.StatusCode != 504 || !strings.Contains(string(body), "request's 250ms timeout") {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			if waited := time.Since(start); waited > 30*time.Second {
				t.Errorf("the header's timeout was not used: waited %s", waited)
			}
		})
	}
	// The envelope carries the header's deadline.
	msgs, err := f.q.Consumer.Fetch(2, jetstream.FetchMaxWait(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for m := range msgs.Messages() {
		var env schema.Envelope
		_ = json.Unmarshal(m.Data(), &env)
		if got := env.Deadline.Sub(env.EnqueuedAt); got != 250*time.Millisecond {
			t.Errorf("envelope deadline after %s, want 250ms", got)
		}
		n++
	}
	if n != 2 {
		t.Errorf("%d envelopes, want 2", n)
	}
	for _, v := range []string{"0", "1e-12", "-1", "abc", "NaN", "86401"} {
		resp, body := f.do(t, "POST", "/v1/chat/completions", chatBody("claude-3.5-sonnet", "x"), "X-Request-Timeout", v)
		if resp.StatusCode != 400 || !strings.Contains(string(body), "X-Request-Timeout header must be a number of seconds from 0.001 to 86400") {
			t.Errorf("timeout %q: status %d: %s", v, resp.StatusCode, body)
		}
	}
}

// TestQueueFull: a full stream answers 429 queue_full at once, with
// Retry-After, and keeps the requests it accepted.
func TestQueueFull(t *testing.T) {
	f := newFixtureQueue(t, Config{}, queue.Config{Memory: true, MaxMsgs: 2})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequestWithContext(ctx, "POST", f.srv.URL+"/v1/chat/completions", strings.NewReader(chatBody("claude-3.5-sonnet", fmt.Sprint("waiting ", i))))
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
			}
		}()
	}
	for range 500 {
		if info, err := f.q.Consumer.Info(ctx); err == nil && info.NumPending == 2 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	start := time.Now()
	resp, body := f.do(t, "POST", "/v1/chat/completions", chatBody("claude-3.5-sonnet", "one too many"))
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "1" ||
		!strings.Contains(string(body), `"type":"rate_limit_error","param":null,"code":"queue_full"`) {
		t.Fatalf("status %d, Retry-After %q: %s", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	if time.Since(start) > 5*time.Second {
		t.Errorf("the full queue answered after %s, not at once", time.Since(start))
	}
	if info, err := f.q.Consumer.Info(ctx); err != nil || info.NumPending != 2 {
		t.Errorf("accepted requests: %v pending (%v), want 2", info.NumPending, err)
	}
	cancel()
	wg.Wait()
}

// TestCallerGoneCancelsJob: a caller that disconnects makes the gateway
// publish a cancellation for its job, with the job's deadline.
func TestCallerGoneCancelsJob(t *testing.T) {
	f := newFixture(t, Config{})
	sub, err := f.q.Conn.SubscribeSync(schema.SubjectCancel + ".*")
	if err != nil {
		t.Fatal(err)
	}
	for _, stream := range []bool{false, true} {
		ctx, cancel := context.WithCancel(context.Background())
		body := `{"model":"claude-3.5-sonnet","stream":` + fmt.Sprint(stream) + `,"messages":[{"role":"user","content":"x"}]}`
		req, _ := http.NewRequestWithContext(ctx, "POST", f.srv.URL+"/v1/chat/completions", strings.NewReader(body))
		done := make(chan string, 1)
		go func() {
			resp, err := http.DefaultClient.Do(req)
			if err == nil {
				done <- resp.Header.Get(HeaderRequestID)
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			close(done)
		}()
		for range 500 {
			if info, err := f.q.Consumer.Info(context.Background()); err == nil && info.NumPending > 0 {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		cancel()
		m, err := sub.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatalf("stream=%v: no cancellation published: %v", stream, err)
		}
		// The job on the queue is the one cancelled.
		batch, _ := f.q.Consumer.Fetch(1, jetstream.FetchMaxWait(time.Second))
		for qm := range batch.Messages() {
			var env schema.Envelope
			_ = json.Unmarshal(qm.Data(), &env)
			if m.Subject != schema.SubjectCancel+"."+env.ID {
				t.Errorf("stream=%v: cancelled %s, queued %s", stream, m.Subject, env.ID)
			}
			// With the job's deadline, so workers forget the id after it.
			if d, ok := schema.CancelDeadline(m.Data); !ok || !d.Equal(env.Deadline) {
				t.Errorf("stream=%v: the cancellation's payload %q, want the job's deadline %s", stream, m.Data, env.Deadline)
			}
			_ = qm.Ack()
		}
		<-done
	}
}

// TestRecoverRepliesAfterReconnect: a reply published into the replies
// stream while the gateway was not subscribed reaches its caller when the
// gateway reads replies back after a reconnect.
func TestRecoverRepliesAfterReconnect(t *testing.T) {
	f := newFixture(t, Config{})
	ch := f.gw.corr.expect("lost")
	defer f.gw.corr.forget("lost")
	if err := f.gw.corr.close(); err != nil { // as if disconnected
		t.Fatal(err)
	}
	if _, err := f.q.JS.Publish(context.Background(), f.gw.corr.subject("lost"), []byte(`{"id":"lost"}`)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
		t.Fatal("delivered without a subscription")
	case <-time.After(50 * time.Millisecond):
	}
	f.gw.recoverReplies()
	select {
	case got := <-ch:
		if string(got) != `{"id":"lost"}` {
			t.Errorf("got %s", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the reply was not read back")
	}
}

// TestLaneHeader: X-Laas-Bridge-Lane: batch publishes to the batch lane.
func TestLaneHeader(t *testing.T) {
	f := newFixture(t, Config{PublishTimeout: time.Second})
	sub, err := f.q.Conn.SubscribeSync(schema.SubjectBatch)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest("POST", f.srv.URL+"/v1/chat/completions", strings.NewReader(chatBody("team/fast", "to the batch lane")))
		req.Header.Set("X-Laas-Bridge-Lane", "batch")
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			done <- resp.StatusCode
		}
		close(done)
	}()
	m, err := sub.NextMsg(5 * time.Second)
	if err != nil || !strings.Contains(string(m.Data), "to the batch lane") {
		t.Fatalf("nothing on %s: %v", schema.SubjectBatch, err)
	}
	<-done // the 300 ms model times out: no worker here
}

// TestDeliverLocal: a worker in this process hands a reply on this
// gateway's direct subject straight to its caller, once; another
// gateway's subject is refused, for the worker to send over NATS.
func TestDeliverLocal(t *testing.T) {
	f := newFixture(t, Config{InstanceID: "gw-local"})
	ch := f.gw.corr.expect("r1")
	defer f.gw.corr.forget("r1")
	if f.gw.DeliverLocal(schema.SubjectDirectReplies+".gw-other.r1", []byte(`{"id":"r1"}`)) {
		t.Fatal("took a reply for another gateway")
	}
	if !f.gw.DeliverLocal(schema.SubjectDirectReplies+".gw-local.r1", []byte(`{"id":"r1"}`)) {
		t.Fatal("refused its own reply")
	}
	select {
	case got := <-ch:
		if string(got) != `{"id":"r1"}` {
			t.Errorf("got %s", got)
		}
	default:
		t.Fatal("the caller did not get the reply")
	}
	if !f.gw.DeliverLocal(schema.SubjectDirectReplies+".gw-local.r1", []byte(`{"id":"r1"}`)) {
		t.Error("refused a duplicate of its own reply (nobody waits: it is dropped, not sent on)")
	}
	select {
	case got := <-ch:
		t.Errorf("the duplicate reached the caller: %s", got)
	default:
	}
}
