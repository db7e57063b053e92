package worker

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/laas-bridge/laas-bridge/laas"
	"github.com/laas-bridge/laas-bridge/laas/laasmock"
	"github.com/laas-bridge/laas-bridge/schema"
)

// deadLetterList records dead letters.
type deadLetterList struct {
	mu  sync.Mutex
	all []DeadLetter
}

func (d *deadLetterList) DeadLetter(_ context.Context, dl DeadLetter) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.all = append(d.all, dl)
	return nil
}

func (d *deadLetterList) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.all)
}

// TestCallLaaS: how the call's outcome settles the job. The retry delays
// are checked by TestRetryDelay; here only that a retry is a delayed Nak.
func TestCallLaaS(t *testing.T) {
	e500 := &laas.UpstreamError{Status: 500, Body: "boom"}
	for _, tc := range []struct {
		name      string
		err       error // the upstream's; nil: an answer
		attempt   int
		cause     error // the call context's end before the call returns
		acks      string
		status    int // of the reply; 0: none
		throttled string
		dead      int
	}{
		{"answer: 200 and an ack", nil, 1, nil, "[ack]", 200, "[]", 0},
		{"429 with Retry-After: every worker holds off that long, the job retries after it", &laas.UpstreamError{Status: 429, RetryAfter: 2 * time.Second}, 1, nil, "[nak 2s]", 0, "[2s]", 0},
		{"429 without Retry-After: held off for the attempt's backoff", &laas.UpstreamError{Status: 429}, 2, nil, "", 0, "[20ms]", 0},
		{"429 on the last attempt: held off, dead letter, answered 429", &laas.UpstreamError{Status: 429}, 3, nil, "[ack]", 429, "[40ms]", 1},
		{"5xx: retried", e500, 1, nil, "", 0, "[]", 0},
		{"5xx on the last attempt: dead letter, answered", e500, 3, nil, "[ack]", 502, "[]", 1},
		{"400: answered at once, no retry", &laas.UpstreamError{Status: 400, Body: `{"message":"bad"}`}, 1, nil, "[ack]", 400, "[]", 0},
		{"shutdown abandoned the call: handed back at once", &laas.UpstreamError{Err: context.Canceled}, 1, errAbandoned, "[nak]", 0, "[]", 0},
		{"the caller went away: dropped, no answer", &laas.UpstreamError{Err: context.Canceled}, 1, errCallerGone, "[ack]", 0, "[]", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newStepFixture(t)
			lim := &stepLimiter{}
			dead := &deadLetterList{}
			f.p.limiter, f.p.dead = lim, dead
			f.p.up = &recorder{script: []error{tc.err}}
			j, msg := stepJob(t, schema.SubjectInteractive, tc.attempt)
			ctx, stop := context.WithCancelCause(context.Background())
			defer stop(nil)
			if tc.cause != nil {
				stop(tc.cause)
			}
			f.p.callLaaS(ctx, j)
			acks := msg.settled()
			if tc.acks == "" { // a retry after a random backoff
				if !strings.HasPrefix(acks, "[nak ") || acks == "[nak 0s]" {
					t.Errorf("settled %s, want a delayed nak", acks)
				}
			} else if acks != tc.acks {
				t.Errorf("settled %s, want %s", acks, tc.acks)
			}
			if tc.status != 0 {
				if r := f.onlyReply(t); r.Status != tc.status {
					t.Errorf("reply %d %+v, want %d", r.Status, r.Error, tc.status)
				}
			} else if n := len(f.replies(t)); n != 0 {
				t.Errorf("%d replies, want none", n)
			}
			if got := fmtDurations(lim.throttled); got != tc.throttled {
				t.Errorf("Throttled %s, want %s", got, tc.throttled)
			}
			if dead.count() != tc.dead {
				t.Errorf("%d dead letters, want %d", dead.count(), tc.dead)
			}
		})
	}
}

func fmtDurations(ds []time.Duration) string {
	var s []string
	for _, d := range ds {
		s = append(s, d.String())
	}
	return "[" + strings.Join(s, " ") + "]"
}

// blockingUpstream blocks each call until its ctx ends, or until limit
// (then it answers, as a LaaS that was not cut off would), and records the
// call's context.
type blockingUpstream struct {
	limit time.Duration

	mu       sync.Mutex
	deadline time.Time
	err      error // ctx.Err() when the call returned; nil: not cut
}

func (u *blockingUpstream) Complete(ctx context.Context, req *schema.LaaSRequest) (*schema.LaaSResponse, error) {
	d, _ := ctx.Deadline()
	u.mu.Lock()
	u.deadline = d
	u.mu.Unlock()
	select {
	case <-ctx.Done():
		u.mu.Lock()
		u.err = ctx.Err()
		u.mu.Unlock()
		return nil, &laas.UpstreamError{Err: ctx.Err(), Timeout: errors.Is(ctx.Err(), context.DeadlineExceeded)}
	case <-time.After(u.limit):
		return (&recorder{}).Complete(context.Background(), req)
	}
}

