package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/laas-bridge/laas-bridge/keys"
	"github.com/laas-bridge/laas-bridge/laas"
	"github.com/laas-bridge/laas-bridge/queue"
	"github.com/laas-bridge/laas-bridge/queue/queuetest"
	"github.com/laas-bridge/laas-bridge/schema"
	"github.com/laas-bridge/laas-bridge/worker"
)

// dlqFixture is an embedded NATS with the bridge's streams, for `dlq`.
type dlqFixture struct {
	q    *queuetest.Queue
	dead *worker.DeadLetters
}

func startDLQ(t *testing.T, cfg queue.Config) *dlqFixture {
	t.Helper()
	for _, k := range []string{"NATS_URL", "BRIDGE_LOG_LEVEL", "BRIDGE_LOG_FORMAT"} {
		t.Setenv(k, "") // restored at cleanup
		os.Unsetenv(k)
	}
	// Replays are checked against the models, as every request is.
	models := filepath.Join(t.TempDir(), "config.yaml")
	yaml := "model_list:\n" +
		"  - model_name: m\n    litellm_params:\n      model: laas/m\n" +
		"  - model_name: claude\n    litellm_params:\n      model: laas/claude\n"
	if err := os.WriteFile(models, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("BRIDGE_CONFIG", models)
	q := queuetest.Start(t, cfg)
	dead, err := worker.NewDeadLetters(context.Background(), q.JS, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return &dlqFixture{q: q, dead: dead}
}

// dlq runs `laas-bridge dlq args... --nats-url <the fixture's server>`.
func (f *dlqFixture) dlq(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	return runDLQCmd(t, append(args, "--nats-url", f.q.Server.ClientURL())...)
}

func runDLQCmd(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	err = run(ctx, append([]string{"dlq"}, args...), &out, &errOut)
	return out.String(), errOut.String(), err
}

var dlqT0 = time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)

// keep dead-letters a job with a small request.
func (f *dlqFixture) keep(t *testing.T, id, model string, status, attempts int, failedAt time.Time, reason string, request []byte) worker.DeadLetter {
	t.Helper()
	if request == nil {
		request = []byte(fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":"hello from %s"}]}`, model, id))
	}
	dl := worker.DeadLetter{
		Envelope: schema.Envelope{ID: id, Model: model, EnqueuedAt: dlqT0, Deadline: dlqT0.Add(10 * time.Minute), Request: request,
			IdempotencyKey: "key-" + id},
		Reason:      schema.ErrorDetail{Message: reason, Type: schema.TypeUpstream, Code: new(schema.CodeUpstreamError)},
		Status:      status,
		Attempts:    attempts,
		LastAttempt: failedAt.Add(-time.Second),
		FailedAt:    failedAt,
	}
	if err := f.dead.DeadLetter(context.Background(), dl); err != nil {
		t.Fatal(err)
	}
	return dl
}

const maxDeliveriesReason = "max deliveries reached: the job was delivered 5 times and no worker finished it (a worker crashed, hung or was stopped on every attempt)"

func (f *dlqFixture) seedTwo(t *testing.T) (a, b worker.DeadLetter) {
	a = f.keep(t, "req-a", "m", 503, 3, dlqT0.Add(8*time.Second), "LaaS answered HTTP 503: busy.", nil)
	b = f.keep(t, "req-b", "claude", 500, 5, dlqT0.Add(time.Hour), maxDeliveriesReason, nil)
	return a, b
}

func TestDLQList(t *testing.T) {
	f := startDLQ(t, queue.Config{Memory: true})
	out, _, err := f.dlq(t, "list")
	if err != nil || out != "no dead letters in LAAS_DEAD\n" {
		t.Fatalf("list on an empty stream: %q, %v", out, err)
	}
	if out, _, err := f.dlq(t, "list", "--json"); err != nil || out != "[]\n" {
		t.Fatalf("list --json on an empty stream: %q, %v", out, err)
	}

	a, b := f.seedTwo(t)
	out, stderr, err := f.dlq(t, "list")
	if err != nil {
		t.Fatalf("list: %v\n%s", err, stderr)
	}
	const want = "" +
		"ID     MODEL   STATUS  ATTEMPTS  FAILED_AT             REASON\n" +
		"req-a  m       503     3         2026-01-02T03:00:08Z  LaaS answered HTTP 503: busy.\n" +
		"req-b  claude  500     5         2026-01-02T04:00:00Z  max deliveries reached: the job was delivered 5 times and no worker finished it…\n"
	if out != want {
		t.Errorf("list:\n%s\nwant:\n%s", out, want)
	}

	out, _, err = f.dlq(t, "list", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var recs []schema.DeadLetterRecord
	if err := json.Unmarshal([]byte(out), &recs); err != nil {
		t.Fatalf("list --json: %v\n%s", err, out)
	}
	wantRecs := []schema.DeadLetterRecord{record(a), record(b)}
	if !reflect.DeepEqual(recs, wantRecs) {
		t.Errorf("list --json:\n%+v\nwant\n%+v", recs, wantRecs)
	}

	// Listing consumes nothing.
	if out2, _, _ := f.dlq(t, "list"); out2 != want {
		t.Errorf("second list:\n%s", out2)
	}
}

// record is what the dead-letter stream should hold for dl.
func record(dl worker.DeadLetter) schema.DeadLetterRecord {
	return schema.DeadLetterRecord{
		ID: dl.Envelope.ID, Model: dl.Envelope.Model, Request: dl.Envelope.Request, Owner: dl.Envelope.Owner,
		Reason:   schema.DeadLetterReason{Status: dl.Status, Error: dl.Reason},
		Attempts: dl.Attempts, EnqueuedAt: dl.Envelope.EnqueuedAt, Deadline: dl.Envelope.Deadline,
		LastAttempt: dl.LastAttempt, FailedAt: dl.FailedAt,
	}
}

// batchJobs returns the requests waiting on the batch lane, oldest first.
func batchJobs(t *testing.T, js jetstream.JetStream) []*jetstream.RawStreamMsg {
	t.Helper()
	ctx := context.Background()
	s, err := js.Stream(ctx, schema.StreamRequests)
	if err != nil {
		t.Fatal(err)
	}
	st := s.CachedInfo().State
	var out []*jetstream.RawStreamMsg
	for seq := st.FirstSeq; st.Msgs > 0 && seq <= st.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if m.Subject != schema.SubjectBatch {
			t.Errorf("replayed to %s, want %s", m.Subject, schema.SubjectBatch)
		}
		out = append(out, m)
	}
	return out
}

// checkReplayed checks a replayed job: a job of its own (jobID), dl's
// request, a fresh deadline, no reply subject, no idempotency key.
func checkReplayed(t *testing.T, m *jetstream.RawStreamMsg, dl worker.DeadLetter, jobID string, timeout time.Duration, before time.Time) schema.Envelope {
	t.Helper()
	if got := m.Header.Get(schema.HeaderMsgID); got != "job."+jobID {
		t.Errorf("Nats-Msg-Id %q, want %q", got, "job."+jobID)
	}
	if got := m.Header.Get(schema.HeaderReplyTo); got != "" {
		t.Errorf("a replayed job names a reply subject: %q", got)
	}
	var env schema.Envelope
	if err := json.Unmarshal(m.Data, &env); err != nil {
		t.Fatal(err)
	}
	if env.ID != jobID || !env.Job || env.Model != dl.Envelope.Model || env.IdempotencyKey != "" || env.Owner != dl.Envelope.Owner {
		t.Errorf("replayed envelope %+v", env)
	}
	if env.RequestRef == "" && !bytes.Equal(env.Request, dl.Envelope.Request) {
		t.Errorf("replayed request %s, want %s", env.Request, dl.Envelope.Request)
	}
	if env.EnqueuedAt.Before(before.Add(-time.Second)) || env.EnqueuedAt.After(time.Now()) || env.Deadline.Sub(env.EnqueuedAt) != timeout {
		t.Errorf("replayed at %s with deadline %s; want now and now + %s", env.EnqueuedAt, env.Deadline, timeout)
	}
	return env
}

func TestDLQReplayOne(t *testing.T) {
	f := startDLQ(t, queue.Config{Memory: true})
	a, b := f.seedTwo(t)
	start := time.Now()
	out, stderr, err := f.dlq(t, "replay", "req-a")
	if err != nil {
		t.Fatalf("replay: %v\n%s", err, stderr)
	}
	const want = "replayed req-a (model m, 3 attempts, failed 2026-01-02T03:00:08Z) to laas.requests.lane.batch as job req-a-replay-1, timeout 10m0s\n"
	if out != want {
		t.Errorf("replay printed %q, want %q", out, want)
	}
	jobs := batchJobs(t, f.q.JS)
	if len(jobs) != 1 {
		t.Fatalf("%d jobs on the request stream, want 1", len(jobs))
	}
	checkReplayed(t, jobs[0], a, "req-a-replay-1", 10*time.Minute, start)

	// The dead letter is gone; the other stays.
	out, _, _ = f.dlq(t, "list")
	if strings.Contains(out, "req-a") || !strings.Contains(out, "req-b") {
		t.Errorf("list after replaying req-a:\n%s", out)
	}
	if _, _, err := f.dlq(t, "replay", "req-a"); err == nil || !strings.Contains(err.Error(), `no dead letter for request id "req-a"`) {
		t.Errorf("second replay of req-a: %v", err)
	}

	// Flags after the id, and a timeout.
	start = time.Now()
	out, _, err = f.dlq(t, "replay", "req-b", "--timeout", "90s")
	if err != nil || !strings.HasPrefix(out, "replayed req-b (model claude, 5 attempts, failed 2026-01-02T04:00:00Z) to laas.requests.lane.batch as job req-b-replay-2, timeout 1m30s") {
		t.Fatalf("replay req-b: %q, %v", out, err)
	}
	if jobs = batchJobs(t, f.q.JS); len(jobs) != 2 {
		t.Fatalf("%d jobs on the request stream, want 2", len(jobs))
	}
	checkReplayed(t, jobs[1], b, "req-b-replay-2", 90*time.Second, start)
}

func TestDLQReplayAlreadyPublished(t *testing.T) {
	// A replay that published and then died before deleting the dead letter:
	// running it again does not queue the job twice.
	f := startDLQ(t, queue.Config{Memory: true})
	f.keep(t, "req-a", "m", 503, 3, dlqT0, "busy", nil)
	// What the first replay left: the job recorded and queued.
	kv, err := f.q.JS.KeyValue(context.Background(), schema.BucketJobs)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Create(context.Background(), "req-a-replay-1", []byte(`{"id":"req-a-replay-1","status":"queued","model":"m"}`)); err != nil {
		t.Fatal(err)
	}
	msg := nats.NewMsg(schema.SubjectBatch)
	msg.Data = []byte(`{"id":"req-a-replay-1","model":"m","job":true}`)
	msg.Header.Set(schema.HeaderMsgID, "job.req-a-replay-1")
	if _, err := f.q.JS.PublishMsg(context.Background(), msg); err != nil {
		t.Fatal(err)
	}
	out, _, err := f.dlq(t, "replay", "req-a")
	if err != nil || !strings.HasPrefix(out, "already replayed req-a ") {
		t.Errorf("replay: %q, %v", out, err)
	}
	if n := len(batchJobs(t, f.q.JS)); n != 1 {
		t.Errorf("%d jobs on the request stream, want 1", n)
	}
	if out, _, _ := f.dlq(t, "list"); out != "no dead letters in LAAS_DEAD\n" {
		t.Errorf("list after the replay:\n%s", out)
	}
}

func TestDLQReplayAll(t *testing.T) {
	f := startDLQ(t, queue.Config{Memory: true})
	ctx := context.Background()
	half := int(f.q.Conn.MaxPayload() / 2)
	bigReq := []byte(`{"model":"m","messages":[{"role":"user","content":"` + strings.Repeat("x", half) + `"}]}`)
	a := f.keep(t, "req-a", "m", 503, 3, dlqT0.Add(time.Second), "busy", nil)
	big := f.keep(t, "big", "m", 502, 3, dlqT0.Add(2*time.Second), "bad gateway", bigReq)
	dotted := f.keep(t, "batch.7", "m", 429, 5, dlqT0.Add(3*time.Second), "rate limited", nil)
	bodies, err := f.q.JS.ObjectStore(ctx, schema.BucketBodies)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bodies.GetInfo(ctx, "big.dead"); err != nil {
		t.Fatalf("the large dead letter's body: %v", err)
	}

	start := time.Now()
	out, stderr, err := f.dlq(t, "replay", "--all")
	if err != nil {
		t.Fatalf("replay --all: %v\n%s", err, stderr)
	}
	const want = "" +
		"replayed req-a (model m, 3 attempts, failed 2026-01-02T03:00:01Z) to laas.requests.lane.batch as job req-a-replay-1, timeout 10m0s\n" +
		"replayed big (model m, 3 attempts, failed 2026-01-02T03:00:02Z) to laas.requests.lane.batch as job big-replay-2, timeout 10m0s\n" +
		"replayed batch.7 (model m, 5 attempts, failed 2026-01-02T03:00:03Z) to laas.requests.lane.batch as job batch_7-replay-3, timeout 10m0s\n" +
		"replayed 3 dead letters\n"
	if out != want {
		t.Errorf("replay --all printed:\n%s\nwant:\n%s", out, want)
	}
	jobs := batchJobs(t, f.q.JS)
	if len(jobs) != 3 {
		t.Fatalf("%d jobs on the request stream, want 3", len(jobs))
	}
	checkReplayed(t, jobs[0], a, "req-a-replay-1", 10*time.Minute, start)
	env := checkReplayed(t, jobs[1], big, "big-replay-2", 10*time.Minute, start)
	checkReplayed(t, jobs[2], dotted, "batch_7-replay-3", 10*time.Minute, start)

	// The large request travels as a claim check, under a name of its own.
	if env.RequestRef != "big-replay-2" || len(env.Request) != 0 {
		t.Fatalf("large replay: request_ref %q, %d bytes inline", env.RequestRef, len(env.Request))
	}
	if got, err := bodies.GetBytes(ctx, env.RequestRef); err != nil || !bytes.Equal(got, bigReq) {
		t.Errorf("large replay body: %d bytes, %v", len(got), err)
	}
	if _, err := bodies.GetInfo(ctx, "big.dead"); !errors.Is(err, jetstream.ErrObjectNotFound) {
		t.Errorf("the dead letter's body after the replay: %v, want not found", err)
	}
	if out, _, _ := f.dlq(t, "list"); out != "no dead letters in LAAS_DEAD\n" {
		t.Errorf("list after replay --all:\n%s", out)
	}
	if out, _, err := f.dlq(t, "replay", "--all"); err != nil || out != "no dead letters in LAAS_DEAD\n" {
		t.Errorf("replay --all with nothing to replay: %q, %v", out, err)
	}
}

func TestDLQReplayUnknownID(t *testing.T) {
	f := startDLQ(t, queue.Config{Memory: true})
	f.seedTwo(t)
	for _, id := range []string{"nope", "req", "a.b"} {
		_, _, err := f.dlq(t, "replay", id)
		want := fmt.Sprintf("no dead letter for request id %q in LAAS_DEAD", id)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("replay %s: %v, want %q", id, err, want)
		}
	}
	if n := len(batchJobs(t, f.q.JS)); n != 0 {
		t.Errorf("%d jobs queued by failed replays", n)
	}
}

func TestDLQUsageErrors(t *testing.T) {
	f := startDLQ(t, queue.Config{Memory: true})
	for _, tc := range []struct {
		name string
		args []string
		want string // in the error or stderr
	}{
		{"no subcommand", nil, "Usage:"},
		{"unknown subcommand", []string{"purge"}, `unknown dlq command "purge"`},
		{"replay without an id", []string{"replay"}, "dlq replay takes one request id or --all"},
		{"replay an id and --all", []string{"replay", "x", "--all"}, "dlq replay takes one request id or --all"},
		{"replay two ids", []string{"replay", "x", "y"}, "dlq replay takes one request id or --all"},
		{"list with an argument", []string{"list", "x"}, "unexpected arguments: x"},
		{"unknown flag", []string{"list", "--jsn"}, "flag provided but not defined: -jsn"},
		{"zero timeout", []string{"replay", "x", "--timeout", "0s"}, "--timeout must be more than 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := tc.args
			if len(args) > 0 {
				args = append(args, "--nats-url", f.q.Server.ClientURL())
			}
			_, stderr, err := runDLQCmd(t, args...)
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error()+stderr, tc.want) {
				t.Errorf("error %v, stderr:\n%s\nwant %q", err, stderr, tc.want)
			}
		})
	}
}

