package bridge

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/laas-bridge/laas-bridge/queue"
	"github.com/laas-bridge/laas-bridge/queue/jobstore"
	"github.com/laas-bridge/laas-bridge/schema"
)

func decodeJob(t *testing.T, body []byte) Job {
	t.Helper()
	var j Job
	if err := json.Unmarshal(body, &j); err != nil {
		t.Fatalf("not a job: %s", body)
	}
	return j
}

// runOneJob plays the worker for the next job in the batch lane, as the
// real one does it through jobstore: Start, then Finish with answer's
// result. It returns the envelope and whether Start let it run.
func (f *fixture) runOneJob(t *testing.T, answer func(schema.Envelope) schema.Reply) (schema.Envelope, bool) {
	t.Helper()
	return f.runOneJobOn(t, schema.ConsumerBatch, answer)
}

// runOneJobOn is runOneJob for the lane of consumer.
func (f *fixture) runOneJobOn(t *testing.T, consumer string, answer func(schema.Envelope) schema.Reply) (schema.Envelope, bool) {
	t.Helper()
	ctx := context.Background()
	cons, err := f.q.JS.Consumer(ctx, schema.StreamRequests, consumer)
	if err != nil {
		t.Fatal(err)
	}
	m, err := cons.Next(jetstream.FetchMaxWait(10 * time.Second))
	if err != nil {
		t.Fatalf("no job for %s: %v", consumer, err)
	}
	var env schema.Envelope
	if err := json.Unmarshal(m.Data(), &env); err != nil {
		t.Fatal(err)
	}
	store, err := jobstore.Open(ctx, f.q.JS)
	if err != nil {
		t.Fatal(err)
	}
	md, _ := m.Metadata()
	_, run, err := store.Start(ctx, &env, md.Sequence.Stream, 1)
	if err != nil {
		t.Fatal(err)
	}
	rep := schema.ErrorReply(env.ID, schema.JobCancelledError())
	if run {
		rep = answer(env)
	}
	res := schema.JobResultOf(rep, env.Model, time.Now())
	if err := store.Finish(ctx, &env, &res, 1<<19); err != nil {
		t.Fatal(err)
	}
	_ = m.Ack()
	return env, run
}

// TestJobLifecycle: POST answers 202 with a queued job in the batch lane;
// GET shows it queued, then (long-polling) succeeded with the completion.
func TestJobLifecycle(t *testing.T) {
	f := newFixture(t, Config{MasterKey: "sk-master"})
	auth := []string{"Authorization", "Bearer sk-master"}
	resp, body := f.do(t, "POST", "/v1/queue/jobs", chatBody("claude-3.5-sonnet", "hello job"), auth...)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST: status %d: %s", resp.StatusCode, body)
	}
	j := decodeJob(t, body)
	if j.ID == "" || j.ID != resp.Header.Get(HeaderRequestID) || j.Object != "queue.job" || j.Status != schema.JobQueued ||
		j.Model != "claude-3.5-sonnet" || j.CreatedAt == 0 || j.FinishedAt != nil || j.Result != nil || j.Error != nil {
		t.Fatalf("submitted job = %s", body)
	}
	if loc := resp.Header.Get("Location"); loc != "/v1/queue/jobs/"+j.ID {
		t.Errorf("Location = %q", loc)
	}
	if resp, body := f.do(t, "GET", "/v1/queue/jobs/"+j.ID, "", auth...); resp.StatusCode != 200 || decodeJob(t, body).Status != schema.JobQueued {
		t.Errorf("GET while queued: %d %s", resp.StatusCode, body)
	}
	// ?wait returns what there is when the wait ends.
	if resp, body := f.do(t, "GET", "/v1/queue/jobs/"+j.ID+"?wait=0.2", "", auth...); resp.StatusCode != 200 || decodeJob(t, body).Status != schema.JobQueued {
		t.Errorf("GET ?wait=0.2 while queued: %d %s", resp.StatusCode, body)
	}

	type got struct {
		status int
		body   []byte
	}
	polled := make(chan got, 1)
	go func() {
		resp, body := f.do(t, "GET", "/v1/queue/jobs/"+j.ID+"?wait=30s", "", auth...)
		polled <- got{resp.StatusCode, body}
	}()
	env, _ := f.runOneJob(t, echoAnswer)
	if !env.Job || env.Model != "claude-3.5-sonnet" || env.ResultsSubject != "" || env.ID != j.ID ||
		env.Deadline.Sub(env.EnqueuedAt) != schema.MaxRequestTimeout {
		t.Errorf("envelope = %+v", env)
	}
	p := <-polled
	done := decodeJob(t, p.body)
	if p.status != 200 || done.Status != schema.JobSucceeded || done.StatusCode != 200 || done.Result == nil ||
		done.Result.Choices[0].Message.Content != "echo: hello job" || done.FinishedAt == nil || done.Attempts != 1 || done.Error != nil {
		t.Fatalf("long-polled job: %d %s", p.status, p.body)
	}
	// And on a plain GET afterwards, and to a DELETE (a final job stays as it is).
	for _, method := range []string{"GET", "DELETE"} {
		resp, body := f.do(t, method, "/v1/queue/jobs/"+j.ID, "", auth...)
		if again := decodeJob(t, body); resp.StatusCode != 200 || again.Status != schema.JobSucceeded || again.Result == nil {
			t.Errorf("%s after success: %d %s", method, resp.StatusCode, body)
		}
	}
}

