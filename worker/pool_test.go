package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/laas-bridge/laas-bridge/laas"
	"github.com/laas-bridge/laas-bridge/queue"
	"github.com/laas-bridge/laas-bridge/queue/queuetest"
	"github.com/laas-bridge/laas-bridge/schema"
)

// upstreamFunc adapts a function to Upstream.
type upstreamFunc func(context.Context, *schema.LaaSRequest) (*schema.LaaSResponse, error)

func (f upstreamFunc) Complete(ctx context.Context, r *schema.LaaSRequest) (*schema.LaaSResponse, error) {
	return f(ctx, r)
}

// recorder answers from script, one entry per call (the last repeats), and
// records every call.
type recorder struct {
	mu     sync.Mutex
	calls  []*schema.LaaSRequest
	script []error
	delay  time.Duration
}

func (r *recorder) Complete(ctx context.Context, req *schema.LaaSRequest) (*schema.LaaSResponse, error) {
	r.mu.Lock()
	n := len(r.calls)
	r.calls = append(r.calls, req)
	var err error
	if len(r.script) > 0 {
		err = r.script[min(n, len(r.script)-1)]
	}
	r.mu.Unlock()
	if r.delay > 0 {
		select {
		case <-time.After(r.delay):
		case <-ctx.Done():
			return nil, &laas.UpstreamError{Err: ctx.Err()}
		}
	}
	if err != nil {
		return nil, err
	}
	resp := &schema.LaaSResponse{ID: "up", Object: "chat.completion", Created: 1_700_000_000_000, Choices: []schema.LaaSChoice{{}}}
	resp.Choices[0].Message.Content = schema.Content{Text: "answer to " + req.Messages[len(req.Messages)-1].Content[0].Text}
	return resp, nil
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.calls)
}

type poolFixture struct {
	q       *queuetest.Queue
	p       *Pool // the pool startPool runs; nil for others
	replies *nats.Subscription
}

