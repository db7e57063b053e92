package bridge

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/laas-bridge/laas-bridge/schema"
)

// responseEventsOf checks that every event's name is its type and its
// sequence numbers run on from first (an "error" event of a stream cut
// off bears the last number sent), and returns the events (comments
// left out) and their types.
func responseEventsOf(t *testing.T, body []byte, first int) ([]schema.ResponseEvent, string) {
	t.Helper()
	var evs []schema.ResponseEvent
	var types []string
	for _, e := range parseSSE(t, body) {
		if e.comment != "" {
			continue
		}
		var ev schema.ResponseEvent
		if err := json.Unmarshal([]byte(e.data), &ev); err != nil {
			t.Fatalf("event %q: %v", e.data, err)
		}
		want := first + len(evs)
		if ev.Type == "error" && ev.Code != "response_cancelled" { // a stream cut off: the last number sent again
			want--
		}
		if ev.Type != e.name || ev.SequenceNumber != want {
			t.Errorf("event %q named %q, numbered %d; want its type, %d", ev.Type, e.name, ev.SequenceNumber, want)
		}
		evs = append(evs, ev)
		types = append(types, ev.Type)
	}
	return evs, strings.Join(types, " ")
}

const completedEvents = "response.created response.in_progress response.output_item.added response.content_part.added " +
	"response.output_text.delta response.output_text.delta response.output_text.done response.content_part.done " +
	"response.output_item.done response.completed"

// slowWorker is responsesWorker answering after delay.
func slowWorker(t *testing.T, f *fixture, delay time.Duration, answer func(schema.Envelope) schema.Reply) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	f.fakeWorker(t, ctx, 1, func(env schema.Envelope) schema.Reply {
		time.Sleep(delay)
		return answer(env)
	})
}

func helloWorld(env schema.Envelope) schema.Reply {
	return schema.Reply{ID: env.ID, Status: 200, Attempts: 1, Completion: &schema.ChatCompletion{
		ID: "chatcmpl-" + env.ID, Object: "chat.completion", Created: 1, Model: env.Model, ServiceTier: "default",
		Usage:   &schema.Usage{PromptTokens: 3, CompletionTokens: 2, TotalTokens: 5},
		Choices: []schema.Choice{{Message: schema.AssistantMessage{Role: "assistant", Content: "hello world"}, FinishReason: "stop"}},
	}}
}

