package worker

import (
	"context"
	"encoding/json"
	"log/slog"
	"testing"
	"time"

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
			r := newRunners(f.p, context.Background(), 1)
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

// TestRunnersKeepAtMostMaxIdle: after a burst of jobs, at most maxIdle
// runners stay to wait for the next job; the others exit at once rather
// than hold their stacks for runnerIdle (an hour here, so only the cap can
// make them exit). After the next job, maxIdle still wait.
func TestRunnersKeepAtMostMaxIdle(t *testing.T) {
	const burst, maxIdle = 6, 2
	f := newStepFixture(t)
	release := make(chan struct{})
	ran := make(chan *job, burst+1)
	f.p.handler = func(_ context.Context, j *job) { ran <- j; <-release }
	r := newRunners(f.p, context.Background(), burst)
	r.idleFor, r.maxIdle = time.Hour, maxIdle
	defer close(r.quit)
	for range burst {
		r.slots <- struct{}{}
		if !r.start(context.Background(), &fakeMsg{subject: schema.SubjectInteractive}) {
			t.Fatal("start refused a job before shutdown")
		}
	}
	for i := range burst {
		select {
		case <-ran:
		case <-time.After(10 * time.Second):
			t.Fatalf("%d of %d jobs ran within 10s", i, burst)
		}
	}
	if got := r.alive.Load(); got != burst {
		t.Fatalf("%d runners alive during the burst, want %d", got, burst)
	}
	close(release)
	r.wg.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for r.alive.Load() != maxIdle || r.idling.Load() != maxIdle {
		if time.Now().After(deadline) {
			t.Fatalf("after the burst %d runners alive and %d idle, want %d and %d", r.alive.Load(), r.idling.Load(), maxIdle, maxIdle)
		}
		time.Sleep(time.Millisecond)
	}
	r.slots <- struct{}{}
	r.start(context.Background(), &fakeMsg{subject: schema.SubjectInteractive})
	select {
	case <-ran:
	case <-time.After(10 * time.Second):
		t.Fatal("the next job did not run within 10s")
	}
	r.wg.Wait()
	// It ran on an idle runner, or (when it came as one was about to wait)
	// on a new one that then exits: the idle ones stay at maxIdle.
	for deadline := time.Now().Add(10 * time.Second); r.alive.Load() != maxIdle; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d runners alive after the next job, want %d", r.alive.Load(), maxIdle)
		}
	}
}