// TestJobCancelQueued: DELETE of a queued job answers cancelled; the worker
// that takes it later does not run it, and GET shows the cancelled result.
func TestJobCancelQueued(t *testing.T) {
	f := newFixture(t, Config{})
	sub, err := f.q.Conn.SubscribeSync(schema.SubjectCancel + ".*")
	if err != nil {
		t.Fatal(err)
	}
	_, body := f.do(t, "POST", "/v1/queue/jobs", chatBody("claude-3.5-sonnet", "never"))
	id := decodeJob(t, body).ID
	resp, body := f.do(t, "DELETE", "/v1/queue/jobs/"+id, "")
	if resp.StatusCode != 200 || decodeJob(t, body).Status != schema.JobCancelled {
		t.Fatalf("DELETE: %d %s", resp.StatusCode, body)
	}
	if m, err := sub.NextMsg(5 * time.Second); err != nil || m.Subject != schema.SubjectCancel+"."+id {
		t.Errorf("cancel broadcast: %v %v", m, err)
	} else if dl, ok := schema.CancelDeadline(m.Data); !ok || time.Until(dl) > schema.MaxRequestTimeout || time.Until(dl) < schema.MaxRequestTimeout-time.Hour {
		// The job's deadline is at most MaxRequestTimeout after it was
		// queued: workers forget the id then, not a day after the cancel.
		t.Errorf("cancel payload %q: want the job's latest deadline, its creation + %s", m.Data, schema.MaxRequestTimeout)
	}
	if _, run := f.runOneJob(t, func(schema.Envelope) schema.Reply {
		t.Error("a cancelled job ran")
		return schema.Reply{}
	}); run {
		t.Error("Start let a cancelled job run")
	}
	resp, body = f.do(t, "GET", "/v1/queue/jobs/"+id+"?wait=10s", "")
	j := decodeJob(t, body)
	if resp.StatusCode != 200 || j.Status != schema.JobCancelled || j.StatusCode != 499 || j.Error == nil || deref(j.Error.Code) != schema.CodeJobCancelled {
		t.Errorf("GET after cancel: %d %s", resp.StatusCode, body)
	}
}

