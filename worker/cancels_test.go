package worker

import (
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/laas-bridge/laas-bridge/queue"
	"github.com/laas-bridge/laas-bridge/queue/queuetest"
	"github.com/laas-bridge/laas-bridge/schema"
)

// TestCancelsKeepIDsUntilTheirDeadline: a cancelled id is remembered
// until its job's deadline plus cancelSlack (never longer than
// rememberFor), for rememberFor when the cancel names no deadline (an
// older gateway), not at all when the deadline is long past; then it is
// gone from memory, not only from the answers.
func TestCancelsKeepIDsUntilTheirDeadline(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)
	const rememberFor = time.Hour
	tests := []struct {
		name     string
		deadline time.Time
		until    time.Time // zero: not remembered
	}{
		{"a deadline", now.Add(5 * time.Minute), now.Add(5*time.Minute + cancelSlack)},
		{"no deadline", time.Time{}, now.Add(rememberFor)},
		{"a deadline past rememberFor", now.Add(2 * rememberFor), now.Add(rememberFor)},
		{"a deadline within the slack", now.Add(-cancelSlack / 2), now.Add(cancelSlack / 2)},
		{"a deadline long past", now.Add(-2 * cancelSlack), time.Time{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newCancelSet(rememberFor, 10, nil)
			c.cancel("r1", tc.deadline, now)
			if tc.until.IsZero() {
				if c.gone("r1", now) || c.size() != 0 {
					t.Fatalf("remembered (%d ids), want not", c.size())
				}
				return
			}
			if !c.gone("r1", tc.until.Add(-time.Nanosecond)) {
				t.Errorf("forgotten before %s", tc.until)
			}
			if c.gone("r1", tc.until) {
				t.Errorf("still remembered at %s", tc.until)
			}
			c.cancel("r2", time.Time{}, tc.until) // the next cancel forgets what is over
			if _, ok := c.cancelled["r1"]; ok || c.size() != 1 || len(c.expiry.ids) != 1 || len(c.latest.ids) != 1 {
				t.Errorf("r1 still held after its time: %d ids, heap %d", c.size(), len(c.expiry.ids))
			}
		})
	}

	t.Run("a later deadline extends, an earlier one does not shorten", func(t *testing.T) {
		c := newCancelSet(rememberFor, 10, nil)
		c.cancel("r1", now.Add(time.Minute), now)
		c.cancel("r1", now.Add(10*time.Minute), now)
		c.cancel("r1", now.Add(2*time.Minute), now)
		if !c.gone("r1", now.Add(10*time.Minute)) || c.gone("r1", now.Add(10*time.Minute+cancelSlack)) || c.size() != 1 {
			t.Errorf("want r1 kept once until 10m + slack; %d ids", c.size())
		}
	})
}

// TestCancelsCap: at most max ids are remembered; past it the id forgotten
// soonest goes first (the new one, when it would be), each counted in
// laas_bridge_worker_cancelled_ids_dropped_total.
func TestCancelsCap(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m, err := newPoolMetrics(reg, liveCatalog(t))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)
	c := newCancelSet(time.Hour, 3, m.cancelDropped)
	at := func(d time.Duration) time.Time { return now.Add(d - cancelSlack) } // remembered until now+d
	c.cancel("a", at(1*time.Minute), now)
	c.cancel("b", at(3*time.Minute), now)
	c.cancel("c", at(2*time.Minute), now)
	c.cancel("d", at(4*time.Minute), now)  // kept longest: not kept
	c.cancel("e", at(30*time.Second), now) // b goes: kept longest
	c.cancel("a", at(5*time.Minute), now)  // known: nothing dropped
	remembered := map[string]bool{}
	for _, id := range []string{"a", "b", "c", "d", "e"} {
		remembered[id] = c.gone(id, now)
	}
	if want := map[string]bool{"a": true, "b": false, "c": true, "d": false, "e": true}; fmt.Sprint(remembered) != fmt.Sprint(want) {
		t.Errorf("remembered %v, want %v", remembered, want)
	}
	if got := metricValue(gather(t, reg), "laas_bridge_worker_cancelled_ids_dropped_total"); got != 2 {
		t.Errorf("cancelled_ids_dropped_total = %v, want 2", got)
	}

	t.Run("a flood of cancels without deadlines", func(t *testing.T) {
		c := newCancelSet(time.Hour, 100, nil)
		for i := range 10_000 {
			c.cancel(fmt.Sprint("r", i), time.Time{}, now.Add(time.Duration(i)*time.Millisecond))
		}
		if c.size() != 100 || len(c.expiry.ids) != 100 || len(c.latest.ids) != 100 {
			t.Errorf("%d ids (heaps %d, %d) after 10000 cancels, want the cap, 100", c.size(), len(c.expiry.ids), len(c.latest.ids))
		}
		if !c.gone("r99", now.Add(10*time.Second)) || c.gone("r100", now.Add(10*time.Second)) {
			t.Error("want the first 100 ids kept (forgotten soonest), the later ones dropped")
		}
	})

	// A flood of far deadlines (a day) does not push out an interactive
	// caller's cancel (a minute): the far ones go first.
	t.Run("far deadlines go first", func(t *testing.T) {
		c := newCancelSet(24*time.Hour, 100, nil)
		for i := range 100 {
			c.cancel(fmt.Sprint("far", i), now.Add(24*time.Hour-cancelSlack), now)
		}
		c.cancel("near", now.Add(time.Minute), now)
		if !c.gone("near", now) || c.size() != 100 {
			t.Errorf("near remembered: %v, %d ids; want it kept in a full set of 100", c.gone("near", now), c.size())
		}
		c.forget(now.Add(3 * time.Minute))
		if c.gone("near", now.Add(3*time.Minute)) || c.size() != 99 || len(c.expiry.ids) != 99 || len(c.latest.ids) != 99 {
			t.Errorf("after near's time: %d ids (heaps %d, %d); want 99 far ones", c.size(), len(c.expiry.ids), len(c.latest.ids))
		}
	})
}

// TestCancelsHearTheDeadline: a cancel broadcast with the job's deadline as
// its payload (as a gateway sends it) is remembered until that deadline
// plus cancelSlack; an empty one (an older gateway) for rememberFor.
func TestCancelsHearTheDeadline(t *testing.T) {
	q := queuetest.Start(t, queue.Config{Memory: true})
	c, err := newCancels(q.Conn, time.Hour, 10, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.close)
	deadline := time.Now().Add(time.Minute).Truncate(time.Millisecond)
	before := time.Now()
	if err := q.Conn.Publish(schema.SubjectCancel+".r1", schema.CancelPayload(deadline)); err != nil {
		t.Fatal(err)
	}
	if err := q.Conn.Publish(schema.SubjectCancel+".r2", nil); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the two cancels to be heard", func() bool { return c.isCancelled("r1") && c.isCancelled("r2") })
	after := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if got, want := c.cancelled["r1"].until, deadline.Add(cancelSlack); !got.Equal(want) {
		t.Errorf("r1 remembered until %s, want its deadline + slack, %s", got, want)
	}
	if got := c.cancelled["r2"].until; got.Before(before.Add(time.Hour)) || got.After(after.Add(time.Hour)) {
		t.Errorf("r2 (no deadline) remembered until %s, want an hour after it was heard", got)
	}
}
