package worker

import (
	"context"
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
	if n := count(); n > after+1 {    // one tick may race the stop
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
