package bridge

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/laas-bridge/laas-bridge/schema"
)

// serveFixture is newFixture with Serve running (HTTP on its own listener
// and the NATS endpoint), and a plain client connection; Serve is stopped
// at cleanup.
func serveFixture(t *testing.T, cfg Config) (*fixture, *nats.Conn) {
	t.Helper()
	f := newFixture(t, cfg)
	nc := f.q.Connect(t)
	startServe(t, f.gw)
	waitForService(t, nc, 1)
	return f, nc
}

// startServe runs gw.Serve until cleanup, which requires it to return nil.
func startServe(t *testing.T, gw *Gateway) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- gw.Serve(ctx, ln) }()
	t.Cleanup(func() {
		stop()
		if err := <-served; err != nil {
			t.Errorf("Serve = %v", err)
		}
	})
}

// waitForService waits until n instances of the service answer a ping.
func waitForService(t *testing.T, nc *nats.Conn, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for len(pings(t, nc)) < n {
		if time.Now().After(deadline) {
			t.Fatalf("the %s service did not answer $SRV.PING", MicroServiceName)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// pings is every instance's answer to $SRV.PING.laas-bridge within 300ms.
func pings(t *testing.T, nc *nats.Conn) []micro.Ping {
	t.Helper()
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	subj, _ := micro.ControlSubject(micro.PingVerb, MicroServiceName, "")
	if err := nc.PublishRequest(subj, inbox, nil); err != nil {
		t.Fatal(err)
	}
	var out []micro.Ping
	for {
		m, err := sub.NextMsg(300 * time.Millisecond)
		if err != nil {
			return out
		}
		var p micro.Ping
		if err := json.Unmarshal(m.Data, &p); err != nil {
			t.Fatalf("ping answer %s: %v", m.Data, err)
		}
		out = append(out, p)
	}
}

// ask sends one request to the chat endpoint with headers (name, value
// pairs) and returns the reply.
func ask(t *testing.T, nc *nats.Conn, body string, header ...string) *nats.Msg {
	t.Helper()
	msg := nats.NewMsg(DefaultMicroSubject)
	msg.Data = []byte(body)
	for i := 0; i+1 < len(header); i += 2 {
		msg.Header.Set(header[i], header[i+1])
	}
	rep, err := nc.RequestMsg(msg, 30*time.Second)
	if err != nil {
		t.Fatalf("request on %s: %v", DefaultMicroSubject, err)
	}
	return rep
}

// control asks the service's control subject for verb and decodes the answer.
func control(t *testing.T, nc *nats.Conn, verb micro.Verb, v any) {
	t.Helper()
	subj, _ := micro.ControlSubject(verb, MicroServiceName, "")
	m, err := nc.Request(subj, nil, 5*time.Second)
	if err != nil {
		t.Fatalf("%s: %v", subj, err)
	}
	if err := json.Unmarshal(m.Data, v); err != nil {
		t.Fatalf("%s answered %s: %v", subj, m.Data, err)
	}
}

func TestMicroChatRoundTrip(t *testing.T) {
	f, nc := serveFixture(t, Config{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f.fakeWorker(t, ctx, 1, echoAnswer)

	rep := ask(t, nc, chatBody("claude-3.5-sonnet", "안녕 over NATS"))
	if code := rep.Header.Get(micro.ErrorCodeHeader); code != "" {
		t.Fatalf("error %s %q: %s", code, rep.Header.Get(micro.ErrorHeader), rep.Data)
	}
	var cc schema.ChatCompletion
	if err := json.Unmarshal(rep.Data, &cc); err != nil {
		t.Fatalf("not a chat.completion: %v: %s", err, rep.Data)
	}
	id := rep.Header.Get(HeaderRequestID)
	if cc.Object != "chat.completion" || cc.Model != "claude-3.5-sonnet" || len(cc.Choices) != 1 ||
		cc.Choices[0].Message.Content != "echo: 안녕 over NATS" || cc.ID != "chatcmpl-"+id || id == "" {
		t.Errorf("answer %s (request id %q)", rep.Data, id)
	}
	for h, want := range map[string]string{HeaderQueueMs: "7", HeaderUpstreamMs: "11", HeaderAttempts: "1"} {
		if got := rep.Header.Get(h); got != want {
			t.Errorf("%s = %q, want %q", h, got, want)
		}
	}
	if p := f.gw.corr.pending(); p != 0 {
		t.Errorf("%d callers still registered", p)
	}
}

// TestMicroRefusalsMatchHTTP: a request refused over HTTP is refused over
// NATS with the same OpenAI error body, and the status in micro's error
// headers.
func TestMicroRefusalsMatchHTTP(t *testing.T) {
	f, nc := serveFixture(t, Config{})
	cases := []struct {
		name, body string
		header     []string
		status     int
		code       string
	}{
		{"unknown model", chatBody("gpt-4o", "hi"), nil, 404, "model_not_found"},
		{"malformed JSON", `{"model": "claude-3.5-sonnet", "messages": [`, nil, 400, "invalid_json"},
		{"empty body", ``, nil, 400, "invalid_json"},
		{"not an object", `[1, 2]`, nil, 400, "invalid_json"},
		{"bad role", `{"model":"claude-3.5-sonnet","messages":[{"role":"wizard","content":"hi"}]}`, nil, 400, "invalid_value"},
		{"preset override", `{"model":"claude-3.5-sonnet","preset_hash":"x","messages":[{"role":"user","content":"hi"}]}`, nil, 400, "preset_override_disabled"},
		{"bad timeout header", chatBody("claude-3.5-sonnet", "hi"), []string{"X-Request-Timeout", "soon"}, 400, "invalid_value"},
		{"lower-case timeout header", chatBody("claude-3.5-sonnet", "hi"), []string{"x-request-timeout", "-1"}, 400, "invalid_value"},
		{"bad lane", chatBody("claude-3.5-sonnet", "hi"), []string{HeaderLane, "express"}, 400, "invalid_value"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, httpBody := f.do(t, "POST", "/v1/chat/completions", tc.body, tc.header...)
			if resp.StatusCode != tc.status || !strings.Contains(string(httpBody), `"code":"`+tc.code+`"`) {
				t.Fatalf("HTTP: %d %s", resp.StatusCode, httpBody)
			}
			rep := ask(t, nc, tc.body, tc.header...)
			if got, want := string(rep.Data), strings.TrimSpace(string(httpBody)); got != want {
				t.Errorf("NATS body\n%s\nwant the HTTP body\n%s", got, want)
			}
			var body schema.ErrorBody
			_ = json.Unmarshal(rep.Data, &body)
			if got := rep.Header.Get(micro.ErrorCodeHeader); got != fmt.Sprint(tc.status) {
				t.Errorf("%s = %q, want %d", micro.ErrorCodeHeader, got, tc.status)
			}
			if got := rep.Header.Get(micro.ErrorHeader); got != body.Error.Message || got == "" {
				t.Errorf("%s = %q, want the message %q", micro.ErrorHeader, got, body.Error.Message)
			}
			if rep.Header.Get(HeaderRequestID) == "" {
				t.Error("no request id")
			}
		})
	}
	t.Run("stream refused", func(t *testing.T) {
		rep := ask(t, nc, `{"model":"claude-3.5-sonnet","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
		want := `{"error":{"message":"'stream': true is not supported over NATS request/reply, whose answer is one message; leave it out, or stream over HTTP (POST /v1/chat/completions).","type":"invalid_request_error","param":"stream","code":"unsupported_parameter"}}`
		if string(rep.Data) != want || rep.Header.Get(micro.ErrorCodeHeader) != "400" {
			t.Errorf("%s %s", rep.Header.Get(micro.ErrorCodeHeader), rep.Data)
		}
	})
	if n, _ := f.q.Consumer.Info(context.Background()); n.NumPending != 0 {
		t.Errorf("%d refused requests were queued", n.NumPending)
	}
}

// TestMicroDiscoveryAndStats: the service is found through micro's control
// subjects, and its stats count requests, refusals and answers.
func TestMicroDiscoveryAndStats(t *testing.T) {
	reg := prometheus.NewRegistry()
	f, nc := serveFixture(t, Config{InstanceID: "gw-one", Metrics: reg, Micro: MicroConfig{Version: "1.2.3"}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f.fakeWorker(t, ctx, 1, func(env schema.Envelope) schema.Reply {
		if strings.Contains(string(env.Request), "fail") {
			return schema.ErrorReply(env.ID, &schema.Error{Status: 502, Type: schema.TypeUpstream, Code: schema.CodeUpstreamError, Message: "LaaS failed"})
		}
		return echoAnswer(env)
	})

	var info micro.Info
	control(t, nc, micro.InfoVerb, &info)
	if info.Name != MicroServiceName || info.Version != "1.2.3" || info.Type != micro.InfoResponseType ||
		!strings.Contains(info.Description, "chat.completion") || info.Metadata["gateway"] != "gw-one" || len(info.Endpoints) != 1 {
		t.Fatalf("info %+v", info)
	}
	if ep := info.Endpoints[0]; ep.Name != "chat" || ep.Subject != DefaultMicroSubject || ep.QueueGroup != micro.DefaultQueueGroup {
		t.Errorf("endpoint %+v", ep)
	}

	ask(t, nc, chatBody("claude-3.5-sonnet", "one"))
	ask(t, nc, chatBody("claude-3.5-sonnet", "two"))
	if rep := ask(t, nc, chatBody("nope", "x")); rep.Header.Get(micro.ErrorCodeHeader) != "404" {
		t.Fatalf("unknown model: %s", rep.Data)
	}
	if rep := ask(t, nc, `{`); rep.Header.Get(micro.ErrorCodeHeader) != "400" {
		t.Fatalf("malformed: %s", rep.Data)
	}
	rep := ask(t, nc, chatBody("claude-3.5-sonnet", "fail"))
	if rep.Header.Get(micro.ErrorCodeHeader) != "502" || rep.Header.Get(micro.ErrorHeader) != "LaaS failed" ||
		string(rep.Data) != `{"error":{"message":"LaaS failed","type":"upstream_error","param":null,"code":"upstream_error"}}` {
		t.Fatalf("worker error: %v %s", rep.Header, rep.Data)
	}

	var stats struct {
		micro.Stats
		Endpoints []struct {
			micro.EndpointStats
			Data MicroStats `json:"data"`
		} `json:"endpoints"`
	}
	// micro counts a request once its handler returns, which can be after
	// the answer sent from the handler's goroutine reached this test: read
	// the stats until the fifth request is counted (10 s at most).
	for start := time.Now(); ; time.Sleep(20 * time.Millisecond) {
		control(t, nc, micro.StatsVerb, &stats)
		if stats.Name != MicroServiceName || len(stats.Endpoints) != 1 {
			t.Fatalf("stats %+v", stats)
		}
		if stats.Endpoints[0].NumRequests >= 5 || time.Since(start) > 10*time.Second {
			break
		}
	}
	ep := stats.Endpoints[0]
	if ep.Name != "chat" || ep.NumRequests != 5 || ep.NumErrors != 2 || !strings.HasPrefix(ep.LastError, "400:") {
		t.Errorf("endpoint stats: requests %d, errors %d, last error %q; want 5, 2, 400:...", ep.NumRequests, ep.NumErrors, ep.LastError)
	}
	if ep.Data != (MicroStats{Waiting: 0, Completions: 2, Errors: 1}) {
		t.Errorf("endpoint data %+v, want 2 completions and 1 error after queueing", ep.Data)
	}

	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		byName[mf.GetName()] = mf
	}
	for _, c := range []struct {
		model, status string
		want          float64
	}{{"claude-3.5-sonnet", "200", 2}, {"claude-3.5-sonnet", "502", 1}, {ModelUnknown, "404", 1}, {ModelUnknown, "400", 1}} {
		if v, _ := metricValue(byName, "laas_bridge_gateway_nats_requests_total", "model", c.model, "status", c.status); v != c.want {
			t.Errorf("nats_requests_total{model=%q,status=%q} = %v, want %v", c.model, c.status, v, c.want)
		}
	}
}

// TestMicroQueueGroup: two gateways share the subject; NATS gives each
// request to one of them, and both answer.
func TestMicroQueueGroup(t *testing.T) {
	f, nc := serveFixture(t, Config{InstanceID: "gw-a"})
	second, err := New(Config{InstanceID: "gw-b"}, f.q.Conn, f.q.JS, testCatalog(t), f.gw.log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = second.Close() })
	startServe(t, second)
	waitForService(t, nc, 2)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f.fakeWorker(t, ctx, 8, echoAnswer)

	const n = 40
	errs := make(chan string, n)
	for i := range n {
		go func() {
			text := fmt.Sprintf("caller %d", i)
			msg := nats.NewMsg(DefaultMicroSubject)
			msg.Data = []byte(chatBody("claude-3.5-sonnet", text))
			rep, err := nc.RequestMsg(msg, 30*time.Second)
			switch {
			case err != nil:
				errs <- err.Error()
			case !strings.Contains(string(rep.Data), `"content":"echo: `+text+`"`):
				errs <- string(rep.Data)
			default:
				errs <- ""
			}
		}()
	}
	for range n {
		if e := <-errs; e != "" {
			t.Error(e)
		}
	}
	served := map[string]int{}
	subj, _ := micro.ControlSubject(micro.StatsVerb, MicroServiceName, "")
	inbox := nc.NewRespInbox()
	sub, _ := nc.SubscribeSync(inbox)
	_ = nc.PublishRequest(subj, inbox, nil)
	for range 2 {
		m, err := sub.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var s micro.Stats
		_ = json.Unmarshal(m.Data, &s)
		served[s.Metadata["gateway"]] = s.Endpoints[0].NumRequests
	}
	if served["gw-a"]+served["gw-b"] != n || served["gw-a"] == 0 || served["gw-b"] == 0 {
		t.Errorf("requests per gateway %v, want %d shared by both", served, n)
	}
}

// TestMicroDeadline: the request's timeout header, else the model's, bounds
// the wait.
func TestMicroDeadline(t *testing.T) {
	_, nc := serveFixture(t, Config{})
	for _, c := range []struct {
		name, model string
		header      []string
		want        string
	}{
		{"model's timeout", "team/fast", nil, "300ms timeout"},
		{"header's timeout", "claude-3.5-sonnet", []string{"X-Request-Timeout", "0.2"}, "200ms timeout"},
	} {
		t.Run(c.name, func(t *testing.T) {
			rep := ask(t, nc, chatBody(c.model, "nobody will answer"), c.header...)
			if rep.Header.Get(micro.ErrorCodeHeader) != "504" || !strings.Contains(string(rep.Data), `"code":"deadline_exceeded"`) || !strings.Contains(string(rep.Data), c.want) {
				t.Errorf("%s: %s", rep.Header.Get(micro.ErrorCodeHeader), rep.Data)
			}
		})
	}
}

// TestMicroLargeAnswer: an answer the worker left in the object store comes
// back inline when it fits a NATS message, and is handed over by name when
// it does not.
func TestMicroLargeAnswer(t *testing.T) {
	f, nc := serveFixture(t, Config{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	store, err := f.q.JS.ObjectStore(ctx, schema.BucketBodies)
	if err != nil {
		t.Fatal(err)
	}
	f.fakeWorker(t, ctx, 1, func(env schema.Envelope) schema.Reply {
		var req schema.ChatCompletionRequest
		_ = json.Unmarshal(env.Request, &req)
		size := 600 << 10 // over half the 1 MiB max payload: the worker stores it
		if req.Messages[0].Content.Text == "huge" {
			size = 1500 << 10 // over the max payload
		}
		rep := echoAnswer(env)
		rep.Completion.Choices[0].Message.Content = strings.Repeat("a", size)
		data, _ := json.Marshal(rep.Completion)
		ref := env.ID + ".reply"
		if _, err := store.PutBytes(ctx, ref, data); err != nil {
			t.Errorf("store answer: %v", err)
		}
		rep.Completion, rep.CompletionRef = nil, ref
		return rep
	})

	rep := ask(t, nc, chatBody("claude-3.5-sonnet", "large"))
	var cc schema.ChatCompletion
	if err := json.Unmarshal(rep.Data, &cc); err != nil || cc.Choices[0].Message.Content != strings.Repeat("a", 600<<10) {
		t.Fatalf("large answer not inline (%v): %.200s", err, rep.Data)
	}
	if _, err := store.GetInfo(ctx, rep.Header.Get(HeaderRequestID)+".reply"); err == nil {
		t.Error("the claimed answer was left in the store")
	}

	rep = ask(t, nc, chatBody("claude-3.5-sonnet", "huge"))
	ref := rep.Header.Get(HeaderCompletionRef)
	if ref != rep.Header.Get(HeaderRequestID)+".reply" || len(rep.Data) != 0 || rep.Header.Get(micro.ErrorCodeHeader) != "" {
		t.Fatalf("huge answer: ref %q, %d bytes, error %q", ref, len(rep.Data), rep.Header.Get(micro.ErrorHeader))
	}
	data, err := store.GetBytes(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &cc); err != nil || cc.Choices[0].Message.Content != strings.Repeat("a", 1500<<10) {
		t.Errorf("the stored answer is not the completion: %v", err)
	}
}

// TestMicroShutdown: at shutdown the endpoint takes no more requests, and a
// caller still waiting when the grace is over gets 503, as over HTTP.
func TestMicroShutdown(t *testing.T) {
	f := newFixture(t, Config{ShutdownGrace: 300 * time.Millisecond})
	nc := f.q.Connect(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- f.gw.Serve(ctx, ln) }()
	waitForService(t, nc, 1)

	waiting := make(chan *nats.Msg, 1)
	go func() {
		rep, err := nc.Request(DefaultMicroSubject, []byte(chatBody("claude-3.5-sonnet", "slow")), 30*time.Second)
		if err != nil {
			t.Error(err)
		}
		waiting <- rep
	}()
	for range 1000 {
		if info, err := f.q.Consumer.Info(context.Background()); err == nil && info.NumPending == 1 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	stop()
	if rep := <-waiting; rep == nil || rep.Header.Get(micro.ErrorCodeHeader) != "503" || !strings.Contains(string(rep.Data), `"code":"gateway_shutting_down"`) {
		t.Fatalf("caller waiting after the grace: %v", rep)
	}
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return")
	}
	if _, err := nc.Request(DefaultMicroSubject, []byte(chatBody("claude-3.5-sonnet", "late")), time.Second); err != nats.ErrNoResponders {
		t.Errorf("request after shutdown: %v, want no responders", err)
	}
	if p := pings(t, nc); len(p) != 0 {
		t.Errorf("the stopped service still answers pings: %+v", p)
	}
}

func TestMicroConfigValidate(t *testing.T) {
	for _, c := range []struct {
		cfg MicroConfig
		ok  bool
	}{
		{MicroConfig{Subject: "laas.api.chat"}, true},
		{MicroConfig{Subject: "team.llm"}, true},
		{MicroConfig{Subject: "laas.api.*"}, false},
		{MicroConfig{Subject: "laas.>"}, false},
		{MicroConfig{Subject: "laas..chat"}, false},
		{MicroConfig{Subject: "laas.requests.interactive"}, false},
		{MicroConfig{Subject: "laas.reply.x.y"}, false},
		{MicroConfig{Subject: "laas.api.*", Disabled: true}, true},
		{MicroConfig{Subject: "laas.api.chat", ReplyPrefixes: []string{"_INBOX.", "app1.inbox."}}, true},
		{MicroConfig{Subject: "laas.api.chat", ReplyPrefixes: []string{"laas."}}, false},
		{MicroConfig{Subject: "laas.api.chat", ReplyPrefixes: []string{"$KV."}}, false},
		{MicroConfig{Subject: "laas.api.chat", ReplyPrefixes: []string{"app1"}}, false},
		{MicroConfig{Subject: "laas.api.chat", ReplyPrefixes: []string{"app.*."}}, false},
	} {
		if err := c.cfg.Validate(); (err == nil) != c.ok {
			t.Errorf("%+v: Validate = %v", c.cfg, err)
		}
	}
}

// TestMicroCallersWaitTogether: a caller waiting for its answer does not
// hold up the next request (micro runs a handler for one message at a
// time, so the wait must happen elsewhere): 20 requests are all queued
// before any is answered.
func TestMicroCallersWaitTogether(t *testing.T) {
	f, nc := serveFixture(t, Config{})
	const n = 20
	replies := make(chan string, n)
	for i := range n {
		go func() {
			msg := nats.NewMsg(DefaultMicroSubject)
			msg.Data = []byte(chatBody("claude-3.5-sonnet", fmt.Sprint("together ", i)))
			rep, err := nc.RequestMsg(msg, time.Minute)
			if err != nil {
				replies <- err.Error()
				return
			}
			replies <- string(rep.Data)
		}()
	}
	for start := time.Now(); ; time.Sleep(10 * time.Millisecond) {
		info, err := f.q.Consumer.Info(context.Background())
		if err == nil && info.NumPending == n {
			break
		}
		if time.Since(start) > 20*time.Second {
			t.Fatalf("only %d of %d requests queued while none was answered", info.NumPending, n)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f.fakeWorker(t, ctx, n, echoAnswer)
	for range n {
		if r := <-replies; !strings.Contains(r, `"content":"echo: together `) {
			t.Errorf("reply %s", r)
		}
	}
}

// TestMicroLaneHeader: X-Laas-Bridge-Lane: batch publishes to the batch lane.
func TestMicroLaneHeader(t *testing.T) {
	f, nc := serveFixture(t, Config{})
	sub, err := f.q.Conn.SubscribeSync(schema.SubjectBatch)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		msg := nats.NewMsg(DefaultMicroSubject)
		msg.Data = []byte(chatBody("team/fast", "to the batch lane"))
		msg.Header.Set(HeaderLane, "batch")
		_, _ = nc.RequestMsg(msg, 10*time.Second)
	}()
	m, err := sub.NextMsg(10 * time.Second)
	if err != nil || !strings.Contains(string(m.Data), "to the batch lane") {
		t.Fatalf("nothing on %s: %v", schema.SubjectBatch, err)
	}
	<-done // the 300 ms model times out: no worker here
}

// TestMicroAnswersOnlyInboxes: the endpoint publishes its answers with the
// gateway's own NATS rights, so it answers only reply subjects in a
// caller's inbox space. A request naming laas.cancel.<id> (which would
// cancel someone's job) or a reply subject of the bridge's gets nothing
// published there; a request from the same connection right after it,
// with a plain inbox, is answered, and arrives after anything the first
// could have caused (one connection's messages stay in order).
func TestMicroAnswersOnlyInboxes(t *testing.T) {
	_, nc := serveFixture(t, Config{})
	for _, forged := range []string{"laas.cancel.victim", "laas.reply.gw1.victim", "$KV.LAAS_BATCHES.b.x", "_INBOX"} {
		t.Run(forged, func(t *testing.T) {
			spy, err := nc.SubscribeSync(forged)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = spy.Unsubscribe() }()
			if err := nc.Flush(); err != nil {
				t.Fatal(err)
			}
			bad := chatBody("no-such-model", "x") // refused in line: its answer would go out at once
			if err := nc.PublishRequest(DefaultMicroSubject, forged, []byte(bad)); err != nil {
				t.Fatal(err)
			}
			rep := ask(t, nc, bad)
			if rep.Header.Get(micro.ErrorCodeHeader) != "404" {
				t.Fatalf("the inbox request: %v %s; want the 404 refusal", rep.Header, rep.Data)
			}
			if n, _, err := spy.Pending(); err != nil || n != 0 {
				t.Errorf("the endpoint published %d messages on %s (%v)", n, forged, err)
			}
		})
	}
}