func TestDLQNeedsNATS(t *testing.T) {
	startDLQ(t, queue.Config{Memory: true}) // clears NATS_URL
	_, _, err := runDLQCmd(t, "list")
	if err == nil || !strings.Contains(err.Error(), "NATS_URL is not set") {
		t.Errorf("list without NATS_URL: %v", err)
	}
	t.Setenv("NATS_URL", "nats://dlq-user:s3cret-pass@127.0.0.1:1")
	_, stderr, err := runDLQCmd(t, "list")
	if err == nil || !strings.Contains(err.Error(), "connect to NATS at nats://[redacted]@127.0.0.1:1") {
		t.Errorf("list against an unreachable server: %v", err)
	}
	if err != nil && strings.Contains(err.Error()+stderr, "s3cret-pass") {
		t.Errorf("the password is printed: %v\n%s", err, stderr)
	}
	for _, args := range [][]string{{"list", "-h"}, {"replay", "--bogus"}} {
		out, stderr, _ := runDLQCmd(t, args...)
		if strings.Contains(out+stderr, "s3cret-pass") {
			t.Errorf("dlq %s prints the password:\n%s%s", strings.Join(args, " "), out, stderr)
		}
		if !strings.Contains(stderr, "-nats-url") {
			t.Errorf("dlq %s prints no flags:\n%s", strings.Join(args, " "), stderr)
		}
	}

	// A server where no worker ever ran has no dead-letter stream.
	srv := listeningNATS(t)
	_, _, err = runDLQCmd(t, "list", "--nats-url", srv.ClientURL())
	if err == nil || !strings.Contains(err.Error(), "no dead-letter stream LAAS_DEAD on ") {
		t.Errorf("list on a server without the stream: %v", err)
	}
}