// TestResponsesStream: "stream": true answers OpenAI's event sequence:
// created and in_progress when the stream starts (the first keep-alive),
// comments while queued, then the output's events and completed, whose
// response is the one GET answers afterwards (stored by default).
func TestResponsesStream(t *testing.T) {
	f := newFixture(t, Config{KeepAlive: 20 * time.Millisecond})
	slowWorker(t, f, 300*time.Millisecond, helloWorld)
	resp, body := f.do(t, "POST", "/v1/responses", `{"model":"claude-3.5-sonnet","input":"hi","stream":true}`)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("status %d %s: %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	raw := parseSSE(t, body)
	if len(raw) < 3 || raw[0].name != "response.created" || raw[1].name != "response.in_progress" || raw[2].comment == "" {
		t.Fatalf("stream does not start with created, in_progress, a keep-alive: %s", body)
	}
	evs, types := responseEventsOf(t, body, 0)
	if types != completedEvents {
		t.Fatalf("events\n%s\nwant\n%s", types, completedEvents)
	}
	end := evs[len(evs)-1].Response
	var text strings.Builder
	for _, e := range evs {
		if e.Delta != nil {
			text.WriteString(*e.Delta)
		}
	}
	if text.String() != "hello world" || end.OutputText() != "hello world" || end.Status != "completed" || end.Usage.TotalTokens != 5 ||
		evs[0].Response.Status != "in_progress" || evs[0].Response.ID != end.ID || evs[0].Response.CreatedAt != end.CreatedAt || !end.Store {
		t.Errorf("deltas %q; created %+v; completed %+v", text.String(), evs[0].Response, end)
	}
	got, gbody := f.do(t, "GET", "/v1/responses/"+end.ID, "")
	want, _ := json.Marshal(end)
	if got.StatusCode != 200 || strings.TrimSpace(string(gbody)) != string(want) {
		t.Errorf("GET after the stream: %d %s\nwant %s", got.StatusCode, gbody, want)
	}
	// A stored response that was not background is not streamed again.
	if got, gbody := f.do(t, "GET", "/v1/responses/"+end.ID+"?stream=true", ""); got.StatusCode != 400 {
		t.Errorf("GET ?stream=true of a foreground response: %d %s", got.StatusCode, gbody)
	}
}

// TestResponsesStreamErrors: an error before the stream starts is an HTTP
// error; a failed answer once it has started is response.failed with the
// error's code; a deadline that passes is an "error" event.
func TestResponsesStreamErrors(t *testing.T) {
	f := newFixture(t, Config{KeepAlive: 20 * time.Millisecond})
	var mu sync.Mutex
	delay := time.Duration(0)
	slowWorker(t, f, 0, func(env schema.Envelope) schema.Reply {
		mu.Lock()
		d := delay
		mu.Unlock()
		time.Sleep(d)
		return schema.ErrorReply(env.ID, &schema.Error{Status: 502, Type: schema.TypeUpstream, Code: schema.CodeUpstreamError, Message: "LaaS failed"})
	})
	resp, body := f.do(t, "POST", "/v1/responses", `{"model":"claude-3.5-sonnet","input":"hi","stream":true}`)
	if resp.StatusCode != 502 || !strings.Contains(string(body), `"code":"upstream_error"`) {
		t.Errorf("a fast failure: %d %s, want the HTTP error", resp.StatusCode, body)
	}
	mu.Lock()
	delay = 200 * time.Millisecond
	mu.Unlock()
	resp, body = f.do(t, "POST", "/v1/responses", `{"model":"claude-3.5-sonnet","input":"hi","stream":true}`)
	evs, types := responseEventsOf(t, body, 0)
	if resp.StatusCode != 200 || types != "response.created response.in_progress response.failed" {
		t.Fatalf("a failure after the start: %d, events %s", resp.StatusCode, types)
	}
	if e := evs[2].Response; e.Status != "failed" || e.Error == nil || e.Error.Code != "upstream_error" || e.Error.Message != "LaaS failed" {
		t.Errorf("failed response %+v", e)
	}
	// team/fast times out after 300 ms; the worker answers after 1 s.
	mu.Lock()
	delay = time.Second
	mu.Unlock()
	resp, body = f.do(t, "POST", "/v1/responses", `{"model":"team/fast","input":"hi","stream":true}`)
	evs, types = responseEventsOf(t, body, 0)
	if resp.StatusCode != 200 || types != "response.created response.in_progress error" || evs[2].Code != schema.CodeDeadlineExceeded {
		t.Errorf("a deadline after the start: %d, events %s, last %+v", resp.StatusCode, types, evs[len(evs)-1])
	}
}

// TestResponsesStoredAndContinued: a stored response (the default) is
// GET's, the caller's own only; previous_response_id sends its
// conversation and answer before the new input (its instructions are not
// carried over); DELETE removes it; "store": false keeps nothing.
func TestResponsesStoredAndContinued(t *testing.T) {
	f := ownersFixture(t)
	sent := responsesWorker(t, f, "hello", "stop")
	resp, body := f.do(t, "POST", "/v1/responses", `{"model":"claude-3.5-sonnet","input":"hi","instructions":"be brief"}`, auth(secretA)...)
	var first schema.Response
	if resp.StatusCode != 200 || json.Unmarshal(body, &first) != nil || !first.Store {
		t.Fatalf("first turn: %d %s", resp.StatusCode, body)
	}
	if got, gbody := f.do(t, "GET", "/v1/responses/"+first.ID, "", auth(secretA)...); got.StatusCode != 200 || strings.TrimSpace(string(gbody)) != strings.TrimSpace(string(body)) {
		t.Errorf("GET by its owner: %d %s", got.StatusCode, gbody)
	}
	if got, gbody := f.do(t, "GET", "/v1/responses/"+first.ID, "", "Authorization", "Bearer sk-master"); got.StatusCode != 200 {
		t.Errorf("GET by the admin: %d %s", got.StatusCode, gbody)
	}
	for _, method := range []string{"GET", "DELETE"} {
		if got, gbody := f.do(t, method, "/v1/responses/"+first.ID, "", auth(secretB)...); got.StatusCode != 404 || !strings.Contains(string(gbody), `"code":"response_not_found"`) {
			t.Errorf("%s by another key: %d %s", method, got.StatusCode, gbody)
		}
	}
	cont := `{"model":"claude-3.5-sonnet","input":"and then?","previous_response_id":"` + first.ID + `"}`
	if got, gbody := f.do(t, "POST", "/v1/responses", cont, auth(secretB)...); got.StatusCode != 400 || !strings.Contains(string(gbody), `"code":"previous_response_not_found"`) {
		t.Errorf("another key continues it: %d %s", got.StatusCode, gbody)
	}
	resp, body = f.do(t, "POST", "/v1/responses", cont, auth(secretA)...)
	var second schema.Response
	if resp.StatusCode != 200 || json.Unmarshal(body, &second) != nil || second.PreviousResponseID == nil || *second.PreviousResponseID != first.ID {
		t.Fatalf("second turn: %d %s", resp.StatusCode, body)
	}
	// A third turn carries both earlier ones.
	resp, body = f.do(t, "POST", "/v1/responses", `{"model":"claude-3.5-sonnet","input":"last","store":false,"previous_response_id":"`+second.ID+`"}`, auth(secretA)...)
	var third schema.Response
	if resp.StatusCode != 200 || json.Unmarshal(body, &third) != nil || third.Store {
		t.Fatalf("third turn: %d %s", resp.StatusCode, body)
	}
	want := []string{
		`{"model":"claude-3.5-sonnet","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}]}`,
		`{"model":"claude-3.5-sonnet","messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"hello"},{"role":"user","content":"and then?"}]}`,
		`{"model":"claude-3.5-sonnet","messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"hello"},{"role":"user","content":"and then?"},` +
			`{"role":"assistant","content":"hello"},{"role":"user","content":"last"}]}`,
	}
	if s := sent(); strings.Join(s, "\n") != strings.Join(want, "\n") {
		t.Errorf("the worker was sent\n%s\nwant\n%s", strings.Join(s, "\n"), strings.Join(want, "\n"))
	}
	if got, gbody := f.do(t, "GET", "/v1/responses/"+third.ID, "", auth(secretA)...); got.StatusCode != 404 {
		t.Errorf(`GET of a "store": false response: %d %s`, got.StatusCode, gbody)
	}
	if got, gbody := f.do(t, "DELETE", "/v1/responses/"+first.ID, "", auth(secretA)...); got.StatusCode != 200 ||
		strings.TrimSpace(string(gbody)) != `{"deleted":true,"id":"`+first.ID+`","object":"response"}` {
		t.Errorf("DELETE: %d %s", got.StatusCode, gbody)
	}
	if got, gbody := f.do(t, "GET", "/v1/responses/"+first.ID, "", auth(secretA)...); got.StatusCode != 404 {
		t.Errorf("GET after DELETE: %d %s", got.StatusCode, gbody)
	}
	if got, gbody := f.do(t, "POST", "/v1/responses/"+second.ID+"/cancel", "", auth(secretA)...); got.StatusCode != 400 {
		t.Errorf("cancel of a foreground response: %d %s", got.StatusCode, gbody)
	}
}

// TestResponsesStoredConversationTooLarge: a response whose conversation
// is over the record's bound is kept without it: GET answers it, and
// previous_response_id refuses it by name.
func TestResponsesStoredConversationTooLarge(t *testing.T) {
	f := newFixture(t, Config{})
	responsesWorker(t, f, "ok", "stop")
	big := strings.Repeat("x", maxStoredResponse)
	resp, body := f.do(t, "POST", "/v1/responses", `{"model":"claude-3.5-sonnet","input":"`+big+`"}`)
	var r schema.Response
	if resp.StatusCode != 200 || json.Unmarshal(body, &r) != nil {
		t.Fatalf("%d %.200s", resp.StatusCode, body)
	}
	if got, _ := f.do(t, "GET", "/v1/responses/"+r.ID, ""); got.StatusCode != 200 {
		t.Errorf("GET: %d", got.StatusCode)
	}
	got, gbody := f.do(t, "POST", "/v1/responses", `{"model":"claude-3.5-sonnet","input":"more","previous_response_id":"`+r.ID+`"}`)
	if got.StatusCode != 400 || !strings.Contains(string(gbody), `"code":"unsupported_parameter"`) || !strings.Contains(string(gbody), "too large to keep its conversation") {
		t.Errorf("continued: %d %s", got.StatusCode, gbody)
	}
}

// TestResponsesBackground: "background": true answers queued at once and
// queues a job in the interactive lane; GET follows it to completed;
// cancel of a queued one makes it cancelled, and its job never runs.
func TestResponsesBackground(t *testing.T) {
	f := newFixture(t, Config{})
	resp, body := f.do(t, "POST", "/v1/responses", `{"model":"claude-3.5-sonnet","input":"hi","background":true,"metadata":{"k":"v"}}`)
	var r schema.Response
	if resp.StatusCode != 200 || json.Unmarshal(body, &r) != nil || r.Status != "queued" || !r.Background || !r.Store || len(r.Output) != 0 {
		t.Fatalf("created: %d %s", resp.StatusCode, body)
	}
	if got, gbody := f.do(t, "GET", "/v1/responses/"+r.ID, ""); got.StatusCode != 200 || !strings.Contains(string(gbody), `"status":"queued"`) {
		t.Errorf("GET while queued: %d %s", got.StatusCode, gbody)
	}
	env, run := f.runOneJobOn(t, schema.ConsumerWorkers, helloWorld)
	if !run || !env.Job || "resp_"+env.ID != r.ID {
		t.Fatalf("job %+v ran %v", env, run)
	}
	got, gbody := f.do(t, "GET", "/v1/responses/"+r.ID, "")
	var done schema.Response
	if got.StatusCode != 200 || json.Unmarshal(gbody, &done) != nil || done.Status != "completed" || done.OutputText() != "hello world" ||
		done.CreatedAt != r.CreatedAt || done.Metadata["k"] != "v" || !done.Background {
		t.Fatalf("GET after the job: %d %s", got.StatusCode, gbody)
	}
	if got, cbody := f.do(t, "POST", "/v1/responses/"+r.ID+"/cancel", ""); got.StatusCode != 200 || !strings.Contains(string(cbody), `"status":"completed"`) {
		t.Errorf("cancel after it completed: %d %s", got.StatusCode, cbody)
	}

	_, body = f.do(t, "POST", "/v1/responses", `{"model":"claude-3.5-sonnet","input":"never","background":true}`)
	var c schema.Response
	_ = json.Unmarshal(body, &c)
	got, gbody = f.do(t, "POST", "/v1/responses/"+c.ID+"/cancel", "")
	if got.StatusCode != 200 || !strings.Contains(string(gbody), `"status":"cancelled"`) {
		t.Fatalf("cancel while queued: %d %s", got.StatusCode, gbody)
	}
	if _, run := f.runOneJobOn(t, schema.ConsumerWorkers, helloWorld); run {
		t.Error("a cancelled response's job ran")
	}
	if got, gbody := f.do(t, "GET", "/v1/responses/"+c.ID, ""); !strings.Contains(string(gbody), `"status":"cancelled"`) {
		t.Errorf("GET after cancel: %d %s", got.StatusCode, gbody)
	}
	// A flex background response waits in the batch lane.
	_, body = f.do(t, "POST", "/v1/responses", `{"model":"claude-3.5-sonnet","input":"later","background":true,"service_tier":"flex"}`)
	if !strings.Contains(string(body), `"service_tier":"flex"`) {
		t.Errorf("flex: %s", body)
	}
	if env, run := f.runOneJobOn(t, schema.ConsumerBatch, helloWorld); !run || !strings.Contains(string(env.Request), "later") {
		t.Errorf("flex job %+v ran %v", env, run)
	}
}

// TestResponsesBackgroundStream: a streamed background response sends
// created and queued at once, and the rest when its job ends; GET
// ?stream=true&starting_after=N resumes it after event N, the same events.
func TestResponsesBackgroundStream(t *testing.T) {
	f := newFixture(t, Config{KeepAlive: 20 * time.Millisecond})
	type got struct {
		status int
		body   []byte
	}
	streamed := make(chan got, 1)
	go func() {
		resp, body := f.do(t, "POST", "/v1/responses", `{"model":"claude-3.5-sonnet","input":"hi","background":true,"stream":true}`)
		streamed <- got{resp.StatusCode, body}
	}()
	f.runOneJobOn(t, schema.ConsumerWorkers, helloWorld)
	var s got
	select {
	case s = <-streamed:
	case <-time.After(30 * time.Second):
		t.Fatal("the background stream did not end within 30 s of its job")
	}
	evs, types := responseEventsOf(t, s.body, 0)
	want := "response.created response.queued " + strings.TrimPrefix(completedEvents, "response.created ")
	if s.status != 200 || types != want {
		t.Fatalf("status %d, events\n%s\nwant\n%s", s.status, types, want)
	}
	id := evs[0].Response.ID
	if evs[0].Response.Status != "queued" || !evs[0].Response.Background {
		t.Errorf("created %+v", evs[0].Response)
	}
	resp, body := f.do(t, "GET", "/v1/responses/"+id+"?stream=true&starting_after=3", "")
	resumed, rtypes := responseEventsOf(t, body, 4)
	if resp.StatusCode != 200 || rtypes != strings.Join(strings.Split(want, " ")[4:], " ") {
		t.Fatalf("resumed after 3: %d\n%s", resp.StatusCode, rtypes)
	}
	for i, e := range resumed {
		a, _ := json.Marshal(e)
		b, _ := json.Marshal(evs[4+i])
		if !bytes.Equal(a, b) {
			t.Errorf("resumed event %d\n%s\nfirst sent as\n%s", 4+i, a, b)
		}
	}
	if resp, body := f.do(t, "GET", "/v1/responses/"+id+"?stream=true&starting_after=x", ""); resp.StatusCode != 400 {
		t.Errorf("starting_after=x: %d %s", resp.StatusCode, body)
	}
}

// TestChatFlexTier: a chat completion with "service_tier": "flex" is
// queued in the batch lane, as the lane header would put it.
func TestChatFlexTier(t *testing.T) {
	f := newFixture(t, Config{PublishTimeout: time.Second})
	sub, err := f.q.Conn.SubscribeSync(schema.SubjectBatch)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.do(t, "POST", "/v1/chat/completions", `{"model":"team/fast","messages":[{"role":"user","content":"flex me"}],"service_tier":"flex"}`)
	}()
	m, err := sub.NextMsg(5 * time.Second)
	if err != nil || !strings.Contains(string(m.Data), "flex me") {
		t.Fatalf("nothing on %s: %v", schema.SubjectBatch, err)
	}
	<-done // the 300 ms model times out: no worker here
}