// TestJobErrors: bad job requests get the same answer as on
// /v1/chat/completions; unknown ids get 404; a bad wait gets 400; nothing
// refused reaches the queue.
func TestJobErrors(t *testing.T) {
	f := newFixture(t, Config{MasterKey: "sk-master", MaxBodyBytes: 1 << 20})
	auth := []string{"Authorization", "Bearer sk-master"}
	big := `{"model":"claude-3.5-sonnet","messages":[{"role":"user","content":"` + strings.Repeat("x", 1<<20) + `"}]}`
	same := []struct {
		name, body string
		header     []string
	}{
		{"malformed JSON", `{"model":`, auth},
		{"empty body", ``, auth},
		{"wrong type", `{"model":1,"messages":[]}`, auth},
		{"no messages", `{"model":"claude-3.5-sonnet","messages":[]}`, auth},
		{"tool role", `{"model":"claude-3.5-sonnet","messages":[{"role":"tool","content":"x"}]}`, auth},
		{"tools", `{"model":"claude-3.5-sonnet","tools":[{"type":"function","function":{"name":"f"}}],"messages":[{"role":"user","content":"x"}]}`, auth},
		{"preset override not allowed", `{"model":"claude-3.5-sonnet","preset_hash":"x","messages":[{"role":"user","content":"x"}]}`, auth},
		{"unknown model", chatBody("gpt-9", "hi"), auth},
		{"bad timeout header", chatBody("claude-3.5-sonnet", "hi"), append([]string{"X-Request-Timeout", "soon"}, auth...)},
		{"bad image", `{"model":"claude-3.5-sonnet","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}]}]}`, auth},
		{"no key", chatBody("claude-3.5-sonnet", "hi"), nil},
		{"too large", big, auth},
	}
	for _, tc := range same {
		t.Run(tc.name, func(t *testing.T) {
			chatResp, chatBody := f.do(t, "POST", "/v1/chat/completions", tc.body, tc.header...)
			jobResp, jobBody := f.do(t, "POST", "/v1/queue/jobs", tc.body, tc.header...)
			if chatResp.StatusCode < 400 || jobResp.StatusCode != chatResp.StatusCode || string(jobBody) != string(chatBody) {
				t.Errorf("job answer %d %s\nchat answer %d %s", jobResp.StatusCode, jobBody, chatResp.StatusCode, chatBody)
			}
		})
	}
	for _, tc := range []struct{ method, path, code string }{
		{"GET", "/v1/queue/jobs/nope", CodeJobNotFound},
		{"DELETE", "/v1/queue/jobs/nope", CodeJobNotFound},
		{"GET", "/v1/queue/jobs/a.b", CodeJobNotFound},
		{"DELETE", "/v1/queue/jobs/a*", CodeJobNotFound},
		{"GET", "/v1/queue/jobs/nope?wait=5s", CodeJobNotFound},
		{"GET", "/v1/queue/jobs/x?wait=soon", schema.CodeInvalidValue},
		{"GET", "/v1/queue/jobs/x?wait=-1s", schema.CodeInvalidValue},
		{"GET", "/v1/queue/jobs/x?wait=NaN", schema.CodeInvalidValue},
	} {
		resp, body := f.do(t, tc.method, tc.path, "", auth...)
		want := 404
		if tc.code == schema.CodeInvalidValue {
			want = 400
		}
		if resp.StatusCode != want || !strings.Contains(string(body), `"code":"`+tc.code+`"`) || !strings.Contains(string(body), `"type":"invalid_request_error"`) {
			t.Errorf("%s %s: %d %s", tc.method, tc.path, resp.StatusCode, body)
		}
	}
	for _, m := range []string{"GET", "DELETE"} {
		if resp, _ := f.do(t, m, "/v1/queue/jobs/nope", ""); resp.StatusCode != 401 {
			t.Errorf("%s without a key: %d, want 401", m, resp.StatusCode)
		}
	}
	cons, err := f.q.JS.Consumer(context.Background(), schema.StreamRequests, schema.ConsumerBatch)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := cons.Info(context.Background()); err != nil || info.NumPending != 0 {
		t.Errorf("refused jobs reached the batch lane: %+v %v", info, err)
	}
}

func TestParseWait(t *testing.T) {
	for in, want := range map[string]time.Duration{"": 0, "0": 0, "30s": 30 * time.Second, "30": 30 * time.Second, "1.5": 1500 * time.Millisecond,
		"10m": MaxJobWait, "1e300": MaxJobWait, "+Inf": MaxJobWait} {
		if got, err := parseWait(in); err != nil || got != want {
			t.Errorf("parseWait(%q) = %s, %v; want %s", in, got, err, want)
		}
	}
}

// TestJobQueueFull: a full queue answers 429 queue_full, and the job is
// not left behind as queued.
func TestJobQueueFull(t *testing.T) {
	f := newFixtureQueue(t, Config{}, queue.Config{Memory: true, MaxMsgs: 1})
	if resp, body := f.do(t, "POST", "/v1/queue/jobs", chatBody("claude-3.5-sonnet", "first")); resp.StatusCode != 202 {
		t.Fatalf("first: %d %s", resp.StatusCode, body)
	}
	resp, body := f.do(t, "POST", "/v1/queue/jobs", chatBody("claude-3.5-sonnet", "one too many"))
	if resp.StatusCode != 429 || !strings.Contains(string(body), `"code":"queue_full"`) || resp.Header.Get("Retry-After") != "1" {
		t.Fatalf("second: %d %s", resp.StatusCode, body)
	}
	id := resp.Header.Get(HeaderRequestID)
	if resp, body := f.do(t, "GET", "/v1/queue/jobs/"+id, ""); resp.StatusCode != 404 {
		t.Errorf("a refused job is known: %d %s", resp.StatusCode, body)
	}
}
