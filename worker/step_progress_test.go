package worker

import (
	"context"
	"testing"
	"time"

	"github.com/laas-bridge/laas-bridge/schema"
)

// TestKeepInProgress: while the rest of the delivery runs, the server is
// told it is in progress every AckWait/3; once it returns, no more.
func TestKeepInProgress(t *testing.T) {
	f := newStepFixture(t)
	f.p.ackWait = 30 * time.Millisecond // a tick every 10ms
	j, msg := stepJob(t, schema.SubjectInteractive, 1)
	count := func() int {
		msg.mu.Lock()
		defer msg.mu.Unlock()
		return msg.inProgress
	}
	f.p.keepInProgress(func(context.Context, *job) {
		waitUntil(t, "three InProgress acks during a long step", func() bool { return count() >= 3 })
	})(context.Background(), j)
	after := count()
	time.Sleep(50 * time.Millisecond) // five ticks, had it not stopped
	if n := count(); n > after+1 {    // one tick may race the stop
		t.Errorf("%d InProgress acks after the delivery ended", n-after)
	}
}
