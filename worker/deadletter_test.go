package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/laas-bridge/laas-bridge/laas"
	"github.com/laas-bridge/laas-bridge/queue"
	"github.com/laas-bridge/laas-bridge/queue/queuetest"
	"github.com/laas-bridge/laas-bridge/schema"
)

// startDead runs a queue provisioned with cfg and a DeadLetters on it.
func startDead(t *testing.T, cfg queue.Config) (*queuetest.Queue, *DeadLetters) {
	t.Helper()
	q := queuetest.Start(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d, err := NewDeadLetters(ctx, q.JS, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return q, d
}

// deadMsgs returns every message on the dead-letter stream, oldest first.
func deadMsgs(t *testing.T, js jetstream.JetStream) []*jetstream.RawStreamMsg {
	t.Helper()
	ctx := context.Background()
	s, err := js.Stream(ctx, schema.StreamDead)
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
		out = append(out, m)
	}
	return out
}

func decodeRecord(t *testing.T, m *jetstream.RawStreamMsg) schema.DeadLetterRecord {
	t.Helper()
	var r schema.DeadLetterRecord
	if err := json.Unmarshal(m.Data, &r); err != nil {
		t.Fatalf("dead letter %q: %v", m.Data, err)
	}
	return r
}

func sampleDeadLetter() DeadLetter {
	seoul := time.FixedZone("KST", 9*3600)
	enq := time.Date(2026, 1, 2, 12, 4, 5, 0, seoul) // 03:04:05Z
	return DeadLetter{
		Envelope: schema.Envelope{ID: "req-1", Model: "m", EnqueuedAt: enq, Deadline: enq.Add(10 * time.Minute),
			Request: json.RawMessage(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`)},
		Reason:      schema.ErrorDetail{Message: "LaaS answered HTTP 503.", Type: schema.TypeUpstream, Code: new(schema.CodeUpstreamError)},
		Status:      http.StatusServiceUnavailable,
		Attempts:    3,
		LastAttempt: enq.Add(2500 * time.Millisecond),
		FailedAt:    enq.Add(3 * time.Second),
	}
}

func TestDeadLetterRecordIsExact(t *testing.T) {
	q, d := startDead(t, queue.Config{Memory: true})
	dl := sampleDeadLetter()
	if err := d.DeadLetter(context.Background(), dl); err != nil {
		t.Fatal(err)
	}
	msgs := deadMsgs(t, q.JS)
	if len(msgs) != 1 {
		t.Fatalf("%d dead letters, want 1", len(msgs))
	}
	m := msgs[0]
	const want = `{"id":"req-1","model":"m","request":{"model":"m","messages":[{"role":"user","content":"hi"}]},` +
		`"reason":{"status":503,"error":{"message":"LaaS answered HTTP 503.","type":"upstream_error","param":null,"code":"upstream_error"}},` +
		`"attempts":3,"enqueued_at":"2026-01-02T03:04:05Z","deadline":"2026-01-02T03:14:05Z",` +
		`"last_attempt":"2026-01-02T03:04:07.5Z","failed_at":"2026-01-02T03:04:08Z"}`
	if string(m.Data) != want {
		t.Errorf("record\n got %s\nwant %s", m.Data, want)
	}
	if m.Subject != "laas.dead.req-1" {
		t.Errorf("subject %q, want laas.dead.req-1", m.Subject)
	}
	wantID := "req-1@" + strconv.FormatInt(dl.Envelope.EnqueuedAt.UnixNano(), 10)
	if got := m.Header.Get(schema.HeaderMsgID); got != wantID {
		t.Errorf("Nats-Msg-Id %q, want %q", got, wantID)
	}
}

func TestDeadLetterDedupe(t *testing.T) {
	q, d := startDead(t, queue.Config{Memory: true})
	ctx := context.Background()
	dl := sampleDeadLetter()
	for range 2 { // the pool and the max-deliveries watcher may both keep one job
		if err := d.DeadLetter(ctx, dl); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(deadMsgs(t, q.JS)); n != 1 {
		t.Fatalf("the same job kept twice: %d dead letters, want 1", n)
	}
	// A replayed job is enqueued afresh; failing again, it is kept again.
	replayed := dl
	replayed.Envelope.EnqueuedAt = dl.FailedAt.Add(time.Minute)
	replayed.Reason.Message = "LaaS answered HTTP 503 again."
	if err := d.DeadLetter(ctx, replayed); err != nil {
		t.Fatal(err)
	}
	msgs := deadMsgs(t, q.JS)
	if len(msgs) != 2 {
		t.Fatalf("%d dead letters after the replay failed, want 2", len(msgs))
	}
	if r := decodeRecord(t, msgs[1]); r.ID != "req-1" || r.Reason.Error.Message != "LaaS answered HTTP 503 again." {
		t.Errorf("second dead letter %+v", r)
	}
}

func TestDeadLetterLargeBody(t *testing.T) {
	q, d := startDead(t, queue.Config{Memory: true})
	ctx := context.Background()
	half := int(q.Conn.MaxPayload() / 2)
	body := func(n int) []byte { // a request of exactly n bytes
		const head, tail = `{"model":"m","messages":[{"role":"user","content":"`, `"}]}`
		return []byte(head + strings.Repeat("x", n-len(head)-len(tail)) + tail)
	}
	for _, tc := range []struct {
		name, id string
		body     []byte
		inline   bool
	}{
		{"small", "small", []byte(`{"model":"m"}`), true},
		{"half the max payload stays inline", "fits", body(half), true},
		{"over half the max payload", "big", body(half + 1), false},
		{"much larger than a message", "huge", body(3 * int(q.Conn.MaxPayload())), false},
		{"not JSON", "odd", []byte("not json at all"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dl := sampleDeadLetter()
			dl.Envelope.ID, dl.Envelope.Request = tc.id, tc.body
			dl.Envelope.RequestRef = tc.id // as a job whose body came through the store
			if err := d.DeadLetter(ctx, dl); err != nil {
				t.Fatal(err)
			}
			s, _ := q.JS.Stream(ctx, schema.StreamDead)
			m, err := s.GetLastMsgForSubject(ctx, "laas.dead."+tc.id)
			if err != nil {
				t.Fatal(err)
			}
			if int64(len(m.Data)) > q.Conn.MaxPayload() {
				t.Errorf("dead letter of %d bytes, over the max payload", len(m.Data))
			}
			r := decodeRecord(t, m)
			if tc.inline {
				if r.RequestRef != "" || !bytes.Equal(r.Request, tc.body) {
					t.Errorf("request %s ref %q, want it inline", r.Request, r.RequestRef)
				}
				return
			}
			if r.RequestRef != tc.id+".dead" || r.Request != nil {
				t.Fatalf("request_ref %q request %q; want %s.dead and no inline request", r.RequestRef, r.Request, tc.id)
			}
			bodies, _ := q.JS.ObjectStore(ctx, schema.BucketBodies)
			got, err := bodies.GetBytes(ctx, r.RequestRef)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tc.body) {
				t.Errorf("stored body of %d bytes, want %d", len(got), len(tc.body))
			}
		})
	}
}

func TestDeadLetterAfterMaxDeliveries(t *testing.T) {
	q, d := startDead(t, queue.Config{Memory: true, MaxDeliver: 2})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// A tiny AckWait (below what queue.Config allows) makes redeliveries quick.
	cc := queue.Config{Memory: true, MaxDeliver: 2}.ConsumerConfig()
	cc.AckWait = 200 * time.Millisecond
	cons, err := q.JS.CreateOrUpdateConsumer(ctx, schema.StreamRequests, cc)
	if err != nil {
		t.Fatal(err)
	}
	ledger := &fakeLedger{}
	DeadLettersWithKeyLedger(ledger)(d)
	stop, err := d.WatchMaxDeliveries(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)

	// Two jobs: one inline (a virtual key's), one whose body came through
	// the object store.
	bodies, _ := q.JS.ObjectStore(ctx, schema.BucketBodies)
	enq := time.Now().UTC().Truncate(time.Millisecond)
	bigBody := []byte(`{"model":"m","messages":[{"role":"user","content":"large"}]}`)
	if _, err := bodies.PutBytes(ctx, "stuck-2", bigBody); err != nil {
		t.Fatal(err)
	}
	envs := []schema.Envelope{
		{ID: "stuck-1", Model: "m", Owner: "tok", EnqueuedAt: enq, Deadline: enq.Add(time.Hour), Request: json.RawMessage(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`)},
		{ID: "stuck-2", Model: "m", EnqueuedAt: enq, Deadline: enq.Add(time.Hour), RequestRef: "stuck-2"},
	}
	for _, env := range envs {
		data, _ := json.Marshal(env)
		if _, err := q.JS.Publish(ctx, schema.SubjectInteractive, data, jetstream.WithMsgID(env.ID)); err != nil {
			t.Fatal(err)
		}
	}

	// A worker that hangs on every job: it takes them and never acks.
	var mu sync.Mutex
	deliveries := map[string]int{}
	consumed, err := cons.Consume(func(m jetstream.Msg) {
		var env schema.Envelope
		_ = json.Unmarshal(m.Data(), &env)
		mu.Lock()
		deliveries[env.ID]++
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer consumed.Stop()

	var msgs []*jetstream.RawStreamMsg
	for msgs = deadMsgs(t, q.JS); len(msgs) < 2; msgs = deadMsgs(t, q.JS) {
		if ctx.Err() != nil {
			t.Fatalf("%d dead letters after 30s, want 2", len(msgs))
		}
		time.Sleep(50 * time.Millisecond)
	}
	// No worker finished the key's job, so none settled it: the rescue
	// releases its parallel lease (after keeping the dead letter).
	for settled := ""; settled != "[tok/<nil>/stuck-1]"; time.Sleep(20 * time.Millisecond) {
		ledger.mu.Lock()
		settled = fmt.Sprint(ledger.calls)
		ledger.mu.Unlock()
		if ctx.Err() != nil {
			t.Fatalf("key settles after the rescue: %s, want the key's job released once", settled)
		}
	}
	got := map[string]schema.DeadLetterRecord{}
	for _, m := range msgs {
		r := decodeRecord(t, m)
		got[r.ID] = r
	}
	for _, env := range envs {
		r, ok := got[env.ID]
		if !ok {
			t.Errorf("no dead letter for %s", env.ID)
			continue
		}
		if r.Attempts != 2 || r.Reason.Status != http.StatusInternalServerError || r.Reason.Error.Type != schema.TypeServer ||
			r.Reason.Error.Code == nil || *r.Reason.Error.Code != schema.CodeMaxDeliveries ||
			!strings.HasPrefix(r.Reason.Error.Message, "max deliveries reached") {
			t.Errorf("%s: attempts %d, reason %+v (code %v)", env.ID, r.Attempts, r.Reason, r.Reason.Error.Code)
		}
		if !r.EnqueuedAt.Equal(env.EnqueuedAt) || !r.Deadline.Equal(env.Deadline) || !r.LastAttempt.IsZero() ||
			r.FailedAt.Before(enq) || r.FailedAt.After(time.Now()) {
			t.Errorf("%s: timings enqueued %s deadline %s last %s failed %s", env.ID, r.EnqueuedAt, r.Deadline, r.LastAttempt, r.FailedAt)
		}
		wantReq := []byte(env.Request)
		if env.RequestRef != "" {
			wantReq = bigBody
		}
		if !bytes.Equal(r.Request, wantReq) || r.RequestRef != "" {
			t.Errorf("%s: request %s ref %q, want %s inline", env.ID, r.Request, r.RequestRef, wantReq)
		}
	}

	// The jobs are gone from the request stream, and so is the large body.
	for {
		s, err := q.JS.Stream(ctx, schema.StreamRequests)
		if err != nil {
			t.Fatal(err)
		}
		if s.CachedInfo().State.Msgs == 0 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("%d jobs left in the request stream", s.CachedInfo().State.Msgs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The body is deleted just after the job: wait for it too.
	for {
		_, err := bodies.GetInfo(ctx, "stuck-2")
		if errors.Is(err, jetstream.ErrObjectNotFound) {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("large body after the rescue: %v, want not found", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, env := range envs {
		if deliveries[env.ID] != 2 {
			t.Errorf("%s delivered %d times, want 2 (MaxDeliver)", env.ID, deliveries[env.ID])
		}
	}
}

// failingUpstream answers every call with an upstream error.
type failingUpstream struct{ err error }

func (f failingUpstream) Complete(context.Context, *schema.LaaSRequest) (*schema.LaaSResponse, error) {
	return nil, f.err
}

func TestPoolKeepsDeadLetterWhenRetriesRunOut(t *testing.T) {
	q, d := startDead(t, queue.Config{Memory: true, MaxDeliver: 3})
	cat, err := schema.NewCatalog([]schema.Model{{Alias: "m", LaaSModel: "claude-4-sonnet", PresetHash: "p1", ServiceType: "ANTHROPIC"}})
	if err != nil {
		t.Fatal(err)
	}
	up := failingUpstream{&laas.UpstreamError{Status: http.StatusServiceUnavailable, Body: `{"message":"busy"}`}}
	p, err := NewPool(Config{RetryBase: 10 * time.Millisecond, RetryMax: 20 * time.Millisecond}, q.JS, q.Consumer, up, cat,
		slog.New(slog.DiscardHandler), WithDeadLetters(d))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	replies, err := q.Conn.SubscribeSync("laas.reply.test.*")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	data, _ := json.Marshal(schema.Envelope{ID: "doomed", Model: "m", EnqueuedAt: now, Deadline: now.Add(time.Minute),
		Request: json.RawMessage(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`)})
	msg := nats.NewMsg(schema.SubjectInteractive)
	msg.Data = data
	msg.Header.Set(schema.HeaderReplyTo, "laas.reply.test.doomed")
	if _, err := q.JS.PublishMsg(ctx, msg); err != nil {
		t.Fatal(err)
	}
	m, err := replies.NextMsg(10 * time.Second)
	if err != nil {
		t.Fatalf("no reply: %v", err)
	}
	var rep schema.Reply
	if err := json.Unmarshal(m.Data, &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Status != http.StatusServiceUnavailable || rep.Attempts != 3 || rep.Error == nil {
		t.Fatalf("reply %+v, want the last upstream error after 3 attempts", rep)
	}
	msgs := deadMsgs(t, q.JS) // kept before the caller is answered
	if len(msgs) != 1 {
		t.Fatalf("%d dead letters, want 1", len(msgs))
	}
	r := decodeRecord(t, msgs[0])
	if r.ID != "doomed" || r.Model != "m" || r.Attempts != 3 || r.Reason.Status != rep.Status || r.Reason.Error.Message != rep.Error.Message ||
		r.LastAttempt.IsZero() || r.FailedAt.Before(r.LastAttempt) || !r.EnqueuedAt.Equal(now.UTC().Round(0)) {
		t.Errorf("dead letter %+v\nreply %+v", r, rep)
	}
}

func TestDeadLetterReadsAnUnreadBody(t *testing.T) {
	// A job that failed before its large body was read from the store.
	q, d := startDead(t, queue.Config{Memory: true})
	ctx := context.Background()
	bodies, _ := q.JS.ObjectStore(ctx, schema.BucketBodies)
	body := []byte(`{"model":"m","messages":[{"role":"user","content":"stored"}]}`)
	if _, err := bodies.PutBytes(ctx, "unread", body); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		id   string
		want []byte
	}{{"unread", body}, {"gone", nil}} {
		dl := sampleDeadLetter()
		dl.Envelope.ID, dl.Envelope.Request, dl.Envelope.RequestRef = tc.id, nil, tc.id
		if err := d.DeadLetter(ctx, dl); err != nil {
			t.Fatalf("%s: %v", tc.id, err)
		}
		s, _ := q.JS.Stream(ctx, schema.StreamDead)
		m, err := s.GetLastMsgForSubject(ctx, "laas.dead."+tc.id)
		if err != nil {
			t.Fatal(err)
		}
		if r := decodeRecord(t, m); !bytes.Equal(r.Request, tc.want) || r.RequestRef != "" {
			t.Errorf("%s: request %q ref %q, want %q inline", tc.id, r.Request, r.RequestRef, tc.want)
		}
	}
}
