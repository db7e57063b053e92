package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/laas-bridge/laas-bridge/internal/accesslog"
	"github.com/laas-bridge/laas-bridge/queue/jobstore"
	"github.com/laas-bridge/laas-bridge/schema"
)

// The producer side of these tests uses plain nats.go, as a program in any
// language would: publish an envelope on the batch lane, read the result
// from LAAS_RESULTS.

// publishJob publishes a job envelope with Nats-Msg-Id msgID (none when
// empty); env.Job is set.
func publishJob(t *testing.T, js jetstream.JetStream, env schema.Envelope, msgID string) *jetstream.PubAck {
	t.Helper()
	env.Job = true
	data, err := json.Marshal(env)
	if err != nil {
		t.Fatal(err)
	}
	msg := &nats.Msg{Subject: schema.SubjectBatch, Data: data, Header: nats.Header{}}
	if msgID != "" {
		msg.Header.Set(schema.HeaderMsgID, msgID)
	}
	ack, err := js.PublishMsg(context.Background(), msg)
	if err != nil {
		t.Fatal(err)
	}
	return ack
}

// jobEnv is a job asking model m about text.
func jobEnv(id, text string) schema.Envelope {
	req, _ := json.Marshal(map[string]any{"model": "m", "messages": []map[string]string{{"role": "user", "content": text}}})
	return schema.Envelope{ID: id, Model: "m", EnqueuedAt: time.Now(), Request: req}
}

// nextResult reads the next result on subject from LAAS_RESULTS, with an
// ordered consumer starting at the first message (a producer that was
// offline reads it the same way).
func nextResult(t *testing.T, js jetstream.JetStream, subject string) (schema.JobResult, *nats.Header) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	c, err := js.OrderedConsumer(ctx, schema.StreamResults, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	if err != nil {
		t.Fatal(err)
	}
	m, err := c.Next(jetstream.FetchMaxWait(15 * time.Second))
	if err != nil {
		t.Fatalf("no result on %s: %v", subject, err)
	}
	var r schema.JobResult
	if err := json.Unmarshal(m.Data(), &r); err != nil {
		t.Fatal(err)
	}
	h := m.Headers()
	return r, &h
}

// resultCount is how many messages LAAS_RESULTS holds on subject.
func resultCount(t *testing.T, js jetstream.JetStream, subject string) uint64 {
	t.Helper()
	s, err := js.Stream(context.Background(), schema.StreamResults)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background(), jetstream.WithSubjectFilter(subject))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Subjects[subject]
}

