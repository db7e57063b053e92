package admission

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/laas-bridge/laas-bridge/queue"
	"github.com/laas-bridge/laas-bridge/queue/queuetest"
	"github.com/laas-bridge/laas-bridge/schema"
)

// openCore starts a queue provisioned with qcfg and opens a core on it.
func openCore(t *testing.T, qcfg queue.Config, cfg Config) (*Core, *queuetest.Queue) {
	t.Helper()
	q := queuetest.Start(t, qcfg)
	catalog, err := schema.NewCatalog([]schema.Model{{Alias: "m", LaaSModel: "claude-4-sonnet", PresetHash: "p"}})
	if err != nil {
		t.Fatal(err)
	}
	c, err := Open(context.Background(), cfg, q.JS, catalog, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return c, q
}

// admit checks and admits r.
func admit(t *testing.T, c *Core, r Request) (Ticket, error) {
	t.Helper()
	ck, err := c.Check(r)
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	return c.Admit(context.Background(), ck)
}

// queued returns the messages on subject in the request stream.
func queued(t *testing.T, js jetstream.JetStream, subject string) []*jetstream.RawStreamMsg {
	t.Helper()
	ctx := context.Background()
	s, err := js.Stream(ctx, schema.StreamRequests)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err == nil && m.Subject == subject {
			out = append(out, m)
		}
	}
	return out
}

func envelopeOf(t *testing.T, m *jetstream.RawStreamMsg) schema.Envelope {
	t.Helper()
	var env schema.Envelope
	if err := json.Unmarshal(m.Data, &env); err != nil {
		t.Fatal(err)
	}
	return env
}

// A waiting caller's request is published on its lane with the door's
// reply subject, its own Nats-Msg-Id, and an envelope the core filled.
func TestAdmitPublishes(t *testing.T) {
	c, q := openCore(t, queue.Config{Memory: true}, Config{})
	before := time.Now()
	tk, err := admit(t, c, Request{ID: "r1", Door: DoorChat, Body: []byte(chat), Timeout: 30 * time.Second, ReplyTo: "laas.reply.gw1.r1"})
	if err != nil {
		t.Fatal(err)
	}
	if tk.Duplicate || tk.Answer != nil || tk.Subject != schema.SubjectInteractive || tk.Deadline.Sub(tk.EnqueuedAt) != 30*time.Second || tk.EnqueuedAt.Before(before) {
		t.Errorf("ticket %+v", tk)
	}
	msgs := queued(t, q.JS, schema.SubjectInteractive)
	if len(msgs) != 1 {
		t.Fatalf("%d messages on the interactive lane, want 1", len(msgs))
	}
	m := msgs[0]
	if m.Header.Get(schema.HeaderReplyTo) != "laas.reply.gw1.r1" || m.Header.Get(schema.HeaderMsgID) != "req.r1" {
		t.Errorf("headers %v", m.Header)
	}
	env := envelopeOf(t, m)
	if env.ID != "r1" || env.Model != "m" || string(env.Request) != chat || env.RequestRef != "" || env.IdempotencyKey != "" || env.Job ||
		!env.Deadline.Equal(tk.Deadline) {
		t.Errorf("envelope %+v", env)
	}
}

// A body over InlineMax goes to the object store under the request's own
// id, the only reference a worker takes.
func TestAdmitClaimCheck(t *testing.T) {
	c, q := openCore(t, queue.Config{Memory: true}, Config{InlineMax: 16})
	if _, err := admit(t, c, Request{ID: "big1", Door: DoorChat, Body: []byte(chat), Lane: Batch}); err != nil {
		t.Fatal(err)
	}
	msgs := queued(t, q.JS, schema.SubjectBatch)
	if len(msgs) != 1 {
		t.Fatalf("%d messages on the batch lane, want 1", len(msgs))
	}
	env := envelopeOf(t, msgs[0])
	if env.RequestRef != "big1" || len(env.Request) != 0 {
		t.Fatalf("envelope request_ref %q, %d bytes inline; want big1, none", env.RequestRef, len(env.Request))
	}
	got, err := c.bodies.GetBytes(context.Background(), "big1")
	if err != nil || string(got) != chat {
		t.Errorf("stored body %q, %v", got, err)
	}
}

// The same idempotency key and body: the second request is a duplicate
// (it waits for the first's answer; its own large body is dropped), and
// once an answer is kept, it is the answer and nothing is queued.
func TestAdmitIdempotency(t *testing.T) {
	c, q := openCore(t, queue.Config{Memory: true}, Config{InlineMax: 16})
	ctx := context.Background()
	first, err := admit(t, c, Request{ID: "r1", Door: DoorChat, Body: []byte(chat), IdempotencyKey: "k"})
	if err != nil || first.Duplicate {
		t.Fatalf("first: %+v, %v", first, err)
	}
	second, err := admit(t, c, Request{ID: "r2", Door: DoorMicro, Body: []byte(chat), IdempotencyKey: "k"})
	if err != nil || !second.Duplicate {
		t.Fatalf("second: %+v, %v; want a duplicate", second, err)
	}
	if _, err := c.bodies.GetInfo(ctx, "r2"); !errors.Is(err, jetstream.ErrObjectNotFound) {
		t.Errorf("the duplicate's body: %v; want it dropped", err)
	}
	if _, err := c.bodies.GetInfo(ctx, "r1"); err != nil {
		t.Errorf("the first request's body: %v; want it kept", err)
	}
	msgs := queued(t, q.JS, schema.SubjectInteractive)
	if len(msgs) != 1 || !strings.HasPrefix(msgs[0].Header.Get(schema.HeaderMsgID), "idem.caller.") {
		t.Fatalf("%d queued; want the first only, with an idem.caller.<hash> Nats-Msg-Id", len(msgs))
	}
	key := envelopeOf(t, msgs[0]).IdempotencyKey
	if _, err := c.answers.Put(ctx, key, []byte(`{"id":"r1","status":200}`)); err != nil {
		t.Fatal(err)
	}
	third, err := admit(t, c, Request{ID: "r3", Door: DoorChat, Body: []byte(chat), IdempotencyKey: "k"})
	if err != nil || string(third.Answer) != `{"id":"r1","status":200}` {
		t.Fatalf("third: %+v, %v; want the kept answer", third, err)
	}
	if n := len(queued(t, q.JS, schema.SubjectInteractive)); n != 1 {
		t.Errorf("%d queued after the kept answer; want still 1", n)
	}
}

