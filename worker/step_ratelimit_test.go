package worker

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/laas-bridge/laas-bridge/schema"
)

// stepLimiter is a Limiter for step tests: Wait returns err (nil: at
// once) and records each call's lane; Throttled records its durations.
type stepLimiter struct {
	err error

	mu        sync.Mutex
	lanes     []Lane
	throttled []time.Duration
}

func (l *stepLimiter) Wait(_ context.Context, _ schema.Model, lane Lane) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lanes = append(l.lanes, lane)
	return l.err
}

func (l *stepLimiter) Throttled(_ context.Context, d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.throttled = append(l.throttled, d)
}

func TestWaitForRateLimit(t *testing.T) {
	for _, tc := range []struct {
		name       string
		subject    string
		waitErr    error
		callerGone bool
		deadline   time.Duration // from now
		attempt    int
		next       bool
		acks       string
		status     int
	}{
		{"interactive: runs once the limiter lets it", schema.SubjectInteractive, nil, false, time.Minute, 1, true, "[]", 0},
		{"batch: the limiter is told the lane", schema.SubjectBatch, nil, false, time.Minute, 1, true, "[]", 0},
		{"caller went away while waiting: dropped", schema.SubjectInteractive, context.Canceled, true, time.Minute, 1, false, "[ack]", 0},
		{"deadline passed while waiting: 504", schema.SubjectInteractive, context.DeadlineExceeded, false, -time.Millisecond, 1, false, "[ack]", http.StatusGatewayTimeout},
		{"wait ended otherwise: handed back", schema.SubjectInteractive, errors.New("bucket gone"), false, time.Minute, 1, false, "[nak 0s]", 0},
		{"wait ended on the last attempt: 503", schema.SubjectInteractive, errors.New("bucket gone"), false, time.Minute, 3, false, "[ack]", http.StatusServiceUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newStepFixture(t)
			lim := &stepLimiter{err: tc.waitErr}
			f.p.limiter = lim
			j, msg := stepJob(t, tc.subject, tc.attempt)
			j.env.Deadline = time.Now().Add(tc.deadline)
			ctx, stop := context.WithCancelCause(context.Background())
			defer stop(nil)
			if tc.callerGone {
				stop(errCallerGone)
			}
			var next nextRecorder
			f.p.waitForRateLimit(next.handle)(ctx, j)
			if (next.called() == 1) != tc.next || msg.settled() != tc.acks {
				t.Fatalf("next called %d, settled %s; want next %v, %s", next.called(), msg.settled(), tc.next, tc.acks)
			}
			if len(lim.lanes) != 1 || lim.lanes[0] != laneOf(tc.subject) {
				t.Errorf("limiter saw lanes %v, want [%s]", lim.lanes, laneOf(tc.subject))
			}
			if tc.status != 0 {
				if r := f.onlyReply(t); r.Status != tc.status {
					t.Errorf("reply %d, want %d", r.Status, tc.status)
				}
			} else if n := len(f.replies(t)); n != 0 {
				t.Errorf("%d replies, want none", n)
			}
		})
	}
}
