package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/laas-bridge/laas-bridge/schema"
)

// TestLaneTurnOrder: the turn goes to interactive callers before batch
// callers, each lane in arrival order; a batch holder is told when an
// interactive caller waits, and after yielding it is the first batch
// caller again.
func TestLaneTurnOrder(t *testing.T) {
	var turn laneTurn
	ctx := context.Background()
	holderUrgent, err := turn.take(ctx, LaneBatch)
	if err != nil {
		t.Fatal(err)
	}
	granted := make(chan string, 10)
	enqueue := func(name string, lane Lane) {
		turn.mu.Lock()
		before := len(turn.waiting[lane])
		turn.mu.Unlock()
		go func() {
			if _, err := turn.take(ctx, lane); err != nil {
				t.Error(err)
			}
			granted <- name
		}()
		waitFor(t, func() bool {
			turn.mu.Lock()
			defer turn.mu.Unlock()
			return len(turn.waiting[lane]) > before
		})
	}
	enqueue("b1", LaneBatch)
	enqueue("b2", LaneBatch)
	if isClosed(holderUrgent) {
		t.Fatal("the batch holder was told to yield with only batch callers waiting")
	}
	enqueue("i1", LaneInteractive)
	if !isClosed(holderUrgent) {
		t.Fatal("the batch holder was not told that an interactive caller waits")
	}
	enqueue("i2", LaneInteractive)

	yielded := make(chan error, 1)
	go func() {
		_, err := turn.yield(ctx)
		yielded <- err
	}()
	var order []string
	for range 4 {
		select {
		case name := <-granted:
			order = append(order, name)
		case err := <-yielded:
			if err != nil {
				t.Fatal(err)
			}
			order = append(order, "holder")
		case <-time.After(10 * time.Second):
			t.Fatalf("stuck after %v", order)
		}
		if len(order) < 4 {
			turn.release()
		}
	}
	if got, want := fmt.Sprint(order), "[i1 i2 holder b1]"; got != want {
		t.Errorf("turns went %s, want %s", got, want)
	}
	turn.release()
	if name := <-granted; name != "b2" {
		t.Errorf("last turn went to %s, want b2", name)
	}
	turn.release()
	turn.mu.Lock()
	defer turn.mu.Unlock()
	if turn.held {
		t.Error("the turn is still held after every caller released it")
	}
}

// TestKVLimiterInteractiveAheadOfBatch: with many batch callers waiting
// for a limit, an interactive call starts after at most the few batch calls
// that held slots when it arrived, whether it waits in the same process or
// in another one. Without lanes it would queue behind every batch caller.
//
// The bound is the schedule's. When the interactive call arrives, the
// batch lane holds at most a slot starting about now and one within its
// reach (one interval), and may be claiming the next at that moment; the
// interactive call claims the slot after those. Grants are counted when
// their Wait returns, which on a busy machine may be a little after the
// slot began: a batch grant of the slot just before the arrival may be
// counted as well. Slots are 200ms apart, so only a goroutine delayed by
// a whole interval could make the count larger still.
func TestKVLimiterInteractiveAheadOfBatch(t *testing.T) {
	const (
		rpm     = 300 // one slot per 200 ms
		callers = 12
		tries   = 4
		most    = 3 + 1 // held or being claimed at the arrival, and one counted late
	)
	// A long Horizon lets interactive calls claim far ahead; batch calls
	// must not.
	cfg := LimiterConfig{RPM: rpm, Horizon: 2 * time.Second} // ten slots
	for _, tc := range []struct {
		name  string
		other bool // the interactive call waits in another limiter
	}{{"same process", false}, {"another process", true}} {
		t.Run(tc.name, func(t *testing.T) {
			f := newLimiterFleet(t)
			ls := f.startN(t, 2, cfg)
			interactive := ls[0]
			if tc.other {
				interactive = ls[1]
			}
			var batch grants
			ctx, cancel := context.WithCancel(context.Background())
			done := hammer(ctx, ls[:1], callers, schema.Model{Alias: "m"}, LaneBatch, &batch)
			defer func() { cancel(); done.Wait() }()
			started := func() int {
				batch.mu.Lock()
				defer batch.mu.Unlock()
				return len(batch.all)
			}
			waitFor(t, func() bool { return started() >= 2 }) // every batch caller is waiting
			var ahead []int
			for range tries {
				before := started()
				if err := interactive.Wait(ctx, schema.Model{Alias: "m"}, LaneInteractive); err != nil {
					t.Fatal(err)
				}
				ahead = append(ahead, started()-before)
			}
			t.Logf("batch calls started while an interactive call waited: %v (%d batch callers)", ahead, callers)
			for i, n := range ahead {
				if n > most {
					t.Errorf("interactive call %d started after %d batch calls, want at most %d", i, n, most)
				}
			}
		})
	}
}