func jobState(t *testing.T, js jetstream.JetStream, id string) schema.JobState {
	t.Helper()
	kv, err := js.KeyValue(context.Background(), schema.BucketJobs)
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(context.Background(), id)
	if err != nil {
		t.Fatalf("state of %s: %v", id, err)
	}
	var st schema.JobState
	if err := json.Unmarshal(e.Value(), &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// TestJobResultOnResultsStream: a job published with plain nats.go is
// answered on laas.results.<id>, kept in the stream (read after the fact),
// and its state is recorded.
func TestJobResultOnResultsStream(t *testing.T) {
	up := &recorder{}
	f := startPool(t, up, Config{})
	publishJob(t, f.q.JS, jobEnv("j1", "hello"), "j1")
	r, _ := nextResult(t, f.q.JS, "laas.results.j1")
	if r.ID != "j1" || r.Status != schema.JobSucceeded || r.StatusCode != 200 || r.Model != "m" || r.Attempts != 1 ||
		r.Error != nil || r.Completion == nil || r.Completion.Choices[0].Message.Content != "answer to hello" ||
		r.Completion.ID != "chatcmpl-j1" || r.FinishedAt.IsZero() {
		t.Fatalf("result = %+v", r)
	}
	f.drained(t)
	st := jobState(t, f.q.JS, "j1")
	if st.Status != schema.JobSucceeded || st.ResultsSubject != "laas.results.j1" || st.Model != "m" || st.Attempts != 1 {
		t.Errorf("state = %+v", st)
	}
	// A producer-given subject under laas.results.> that ends in the id.
	env := jobEnv("j2", "second")
	env.ResultsSubject = "laas.results.myapp.j2"
	publishJob(t, f.q.JS, env, "j2")
	if r, _ := nextResult(t, f.q.JS, "laas.results.myapp.>"); r.ID != "j2" || r.Status != schema.JobSucceeded {
		t.Fatalf("result on the given subject = %+v", r)
	}
	if n := resultCount(t, f.q.JS, "laas.results.j2"); n != 0 {
		t.Errorf("%d results on the default subject of a job that gave its own", n)
	}
	if up.count() != 2 {
		t.Errorf("LaaS calls = %d, want 2", up.count())
	}
}

// TestJobResubmitNeverCallsLaaSTwice: the same job id published again
// after its result exists (with a new Nats-Msg-Id, as after the 10 min
// duplicate window, or with none) is answered from the kept result; within
// the window the queue drops it. The recorder's call count proves it.
func TestJobResubmitNeverCallsLaaSTwice(t *testing.T) {
	up := &recorder{}
	f := startPool(t, up, Config{})
	publishJob(t, f.q.JS, jobEnv("j1", "hello"), "j1")
	first, _ := nextResult(t, f.q.JS, "laas.results.j1")
	f.drained(t)

	if ack := publishJob(t, f.q.JS, jobEnv("j1", "hello"), "j1"); !ack.Duplicate {
		t.Error("a resubmission within the duplicate window was queued again")
	}
	publishJob(t, f.q.JS, jobEnv("j1", "hello"), "j1-after-the-window")
	publishJob(t, f.q.JS, jobEnv("j1", "other text, same id"), "")
	moved := jobEnv("j1", "hello")
	moved.ResultsSubject = "laas.results.elsewhere.j1"
	publishJob(t, f.q.JS, moved, "j1-elsewhere")
	badSubject := jobEnv("j1", "hello")
	badSubject.ResultsSubject = "laas.requests.interactive"
	publishJob(t, f.q.JS, badSubject, "j1-bad-subject") // must not overwrite the kept result with an error
	f.drained(t)
	if up.count() != 1 {
		t.Fatalf("LaaS calls = %d, want 1 for one job id", up.count())
	}
	if n := resultCount(t, f.q.JS, "laas.results.j1"); n != 1 {
		t.Errorf("results on laas.results.j1 = %d, want 1", n)
	}
	if kept, _ := nextResult(t, f.q.JS, "laas.results.j1"); kept.Status != schema.JobSucceeded {
		t.Errorf("kept result = %+v", kept)
	}
	// The resubmission that asked for another subject gets the kept result there.
	copied, _ := nextResult(t, f.q.JS, "laas.results.elsewhere.j1")
	if copied.ID != "j1" || copied.Completion == nil || copied.Completion.Choices[0].Message.Content != first.Completion.Choices[0].Message.Content {
		t.Errorf("copied result = %+v", copied)
	}
}

// TestJobBadInput: a bad results subject, an unknown model or an invalid
// request is answered with an error result; garbage is dropped; the pool
// keeps working.
func TestJobBadInput(t *testing.T) {
	up := &recorder{}
	f := startPool(t, up, Config{})

	bad := []string{"laas.requests.interactive", "laas.reply.gw.j1", "laas.results.>", "laas.results.other-job", "$JS.API.STREAM.DELETE.LAAS_REQUESTS"}
	for i, subject := range bad {
		env := jobEnv(fmt.Sprint("bad1-", i), "x")
		env.ResultsSubject = subject
		publishJob(t, f.q.JS, env, "")
	}
	for i, subject := range bad {
		r, _ := nextResult(t, f.q.JS, fmt.Sprint("laas.results.bad1-", i))
		if r.Status != schema.JobFailed || r.StatusCode != 400 || r.Error == nil || *r.Error.Param != "results_subject" || *r.Error.Code != schema.CodeInvalidValue ||
			!strings.Contains(r.Error.Message, fmt.Sprintf("%q", subject)) {
			t.Errorf("bad subject %s: result = %+v %+v", subject, r, r.Error)
		}
	}

	unknown := jobEnv("bad2", "x")
	unknown.Model = "nope"
	publishJob(t, f.q.JS, unknown, "")
	if r, _ := nextResult(t, f.q.JS, "laas.results.bad2"); r.Status != schema.JobFailed || r.StatusCode != 404 || *r.Error.Code != schema.CodeModelNotFound {
		t.Errorf("unknown model result = %+v", r)
	}
	invalid := jobEnv("bad3", "x")
	invalid.Request = json.RawMessage(`{"model":"m","messages":[]}`)
	publishJob(t, f.q.JS, invalid, "")
	if r, _ := nextResult(t, f.q.JS, "laas.results.bad3"); r.Status != schema.JobFailed || r.StatusCode != 400 || r.Error == nil {
		t.Errorf("invalid request result = %+v", r)
	}
	// Not a job at all, and a job whose id cannot name a subject: dropped.
	for _, data := range []string{`not json`, `{"id":"a.b","model":"m","job":true,"request":{}}`, `{"id":"","job":true}`} {
		if _, err := f.q.JS.Publish(context.Background(), schema.SubjectBatch, []byte(data)); err != nil {
			t.Fatal(err)
		}
	}
	publishJob(t, f.q.JS, jobEnv("good", "still working"), "")
	if r, _ := nextResult(t, f.q.JS, "laas.results.good"); r.Status != schema.JobSucceeded {
		t.Errorf("the pool stopped answering after bad input: %+v", r)
	}
	f.drained(t)
	if up.count() != 1 {
		t.Errorf("LaaS calls = %d, want 1 (only the good job)", up.count())
	}
	// Nothing was published outside laas.results.>.
	s, _ := f.q.JS.Stream(context.Background(), schema.StreamResults)
	info, err := s.Info(context.Background(), jetstream.WithSubjectFilter(">"))
	if err != nil {
		t.Fatal(err)
	}
	for subj := range info.State.Subjects {
		if !strings.HasPrefix(subj, "laas.results.") {
			t.Errorf("result on %s", subj)
		}
	}
}

// TestJobCancel: a job cancelled while queued never calls LaaS (even when
// the cancel broadcast was missed: the state says so); a running one has
// its call aborted. Both get a cancelled result.
func TestJobCancel(t *testing.T) {
	up := &recorder{delay: time.Minute}
	f := startPool(t, up, Config{})
	store, err := jobstore.Open(context.Background(), f.q.JS)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	// Queued and cancelled before any worker saw it: write the state, no broadcast.
	kv, _ := f.q.JS.KeyValue(ctx, schema.BucketJobs)
	st, _ := json.Marshal(schema.JobState{ID: "q1", Status: schema.JobCancelled, Model: "m", ResultsSubject: "laas.results.q1"})
	if _, err := kv.Put(ctx, "q1", st); err != nil {
		t.Fatal(err)
	}
	publishJob(t, f.q.JS, jobEnv("q1", "never asked"), "q1")
	if r, _ := nextResult(t, f.q.JS, "laas.results.q1"); r.Status != schema.JobCancelled || r.StatusCode != 499 || *r.Error.Code != schema.CodeJobCancelled {
		t.Errorf("queued cancel result = %+v", r)
	}

	// Running: cancelled through the store (state + broadcast).
	// As the admission core queues a recorded job: state first, then the lane.
	if _, _, err := store.Record(ctx, ptr(jobEnv("r1", "long"))); err != nil {
		t.Fatal(err)
	}
	publishJob(t, f.q.JS, jobEnv("r1", "long"), "job.r1")
	for deadline := time.Now().Add(10 * time.Second); up.count() == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the job never reached LaaS")
		}
	}
	if got, err := store.Cancel(ctx, "r1"); err != nil || got.Status != schema.JobCancelled {
		t.Fatalf("Cancel = %+v, %v", got, err)
	}
	r, _ := nextResult(t, f.q.JS, "laas.results.r1")
	if r.Status != schema.JobCancelled {
		t.Errorf("running cancel result = %+v", r)
	}
	if final, res, err := store.Get(ctx, "r1"); err != nil || final.Status != schema.JobCancelled || res == nil {
		t.Errorf("Get after cancel = %+v, %+v, %v", final, res, err)
	}
	f.drained(t)
	if up.count() != 1 {
		t.Errorf("LaaS calls = %d, want 1 (the running job's, aborted)", up.count())
	}
	// A final job stays as it is.
	if got, err := store.Cancel(ctx, "q1"); err != nil || got.Status != schema.JobCancelled {
		t.Errorf("Cancel of a final job = %+v, %v", got, err)
	}
	if _, err := store.Cancel(ctx, "unknown"); err != jobstore.ErrNotFound {
		t.Errorf("Cancel of an unknown job: %v", err)
	}
}