// TestDeadLetterEndToEnd runs a worker pool against an upstream that always
// answers 503 with MaxDeliver 3: the caller gets the last error, and
// `dlq list` shows the job with 3 attempts and that error as its reason.
func TestDeadLetterEndToEnd(t *testing.T) {
	f := startDLQ(t, queue.Config{Memory: true, MaxDeliver: 3})
	var calls atomic.Int32
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, `{"message":"overloaded"}`)
	}))
	t.Cleanup(up.Close)
	client, err := laas.NewClient(laas.Config{BaseURL: up.URL, ProjectCode: "project", APIKey: "key"}, up.Client())
	if err != nil {
		t.Fatal(err)
	}
	catalog, err := schema.NewCatalog([]schema.Model{{Alias: "m", LaaSModel: "claude-4-sonnet", PresetHash: "p1", ServiceType: "ANTHROPIC"}})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	ctx, cancel := context.WithCancel(context.Background())
	stopWatch, err := f.dead.WatchMaxDeliveries(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := worker.NewPool(worker.Config{Concurrency: 4, RetryBase: 10 * time.Millisecond, RetryMax: 20 * time.Millisecond},
		f.q.JS, f.q.Consumer, client, catalog, log, worker.WithDeadLetters(f.dead))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- pool.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; stopWatch() })

	replies, err := f.q.Conn.SubscribeSync("laas.reply.e2e.*")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	data, _ := json.Marshal(schema.Envelope{ID: "e2e-1", Model: "m", EnqueuedAt: now, Deadline: now.Add(time.Minute),
		Request: json.RawMessage(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`)})
	msg := nats.NewMsg(schema.SubjectInteractive)
	msg.Data = data
	msg.Header.Set(schema.HeaderReplyTo, "laas.reply.e2e.e2e-1")
	if _, err := f.q.JS.PublishMsg(ctx, msg); err != nil {
		t.Fatal(err)
	}
	m, err := replies.NextMsg(20 * time.Second)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	var rep schema.Reply
	if err := json.Unmarshal(m.Data, &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Status != http.StatusServiceUnavailable || rep.Error == nil || rep.Attempts != 3 {
		t.Fatalf("answer %+v, want LaaS's 503 after 3 attempts", rep)
	}

	out, stderr, err := f.dlq(t, "list")
	if err != nil {
		t.Fatalf("dlq list: %v\n%s", err, stderr)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("dlq list:\n%s\nwant a header and one row", out)
	}
	row := strings.Fields(lines[1])
	if len(row) < 6 || row[0] != "e2e-1" || row[1] != "m" || row[2] != "503" || row[3] != "3" ||
		!strings.HasPrefix(strings.Join(row[5:], " "), oneLine(rep.Error.Message, reasonWidth)) {
		t.Errorf("dlq list row %q; answer was %+v", lines[1], rep.Error)
	}
	out, _, err = f.dlq(t, "list", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var recs []schema.DeadLetterRecord
	if err := json.Unmarshal([]byte(out), &recs); err != nil || len(recs) != 1 {
		t.Fatalf("dlq list --json: %v\n%s", err, out)
	}
	r := recs[0]
	if r.Attempts != 3 || r.Reason.Status != 503 || r.Reason.Error.Message != rep.Error.Message || r.Reason.Error.Type != rep.Error.Type ||
		!bytes.Equal(r.Request, []byte(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`)) {
		t.Errorf("dead letter %+v; answer %+v", r, rep.Error)
	}
	if n := calls.Load(); n != 3 {
		t.Errorf("LaaS called %d times, want 3", n)
	}
}