// TestResponsesRefusedAsChat: the same bad input is refused with the same
// error, word for word, by chat completions and the Responses API.
func TestResponsesRefusedAsChat(t *testing.T) {
	f := newFixture(t, Config{})
	user := func(content string) (chat, resp string) {
		return `{"model":"claude-3.5-sonnet","messages":[{"role":"user","content":` + content + `}]}`,
			`{"model":"claude-3.5-sonnet","input":[{"role":"user","content":` + strings.NewReplacer(`"type":"text"`, `"type":"input_text"`).Replace(content) + `}]}`
	}
	type pair struct{ name, chat, resp string }
	var pairs []pair
	add := func(name, chat, resp string) { pairs = append(pairs, pair{name, chat, resp}) }
	add("unknown model", `{"model":"nope","messages":[{"role":"user","content":"hi"}]}`, `{"model":"nope","input":"hi"}`)
	add("object param", `{"model":"claude-3.5-sonnet","messages":[{"role":"user","content":"hi"}],"params":{"a":{"b":1}}}`,
		`{"model":"claude-3.5-sonnet","input":"hi","params":{"a":{"b":1}}}`)
	add("preset override not allowed", `{"model":"claude-3.5-sonnet","messages":[{"role":"user","content":"hi"}],"preset_hash":"x"}`,
		`{"model":"claude-3.5-sonnet","input":"hi","preset_hash":"x"}`)
	add("priority tier", `{"model":"claude-3.5-sonnet","messages":[{"role":"user","content":"hi"}],"service_tier":"priority"}`,
		`{"model":"claude-3.5-sonnet","input":"hi","service_tier":"priority"}`)
	c, r := user(`[{"type":"text","text":"look"},{"type":"image_url","image_url":{"url":"data:image/png;base64,not-base64!"}}]`)
	r = strings.Replace(r, `{"type":"image_url","image_url":{"url":"data:image/png;base64,not-base64!"}}`, `{"type":"input_image","image_url":"data:image/png;base64,not-base64!"}`, 1)
	add("image that is not base64", c, r)
	c, r = user(`[{"type":"file","file":{"file_data":"data:application/pdf;base64,aGVsbG8=","filename":"a.pdf"}}]`)
	r = strings.Replace(r, `{"type":"file","file":{"file_data":"data:application/pdf;base64,aGVsbG8=","filename":"a.pdf"}}`,
		`{"type":"input_file","file_data":"data:application/pdf;base64,aGVsbG8=","filename":"a.pdf"}`, 1)
	add("a PDF that is not a PDF", c, r)
	for _, p := range pairs {
		t.Run(p.name, func(t *testing.T) {
			cr, cbody := f.do(t, "POST", "/v1/chat/completions", p.chat)
			rr, rbody := f.do(t, "POST", "/v1/responses", p.resp)
			if cr.StatusCode < 400 || cr.StatusCode >= 500 {
				t.Fatalf("chat completions took it: %d %s", cr.StatusCode, cbody)
			}
			if rr.StatusCode != cr.StatusCode || !bytes.Equal(rbody, cbody) {
				t.Errorf("responses: %d %s\nchat:      %d %s", rr.StatusCode, rbody, cr.StatusCode, cbody)
			}
		})
	}
	if ci, err := f.q.Consumer.Info(context.Background()); err != nil || ci.NumPending != 0 {
		t.Errorf("queued jobs: %+v (%v), want none", ci, err)
	}
}

