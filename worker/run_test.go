package worker

import (
	"context"
	"encoding/json"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/laas-bridge/laas-bridge/queue"
	"github.com/laas-bridge/laas-bridge/queue/queuetest"
	"github.com/laas-bridge/laas-bridge/schema"
)

// TestRunnersStart: a job pulled before shutdown runs in its slot; one
// that arrives from a pull after shutdown began is handed back at once
// (Nak), not run and not left to AckWait.
func TestRunnersStart(t *testing.T) {
	for _, tc := range []struct {
		name     string
		shutdown bool
		started  bool
		acks     string
	}{
		{"before shutdown: runs", false, true, "[]"},
		{"after shutdown began: handed back", true, false, "[nak]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newStepFixture(t)
			ran := make(chan *job, 1)
			f.p.handler = func(_ context.Context, j *job) { ran <- j }
			r := &runners{p: f.p, work: context.Background(), slots: make(chan struct{}, 1), idle: make(chan jetstream.Msg), quit: make(chan struct{})}
			defer close(r.quit)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tc.shutdown {
				cancel()
			}
			msg := &fakeMsg{subject: schema.SubjectInteractive}
			r.slots <- struct{}{} // the puller's reservation
			if got := r.start(ctx, msg); got != tc.started {
				t.Fatalf("start = %v, want %v", got, tc.started)
			}
			if tc.started {
				select {
				case j := <-ran:
					if j.msg != msg {
						t.Error("another message ran")
					}
				case <-time.After(10 * time.Second):
					t.Fatal("the job did not run within 10s")
				}
				r.wg.Wait() // the slot is given back
			}
			if got := msg.settled(); got != tc.acks {
				t.Errorf("settled %s, want %s", got, tc.acks)
			}
		})
	}
}

// TestPoolShutdownHandsBackAbandonedCalls: a call still running when
// shutdown's grace is over is abandoned and its job handed back at once
// (Nak), so another worker runs it as its second attempt. Without the Nak
// the job would come back only after AckWait (a minute here) or be
// answered with the abandoned call's error.
func TestPoolShutdownHandsBackAbandonedCalls(t *testing.T) {
	const ackWait = time.Minute
	q := queuetest.Start(t, queue.Config{Memory: true, MaxDeliver: 3, AckWait: ackWait})
	slow := &blockingUpstream{limit: 10 * ackWait}
	a, err := NewPool(Config{ShutdownGrace: 100 * time.Millisecond}, q.JS, q.Consumer, slow, catalog(t), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	sub, err := q.Conn.SubscribeSync("laas.reply.test.*")
	if err != nil {
		t.Fatal(err)
	}
	f := &poolFixture{q: q, replies: sub}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	f.publish(t, "r1", "m", 10*time.Minute, hello)
	waitUntil(t, "the slow call to start", func() bool {
		slow.mu.Lock()
		defer slow.mu.Unlock()
		return !slow.deadline.IsZero()
	})
	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(ackWait / 2):
		t.Fatal("Run did not return after its shutdown grace")
	}

	up := &recorder{}
	runPool(t, q, up, Config{})
	m, err := sub.NextMsg(ackWait / 3) // well before AckWait could redeliver it
	if err != nil {
		t.Fatalf("the abandoned job was not run again within %s: %v", ackWait/3, err)
	}
	var r schema.Reply
	if err := json.Unmarshal(m.Data, &r); err != nil {
		t.Fatal(err)
	}
	if r.ID != "r1" || r.Status != 200 || r.Attempts != 2 || up.count() != 1 {
		t.Errorf("reply %s status %d attempt %d, LaaS calls %d; want r1 answered 200 by the second attempt", r.ID, r.Status, r.Attempts, up.count())
	}
}