// A dead letter of a virtual key's request is replayed as that key's (its
// owner kept, judged by the key as it is now); one of a key deleted since
// is refused, and its dead letter kept.
func TestDLQReplayKeepsItsKey(t *testing.T) {
	f := startDLQ(t, queue.Config{Memory: true})
	ctx := context.Background()
	store, err := keys.Open(ctx, f.q.JS, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	_, live, err := store.Generate(ctx, "", keys.Params{})
	if err != nil {
		t.Fatal(err)
	}
	// Kept as the worker keeps them, with the owner of the request.
	for _, dl := range []worker.DeadLetter{
		withOwner(f.keep(t, "req-live", "m", 503, 3, dlqT0, "busy", nil), live.Token),
		withOwner(f.keep(t, "req-gone", "m", 503, 3, dlqT0, "busy", nil), keys.Hash("sk-deleted")),
	} {
		dl.Envelope.ID += "-k"
		if err := f.dead.DeadLetter(ctx, dl); err != nil {
			t.Fatal(err)
		}
	}
	if _, stderr, err := f.dlq(t, "replay", "req-live-k"); err != nil {
		t.Fatalf("replay of a live key's dead letter: %v\n%s", err, stderr)
	}
	jobs := batchJobs(t, f.q.JS)
	if len(jobs) != 1 {
		t.Fatalf("%d jobs queued, want 1", len(jobs))
	}
	var env schema.Envelope
	if err := json.Unmarshal(jobs[0].Data, &env); err != nil || env.Owner != live.Token {
		t.Errorf("replayed envelope owner %q (%v), want the key's token", env.Owner, err)
	}
	_, _, err = f.dlq(t, "replay", "req-gone-k")
	if err == nil || !strings.Contains(err.Error(), "no longer exists") {
		t.Errorf("replay of a deleted key's dead letter: %v; want it refused", err)
	}
	if out, _, _ := f.dlq(t, "list"); !strings.Contains(out, "req-gone-k") {
		t.Errorf("the refused dead letter is gone:\n%s", out)
	}
}

func withOwner(dl worker.DeadLetter, owner string) worker.DeadLetter {
	dl.Envelope.Owner = owner
	return dl
}