// TestCallCutAtDeadline: a LaaS call in flight when the job's deadline
// passes is cut there, and the job is answered 504 (upstream_timeout), not
// retried: no attempt is left before the deadline.
func TestCallCutAtDeadline(t *testing.T) {
	const deadline = 300 * time.Millisecond
	t.Run("the call's context ends at the deadline", func(t *testing.T) {
		f := newStepFixture(t)
		dead := &deadLetterList{}
		f.p.dead = dead
		up := &blockingUpstream{limit: 20 * time.Second}
		f.p.up = up
		j, msg := stepJob(t, schema.SubjectInteractive, 1)
		j.env.Deadline = time.Now().Add(deadline)
		chain(f.p.callLaaS, f.p.scopeCall)(context.Background(), j)
		if !up.deadline.Equal(j.env.Deadline) {
			t.Errorf("the call's deadline was %s, want the job's %s", up.deadline, j.env.Deadline)
		}
		if !errors.Is(up.err, context.DeadlineExceeded) {
			t.Fatalf("the call ended with %v, want it cut by its deadline", up.err)
		}
		if r := f.onlyReply(t); r.Status != http.StatusGatewayTimeout || code(r) != schema.CodeUpstreamTimeout || msg.settled() != "[ack]" {
			t.Errorf("reply %d %q, settled %s; want 504 %s and an ack", r.Status, code(r), msg.settled(), schema.CodeUpstreamTimeout)
		}
		if dead.count() != 1 {
			t.Errorf("%d dead letters, want 1", dead.count())
		}
	})
	t.Run("LaaS client against a mock slower than the deadline", func(t *testing.T) {
		const latency = time.Minute // far past the deadline and the wait below
		mock, err := laasmock.New(laasmock.Config{Latency: latency})
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(mock)
		defer srv.Close()
		client, err := laas.NewClient(laas.Config{BaseURL: srv.URL, ProjectCode: "p", APIKey: "k"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		f := newStepFixture(t)
		f.p.up = client
		j, msg := stepJob(t, schema.SubjectInteractive, 1)
		j.env.Deadline = time.Now().Add(deadline)
		done := make(chan struct{})
		go func() { defer close(done); chain(f.p.callLaaS, f.p.scopeCall)(context.Background(), j) }()
		select {
		case <-done:
		case <-time.After(latency / 3):
			t.Fatalf("the call was still running %s after a deadline %s away", latency/3, deadline)
		}
		if r := f.onlyReply(t); r.Status != http.StatusGatewayTimeout || msg.settled() != "[ack]" {
			t.Errorf("reply %d %+v, settled %s; want 504 and an ack", r.Status, r.Error, msg.settled())
		}
		waitUntil(t, "the mock to see its client go away", func() bool {
			log := mock.Log()
			return len(log) == 1 && log[0].Status == laasmock.StatusClientClosed
		})
	})
}

// TestPoolThrottlesEveryWorkerOn429: end to end, a LaaS that answers 429
// (the mock's Rate429, with Retry-After: 1) makes the pool report it to
// its limiter, and every worker process sharing the limiter's bucket holds
// off new calls for that second, not only the one that saw the 429.
func TestPoolThrottlesEveryWorkerOn429(t *testing.T) {
	mock, err := laasmock.New(laasmock.Config{Rate429: 1})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(mock)
	defer srv.Close()
	client, err := laas.NewClient(laas.Config{BaseURL: srv.URL, ProjectCode: "p", APIKey: "k"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	fleet := newLimiterFleet(t)
	mine, other := fleet.start(t, LimiterConfig{}, 0), fleet.start(t, LimiterConfig{}, 0)
	runPool(t, fleet.q, client, Config{}, WithLimiter(mine))
	sub, err := fleet.q.Conn.SubscribeSync("laas.reply.test.*")
	if err != nil {
		t.Fatal(err)
	}
	f := &poolFixture{q: fleet.q, replies: sub}
	before := time.Now()
	// A deadline too close for a retry a second later: answered 429 at once.
	f.publish(t, "r1", "m", 1500*time.Millisecond, hello)
	if r := f.reply(t); r.Status != http.StatusTooManyRequests || mock.Calls() != 1 {
		t.Fatalf("reply %d %+v after %d LaaS calls; want 429 after 1", r.Status, r.Error, mock.Calls())
	}
	end := before.Add(time.Second) // Retry-After: 1, counted from after the publish
	seenCooldown(t, other, end)
	if err := other.Wait(context.Background(), schema.Model{Alias: "m"}, LaneInteractive); err != nil {
		t.Fatal(err)
	}
	if early := time.Until(end); early > 0 {
		t.Errorf("another worker started a call %s before the 429's Retry-After was over", early)
	}
}

// TestCallReportsTier: an answer says which tier ran it: "default" for
// the interactive lane, "flex" for the batch lane.
func TestCallReportsTier(t *testing.T) {
	for subject, want := range map[string]string{schema.SubjectInteractive: "default", schema.SubjectBatch: "flex"} {
		f := newStepFixture(t)
		f.p.limiter, f.p.up = &stepLimiter{}, &recorder{script: []error{nil}}
		j, _ := stepJob(t, subject, 1)
		f.p.callLaaS(context.Background(), j)
		if r := f.onlyReply(t); r.Completion == nil || r.Completion.ServiceTier != want {
			t.Errorf("%s: reply %+v, want a completion of tier %s", subject, r, want)
		}
	}
}
