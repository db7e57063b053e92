package bridge

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/laas-bridge/laas-bridge/admission"
	"github.com/laas-bridge/laas-bridge/keys"
	"github.com/laas-bridge/laas-bridge/queue"
	"github.com/laas-bridge/laas-bridge/queue/queuetest"
	"github.com/laas-bridge/laas-bridge/schema"
)

// cacheFixture is a gateway with the master key and virtual keys whose
// catalogue has a model with a response cache ("cached", 1 h) and one
// without ("plain"), and a fake worker that counts the jobs it runs: the
// LaaS calls the cache saves.
type cacheFixture struct {
	*fixture
	store *keys.Store
	reg   *prometheus.Registry
	calls atomic.Int64
	ran   atomic.Value // what the fake worker says it ran (Reply.Ran)
}

func newCacheFixture(t *testing.T) *cacheFixture {
	t.Helper()
	q := queuetest.Start(t, queue.Config{Memory: true})
	log := slog.New(slog.DiscardHandler)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	store, err := keys.Open(ctx, q.JS, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(store.Close)
	cat, err := schema.NewCatalog([]schema.Model{
		{Alias: "cached", LaaSModel: "claude-4-sonnet", PresetHash: "p1", CacheTTL: time.Hour},
		{Alias: "plain", LaaSModel: "claude-4-sonnet", PresetHash: "p1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	gw, err := New(Config{MasterKey: master, Keys: store, Metrics: reg, AllowPresetOverride: true}, q.Conn, q.JS, cat, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = gw.Close() })
	srv := httptest.NewServer(gw.Handler())
	t.Cleanup(srv.Close)
	f := &cacheFixture{fixture: &fixture{q: q, gw: gw, srv: srv}, store: store, reg: reg}
	f.ran.Store(schema.RunDigest("claude-4-sonnet", "", "p1"))
	wctx, stop := context.WithCancel(context.Background())
	t.Cleanup(stop)
	f.fakeWorker(t, wctx, 4, func(env schema.Envelope) schema.Reply {
		f.calls.Add(1)
		rep := echoAnswer(env)
		rep.Ran = f.ran.Load().(string)
		return rep
	})
	return f
}

// chat sends a chat request with the master key (or the Authorization in
// header) and fails unless the answer is a 200.
func (f *cacheFixture) chat(t *testing.T, body string, header ...string) (*http.Response, []byte) {
	t.Helper()
	resp, b := f.do(t, "POST", "/v1/chat/completions", body, append([]string{"Authorization", "Bearer " + master}, header...)...)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	return resp, b
}

// cacheBody is a request to model with one user message and extra JSON
// fields (",\"k\":v" ...).
func cacheBody(model, text, extra string) string {
	return `{"model":` + jsonString(model) + `,"messages":[{"role":"user","content":` + jsonString(text) + `}]` + extra + `}`
}

// wantCalls fails unless the worker has run want jobs.
func (f *cacheFixture) wantCalls(t *testing.T, want int64, what string) {
	t.Helper()
	if got := f.calls.Load(); got != want {
		t.Errorf("%s: %d LaaS calls so far, want %d", what, got, want)
	}
}

func wantCacheHeader(t *testing.T, resp *http.Response, want, what string) {
	t.Helper()
	if got := resp.Header.Get(HeaderCache); got != want {
		t.Errorf("%s: %s = %q, want %q", what, HeaderCache, got, want)
	}
}

// TestCacheHit: two identical requests make one LaaS call; the second is
// a hit with the first's completion, byte for byte, and zero queue,
// upstream and attempts; the counts show in the metrics.
func TestCacheHit(t *testing.T) {
	f := newCacheFixture(t)
	body := cacheBody("cached", "what is NATS?", `,"temperature":0.2,"params":{"lang":"ko"}`)
	first, firstBody := f.chat(t, body)
	wantCacheHeader(t, first, cacheMiss, "first")
	second, secondBody := f.chat(t, body)
	wantCacheHeader(t, second, cacheHit, "second")
	f.wantCalls(t, 1, "two identical requests")
	if string(secondBody) != string(firstBody) {
		t.Errorf("hit body\n%s\nwant the first answer\n%s", secondBody, firstBody)
	}
	for h, want := range map[string]string{HeaderQueueMs: "0", HeaderUpstreamMs: "0", HeaderAttempts: "0"} {
		if got := second.Header.Get(h); got != want {
			t.Errorf("hit: %s = %q, want %q", h, got, want)
		}
	}
	if first.Header.Get(HeaderRequestID) == second.Header.Get(HeaderRequestID) {
		t.Errorf("both answers have request id %q", first.Header.Get(HeaderRequestID))
	}
	// Whitespace, key order, user and stream_options do not make another request.
	same := `{ "params": {"lang": "ko"}, "messages": [{"content": "what is NATS?", "role": "user"}], "temperature": 0.2, "model": "cached", "user": "u-1" }`
	resp, _ := f.chat(t, same)
	wantCacheHeader(t, resp, cacheHit, "the same request written differently")
	f.wantCalls(t, 1, "the same request written differently")

	families, err := f.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	mfs := map[string]*dto.MetricFamily{}
	for _, mf := range families {
		mfs[mf.GetName()] = mf
	}
	for result, want := range map[string]float64{cacheHit: 2, cacheMiss: 1} {
		if v, _ := metricValue(mfs, "laas_bridge_gateway_cache_total", "model", "cached", "result", result); v != want {
			t.Errorf("laas_bridge_gateway_cache_total{model=cached,result=%s} = %v, want %v", result, v, want)
		}
	}
}

// TestCacheKeyParts: a different params value, temperature, message,
// preset or model is another request: another LaaS call.
func TestCacheKeyParts(t *testing.T) {
	f := newCacheFixture(t)
	base := `,"params":{"lang":"ko"}`
	f.chat(t, cacheBody("cached", "q", base))
	for i, tt := range []struct{ name, body string }{
		{"another params value", cacheBody("cached", "q", `,"params":{"lang":"en"}`)},
		{"another parameter", cacheBody("cached", "q", base+`,"temperature":0.9`)},
		{"another message", cacheBody("cached", "q?", base)},
		{"another preset", cacheBody("cached", "q", base+`,"preset_hash":"p2"`)},
	} {
		resp, _ := f.chat(t, tt.body)
		wantCacheHeader(t, resp, cacheMiss, tt.name)
		f.wantCalls(t, int64(i+2), tt.name)
	}
	resp, _ := f.chat(t, cacheBody("cached", "q", base))
	wantCacheHeader(t, resp, cacheHit, "the first request again")
	f.wantCalls(t, 5, "the first request again")
}

// TestCacheControls: no-cache (body or Cache-Control) is a LaaS call whose
// answer is still stored; no-store (body or Cache-Control) keeps nothing,
// so the next identical request misses too; an Idempotency-Key bypasses
// the lookup; a model without a cache is never looked up.
func TestCacheControls(t *testing.T) {
	f := newCacheFixture(t)
	t.Run("no-cache", func(t *testing.T) {
		body := cacheBody("cached", "no-cache", "")
		f.chat(t, body)
		n := f.calls.Load()
		resp, _ := f.chat(t, cacheBody("cached", "no-cache", `,"cache":{"no-cache":true}`))
		wantCacheHeader(t, resp, cacheBypass, `"cache": {"no-cache": true}`)
		f.wantCalls(t, n+1, `"cache": {"no-cache": true}`)
		resp, _ = f.chat(t, body, "Cache-Control", "max-age=0, No-Cache")
		wantCacheHeader(t, resp, cacheBypass, "Cache-Control: no-cache")
		f.wantCalls(t, n+2, "Cache-Control: no-cache")
		resp, _ = f.chat(t, body)
		wantCacheHeader(t, resp, cacheHit, "without no-cache")
		f.wantCalls(t, n+2, "without no-cache")
	})
	t.Run("no-cache stores", func(t *testing.T) {
		body := cacheBody("cached", "no-cache first", "")
		f.chat(t, body, "Cache-Control", "no-cache")
		n := f.calls.Load()
		resp, _ := f.chat(t, body)
		wantCacheHeader(t, resp, cacheHit, "after a no-cache request")
		f.wantCalls(t, n, "after a no-cache request")
	})
	for _, tt := range []struct {
		name, extra string
		header      []string
	}{
		{name: "no-store in the body", extra: `,"cache":{"no-store":true}`},
		{name: "Cache-Control: no-store", header: []string{"Cache-Control", "no-store"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			text := "kept nowhere: " + tt.name
			n := f.calls.Load()
			resp, _ := f.chat(t, cacheBody("cached", text, tt.extra), tt.header...)
			wantCacheHeader(t, resp, cacheMiss, "no-store")
			resp, _ = f.chat(t, cacheBody("cached", text, ""))
			wantCacheHeader(t, resp, cacheMiss, "after no-store")
			f.wantCalls(t, n+2, "after no-store")
			resp, _ = f.chat(t, cacheBody("cached", text, ""))
			wantCacheHeader(t, resp, cacheHit, "third")
			f.wantCalls(t, n+2, "third")
		})
	}
	t.Run("Idempotency-Key", func(t *testing.T) {
		body := cacheBody("cached", "idempotent", "")
		f.chat(t, body)
		n := f.calls.Load()
		resp, _ := f.chat(t, body, HeaderIdempotencyKey, "key-1")
		wantCacheHeader(t, resp, cacheBypass, "with an Idempotency-Key")
		f.wantCalls(t, n+1, "with an Idempotency-Key")
	})
	t.Run("model without a cache", func(t *testing.T) {
		body := cacheBody("plain", "not cached", "")
		n := f.calls.Load()
		for i := range 2 {
			resp, _ := f.chat(t, body)
			if v, ok := resp.Header[HeaderCache]; ok {
				t.Errorf("request %d: %s: %q on a model without a cache", i, HeaderCache, v)
			}
		}
		f.wantCalls(t, n+2, "a model without a cache")
	})
	t.Run("bad cache object", func(t *testing.T) {
		resp, b := f.do(t, "POST", "/v1/chat/completions", cacheBody("cached", "x", `,"cache":{"namespace":"a"}`), "Authorization", "Bearer "+master)
		var out schema.ErrorBody
		_ = json.Unmarshal(b, &out)
		if resp.StatusCode != 400 || out.Error.Code == nil || *out.Error.Code != schema.CodeInvalidValue || out.Error.Param == nil || *out.Error.Param != "cache.namespace" {
			t.Errorf("unknown cache key: %d %s", resp.StatusCode, b)
		}
	})
}

// TestCacheStream: a cached answer is streamed like any answer, and a
// streamed answer is cached for a request that does not stream.
func TestCacheStream(t *testing.T) {
	f := newCacheFixture(t)
	_, first := f.chat(t, cacheBody("cached", "stream me a cached answer", ""))
	var cc schema.ChatCompletion
	if err := json.Unmarshal(first, &cc); err != nil {
		t.Fatal(err)
	}
	resp, body := f.chat(t, cacheBody("cached", "stream me a cached answer", `,"stream":true,"stream_options":{"include_usage":true}`))
	wantCacheHeader(t, resp, cacheHit, "streamed")
	f.wantCalls(t, 1, "streamed from the cache")
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("Content-Type = %q", ct)
	}
	events := parseSSE(t, body)
	if len(events) == 0 || events[len(events)-1].data != "[DONE]" {
		t.Fatalf("stream does not end with [DONE]: %s", body)
	}
	var content strings.Builder
	for _, e := range events[:len(events)-1] {
		c, _ := decodeChunk(t, e.data)
		if c.ID != cc.ID || c.Model != "cached" {
			t.Errorf("chunk id %q model %q, want %q cached", c.ID, c.Model, cc.ID)
		}
		for _, ch := range c.Choices {
			if ch.Delta.Content != nil {
				content.WriteString(*ch.Delta.Content)
			}
		}
	}
	if want := cc.Choices[0].Message.Content; content.String() != want {
		t.Errorf("streamed content %q, want %q", content.String(), want)
	}

	resp, _ = f.chat(t, cacheBody("cached", "streamed first", `,"stream":true`))
	wantCacheHeader(t, resp, cacheMiss, "streamed first")
	resp, _ = f.chat(t, cacheBody("cached", "streamed first", ""))
	wantCacheHeader(t, resp, cacheHit, "after a streamed answer")
	f.wantCalls(t, 2, "after a streamed answer")
}

// TestCacheModelAccess: a virtual key without access to a model gets its
// 401, never the cached answer; a key with access gets the hit.
func TestCacheModelAccess(t *testing.T) {
	f := newCacheFixture(t)
	body := cacheBody("cached", "secret plans", "")
	f.chat(t, body)
	other, _ := f.generate(t, `{"models": ["plain"]}`)
	resp, b := f.do(t, "POST", "/v1/chat/completions", body, "Authorization", "Bearer "+other)
	var out schema.ErrorBody
	_ = json.Unmarshal(b, &out)
	if resp.StatusCode != 401 || out.Error.Code == nil || *out.Error.Code != keys.CodeModelAccessDenied || strings.Contains(string(b), "echo:") {
		t.Errorf("a key without the model: %d %s; want 401 %s", resp.StatusCode, b, keys.CodeModelAccessDenied)
	}
	if _, ok := resp.Header[HeaderCache]; ok {
		t.Errorf("a refused request has %s", HeaderCache)
	}
	allowed, _ := f.generate(t, `{"models": ["cached"]}`)
	resp, _ = f.chat(t, body, "Authorization", "Bearer "+allowed)
	wantCacheHeader(t, resp, cacheHit, "a key with the model")
	f.wantCalls(t, 1, "model access")
}

// generate makes a virtual key with the master key and returns its secret.
func (f *cacheFixture) generate(t *testing.T, body string) (secret, token string) {
	t.Helper()
	kf := &keysFixture{fixture: f.fixture, store: f.store}
	return kf.generate(t, body)
}

// TestCacheTTL: an entry stored with the request's ttl (1 s) is gone
// once it passes: the same request is a LaaS call again.
func TestCacheTTL(t *testing.T) {
	f := newCacheFixture(t)
	short := cacheBody("cached", "short-lived", `,"cache":{"ttl":1}`)
	f.chat(t, short)
	resp, _ := f.chat(t, short)
	wantCacheHeader(t, resp, cacheHit, "within the ttl")
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, _ := f.chat(t, cacheBody("cached", "short-lived", `,"cache":{"ttl":1,"no-store":true}`))
		if resp.Header.Get(HeaderCache) == cacheMiss {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("an entry with a 1 s TTL still answers after 10 s")
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestCacheKey: the key changes with what decides the answer (model,
// preset, params, sampling, messages, an image's bytes) and not with what
// does not (stream, stream_options, user, cache).
func TestCacheKey(t *testing.T) {
	model := schema.Model{Alias: "cached", LaaSModel: "claude-4-sonnet", PresetHash: "p1", CacheTTL: time.Hour}
	key := func(body string, m schema.Model) string {
		t.Helper()
		req, err := schema.DecodeChatRequest([]byte(body))
		if err != nil {
			t.Fatal(err)
		}
		k, err := cacheKey(&admission.Checked{Chat: req, Model: m})
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	img := func(data string) string {
		return `{"model":"cached","messages":[{"role":"user","content":[{"type":"text","text":"what is this?"},{"type":"image_url","image_url":{"url":"data:image/png;base64,` + data + `"}}]}]}`
	}
	base := key(cacheBody("cached", "q", `,"params":{"a":"1"}`), model)
	for name, body := range map[string]string{
		"stream":         cacheBody("cached", "q", `,"params":{"a":"1"},"stream":true,"stream_options":{"include_usage":true}`),
		"user":           cacheBody("cached", "q", `,"params":{"a":"1"},"user":"someone"`),
		"cache":          cacheBody("cached", "q", `,"params":{"a":"1"},"cache":{"ttl":5,"no-cache":true}`),
		"model's preset": cacheBody("cached", "q", `,"params":{"a":"1"},"preset_hash":"p1"`),
	} {
		if got := key(body, model); got != base {
			t.Errorf("%s changed the key", name)
		}
	}
	other := model
	other.PresetHash = "p9"
	for name, k := range map[string]string{
		"params":        key(cacheBody("cached", "q", `,"params":{"a":"2"}`), model),
		"temperature":   key(cacheBody("cached", "q", `,"params":{"a":"1"},"temperature":1`), model),
		"message":       key(cacheBody("cached", "Q", `,"params":{"a":"1"}`), model),
		"preset":        key(cacheBody("cached", "q", `,"params":{"a":"1"},"preset_hash":"p2"`), model),
		"config preset": key(cacheBody("cached", "q", `,"params":{"a":"1"}`), other),
	} {
		if k == base {
			t.Errorf("another %s kept the key", name)
		}
	}
	if len(base) != 64 || strings.Trim(base, "0123456789abcdef") != "" {
		t.Errorf("key %q is not a hex SHA-256", base)
	}
	if key(img("AAAA"), model) == key(img("AAAB"), model) {
		t.Error("images of other bytes have the same key")
	}
	if key(img("AAAA"), model) != key(img("AAAA"), model) {
		t.Error("the same image has two keys")
	}
}

// TestCacheEntryOfAnotherConfig: an entry is served only while the workers
// run what made it. Once an answer shows they run something else for the
// model (a reload changed its preset), an entry made before is not served
// but replaced; a worker that does not say what it ran stores nothing.
func TestCacheEntryOfAnotherConfig(t *testing.T) {
	f := newCacheFixture(t)
	hello, other := cacheBody("cached", "hello", ""), cacheBody("cached", "something else", "")
	f.chat(t, hello)
	resp, _ := f.chat(t, hello)
	wantCacheHeader(t, resp, cacheHit, "the same request")
	f.wantCalls(t, 1, "before the reload")

	f.ran.Store(schema.RunDigest("claude-4-sonnet", "", "p2")) // the workers now run preset p2
	f.chat(t, other)                                           // a miss: its answer says so
	resp, _ = f.chat(t, hello)
	wantCacheHeader(t, resp, cacheMiss, "an entry made by preset p1")
	f.wantCalls(t, 3, "after the reload")
	resp, _ = f.chat(t, hello)
	wantCacheHeader(t, resp, cacheHit, "the entry made again by p2")
	f.wantCalls(t, 3, "after the entry was made again")

	f.ran.Store("") // a worker older than Reply.Ran
	third := cacheBody("cached", "a third question", "")
	f.chat(t, third)
	resp, _ = f.chat(t, third)
	wantCacheHeader(t, resp, cacheMiss, "an answer from a worker that does not say what it ran")
	f.wantCalls(t, 5, "with an older worker")
}