// TestKVLimiterBatchFillsTheRest: interactive calls for a model with its
// own rpm take a quarter of the project's budget, batch calls (in two
// processes) take the rest; together they keep to the project's limit and
// use all of it.
func TestKVLimiterBatchFillsTheRest(t *testing.T) {
	const projectRPM = 1200 // 20/s
	slow := schema.Model{Alias: "slow", RPM: projectRPM / 4}
	free := schema.Model{Alias: "free"}
	const run = 3 * time.Second
	ls := newLimiterFleet(t).startN(t, 2, LimiterConfig{RPM: projectRPM})
	g, start := hammerFor(ls, run, load{callers: 4, model: slow}, load{callers: 6, model: free, batch: true})

	checkRate(t, "interactive, model with rpm", g.times(func(x grant) bool { return x.model == slow.Alias }), start, run, slow.RPM)
	checkRate(t, "project", g.times(nil), start, run, projectRPM)
	batch := countIn(g.times(func(x grant) bool { return x.model == free.Alias }), start, start.Add(run))
	if want := run.Seconds() * float64(projectRPM-slow.RPM) / 60; float64(batch) < budgetUsed*want {
		t.Errorf("batch calls got %d slots of the %.0f interactive calls left", batch, want)
	}
}

// load is callers on each limiter calling Wait for model in a loop, in the
// batch lane or the interactive one.
type load struct {
	callers int
	model   schema.Model
	batch   bool
}

// hammerFor runs loads on every limiter of ls for run and returns their
// grants and when they started.
func hammerFor(ls []*KVLimiter, run time.Duration, loads ...load) (*grants, time.Time) {
	var g grants
	start := time.Now()
	ctx, cancel := context.WithDeadline(context.Background(), start.Add(run))
	defer cancel()
	var all []*sync.WaitGroup
	for _, x := range loads {
		lane := LaneInteractive
		if x.batch {
			lane = LaneBatch
		}
		all = append(all, hammer(ctx, ls, x.callers, x.model, lane, &g))
	}
	for _, wg := range all {
		wg.Wait()
	}
	return &g, start
}

// TestKVLimiterBatchProgressesBesideSparseInteractive: interactive calls
// that come now and then, in the batch callers' process and in another,
// go first but leave the batch lane the slots between them.
func TestKVLimiterBatchProgressesBesideSparseInteractive(t *testing.T) {
	const rpm = 1200 // one slot per 50 ms
	f := newLimiterFleet(t)
	ls := f.startN(t, 2, LimiterConfig{RPM: rpm})
	model := schema.Model{Alias: "m"}
	var batch grants
	ctx, cancel := context.WithCancel(context.Background())
	done := hammer(ctx, ls[:1], 6, model, LaneBatch, &batch)
	defer func() { cancel(); done.Wait() }()

	const calls = 10 // per interactive caller
	var wg sync.WaitGroup
	for _, l := range ls {
		wg.Go(func() {
			for range calls {
				if err := l.Wait(ctx, model, LaneInteractive); err != nil {
					t.Error(err)
					return
				}
				time.Sleep(250 * time.Millisecond) // five slots
			}
		})
	}
	wg.Wait()
	batch.mu.Lock()
	n := len(batch.all)
	batch.mu.Unlock()
	// Five slots pass while each interactive caller sleeps, and the two
	// take at most two of them.
	if n < 2*calls {
		t.Errorf("batch calls started %d times beside %d sparse interactive calls", n, 2*calls)
	}
	t.Logf("%d batch calls beside %d interactive calls", n, 2*calls)
}