// TestJobDuplicateWhileRunning: a second message with the id of a job that
// is running (published after the duplicate window) is dropped, not run.
func TestJobDuplicateWhileRunning(t *testing.T) {
	up := &recorder{delay: 500 * time.Millisecond}
	f := startPool(t, up, Config{})
	publishJob(t, f.q.JS, jobEnv("d1", "once"), "d1")
	for deadline := time.Now().Add(10 * time.Second); up.count() == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the job never reached LaaS")
		}
	}
	publishJob(t, f.q.JS, jobEnv("d1", "once"), "d1-again")
	if r, _ := nextResult(t, f.q.JS, "laas.results.d1"); r.Status != schema.JobSucceeded {
		t.Errorf("result = %+v", r)
	}
	f.drained(t)
	if up.count() != 1 {
		t.Errorf("LaaS calls = %d, want 1", up.count())
	}
}

func ptr[T any](v T) *T { return &v }

// TestJobAccessLine: with an access log, a job (nobody waits for it over
// HTTP, so no gateway writes its line) gets one line from the worker, door
// "batch", with its status, timing and sizes; a request with a caller gets
// none from the worker (its gateway writes it). Never the prompt.
func TestJobAccessLine(t *testing.T) {
	var buf syncBuffer
	f := startPool(t, &recorder{}, Config{}, WithAccessLog(accesslog.New(&buf)))
	env := jobEnv("j1", "secret prompt text")
	publishJob(t, f.q.JS, env, "j1")
	nextResult(t, f.q.JS, "laas.results.j1")
	f.publish(t, "c1", "m", time.Minute, hello) // a caller's request
	if r := f.reply(t); r.ID != "c1" || r.Status != 200 {
		t.Fatalf("reply %s %d", r.ID, r.Status)
	}
	f.drained(t)
	var lines []map[string]any
	for line := range strings.Lines(buf.String()) {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("not JSON: %q", line)
		}
		lines = append(lines, m)
	}
	if len(lines) != 1 {
		t.Fatalf("%d access lines, want 1 (the job's):\n%s", len(lines), buf.String())
	}
	l := lines[0]
	want := map[string]any{"msg": "access", "request_id": "j1", "model": "m", "lane": "batch", "door": "batch", "status": 200.0,
		"attempts": 1.0, "bytes_in": float64(len(env.Request)), "stream": false}
	for k, v := range want {
		if l[k] != v {
			t.Errorf("%s = %v, want %v", k, l[k], v)
		}
	}
	for _, k := range []string{"queue_ms", "upstream_ms", "bytes_out", "duration_ms"} {
		if _, ok := l[k].(float64); !ok {
			t.Errorf("%s missing or not a number: %v", k, l[k])
		}
	}
	if out, _ := l["bytes_out"].(float64); out <= 0 {
		t.Errorf("bytes_out %v, want the completion's size", l["bytes_out"])
	}
	if strings.Contains(buf.String(), "secret prompt") || strings.Contains(buf.String(), "answer to") {
		t.Errorf("the access line holds the prompt or the answer: %s", buf.String())
	}
}

// syncBuffer is a bytes.Buffer safe for the pool's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
