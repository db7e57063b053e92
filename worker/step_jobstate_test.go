package worker

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/laas-bridge/laas-bridge/queue"
	"github.com/laas-bridge/laas-bridge/queue/jobstore"
	"github.com/laas-bridge/laas-bridge/queue/queuetest"
	"github.com/laas-bridge/laas-bridge/schema"
)

// TestStartJobState: a job runs only if it has no kept result, was not
// cancelled and no other message is running it; other requests pass. The
// job store is real (an embedded NATS server).
func TestStartJobState(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		job   bool
		setup func(t *testing.T, jobs *jobstore.Store, env *schema.Envelope)
		next  bool
		acks  string
	}{
		{"not a job: passes", false, nil, true, "[]"},
		{"new job: runs", true, nil, true, "[]"},
		{"job with a kept result: acked, not run", true, func(t *testing.T, jobs *jobstore.Store, env *schema.Envelope) {
			res := schema.JobResultOf(schema.Reply{ID: env.ID, Status: 200, Completion: &schema.ChatCompletion{ID: "chatcmpl-" + env.ID}}, env.Model, time.Now())
			if err := jobs.Finish(ctx, env, &res, 1<<20); err != nil {
				t.Fatal(err)
			}
		}, false, "[ack]"},
		{"job cancelled before it started: answered cancelled, not run", true, func(t *testing.T, jobs *jobstore.Store, env *schema.Envelope) {
			if _, _, err := jobs.Record(ctx, env); err != nil {
				t.Fatal(err)
			}
			if _, err := jobs.Cancel(ctx, env.ID); err != nil {
				t.Fatal(err)
			}
		}, false, "[ack]"},
		{"another message runs the job: dropped as a duplicate", true, func(t *testing.T, jobs *jobstore.Store, env *schema.Envelope) {
			if _, run, err := jobs.Start(ctx, env, 7, 1); err != nil || !run {
				t.Fatalf("start: %v %v", run, err)
			}
		}, false, "[ack]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := queuetest.Start(t, queue.Config{Memory: true})
			f := newStepFixture(t)
			jobs, err := jobstore.Open(ctx, q.JS)
			if err != nil {
				t.Fatal(err)
			}
			f.p.jobs = jobs
			j, msg := stepJob(t, schema.SubjectBatch, 1)
			j.env.Job, j.replyTo = tc.job, ""
			if tc.setup != nil {
				tc.setup(t, jobs, &j.env)
			}
			var next nextRecorder
			f.p.startJobState(next.handle)(ctx, j)
			if (next.called() == 1) != tc.next || msg.settled() != tc.acks {
				t.Errorf("next called %d, settled %s; want next %v, %s", next.called(), msg.settled(), tc.next, tc.acks)
			}
			if strings.Contains(tc.name, "cancelled") {
				if _, res, err := jobs.Get(ctx, j.env.ID); err != nil || res == nil || res.Status != schema.JobCancelled {
					t.Errorf("kept result %+v (%v), want a cancelled one", res, err)
				}
			}
		})
	}
}
