package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/laas-bridge/laas-bridge/queue"
	"github.com/laas-bridge/laas-bridge/queue/queuetest"
	"github.com/laas-bridge/laas-bridge/schema"
)

// capFleet is caps sharing one bucket, each on its own NATS connection:
// as far as the bucket can tell, worker processes.
type capFleet struct {
	q    *queuetest.Queue
	logs *limiterLog
}

func newCapFleet(t *testing.T) *capFleet {
	t.Helper()
	return &capFleet{q: queuetest.Start(t, queue.Config{Memory: true}), logs: &limiterLog{}}
}

// start opens one more cap on a connection of its own, returned too.
func (f *capFleet) start(t *testing.T, cfg CapConfig) (*KVCap, *nats.Conn) {
	t.Helper()
	nc := f.q.Connect(t)
	return f.startOn(t, nc, cfg), nc
}

// startOn opens one more cap on nc.
func (f *capFleet) startOn(t *testing.T, nc *nats.Conn, cfg CapConfig) *KVCap {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg.Bucket = queue.BucketSlots
	c, err := NewKVCap(ctx, js, cfg, slog.New(slog.NewTextHandler(f.logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// inFlight counts callers holding slots and keeps the most at once.
type inFlight struct {
	now, most atomic.Int32
}

func (f *inFlight) enter() {
	n := f.now.Add(1)
	for {
		m := f.most.Load()
		if n <= m || f.most.CompareAndSwap(m, n) {
			return
		}
	}
}

func (f *inFlight) leave() { f.now.Add(-1) }

// TestKVCapHoldsAcrossProcessesAndLanes: three processes, a project cap of
// 4 and a model cap of 2, 60 callers of both lanes holding their slots a
// while: the callers holding slots at once never exceed either cap, over
// all processes and both lanes together, and do reach them (the cap is
// used, not halved); every caller gets its slots.
func TestKVCapHoldsAcrossProcessesAndLanes(t *testing.T) {
	const project, model, callers = 4, 2, 60
	f := newCapFleet(t)
	var caps []*KVCap
	for range 3 {
		c, _ := f.start(t, CapConfig{Max: project})
		caps = append(caps, c)
	}
	capped := schema.Model{Alias: "capped", MaxParallelRequests: model}
	free := schema.Model{Alias: "free"}
	var all, ofModel inFlight
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for i := range callers {
		wg.Go(func() {
			m := free
			if i%2 == 0 {
				m = capped
			}
			release, err := caps[i%3].Acquire(ctx, m, Lane(i%4/2), nil)
			if err != nil {
				errs <- fmt.Errorf("caller %d: %w", i, err)
				return
			}
			if release == nil {
				errs <- fmt.Errorf("caller %d: no slot held under a cap", i)
				return
			}
			all.enter()
			if m.MaxParallelRequests > 0 {
				ofModel.enter()
			}
			time.Sleep(20 * time.Millisecond)
			if m.MaxParallelRequests > 0 {
				ofModel.leave()
			}
			all.leave()
			release()
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("most in flight: %d of the project's %d, %d of the model's %d", all.most.Load(), project, ofModel.most.Load(), model)
	if got := all.most.Load(); got != project {
		t.Errorf("at most %d callers held slots at once, want exactly the cap %d", got, project)
	}
	if got := ofModel.most.Load(); got != model {
		t.Errorf("at most %d callers of the capped model held slots at once, want exactly its cap %d", got, model)
	}
}

// TestKVCapInteractiveFirstAcrossProcesses: with every slot held, batch
// callers waiting in one process and interactive callers that came later
// in another, each freed slot goes to an interactive caller until none
// waits; only then do the batch callers get slots. The batch callers'
// process holds the slots and frees them, so it learns of each free slot
// first: without the other process's wait key it would take them.
//
// The order is the server's: the claims as the bucket's stream has them
// (a watch of the bucket), not the order the callers' goroutines happened
// to run in after Acquire returned, so the test is exact.
func TestKVCapInteractiveFirstAcrossProcesses(t *testing.T) {
	const slots, waiters = 2, 4
	f := newCapFleet(t)
	claims := watchClaims(t, f)
	batch, _ := f.start(t, CapConfig{Max: slots, Process: "batch"})
	holder := batch
	inter, _ := f.start(t, CapConfig{Max: slots, Process: "inter"})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m := schema.Model{Alias: "a"}
	var held []func()
	for range slots {
		r, err := holder.Acquire(ctx, m, LaneBatch, nil)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, r)
	}
	var wg sync.WaitGroup
	got := make(chan func(), 2*waiters)
	wait := func(c *KVCap, lane Lane) {
		wg.Go(func() {
			r, err := c.Acquire(ctx, m, lane, nil)
			if err != nil {
				t.Error(err)
				return
			}
			got <- r
		})
	}
	for range waiters {
		wait(batch, LaneBatch)
	}
	waitUntil(t, "the batch callers to wait", func() bool { return batch.project.turn.isHeld() })
	for range waiters {
		wait(inter, LaneInteractive)
	}
	// The batch process knows the interactive callers wait.
	waitUntil(t, "the interactive callers' wait key to reach the batch process", func() bool {
		batch.mu.Lock()
		defer batch.mu.Unlock()
		return len(batch.waits["project"]) == 1
	})
	// Free the slots; each caller that gets one frees it.
	held[0]()
	held[1]()
	for i := range 2 * waiters {
		select {
		case r := <-got:
			r()
		case <-ctx.Done():
			t.Fatalf("only %d of %d callers got a slot", i, 2*waiters)
		}
	}
	wg.Wait()
	want := []string{"batch", "batch", "inter", "inter", "inter", "inter", "batch", "batch", "batch", "batch"}
	waitUntil(t, "every claim to be watched", func() bool { return len(claims()) >= len(want) })
	if got := claims(); !slices.Equal(got, want) {
		t.Fatalf("the bucket has the slots claimed by %v, want the holder's 2, then the %d interactive callers, then the batch callers: %v", got, waiters, want)
	}
}

// watchClaims watches f's bucket and returns the processes whose leases
// took a slot (not a renewal of their own), in the bucket's order.
func watchClaims(t *testing.T, f *capFleet) (claims func() []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := f.q.JS.KeyValue(ctx, queue.BucketSlots)
	if err != nil {
		t.Fatal(err)
	}
	w, err := kv.WatchAll(context.Background(), jetstream.UpdatesOnly())
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var order []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		live := map[string]bool{}
		for e := range w.Updates() {
			if e == nil || !strings.Contains(e.Key(), ".slot.") {
				continue
			}
			put := e.Operation() == jetstream.KeyValuePut
			if put && !live[e.Key()] {
				mu.Lock()
				order = append(order, string(e.Value()))
				mu.Unlock()
			}
			live[e.Key()] = put
		}
	}()
	t.Cleanup(func() { _ = w.Stop(); <-done })
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(order)
	}
}

// TestKVCapDeadHolderFreedWithinAckWait: a process holding every slot of
// the cap dies (its connection is cut: it neither renews nor gives back
// its leases). Another process waiting for all of them holds the cap's
// full capacity within the consumers' AckWait (the default, 5s) of the
// death, and the dead process's callers are told their slots are lost.
func TestKVCapDeadHolderFreedWithinAckWait(t *testing.T) {
	const slots = 4
	ackWait := queue.DefaultAckWait
	f := newCapFleet(t)
	dead, deadConn := f.start(t, CapConfig{Max: slots, AckWait: ackWait})
	alive, _ := f.start(t, CapConfig{Max: slots, AckWait: ackWait})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m := schema.Model{Alias: "a"}
	var lost atomic.Int32
	for range slots {
		if _, err := dead.Acquire(ctx, m, LaneInteractive, func() { lost.Add(1) }); err != nil {
			t.Fatal(err)
		}
	}
	// Held past a few renewals: a lease outlives its first TTL.
	time.Sleep(LeaseTTL(ackWait) + time.Second)
	if n := lost.Load(); n != 0 {
		t.Fatalf("%d leases lost while renewed", n)
	}
	got := make(chan time.Time, slots)
	for range slots {
		go func() {
			if _, err := alive.Acquire(ctx, m, LaneInteractive, nil); err != nil {
				t.Error(err)
				return
			}
			got <- time.Now()
		}()
	}
	select {
	case <-got:
		t.Fatal("a slot was free while another process held every one")
	case <-time.After(500 * time.Millisecond):
	}
	died := time.Now()
	deadConn.Close()
	var last time.Time
	for range slots {
		select {
		case at := <-got:
			last = at
		case <-ctx.Done():
			t.Fatal("the dead process's slots never came back")
		}
	}
	back := last.Sub(died)
	t.Logf("the cap's %d slots were back %s after the holder died (lease TTL %s, AckWait %s)", slots, back.Round(time.Millisecond), LeaseTTL(ackWait), ackWait)
	if back > ackWait {
		t.Errorf("the slots came back %s after the holder died, want within AckWait %s", back.Round(time.Millisecond), ackWait)
	}
	waitUntil(t, "the dead process to see its leases lost", func() bool { return lost.Load() == slots })
}

// TestKVCapWaitEndsWithContext: a caller waiting for a slot returns its
// context's error when the context ends, holding nothing; the slots it
// did not get stay free for others.
func TestKVCapWaitEndsWithContext(t *testing.T) {
	f := newCapFleet(t)
	c, _ := f.start(t, CapConfig{Max: 1})
	m := schema.Model{Alias: "a", MaxParallelRequests: 1}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	release, err := c.Acquire(ctx, schema.Model{Alias: "b"}, LaneInteractive, nil) // the project's one slot
	if err != nil {
		t.Fatal(err)
	}
	short, cancelShort := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancelShort()
	if _, err := c.Acquire(short, m, LaneBatch, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Acquire = %v, want the deadline's error", err)
	}
	release()
	// The model's slot taken before the wait ended was given back.
	r, err := c.Acquire(ctx, m, LaneInteractive, nil)
	if err != nil {
		t.Fatal(err)
	}
	r()
}

// TestKVCapNoCapNoCost: with no project cap and a model without one,
// Acquire holds nothing and allocates nothing.
func TestKVCapNoCapNoCost(t *testing.T) {
	f := newCapFleet(t)
	c, _ := f.start(t, CapConfig{})
	m := schema.Model{Alias: "a"}
	if c.Applies(m) {
		t.Fatal("Applies = true with no cap")
	}
	allocs := testing.AllocsPerRun(100, func() {
		if r, err := c.Acquire(context.Background(), m, LaneInteractive, nil); r != nil || err != nil {
			t.Fatalf("Acquire = %v, %v with no cap", r != nil, err)
		}
	})
	if allocs != 0 {
		t.Errorf("Acquire allocates %.0f times with no cap, want 0", allocs)
	}
}

func TestCapConfigValidate(t *testing.T) {
	err := CapConfig{Max: -1, AckWait: -time.Second}.Validate()
	for _, want := range []string{"needs a bucket", "must not be negative, got -1", "ack wait must not be negative"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to say %q", err, want)
		}
	}
	if got := LeaseTTL(5 * time.Second); got != 3*time.Second {
		t.Errorf("LeaseTTL(5s) = %s, want 3s", got)
	}
	if got := LeaseTTL(time.Second); got != time.Second {
		t.Errorf("LeaseTTL(1s) = %s, want 1s (the server's least)", got)
	}
}

// isHeld reports whether a caller holds the turn.
func (t *laneTurn) isHeld() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.held
}

// BenchmarkKVCapAcquire is one capped call's slot: take it and give it
// back, against an embedded NATS server (two bucket writes).
func BenchmarkKVCapAcquire(b *testing.B) {
	q := queuetest.Start(b, queue.Config{Memory: true})
	ctx := context.Background()
	c, err := NewKVCap(ctx, q.JS, CapConfig{Bucket: queue.BucketSlots, Max: 64}, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	m := schema.Model{Alias: "a"}
	b.ReportAllocs()
	for b.Loop() {
		release, err := c.Acquire(ctx, m, LaneInteractive, nil)
		if err != nil {
			b.Fatal(err)
		}
		release()
	}
}

// TestKVCapWarnsOfALargerCap: two processes with different
// BRIDGE_LAAS_MAX_CONCURRENCY share the slots 0..n-1, so the larger cap
// bounds the calls in flight. The process with the smaller cap, seeing a
// slot beyond its own held, says so in its log, once.
func TestKVCapWarnsOfALargerCap(t *testing.T) {
	f := newCapFleet(t)
	small, _ := f.start(t, CapConfig{Max: 2, Process: "small"})
	large, _ := f.start(t, CapConfig{Max: 4, Process: "large"})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m := schema.Model{Alias: "a"}
	for range 4 {
		r, err := large.Acquire(ctx, m, LaneInteractive, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer r()
	}
	const warning = "another worker runs with a larger BRIDGE_LAAS_MAX_CONCURRENCY"
	waitUntil(t, "the smaller cap's process to warn", func() bool { return strings.Contains(f.logs.String(), warning) })
	if n := strings.Count(f.logs.String(), warning); n != 1 {
		t.Errorf("warned %d times, want once", n)
	}
	if !small.project.larger.Load() || large.project.larger.Load() {
		t.Errorf("warned: small %v, large %v; want only the smaller cap's process", small.project.larger.Load(), large.project.larger.Load())
	}
}

// TestKVCapModelAliasesAnyCharacters: a model's cap is keyed by its alias
// encoded, so aliases with characters a key may not hold ("/", " ") or
// that a key gives meaning to (".") each get their own cap, exactly.
func TestKVCapModelAliasesAnyCharacters(t *testing.T) {
	f := newCapFleet(t)
	c, _ := f.start(t, CapConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, alias := range []string{"team/fast", "team.fast", "team fast", "team.*.>", ""} {
		m := schema.Model{Alias: alias, MaxParallelRequests: 1}
		if _, err := c.Acquire(ctx, m, LaneInteractive, nil); err != nil {
			t.Fatalf("%q: %v", alias, err)
		}
		short, cancelShort := context.WithTimeout(ctx, 50*time.Millisecond)
		_, err := c.Acquire(short, m, LaneInteractive, nil)
		cancelShort()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%q: a second call got a slot of a cap of 1 (err %v)", alias, err)
		}
	}
}