func catalog(t testing.TB) *schema.Catalog {
	t.Helper()
	c, err := schema.NewCatalog([]schema.Model{{Alias: "m", LaaSModel: "claude-4-sonnet", PresetHash: "p1", ServiceType: "ANTHROPIC"}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// liveCatalog is catalog(t) as the pool holds it.
func liveCatalog(t testing.TB) *atomic.Pointer[schema.Catalog] {
	var p atomic.Pointer[schema.Catalog]
	p.Store(catalog(t))
	return &p
}

// startPool runs a pool over up with MaxDeliver 3 and opts; it is stopped
// at cleanup.
func startPool(t *testing.T, up Upstream, cfg Config, opts ...Option) *poolFixture {
	t.Helper()
	q := queuetest.Start(t, queue.Config{Memory: true, MaxDeliver: 3, AckWait: 2 * time.Second})
	p := runPool(t, q, up, cfg, opts...)
	sub, err := q.Conn.SubscribeSync("laas.reply.test.*")
	if err != nil {
		t.Fatal(err)
	}
	return &poolFixture{q: q, p: p, replies: sub}
}

// runPool runs a pool over q's consumer until the test's cleanup; the
// retry backoff is 10ms to 40ms unless cfg sets it.
func runPool(t *testing.T, q *queuetest.Queue, up Upstream, cfg Config, opts ...Option) *Pool {
	t.Helper()
	if cfg.RetryBase == 0 {
		cfg.RetryBase, cfg.RetryMax = 10*time.Millisecond, 40*time.Millisecond
	}
	p, err := NewPool(cfg, q.JS, q.Consumer, up, catalog(t), slog.New(slog.DiscardHandler), opts...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return p
}

func (f *poolFixture) publish(t *testing.T, id, model string, deadline time.Duration, req string) {
	t.Helper()
	now := time.Now()
	data, _ := json.Marshal(schema.Envelope{ID: id, Model: model, EnqueuedAt: now, Deadline: now.Add(deadline), Request: json.RawMessage(req)})
	msg := &nats.Msg{Subject: schema.SubjectInteractive, Data: data, Header: nats.Header{}}
	msg.Header.Set(schema.HeaderReplyTo, "laas.reply.test."+id)
	if _, err := f.q.JS.PublishMsg(context.Background(), msg); err != nil {
		t.Fatal(err)
	}
}

func (f *poolFixture) reply(t *testing.T) schema.Reply {
	t.Helper()
	m, err := f.replies.NextMsg(10 * time.Second)
	if err != nil {
		t.Fatalf("no reply: %v", err)
	}
	var r schema.Reply
	if err := json.Unmarshal(m.Data, &r); err != nil {
		t.Fatal(err)
	}
	return r
}

// drained waits (up to 10s) until the stream holds no message: every job
// was acked or terminated.
func (f *poolFixture) drained(t *testing.T) {
	t.Helper()
	waitUntil(t, "the request stream to empty", func() bool {
		s, err := f.q.JS.Stream(context.Background(), schema.StreamRequests)
		if err != nil {
			t.Fatal(err)
		}
		return s.CachedInfo().State.Msgs == 0
	})
}

// cancelled publishes a caller's cancel for id and waits until the pool
// has heard it, so a job published next is known cancelled when pulled.
func (f *poolFixture) cancelled(t *testing.T, id string) {
	t.Helper()
	if err := f.q.Conn.Publish(schema.SubjectCancel+"."+id, nil); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the pool to hear the cancel of "+id, func() bool { return f.p.cancels.isCancelled(id) })
}

// calledAtLeast waits until up has been called n times.
func calledAtLeast(t *testing.T, up *recorder, n int) {
	t.Helper()
	waitUntil(t, fmt.Sprintf("%d LaaS calls", n), func() bool { return up.count() >= n })
}

const hello = `{"model":"m","messages":[{"role":"system","content":"sys"},{"role":"user","content":"hello"}],"temperature":0.2,"params":{"name":"Kim","n":3}}`

func TestPoolAnswersAndAcks(t *testing.T) {
	up := &recorder{}
	f := startPool(t, up, Config{})
	f.publish(t, "r1", "m", time.Minute, hello)
	r := f.reply(t)
	if r.ID != "r1" || r.Status != 200 || r.Attempts != 1 || r.Error != nil || r.Completion == nil {
		t.Fatalf("reply = %+v", r)
	}
	cc := r.Completion
	if cc.ID != "chatcmpl-r1" || cc.Model != "m" || cc.Created != 1_700_000_000 || cc.Choices[0].Message.Content != "answer to hello" {
		t.Errorf("completion = %+v", cc)
	}
	f.drained(t)
	got := up.calls[0]
	if got.Hash != "p1" || got.Model != "claude-4-sonnet" || got.ServiceType != "ANTHROPIC" || *got.Temperature != 0.2 ||
		got.Params["name"] != "Kim" || got.Params["n"] != "3" || len(got.Messages) != 2 || got.Messages[0].Role != "system" {
		t.Errorf("LaaS request = %+v", got)
	}
}

func TestPoolRetries(t *testing.T) {
	e500 := &laas.UpstreamError{Status: 500, Body: "boom"}
	cases := []struct {
		name         string
		script       []error
		deadline     time.Duration
		wantStatus   int
		wantCode     string
		wantAttempts int
		wantCalls    int
	}{
		{"retryable then success", []error{e500, &laas.UpstreamError{Status: 429}, nil}, time.Minute, 200, "", 3, 3},
		{"connection error then success", []error{&laas.UpstreamError{Err: context.DeadlineExceeded, Timeout: true}, nil}, time.Minute, 200, "", 2, 2},
		{"not retryable: answered at once", []error{&laas.UpstreamError{Status: 400, Body: `{"message":"bad preset var"}`}}, time.Minute, 400, "", 1, 1},
		{"auth refused: answered at once", []error{&laas.UpstreamError{Status: 401}}, time.Minute, 502, schema.CodeUpstreamAuth, 1, 1},
		{"attempts exhausted: last error", []error{e500, e500, &laas.UpstreamError{Status: 503}}, time.Minute, 503, schema.CodeUpstreamError, 3, 3},
		{"retry would pass the deadline", []error{&laas.UpstreamError{Status: 429, RetryAfter: time.Hour}}, time.Minute, 429, schema.CodeRateLimitExceeded, 1, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			up := &recorder{script: tc.script}
			f := startPool(t, up, Config{})
			f.publish(t, "r1", "m", tc.deadline, hello)
			r := f.reply(t)
			if r.Status != tc.wantStatus || r.Attempts != tc.wantAttempts || up.count() != tc.wantCalls {
				t.Fatalf("status %d attempts %d calls %d; want %d %d %d (%+v)", r.Status, r.Attempts, up.count(), tc.wantStatus, tc.wantAttempts, tc.wantCalls, r.Error)
			}
			if tc.wantCode != "" && (r.Error == nil || r.Error.Code == nil || *r.Error.Code != tc.wantCode) {
				t.Errorf("error = %+v, want code %q", r.Error, tc.wantCode)
			}
			f.drained(t)
			if _, err := f.replies.NextMsg(100 * time.Millisecond); err == nil {
				t.Error("a second reply was published")
			}
		})
	}
}

func TestPoolRefusesWithoutCallingLaaS(t *testing.T) {
	cases := []struct {
		name, model, req string
		deadline         time.Duration
		status           int
		code             string
	}{
		{"deadline passed in the queue", "m", hello, -time.Second, http.StatusGatewayTimeout, schema.CodeDeadlineExceeded},
		{"unknown model", "nope", hello, time.Minute, 404, schema.CodeModelNotFound},
		{"invalid request from a producer", "m", `{"model":"m","messages":[{"role":"tool","content":"x"}]}`, time.Minute, 400, schema.CodeInvalidValue},
		{"request that is not JSON", "m", `"just a string"`, time.Minute, 400, schema.CodeInvalidJSON},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			up := &recorder{}
			f := startPool(t, up, Config{})
			f.publish(t, "r1", tc.model, tc.deadline, tc.req)
			r := f.reply(t)
			if r.Status != tc.status || r.Error == nil || r.Error.Code == nil || *r.Error.Code != tc.code {
				t.Fatalf("reply = %d %+v; want %d %q", r.Status, r.Error, tc.status, tc.code)
			}
			if up.count() != 0 {
				t.Errorf("LaaS was called %d times", up.count())
			}
			f.drained(t)
		})
	}
}

func TestPoolDropsGarbage(t *testing.T) {
	up := &recorder{}
	f := startPool(t, up, Config{})
	if _, err := f.q.JS.Publish(context.Background(), schema.SubjectInteractive, []byte("not an envelope")); err != nil {
		t.Fatal(err)
	}
	f.drained(t)
	if up.count() != 0 {
		t.Error("garbage reached LaaS")
	}
}

// TestPoolFinishesInFlightOnShutdown: a call under way when shutdown begins
// is finished and answered within the grace period.
func TestPoolFinishesInFlightOnShutdown(t *testing.T) {
	q := queuetest.Start(t, queue.Config{Memory: true})
	up := &recorder{delay: 300 * time.Millisecond}
	p, err := NewPool(Config{ShutdownGrace: 10 * time.Second}, q.JS, q.Consumer, up, catalog(t), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	sub, _ := q.Conn.SubscribeSync("laas.reply.test.*")
	f := &poolFixture{q: q, replies: sub}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	f.publish(t, "r1", "m", time.Minute, hello)
	calledAtLeast(t, up, 1)
	cancel()
	if r := f.reply(t); r.Status != 200 {
		t.Errorf("in-flight call answered %d", r.Status)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	f.drained(t)
}

// TestPoolSharesWork: two pools on one consumer split the jobs, and each
// job is answered exactly once.
func TestPoolSharesWork(t *testing.T) {
	q := queuetest.Start(t, queue.Config{Memory: true})
	var a, b atomic.Int64
	mk := func(n *atomic.Int64) Upstream {
		r := &recorder{delay: 20 * time.Millisecond}
		return upstreamFunc(func(ctx context.Context, req *schema.LaaSRequest) (*schema.LaaSResponse, error) {
			n.Add(1)
			return r.Complete(ctx, req)
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, n := range []*atomic.Int64{&a, &b} {
		p, err := NewPool(Config{Concurrency: 4}, q.JS, q.Consumer, mk(n), catalog(t), slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() { defer wg.Done(); _ = p.Run(ctx) }()
	}
	defer func() { cancel(); wg.Wait() }()
	sub, _ := q.Conn.SubscribeSync("laas.reply.test.*")
	f := &poolFixture{q: q, replies: sub}
	const jobs = 40
	for i := range jobs {
		f.publish(t, fmt.Sprintf("r%d", i), "m", time.Minute, hello)
	}
	seen := map[string]bool{}
	for range jobs {
		r := f.reply(t)
		if seen[r.ID] {
			t.Errorf("job %s answered twice", r.ID)
		}
		seen[r.ID] = true
	}
	if a.Load()+b.Load() != jobs || a.Load() == 0 || b.Load() == 0 {
		t.Errorf("pool calls %d + %d, want %d split between both", a.Load(), b.Load(), jobs)
	}
}

// TestPoolLargeBodies: a request body in the object store is read, the
// answer too large for a message goes back through the store, and the
// request body is deleted once the job is done.
func TestPoolLargeBodies(t *testing.T) {
	up := &recorder{}
	f := startPool(t, up, Config{})
	ctx := context.Background()
	store, err := f.q.JS.ObjectStore(ctx, schema.BucketBodies)
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Repeat("긴 문서 ", 200_000) // ~2.2 MB
	body, _ := json.Marshal(map[string]any{"model": "m", "messages": []map[string]string{{"role": "user", "content": text}}})
	if _, err := store.PutBytes(ctx, "big1", body); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	data, _ := json.Marshal(schema.Envelope{ID: "big1", Model: "m", EnqueuedAt: now, Deadline: now.Add(time.Minute), RequestRef: "big1"})
	msg := &nats.Msg{Subject: schema.SubjectInteractive, Data: data, Header: nats.Header{}}
	msg.Header.Set(schema.HeaderReplyTo, "laas.reply.test.big1")
	if _, err := f.q.JS.PublishMsg(ctx, msg); err != nil {
		t.Fatal(err)
	}
	r := f.reply(t)
	if r.Status != 200 || r.Completion != nil || r.CompletionRef != "big1.reply" {
		t.Fatalf("reply = status %d completion %v ref %q", r.Status, r.Completion != nil, r.CompletionRef)
	}
	stored, err := store.GetBytes(ctx, r.CompletionRef)
	if err != nil {
		t.Fatal(err)
	}
	var cc schema.ChatCompletion
	if err := json.Unmarshal(stored, &cc); err != nil || cc.Choices[0].Message.Content != "answer to "+text {
		t.Fatalf("stored answer is not the whole answer (%v)", err)
	}
	if got := up.calls[0].Messages[0].Content[0].Text; got != text {
		t.Errorf("LaaS got %d bytes of text, want %d", len(got), len(text))
	}
	f.drained(t)
	if _, err := store.GetInfo(ctx, "big1"); !errors.Is(err, jetstream.ErrObjectNotFound) {
		t.Errorf("request body still stored after the job: %v", err)
	}

	// A reference to a body that is gone is answered, not retried forever.
	data, _ = json.Marshal(schema.Envelope{ID: "gone", Model: "m", EnqueuedAt: now, Deadline: now.Add(time.Minute), RequestRef: "gone"})
	msg = &nats.Msg{Subject: schema.SubjectInteractive, Data: data, Header: nats.Header{}}
	msg.Header.Set(schema.HeaderReplyTo, "laas.reply.test.gone")
	if _, err := f.q.JS.PublishMsg(ctx, msg); err != nil {
		t.Fatal(err)
	}
	if r := f.reply(t); r.Status != 500 || up.count() != 1 {
		t.Errorf("missing body: status %d, LaaS calls %d", r.Status, up.count())
	}
	f.drained(t)
}

func TestPoolPresetOverride(t *testing.T) {
	req := `{"model":"m","preset_hash":"custom","messages":[{"role":"user","content":"x"}]}`
	t.Run("allowed", func(t *testing.T) {
		up := &recorder{}
		f := startPool(t, up, Config{AllowPresetOverride: true})
		f.publish(t, "r1", "m", time.Minute, req)
		if r := f.reply(t); r.Status != 200 || up.calls[0].Hash != "custom" {
			t.Errorf("status %d, LaaS hash %q", r.Status, up.calls[0].Hash)
		}
	})
	t.Run("not allowed", func(t *testing.T) {
		up := &recorder{}
		f := startPool(t, up, Config{})
		f.publish(t, "r1", "m", time.Minute, req)
		r := f.reply(t)
		if r.Status != 400 || r.Error == nil || *r.Error.Code != schema.CodePresetOverride || up.count() != 0 {
			t.Errorf("reply %d %+v, LaaS calls %d", r.Status, r.Error, up.count())
		}
	})
}

// TestPoolCancellation: a cancel for a running job aborts its LaaS call; a
// cancel that arrives first makes the job skip LaaS. Neither is answered or
// retried, and both leave the queue.
func TestPoolCancellation(t *testing.T) {
	t.Run("during the call", func(t *testing.T) {
		up := &recorder{delay: time.Minute}
		f := startPool(t, up, Config{})
		f.publish(t, "r1", "m", 2*time.Minute, hello)
		calledAtLeast(t, up, 1)
		start := time.Now()
		if err := f.q.Conn.Publish(schema.SubjectCancel+".r1", nil); err != nil {
			t.Fatal(err)
		}
		f.drained(t)
		if time.Since(start) > 10*time.Second {
			t.Errorf("the call was not aborted (%s)", time.Since(start))
		}
		if _, err := f.replies.NextMsg(200 * time.Millisecond); err == nil {
			t.Error("a cancelled job was answered")
		}
		if up.count() != 1 {
			t.Errorf("LaaS calls = %d, want 1 (no retry)", up.count())
		}
	})
	t.Run("before the job starts", func(t *testing.T) {
		up := &recorder{}
		f := startPool(t, up, Config{})
		f.cancelled(t, "r2")
		f.publish(t, "r2", "m", time.Minute, hello)
		f.drained(t)
		if up.count() != 0 {
			t.Errorf("LaaS was called for a cancelled job")
		}
		if _, err := f.replies.NextMsg(200 * time.Millisecond); err == nil {
			t.Error("a cancelled job was answered")
		}
	})
}

// TestPoolIdempotentAnswer: a job whose Idempotency-Key already has a kept
// answer is answered from it without calling LaaS; a new key's answer is kept.
func TestPoolIdempotentAnswer(t *testing.T) {
	up := &recorder{}
	f := startPool(t, up, Config{})
	ctx := context.Background()
	kv, err := f.q.JS.KeyValue(ctx, schema.BucketAnswers)
	if err != nil {
		t.Fatal(err)
	}
	kept, _ := json.Marshal(schema.Reply{ID: "first", Status: 200, Completion: &schema.ChatCompletion{ID: "chatcmpl-first"}})
	if _, err := kv.Put(ctx, "k1", kept); err != nil {
		t.Fatal(err)
	}
	publishKeyed := func(id, key string) {
		now := time.Now()
		data, _ := json.Marshal(schema.Envelope{ID: id, Model: "m", EnqueuedAt: now, Deadline: now.Add(time.Minute), Request: json.RawMessage(hello), IdempotencyKey: key})
		msg := &nats.Msg{Subject: schema.SubjectInteractive, Data: data, Header: nats.Header{}}
		msg.Header.Set(schema.HeaderReplyTo, "laas.reply.test."+id)
		if _, err := f.q.JS.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	publishKeyed("second", "k1")
	if r := f.reply(t); r.ID != "first" || r.Completion == nil || r.Completion.ID != "chatcmpl-first" || up.count() != 0 {
		t.Fatalf("reply %+v, LaaS calls %d; want the kept answer and no call", r, up.count())
	}
	publishKeyed("third", "k2")
	if r := f.reply(t); r.ID != "third" || r.Status != 200 || up.count() != 1 {
		t.Fatalf("reply %+v, LaaS calls %d", r, up.count())
	}
	e, err := kv.Get(ctx, "k2")
	if err != nil {
		t.Fatalf("answer for k2 not kept: %v", err)
	}
	var r schema.Reply
	if err := json.Unmarshal(e.Value(), &r); err != nil || r.ID != "third" || r.Completion.Choices[0].Message.Content != "answer to hello" {
		t.Errorf("kept answer = %s", e.Value())
	}
	f.drained(t)
}

// TestPoolEnvelopeChecks: a producer that skips the gateway gets the
// default deadline when it sets none, and cannot make a worker publish to
// an arbitrary subject, read another request's body, or use an id that
// is not a plain token.
func TestPoolEnvelopeChecks(t *testing.T) {
	t.Run("no deadline: the default timeout", func(t *testing.T) {
		up := &recorder{}
		f := startPool(t, up, Config{})
		data, _ := json.Marshal(schema.Envelope{ID: "nodl", Model: "m", Request: json.RawMessage(hello)})
		msg := &nats.Msg{Subject: schema.SubjectInteractive, Data: data, Header: nats.Header{}}
		msg.Header.Set(schema.HeaderReplyTo, "laas.reply.test.nodl")
		if _, err := f.q.JS.PublishMsg(context.Background(), msg); err != nil {
			t.Fatal(err)
		}
		if r := f.reply(t); r.Status != 200 || up.count() != 1 {
			t.Fatalf("reply %d %+v, LaaS calls %d", r.Status, r.Error, up.count())
		}
	})
	cases := []struct{ name, id, replyTo, ref string }{
		{"reply subject outside laas.reply", "ok1", "$JS.API.STREAM.DELETE." + schema.StreamRequests, ""},
		{"wildcard reply subject", "ok2", "laas.reply.test.>", ""},
		{"another request's body", "ok3", "laas.reply.test.ok3", "someone-else"},
		{"id with a dot", "a.b", "laas.reply.test.x", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			up := &recorder{}
			f := startPool(t, up, Config{})
			now := time.Now()
			data, _ := json.Marshal(schema.Envelope{ID: tc.id, Model: "m", EnqueuedAt: now, Deadline: now.Add(time.Minute), Request: json.RawMessage(hello), RequestRef: tc.ref})
			msg := &nats.Msg{Subject: schema.SubjectInteractive, Data: data, Header: nats.Header{}}
			msg.Header.Set(schema.HeaderReplyTo, tc.replyTo)
			if _, err := f.q.JS.PublishMsg(context.Background(), msg); err != nil {
				t.Fatal(err)
			}
			f.drained(t)
			if up.count() != 0 {
				t.Errorf("LaaS was called")
			}
			if _, err := f.q.JS.Stream(context.Background(), schema.StreamRequests); err != nil {
				t.Errorf("request stream: %v", err)
			}
		})
	}
}

// TestPoolInteractiveLaneFirst: with 1,000 batch jobs queued, an
// interactive job is taken before every batch job that has not started.
//
// The bound comes from the pull loop, not from time: with one slot, a job
// is pulled only while the slot is free, and every pull asks the
// interactive lane first. Once the interactive job is stored (the publish
// has returned), at most one batch job reaches LaaS before it: either the
// slot holds a batch job that has not called LaaS yet, or the slot is free
// and a pull that asked the interactive lane just before the publish is
// taking a batch job. Then the next pull takes the interactive job.
func TestPoolInteractiveLaneFirst(t *testing.T) {
	up := &recorder{delay: 10 * time.Millisecond}
	f := startPool(t, up, Config{Concurrency: 1})
	batchReq := `{"model":"m","messages":[{"role":"user","content":"batch"}]}`
	now := time.Now()
	for i := range 1000 {
		data, _ := json.Marshal(schema.Envelope{ID: fmt.Sprintf("b%d", i), Model: "m", EnqueuedAt: now, Deadline: now.Add(time.Hour), Request: json.RawMessage(batchReq)})
		if _, err := f.q.JS.PublishAsync(schema.SubjectBatch, data); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-f.q.JS.PublishAsyncComplete():
	case <-time.After(30 * time.Second):
		t.Fatal("batch publish did not complete")
	}
	calledAtLeast(t, up, 5) // the batch lane is running
	f.publish(t, "interactive", "m", time.Minute, hello)
	before := up.count() // LaaS calls begun once the interactive job was stored, or later
	if r := f.reply(t); r.ID != "interactive" || r.Status != 200 {
		t.Fatalf("reply %+v", r)
	}
	up.mu.Lock()
	defer up.mu.Unlock()
	at := -1
	for i, c := range up.calls {
		if c.Messages[len(c.Messages)-1].Content[0].Text == "hello" {
			at = i
		}
	}
	if at < 0 || at-before > 1 {
		t.Errorf("the interactive job was call %d; %d calls had begun when it was stored: %d batch jobs went first, want at most 1", at, before, at-before)
	}
	if len(up.calls) >= 1000 {
		t.Errorf("all batch jobs ran before the interactive one finished")
	}
}

// TestPoolPullsOnlyForFreeSlots: a job the pool has pulled but not started
// must not outlive AckWait unacknowledged, or the server hands it out again
// and LaaS is called twice. With both slots busy for 1.5 AckWait and jobs
// queued behind them, every job is called exactly once.
//
// Only counts are asserted. Time enters only as the schedule the test
// sets up: a job pulled early would wait a whole call (1.5 AckWait) and be
// handed out again; a job that has started is kept by InProgress acks
// every AckWait/5, so only a stall of four fifths of AckWait (over a
// second) could fail it on a busy machine.
func TestPoolPullsOnlyForFreeSlots(t *testing.T) {
	const (
		ackWait     = 2 * time.Second
		call        = 3 * ackWait / 2
		concurrency = 2
		jobs        = 2 * concurrency // one round waits behind the other
	)
	q := queuetest.Start(t, queue.Config{Memory: true, MaxDeliver: 5, AckWait: ackWait})
	up := &recorder{delay: call}
	sub, err := q.Conn.SubscribeSync("laas.reply.test.*")
	if err != nil {
		t.Fatal(err)
	}
	f := &poolFixture{q: q, replies: sub}
	for i := range jobs {
		f.publish(t, fmt.Sprintf("r%d", i), "m", time.Minute,
			fmt.Sprintf(`{"model":"m","messages":[{"role":"user","content":"job %d"}]}`, i))
	}
	runPool(t, q, up, Config{Concurrency: concurrency})
	// Every round takes one call; a minute more is ample for a busy machine.
	deadline := time.Now().Add(jobs/concurrency*call + time.Minute)
	for i := range jobs {
		m, err := sub.NextMsg(time.Until(deadline))
		if err != nil {
			t.Fatalf("%d of %d replies: %v", i, jobs, err)
		}
		var r schema.Reply
		if err := json.Unmarshal(m.Data, &r); err != nil || r.Status != 200 {
			t.Errorf("reply %s: %+v (%v)", m.Data, r, err)
		}
	}
	// A job delivered twice runs twice: wait for the stream to empty.
	f.drained(t)
	up.mu.Lock()
	defer up.mu.Unlock()
	calls := map[string]int{}
	for _, c := range up.calls {
		calls[c.Messages[0].Content[0].Text]++
	}
	for i := range jobs {
		if n := calls[fmt.Sprintf("job %d", i)]; n != 1 {
			t.Errorf("job %d called LaaS %d times, want 1", i, n)
		}
	}
}

// TestPoolRepliesDirectOrThroughStream: a reply the gateway takes on the
// direct subject is never stored; one no gateway answers (none listening,
// or one that stays silent) is stored in StreamReplies, where a
// reconnecting gateway reads it back.
func TestPoolRepliesDirectOrThroughStream(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	f := startPool(t, &recorder{}, Config{}, WithMetrics(reg))
	replies := func() (msgs uint64) {
		t.Helper()
		s, err := f.q.JS.Stream(context.Background(), schema.StreamReplies)
		if err != nil {
			t.Fatal(err)
		}
		return s.CachedInfo().State.Msgs
	}
	decode := func(data []byte) schema.Reply {
		t.Helper()
		var r schema.Reply
		if err := json.Unmarshal(data, &r); err != nil {
			t.Fatal(err)
		}
		return r
	}
	gw := f.q.Connect(t)

	t.Run("the gateway takes it", func(t *testing.T) {
		direct := make(chan *nats.Msg, 1)
		sub, err := gw.Subscribe("laas.direct.test.*", func(m *nats.Msg) { direct <- m; _ = m.Respond(nil) })
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Unsubscribe()
		_ = gw.Flush()
		f.publish(t, "d1", "m", time.Minute, hello)
		select {
		case m := <-direct:
			if r := decode(m.Data); m.Subject != "laas.direct.test.d1" || r.ID != "d1" || r.Status != 200 || r.Completion == nil {
				t.Errorf("direct reply on %s: %+v", m.Subject, r)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no direct reply")
		}
		f.drained(t)
		if n := replies(); n != 0 {
			t.Errorf("replies stream holds %d messages, want 0", n)
		}
		if m, err := f.replies.NextMsg(100 * time.Millisecond); err == nil {
			t.Errorf("reply also published on %s", m.Subject)
		}
	})
	t.Run("no gateway listens", func(t *testing.T) {
		f.publish(t, "s1", "m", time.Minute, hello)
		if r := f.reply(t); r.ID != "s1" || r.Status != 200 {
			t.Errorf("reply = %+v", r)
		}
		f.drained(t)
		if n := replies(); n != 1 {
			t.Errorf("replies stream holds %d messages, want 1", n)
		}
	})
	t.Run("the gateway does not answer", func(t *testing.T) {
		sub, err := gw.SubscribeSync("laas.direct.test.*") // hears it, never answers
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Unsubscribe()
		_ = gw.Flush()
		f.publish(t, "s2", "m", time.Minute, hello)
		if m, err := sub.NextMsg(10 * time.Second); err != nil || decode(m.Data).ID != "s2" {
			t.Fatalf("direct reply: %v", err)
		}
		if r := f.reply(t); r.ID != "s2" || r.Status != 200 { // after directReplyTimeout
			t.Errorf("reply = %+v", r)
		}
		f.drained(t)
		s, err := f.q.JS.Stream(context.Background(), schema.StreamReplies)
		if err != nil {
			t.Fatal(err)
		}
		m, err := s.GetLastMsgForSubject(context.Background(), "laas.reply.test.s2")
		if err != nil || decode(m.Data).ID != "s2" {
			t.Errorf("stored reply: %v", err)
		}
		if n := replies(); n != 2 {
			t.Errorf("replies stream holds %d messages, want 2", n)
		}
	})
	t.Run("a gateway in this process takes it", func(t *testing.T) {
		direct, err := gw.SubscribeSync("laas.direct.test.*") // must hear nothing
		if err != nil {
			t.Fatal(err)
		}
		defer direct.Unsubscribe()
		_ = gw.Flush()
		local := make(chan schema.Reply, 2)
		f.p.HandRepliesTo(func(subject string, data []byte) bool {
			if subject != "laas.direct.test.l1" {
				return false // another gateway's: over NATS
			}
			local <- decode(data)
			return true
		})
		defer f.p.HandRepliesTo(func(string, []byte) bool { return false })
		f.publish(t, "l1", "m", time.Minute, hello)
		select {
		case r := <-local:
			if r.ID != "l1" || r.Status != 200 || r.Completion == nil {
				t.Errorf("local reply: %+v", r)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no local reply")
		}
		f.drained(t)
		if m, err := direct.NextMsg(100 * time.Millisecond); err == nil {
			t.Errorf("reply also sent over NATS on %s", m.Subject)
		}
		if n := replies(); n != 2 {
			t.Errorf("replies stream holds %d messages, want the 2 from before", n)
		}
	})
	mfs := gather(t, reg)
	for path, want := range map[string]float64{replyDirect: 1, replyStream: 2, replyLocal: 1} {
		if got := metricValue(mfs, "laas_bridge_worker_replies_total", "path", path); got != want {
			t.Errorf("replies_total{path=%s} = %v, want %v", path, got, want)
		}
	}
}

// gatedUpstream holds its first call until release is closed and records
// the preset of every call.
type gatedUpstream struct {
	entered chan struct{} // closed when the first call has begun
	release chan struct{}
	mu      sync.Mutex
	presets []string
}

func (u *gatedUpstream) Complete(ctx context.Context, req *schema.LaaSRequest) (*schema.LaaSResponse, error) {
	u.mu.Lock()
	u.presets = append(u.presets, req.Hash)
	first := len(u.presets) == 1
	u.mu.Unlock()
	if first {
		close(u.entered)
		select {
		case <-u.release:
		case <-ctx.Done():
			return nil, &laas.UpstreamError{Err: ctx.Err()}
		}
	}
	return (&recorder{}).Complete(ctx, req)
}

// TestPoolSetCatalog: a catalogue put in force while a job's LaaS call is
// under way (a config reload) leaves that job on the model it was prepared
// with, and applies to the jobs taken after it: a changed preset is used,
// a removed model is refused model_not_found.
func TestPoolSetCatalog(t *testing.T) {
	up := &gatedUpstream{entered: make(chan struct{}), release: make(chan struct{})}
	f := startPool(t, up, Config{Concurrency: 2})
	f.publish(t, "before", "m", time.Minute, hello)
	select {
	case <-up.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the first job did not reach LaaS within 10s")
	}
	reloaded, err := schema.NewCatalog([]schema.Model{{Alias: "m", LaaSModel: "claude-4-sonnet", PresetHash: "p2"}})
	if err != nil {
		t.Fatal(err)
	}
	f.p.SetCatalog(reloaded)
	f.publish(t, "after", "m", time.Minute, hello)
	// Each reply says what ran (Reply.Ran: the response cache keeps an
	// answer only for what runs now).
	if r := f.reply(t); r.ID != "after" || r.Status != 200 || r.Ran != schema.RunDigest("claude-4-sonnet", "", "p2") {
		t.Fatalf("first reply %s %d ran %q, want after 200 ran p2", r.ID, r.Status, r.Ran)
	}
	close(up.release)
	if r := f.reply(t); r.ID != "before" || r.Status != 200 || r.Ran != schema.RunDigest("claude-4-sonnet", "ANTHROPIC", "p1") {
		t.Fatalf("second reply %s %d ran %q, want before 200 ran p1", r.ID, r.Status, r.Ran)
	}
	up.mu.Lock()
	presets := slices.Clone(up.presets)
	up.mu.Unlock()
	if !slices.Equal(presets, []string{"p1", "p2"}) {
		t.Errorf("LaaS called with presets %v, want [p1 p2]: the job under way on the old config, the next on the new", presets)
	}
	empty, _ := schema.NewCatalog(nil)
	f.p.SetCatalog(empty)
	f.publish(t, "removed", "m", time.Minute, hello)
	if r := f.reply(t); r.ID != "removed" || r.Status != 404 || r.Error == nil || r.Error.Code == nil || *r.Error.Code != schema.CodeModelNotFound || r.Ran != "" {
		t.Errorf("reply for a removed model: %+v, want 404 model_not_found", r)
	}
}