// A recorded job is queued once: its state first, then the lane.
func TestAdmitJob(t *testing.T) {
	c, q := openCore(t, queue.Config{Memory: true}, Config{})
	r := Request{ID: "j1", Door: DoorJobs, Body: []byte(chat), Job: &Job{Record: true, ResultsSubject: "laas.results.app.j1"}}
	tk, err := admit(t, c, r)
	if err != nil || tk.Duplicate || tk.JobState.Status != schema.JobQueued || tk.JobState.ResultsSubject != "laas.results.app.j1" {
		t.Fatalf("first: %+v, %v", tk, err)
	}
	if tk, err = admit(t, c, r); err != nil || !tk.Duplicate {
		t.Fatalf("again: %+v, %v; want a duplicate", tk, err)
	}
	msgs := queued(t, q.JS, schema.SubjectBatch)
	if len(msgs) != 1 || msgs[0].Header.Get(schema.HeaderMsgID) != "job.j1" {
		t.Fatalf("%d queued; want one, Nats-Msg-Id job.j1", len(msgs))
	}
	if env := envelopeOf(t, msgs[0]); !env.Job || env.ResultsSubject != "laas.results.app.j1" || env.IdempotencyKey != "" {
		t.Errorf("envelope %+v", env)
	}
}

// The multimodal check runs in Admit, unless the door kept its outcome.
func TestAdmitChecksMediaOnce(t *testing.T) {
	c, q := openCore(t, queue.Config{Memory: true}, Config{})
	img := `{"type":"image_url","image_url":{"url":"data:image/gif;base64,R0lGODlh"}}`
	body := `{"model":"m","messages":[{"role":"user","content":[` + img + `]}]}`
	_, err := admit(t, c, Request{ID: "r1", Door: DoorChat, Body: []byte(body)})
	var e *schema.Error
	if !errors.As(err, &e) || e.Status != 400 || e.Param != "messages[0].content[0]" {
		t.Fatalf("Admit = %v; want the multimodal refusal", err)
	}
	if _, err := admit(t, c, Request{ID: "r2", Door: DoorBatch, Body: []byte(body), MediaChecked: true}); err != nil {
		t.Fatalf("Admit with MediaChecked = %v", err)
	}
	if n := len(queued(t, q.JS, schema.SubjectInteractive)); n != 1 {
		t.Errorf("%d queued; want only the request whose media the door checked", n)
	}
}

// A full queue is a 429 queue_full; a queue that does not answer a 503
// queue_unavailable once PublishTimeout ends; a caller who left, 499.
func TestAdmitQueueErrors(t *testing.T) {
	t.Run("full", func(t *testing.T) {
		c, _ := openCore(t, queue.Config{Memory: true, MaxMsgs: 1}, Config{})
		if _, err := admit(t, c, Request{ID: "r1", Door: DoorChat, Body: []byte(chat)}); err != nil {
			t.Fatal(err)
		}
		_, err := admit(t, c, Request{ID: "r2", Door: DoorChat, Body: []byte(chat)})
		var e *schema.Error
		if !errors.As(err, &e) || e.Status != 429 || e.Code != schema.CodeQueueFull || e.RetryAfter != 1 {
			t.Errorf("Admit to a full queue = %v; want 429 queue_full", err)
		}
	})
	t.Run("unavailable", func(t *testing.T) {
		c, q := openCore(t, queue.Config{Memory: true}, Config{PublishTimeout: 500 * time.Millisecond})
		if err := q.JS.DeleteStream(context.Background(), schema.StreamRequests); err != nil {
			t.Fatal(err)
		}
		_, err := admit(t, c, Request{ID: "r1", Door: DoorChat, Body: []byte(chat)})
		var e *schema.Error
		if !errors.As(err, &e) || e.Status != 503 || e.Code != schema.CodeQueueUnavailable {
			t.Errorf("Admit with no stream = %v; want 503 queue_unavailable", err)
		}
	})
	t.Run("caller gone", func(t *testing.T) {
		c, _ := openCore(t, queue.Config{Memory: true}, Config{})
		ck, err := c.Check(Request{ID: "r1", Door: DoorChat, Body: []byte(chat)})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err = c.Admit(ctx, ck)
		var e *schema.Error
		if !errors.As(err, &e) || e.Status != StatusClientClosed {
			t.Errorf("Admit for a caller who left = %v; want 499", err)
		}
	})
}

// TestCoreBoundsPDFReads: the core checks media with one Checker of
// GOMAXPROCS slots, shared by every door, so the PDFs being read at once
// in the process are bounded (multimodal's TestCheckerBoundsConcurrentReads
// tests the bound itself).
func TestCoreBoundsPDFReads(t *testing.T) {
	c, _ := openCore(t, queue.Config{Memory: true}, Config{})
	if got, want := c.media.Slots(), runtime.GOMAXPROCS(0); got != want {
		t.Fatalf("the core's media checker has %d slots, want GOMAXPROCS (%d)", got, want)
	}
}
