package worker

import (
	"context"
	"encoding/json"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/laas-bridge/laas-bridge/schema"
)

func TestDecode(t *testing.T) {
	now := time.Now().Truncate(time.Millisecond)
	valid := schema.Envelope{ID: "r1", Model: "m", EnqueuedAt: now, Deadline: now.Add(time.Minute), Request: json.RawMessage(hello)}
	with := func(change func(*schema.Envelope)) []byte {
		env := valid
		change(&env)
		data, _ := json.Marshal(env)
		return data
	}
	cases := []struct {
		name    string
		subject string
		data    []byte
		replyTo string
		next    bool
		check   func(t *testing.T, j *job)
	}{
		{"valid interactive", schema.SubjectInteractive, with(func(*schema.Envelope) {}), "laas.reply.test.r1", true, func(t *testing.T, j *job) {
			if j.env.ID != "r1" || j.attempt != 2 || j.lane != LaneInteractive || j.replyTo != "laas.reply.test.r1" || !j.env.Deadline.Equal(valid.Deadline) {
				t.Errorf("job = id %q attempt %d lane %s reply %q deadline %s", j.env.ID, j.attempt, j.lane, j.replyTo, j.env.Deadline)
			}
		}},
		{"batch lane", schema.SubjectBatch, with(func(*schema.Envelope) {}), "", true, func(t *testing.T, j *job) {
			if j.lane != LaneBatch {
				t.Errorf("lane %s, want batch", j.lane)
			}
		}},
		{"no deadline: enqueue time plus the default timeout", schema.SubjectInteractive, with(func(e *schema.Envelope) { e.Deadline = time.Time{} }), "", true, func(t *testing.T, j *job) {
			if want := now.Add(schema.DefaultTimeout); !j.env.Deadline.Equal(want) {
				t.Errorf("deadline %s, want %s", j.env.Deadline, want)
			}
		}},
		{"a job's idempotency key is its id", schema.SubjectBatch, with(func(e *schema.Envelope) { e.Job, e.IdempotencyKey = true, "k" }), "", true, func(t *testing.T, j *job) {
			if j.env.IdempotencyKey != "" {
				t.Errorf("idempotency key %q kept for a job", j.env.IdempotencyKey)
			}
		}},
		{"not JSON", schema.SubjectInteractive, []byte("not an envelope"), "", false, nil},
		{"id that is not a token", schema.SubjectInteractive, with(func(e *schema.Envelope) { e.ID = "a.b" }), "", false, nil},
		{"reply subject outside laas.reply", schema.SubjectInteractive, with(func(*schema.Envelope) {}), "$JS.API.STREAM.DELETE.X", false, nil},
		{"another request's body", schema.SubjectInteractive, with(func(e *schema.Envelope) { e.RequestRef = "other" }), "", false, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newStepFixture(t)
			msg := &fakeMsg{subject: tc.subject, data: tc.data, header: nats.Header{}, delivered: 2}
			msg.header.Set(schema.HeaderReplyTo, tc.replyTo)
			var next nextRecorder
			f.p.decode(next.handle)(context.Background(), &job{msg: msg, attempt: 1, received: now, log: slog.New(slog.DiscardHandler)})
			if got := next.called() == 1; got != tc.next {
				t.Fatalf("next called: %v, want %v", got, tc.next)
			}
			want := "[]"
			if !tc.next {
				want = "[term]"
			}
			if got := msg.settled(); got != want {
				t.Errorf("settled %s, want %s", got, want)
			}
			if tc.check != nil {
				tc.check(t, next.jobs[0])
			}
		})
	}
}