// TestKVLimiterBatchWaitEndsWithContext: batch callers end promptly with
// ctx's error whether they hold the turn, gave it up to an interactive
// caller, or queue for it; the turn is free afterwards.
func TestKVLimiterBatchWaitEndsWithContext(t *testing.T) {
	f := newLimiterFleet(t)
	l := f.start(t, LimiterConfig{RPM: 1}, 0) // one call a minute
	model := schema.Model{Alias: "m"}
	if err := l.Wait(context.Background(), model, LaneInteractive); err != nil {
		t.Fatal(err)
	}
	turn := &l.project.turn
	state := func() (held bool, interactive, batch int) {
		turn.mu.Lock()
		defer turn.mu.Unlock()
		return turn.held, len(turn.waiting[LaneInteractive]), len(turn.waiting[LaneBatch])
	}
	ctx, cancel := context.WithCancel(context.Background())
	errs := make(chan error, 3)
	wait := func(lane Lane) { go func() { errs <- l.Wait(ctx, model, lane) }() }
	wait(LaneBatch) // takes the turn
	waitFor(t, func() bool { held, _, _ := state(); return held })
	wait(LaneBatch) // queues
	waitFor(t, func() bool { _, _, b := state(); return b == 1 })
	wait(LaneInteractive) // takes the turn from the first batch caller, who queues first
	waitFor(t, func() bool { held, i, b := state(); return held && i == 0 && b == 2 })
	cancel()
	for range 3 {
		select {
		case err := <-errs:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Wait returned %v, want %v", err, context.Canceled)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a cancelled Wait did not return")
		}
	}
	if held, i, b := state(); held || i != 0 || b != 0 {
		t.Errorf("after every caller went: turn held %v, %d interactive and %d batch callers waiting", held, i, b)
	}
}

// laneLimiter records the lane of every Wait.
type laneLimiter struct {
	mu    sync.Mutex
	lanes []Lane // per call
}

func (l *laneLimiter) Wait(_ context.Context, _ schema.Model, lane Lane) error {
	l.mu.Lock()
	l.lanes = append(l.lanes, lane)
	l.mu.Unlock()
	return nil
}

func (l *laneLimiter) Throttled(context.Context, time.Duration) {}

// TestPoolTellsLimiterTheLane: the limiter's Wait sees which lane a job
// came from, through the pool's metrics wrapper.
func TestPoolTellsLimiterTheLane(t *testing.T) {
	lim := &laneLimiter{}
	reg := prometheus.NewRegistry()
	f := startPool(t, &recorder{}, Config{}, WithLimiter(lim), WithMetrics(reg))
	f.publish(t, "i1", "m", time.Minute, hello)
	if r := f.reply(t); r.Status != 200 {
		t.Fatalf("reply %+v", r)
	}
	now := time.Now()
	data, _ := json.Marshal(schema.Envelope{ID: "b1", Model: "m", EnqueuedAt: now, Deadline: now.Add(time.Minute), Request: json.RawMessage(hello)})
	msg := &nats.Msg{Subject: schema.SubjectBatch, Data: data, Header: nats.Header{}}
	msg.Header.Set(schema.HeaderReplyTo, "laas.reply.test.b1")
	if _, err := f.q.JS.PublishMsg(context.Background(), msg); err != nil {
		t.Fatal(err)
	}
	if r := f.reply(t); r.Status != 200 {
		t.Fatalf("reply %+v", r)
	}
	lim.mu.Lock()
	defer lim.mu.Unlock()
	if got, want := fmt.Sprint(lim.lanes), "[interactive batch]"; got != want {
		t.Errorf("lane per Wait: %s, want %s", got, want)
	}
	// The wait metric tells the lanes apart too.
	mfs := gather(t, reg)
	for _, lane := range []string{"interactive", "batch"} {
		if got := metricValue(mfs, "laas_bridge_worker_rate_limit_wait_seconds", "lane", lane); got != 1 {
			t.Errorf("rate_limit_wait_seconds{lane=%q} count = %v, want 1", lane, got)
		}
	}
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// waitFor polls cond until it holds, failing the test after 10 s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
	}
}
