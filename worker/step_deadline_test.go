package worker

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/laas-bridge/laas-bridge/schema"
)

func TestRefuseLate(t *testing.T) {
	for _, tc := range []struct {
		name     string
		deadline time.Duration // after the delivery's receipt
		next     bool
	}{
		{"deadline passed in the queue: 504", -time.Second, false},
		{"delivered at the deadline: 504", 0, false},
		{"before the deadline: runs", time.Millisecond, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newStepFixture(t)
			j, msg := stepJob(t, schema.SubjectInteractive, 1)
			j.env.Deadline = j.received.Add(tc.deadline)
			var next nextRecorder
			f.p.refuseLate(next.handle)(context.Background(), j)
			if (next.called() == 1) != tc.next {
				t.Fatalf("next called %d times, want %v", next.called(), tc.next)
			}
			if tc.next {
				if len(f.replies(t)) != 0 || msg.settled() != "[]" {
					t.Errorf("a job in time was settled: %s", msg.settled())
				}
				return
			}
			if r := f.onlyReply(t); r.Status != http.StatusGatewayTimeout || code(r) != schema.CodeDeadlineExceeded || msg.settled() != "[ack]" {
				t.Errorf("reply %d %q, settled %s; want 504 %s and an ack", r.Status, code(r), msg.settled(), schema.CodeDeadlineExceeded)
			}
		})
	}
}