// TestResponseStoreNoResurrection: a record written over the revision it
// was read at is refused once the record was deleted (or written)
// meanwhile: a GET that keeps a background response's answer does not
// bring back a response deleted under it, nor overwrite a newer one.
func TestResponseStoreNoResurrection(t *testing.T) {
	f := newFixture(t, Config{})
	ctx := context.Background()
	st := f.gw.stored
	if err := st.put(ctx, &schema.StoredResponse{ID: "r1", Background: true}); err != nil {
		t.Fatal(err)
	}
	read, err := st.get(ctx, "r1")
	if err != nil || read.Revision == 0 {
		t.Fatalf("get: %+v %v", read, err)
	}
	if err := st.put(ctx, &schema.StoredResponse{ID: "r1"}); err == nil {
		t.Error("a second new record with the same id was written")
	}
	if err := st.delete(ctx, "r1"); err != nil {
		t.Fatal(err)
	}
	read.Response = &schema.Response{Status: "completed"}
	if err := st.put(ctx, read); err == nil {
		t.Error("a deleted record was written again")
	}
	if _, err := st.get(ctx, "r1"); err != errNoResponse {
		t.Errorf("after delete and a stale write: %v, want errNoResponse", err)
	}
}

// TestResponsesBackgroundEnds: a background response always ends: a job
// final whose result is no longer kept is failed, as is one the job store
// does not know a minute after the response was made (its gateway
// stopped between keeping it and queueing it); before that minute it is
// queued.
func TestResponsesBackgroundEnds(t *testing.T) {
	f := newFixture(t, Config{})
	ctx := context.Background()
	keep := func(id string, created time.Time) {
		t.Helper()
		if err := f.gw.stored.put(ctx, &schema.StoredResponse{ID: id, Background: true, CreatedAt: created.Unix(),
			Request: schema.ResponsesRequest{Model: "claude-3.5-sonnet", Background: true}}); err != nil {
			t.Fatal(err)
		}
	}
	status := func(id string) string {
		t.Helper()
		_, body := f.do(t, "GET", "/v1/responses/resp_"+id, "")
		var r schema.Response
		if err := json.Unmarshal(body, &r); err != nil {
			t.Fatalf("GET %s: %s", id, body)
		}
		if r.Error != nil {
			return r.Status + " " + r.Error.Code
		}
		return r.Status
	}
	keep("fresh", time.Now())
	keep("stale", time.Now().Add(-2*neverQueuedAfter))
	if got := status("fresh"); got != "queued" {
		t.Errorf("a response just kept, no job yet: %s, want queued", got)
	}
	if got := status("stale"); got != "failed queue_unavailable" {
		t.Errorf("no job a minute on: %s, want failed queue_unavailable", got)
	}
	// A job the store says succeeded, with its result gone.
	keep("lost", time.Now())
	st := schema.JobState{ID: "lost", Status: schema.JobSucceeded, ResultsSubject: schema.ResultsSubject("lost"), CreatedAt: time.Now(), UpdatedAt: time.Now()}
	data, _ := json.Marshal(st)
	kv, err := f.q.JS.KeyValue(ctx, schema.BucketJobs)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "lost", data); err != nil {
		t.Fatal(err)
	}
	if got := status("lost"); got != "failed upstream_error" {
		t.Errorf("succeeded without a result kept: %s, want failed upstream_error", got)
	}
}

