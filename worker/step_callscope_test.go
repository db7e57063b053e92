package worker

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/laas-bridge/laas-bridge/schema"
)

func TestScopeCall(t *testing.T) {
	t.Run("the call ends at the request's deadline", func(t *testing.T) {
		f := newStepFixture(t)
		j, _ := stepJob(t, schema.SubjectInteractive, 1)
		var next nextRecorder
		f.p.scopeCall(next.handle)(context.Background(), j)
		if next.called() != 1 {
			t.Fatal("next not called")
		}
		if d, ok := next.ctxs[0].Deadline(); !ok || !d.Equal(j.env.Deadline) {
			t.Errorf("call deadline %s (%v), want the request's %s", d, ok, j.env.Deadline)
		}
	})
	t.Run("a job's call ends at its model's timeout", func(t *testing.T) {
		f := newStepFixture(t)
		j, _ := stepJob(t, schema.SubjectBatch, 1)
		j.env.Job, j.env.Deadline = true, time.Now().Add(schema.MaxRequestTimeout)
		var next nextRecorder
		before := time.Now()
		f.p.scopeCall(next.handle)(context.Background(), j)
		d, _ := next.ctxs[0].Deadline()
		if lo, hi := before.Add(j.model.Deadline()), time.Now().Add(j.model.Deadline()); d.Before(lo) || d.After(hi) {
			t.Errorf("call deadline %s, want the model's timeout %s from the start, in [%s, %s]", d, j.model.Deadline(), lo, hi)
		}
	})
	// Nobody waits on a connection for a batch line (not a job: Job is
	// false) or for an interactive request that asked for a long timeout:
	// their deadline may be hours away, and the model's timeout still ends
	// each call.
	for _, tc := range []struct {
		name, subject string
	}{
		{"a batch line's call ends at its model's timeout", schema.SubjectBatch},
		{"an interactive call with a far deadline ends at its model's timeout", schema.SubjectInteractive},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newStepFixture(t)
			j, _ := stepJob(t, tc.subject, 1)
			j.env.Deadline = time.Now().Add(schema.MaxRequestTimeout)
			var next nextRecorder
			before := time.Now()
			f.p.scopeCall(next.handle)(context.Background(), j)
			d, _ := next.ctxs[0].Deadline()
			if lo, hi := before.Add(j.model.Deadline()), time.Now().Add(j.model.Deadline()); d.Before(lo) || d.After(hi) {
				t.Errorf("call deadline %s, want the model's timeout %s from the start, in [%s, %s]", d, j.model.Deadline(), lo, hi)
			}
		})
	}
	t.Run("a cancel aborts the call with errCallerGone", func(t *testing.T) {
		f := newStepFixture(t)
		j, _ := stepJob(t, schema.SubjectInteractive, 1)
		var cause error
		f.p.scopeCall(func(ctx context.Context, j *job) {
			f.p.cancels.cancel(j.env.ID, time.Time{}, time.Now())
			<-ctx.Done() // closed by the cancel, or the test times out
			cause = context.Cause(ctx)
		})(context.Background(), j)
		if !errors.Is(cause, errCallerGone) {
			t.Errorf("cause %v, want %v", cause, errCallerGone)
		}
		f.p.cancels.mu.Lock()
		defer f.p.cancels.mu.Unlock()
		if len(f.p.cancels.running) != 0 {
			t.Errorf("the call is still registered after it ended")
		}
	})
}
