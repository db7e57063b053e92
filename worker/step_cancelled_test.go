package worker

import (
	"context"
	"testing"
	"time"

	"github.com/laas-bridge/laas-bridge/schema"
)

func TestSkipCancelled(t *testing.T) {
	for _, tc := range []struct {
		name      string
		cancelled bool
		next      bool
		acks      string
	}{
		{"cancelled before it started: acked, no reply", true, false, "[ack]"},
		{"not cancelled: runs", false, true, "[]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newStepFixture(t)
			j, msg := stepJob(t, schema.SubjectInteractive, 1)
			if tc.cancelled {
				f.p.cancels.cancel("r1", time.Time{}, time.Now())
			}
			var next nextRecorder
			f.p.skipCancelled(next.handle)(context.Background(), j)
			if (next.called() == 1) != tc.next || msg.settled() != tc.acks || len(f.replies(t)) != 0 {
				t.Errorf("next called %d, settled %s, %d replies; want next %v, %s, none", next.called(), msg.settled(), len(f.replies(t)), tc.next, tc.acks)
			}
		})
	}
}
