package worker

import (
	"context"
	"encoding/json"
	"runtime"
	"testing"
	"time"

	"github.com/laas-bridge/laas-bridge/schema"
)

// TestKeepInProgress: while the rest of the delivery runs, the server is
// told it is in progress every AckWait/5, also after the work context
// ended (shutdown abandoned the call: the Nak or the reply still follows);
// once the delivery returns, no more.
func TestKeepInProgress(t *testing.T) {
	f := newStepFixture(t)
	f.p.ackWait = 50 * time.Millisecond // a tick every 10ms
	j, msg := stepJob(t, schema.SubjectInteractive, 1)
	count := func() int {
		msg.mu.Lock()
		defer msg.mu.Unlock()
		return msg.inProgress
	}
	ctx, abandon := context.WithCancel(context.Background())
	f.p.keepInProgress(func(ctx context.Context, _ *job) {
		waitUntil(t, "three InProgress acks during a long step", func() bool { return count() >= 3 })
		abandon()
		<-ctx.Done()
		n := count()
		waitUntil(t, "three more InProgress acks after the work context ended", func() bool { return count() >= n+3 })
	})(ctx, j)
	after := count()
	time.Sleep(50 * time.Millisecond) // five ticks, had it not stopped
	if n := count(); n != after {     // stop waits for the ticking to end
		t.Errorf("%d InProgress acks after the delivery ended", n-after)
	}
}

// TestProgressPeriod: a fifth of AckWait, never more than a second, so a
// job survives four late or lost ticks, and a worker that read a long
// AckWait still holds its jobs when another process lowers it to seconds.
func TestProgressPeriod(t *testing.T) {
	for _, tc := range []struct {
		ackWait, want time.Duration
	}{
		{2 * time.Second, 400 * time.Millisecond},
		{5 * time.Second, time.Second},
		{30 * time.Second, time.Second},
		{time.Hour, time.Second},
	} {
		if got := progressPeriod(tc.ackWait); got != tc.want {
			t.Errorf("progressPeriod(%s) = %s, want %s", tc.ackWait, got, tc.want)
		}
	}
}

// slowLimiter holds every call for delay: a long wait for the shared rate
// limit.
type slowLimiter struct{ delay time.Duration }

func (l slowLimiter) Wait(ctx context.Context, _ schema.Model, _ Lane) error {
	select {
	case <-time.After(l.delay):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (slowLimiter) Throttled(context.Context, time.Duration) {}

// TestPoolHoldsJobThroughLongSteps: a job held past AckWait before its
// LaaS call (here waiting 1.5 AckWait for the rate limit; a large body's
// fetch and a key's rpm slot are in the same span) and in a call as long
// is signalled in progress the whole time: it is delivered once and LaaS
// called once. Only counts are asserted; a stall of four fifths of AckWait
// (1.6 s) could fail it on a busy machine.
func TestPoolHoldsJobThroughLongSteps(t *testing.T) {
	const hold = 3 * time.Second // startPool's AckWait is 2s
	up := &recorder{delay: hold}
	f := startPool(t, up, Config{Concurrency: 2}, WithLimiter(slowLimiter{hold})) // a free slot would take a redelivery
	f.publish(t, "r1", "m", time.Minute, `{"model":"m","messages":[{"role":"user","content":"hi"}]}`)
	m, err := f.replies.NextMsg(time.Minute)
	if err != nil {
		t.Fatalf("no reply within a minute: %v", err)
	}
	var rep schema.Reply
	if err := json.Unmarshal(m.Data, &rep); err != nil || rep.Status != 200 || rep.Attempts != 1 {
		t.Errorf("reply %s: want 200 after 1 delivery (%v)", m.Data, err)
	}
	f.drained(t)
	if n := up.count(); n != 1 {
		t.Errorf("LaaS called %d times, want once", n)
	}
	if extra, err := f.replies.NextMsg(100 * time.Millisecond); err == nil {
		t.Errorf("a second reply: %s", extra.Data)
	}
}

// TestHeartbeatOneGoroutine: a thousand deliveries held at once are
// signalled by one goroutine, not one each; it exits once none is held,
// and a stopped delivery is never signalled again.
func TestHeartbeatOneGoroutine(t *testing.T) {
	h := newHeartbeat(10 * time.Millisecond)
	before := runtime.NumGoroutine()
	const n = 1000
	msgs := make([]*fakeMsg, n)
	stops := make([]func(), n)
	for i := range msgs {
		msgs[i] = &fakeMsg{}
		stops[i] = h.hold(msgs[i])
	}
	if extra := runtime.NumGoroutine() - before; extra > n/10 {
		t.Errorf("%d deliveries held add %d goroutines; want about one", n, extra)
	}
	count := func(m *fakeMsg) int {
		m.mu.Lock()
		defer m.mu.Unlock()
		return m.inProgress
	}
	waitUntil(t, "every delivery signalled twice", func() bool {
		for _, m := range msgs {
			if count(m) < 2 {
				return false
			}
		}
		return true
	})
	for _, stop := range stops {
		stop()
	}
	after := make([]int, n)
	for i, m := range msgs {
		after[i] = count(m)
	}
	waitUntil(t, "the heartbeat to stop with nothing held", func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return !h.running
	})
	for i, m := range msgs {
		if c := count(m); c != after[i] {
			t.Fatalf("delivery %d signalled %d times after its stop", i, c-after[i])
		}
	}
	// Held again, it ticks again.
	m := &fakeMsg{}
	stop := h.hold(m)
	waitUntil(t, "a delivery held after the heartbeat stopped to be signalled", func() bool { return count(m) >= 1 })
	stop()
}