// TestResponsesBackgroundStreamRefusedQueuesNothing: a streamed
// background response refused for want of a watch slot is not queued.
func TestResponsesBackgroundStreamRefusedQueuesNothing(t *testing.T) {
	f := newFixture(t, Config{MaxJobWatchers: 1})
	f.gw.watchers.Add(1) // the one slot is taken
	resp, body := f.do(t, "POST", "/v1/responses", `{"model":"claude-3.5-sonnet","input":"hi","background":true,"stream":true}`)
	if resp.StatusCode != 503 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	for _, cons := range []string{schema.ConsumerWorkers, schema.ConsumerBatch} {
		c, err := f.q.JS.Consumer(context.Background(), schema.StreamRequests, cons)
		if err != nil {
			t.Fatal(err)
		}
		if ci, err := c.Info(context.Background()); err != nil || ci.NumPending != 0 {
			t.Errorf("%s: %d pending (%v), want none", cons, ci.NumPending, err)
		}
	}
}

// TestResponsesBackgroundLaneDeleteAndCancelRace: the lane header puts a
// background response in the batch lane; DELETE of one not ended cancels
// its job; while a worker runs one, GET says in_progress; a cancel that
// comes then, the job answering all the same, leaves the answer (what the
// job did), not "cancelled".
func TestResponsesBackgroundLaneDeleteAndCancelRace(t *testing.T) {
	f := newFixture(t, Config{})
	_, body := f.do(t, "POST", "/v1/responses", `{"model":"claude-3.5-sonnet","input":"to delete","background":true}`, HeaderLane, "batch")
	var r schema.Response
	_ = json.Unmarshal(body, &r)
	if got, dbody := f.do(t, "DELETE", "/v1/responses/"+r.ID, ""); got.StatusCode != 200 {
		t.Fatalf("DELETE: %d %s", got.StatusCode, dbody)
	}
	if env, run := f.runOneJobOn(t, schema.ConsumerBatch, helloWorld); run || !strings.Contains(string(env.Request), "to delete") {
		t.Errorf("the deleted response's job ran (%v), or is not in the batch lane: %s", run, env.Request)
	}

	_, body = f.do(t, "POST", "/v1/responses", `{"model":"claude-3.5-sonnet","input":"raced","background":true}`)
	_ = json.Unmarshal(body, &r)
	f.runOneJobOn(t, schema.ConsumerWorkers, func(env schema.Envelope) schema.Reply {
		// A worker has it: in progress.
		if got, gbody := f.do(t, "GET", "/v1/responses/"+r.ID, ""); !strings.Contains(string(gbody), `"status":"in_progress"`) {
			t.Errorf("GET while a worker runs it: %d %s", got.StatusCode, gbody)
		}
		if got, cbody := f.do(t, "POST", "/v1/responses/"+r.ID+"/cancel", ""); !strings.Contains(string(cbody), `"status":"cancelled"`) {
			t.Errorf("cancel while running: %d %s", got.StatusCode, cbody)
		}
		return helloWorld(env) // its LaaS call had answered already
	})
	if got, gbody := f.do(t, "GET", "/v1/responses/"+r.ID, ""); !strings.Contains(string(gbody), `"status":"completed"`) {
		t.Errorf("after the job answered: %d %s", got.StatusCode, gbody)
	}
}
