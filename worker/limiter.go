package worker

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/laas-bridge/laas-bridge/schema"
)

// KVLimiter is the Limiter shared by every worker process: it paces LaaS
// calls to a requests-per-minute budget for the whole LaaS project and for
// each model with its own rpm, and holds every worker off after a 429. Its
// only shared state is a JetStream key-value bucket (queue.BucketLimits);
// there is no leader and no protocol beyond the bucket's compare-and-set.
//
// # Rate: a shared schedule (GCRA) in the bucket
//
// Each limit is one key holding its theoretical arrival time (TAT): the
// earliest wall-clock time at which the next call may start. Claiming a call
// slot is one compare-and-set (kv.Update with the revision last seen, or
// kv.Create when the key is absent):
//
//	start = max(TAT, now);  TAT' = start + 60s/rpm
//
// and the call then starts at start. Every successful update advances the
// schedule by exactly one interval, whichever process made it, so calls are
// spaced 60s/rpm apart across all processes together: any window of length
// W holds at most W*rpm/60 + 1 calls. There is no burst allowance, so an
// idle spell earns no credit; with enough work waiting every slot is taken,
// so the budget is used, not wasted. A lost compare-and-set (another process
// claimed the slot first) costs one Get and a retry with the new revision.
//
// A slot may only be claimed once it starts within Horizon of now. That
// bounds how far ahead the schedule runs (a job whose context ends while it
// holds a slot wastes at most that slot) and how far behind its slot a call
// can start. Inside one process, callers of one limit take turns and only
// the one holding the turn claims, sleeping until its slot is within reach;
// it wakes early when the bucket changes. So the processes, not their
// goroutines, contend on a key, and each process has at most
// Horizon/interval+1 slots claimed ahead.
//
// # Lanes: interactive calls first
//
// A batch-lane call (Wait's lane argument) must not delay interactive
// ones, in this process or another:
//
//   - The turn goes to interactive callers first, each lane in arrival
//     order; a batch caller holding the turn before it has claimed gives it
//     up as soon as an interactive caller waits for it.
//   - A batch call claims only a slot that starts within its reach: one
//     interval of the tightest schedule it needs, at least batchReachMin
//     (20 ms, so the claim still lands before its slot) and at most
//     Horizon. Interactive calls keep Horizon.
//
// So batch calls hold at most one or two slots ahead of now, and an
// interactive call's slot is the next free one after those, whichever
// process claims it: every claim goes through the same compare-and-set.
// Batch calls take every slot interactive calls leave (a slot that comes
// within their reach while no interactive caller wants the turn). While
// interactive calls alone keep the schedule full, batch calls wait, holding
// their worker slots, until interactive demand falls below the limit or
// their jobs' deadlines pass; that order is intended. The limit itself is
// the same for both lanes.
//
// A model with its own rpm needs a slot in its model's schedule and in the
// project's (if the project has a limit), claimed in that order, each at
// its schedule's next free time, so neither schedule drifts; the call starts
// when the later of its two slots does. Both start within Horizon of the
// claim (2*Horizon when another process takes the project's slot in
// between; beyond that the model slot goes unused and the claim starts
// over), so a call starts at most 2*Horizon after either of its slots: at
// most 2*Horizon*rpm/60 extra calls in any window (2% of a 20 s window
// with the default Horizon), and none over the long run.
//
// # Cooldown after a 429
//
// Throttled(d) raises the key "cooldown" to now+d (never lowers it) by
// compare-and-set. Every process watches the bucket (one KV watch, started by
// NewKVLimiter and again on every reconnect to NATS), so Wait checks an
// in-memory copy: no bucket read per call.
// A cooldown reaches the other processes as fast as NATS delivers the watch,
// typically well under a millisecond; the process that saw the 429 honours it
// at once. A call whose slot falls in a cooldown gives the slot up and claims
// a new one after the cooldown.
//
// # Clocks
//
// The schedule is in wall-clock time, read from each process's own clock.
// The design assumes the machines' clocks agree to well under a second
// (NTP-synced hosts agree to milliseconds). A spread of s between clocks can
// let about s*rpm/60 more calls into a window than the limit: keep it under
// 5% of the shortest window you care about (1 s for 20 s). A key that reads
// further ahead than this process could ever have scheduled it (Horizon
// twice, one interval and MaxClockSkew) was written by a clock far ahead of
// this one: the limiter logs that and overwrites it rather than stall until
// its own clock catches up, so a bad clock costs pacing, not availability.
// A cooldown lasts at most its duration plus MaxClockSkew from when it is
// seen, for the same reason.
//
// # Overhead
//
// With no rpm set, Wait reads one atomic and the clock. With a limit, each
// call costs one KV update (a JetStream publish round trip) and lost races
// a Get each; the watch delivers every update to every process.
//
// All processes should run with the same limits; a process with a different
// rpm spaces the slots it claims by its own interval.
type KVLimiter struct {
	kv  jetstream.KeyValue
	cfg LimiterConfig
	log *slog.Logger
	now func() time.Time // the wall clock (time.Now; tests shift it)

	// cooldown is when the current cooldown ends, unix nanoseconds.
	cooldown atomic.Int64

	mu      sync.Mutex
	keys    map[string]kvState // last known value and revision of each key
	changed chan struct{}      // closed and replaced whenever keys change

	claiming chan struct{} // held while claiming: one claim at a time in this process
	project  *rateGate     // nil when the project has no rpm
	gates    sync.Map      // modelGateKey -> *rateGate

	skewWarned atomic.Int64 // unix nanoseconds of the last clock warning
	kvWarned   atomic.Int64 // unix nanoseconds of the last bucket warning

	stopWatch func()
	watchDone chan struct{}
}

var _ Limiter = (*KVLimiter)(nil)

// LimiterConfig configures a KVLimiter. Every process should use the same
// values.
type LimiterConfig struct {
	// Bucket is the KV bucket every worker process shares
	// (queue.BucketLimits); required.
	Bucket string
	// RPM is the LaaS project's requests per minute, summed over every
	// worker process; 0 means no project limit. Per-model limits come with
	// each call (schema.Model.RPM).
	RPM int
	// Horizon is how long before its start a call slot may be claimed;
	// default DefaultLimiterHorizon. Larger values absorb more scheduling
	// jitter; smaller ones waste less when a waiting job goes away.
	Horizon time.Duration
	// MaxClockSkew is the clock disagreement between machines tolerated
	// before a key from the future is treated as a broken clock and
	// overwritten; default DefaultMaxClockSkew.
	MaxClockSkew time.Duration
}

// Defaults for LimiterConfig's zero fields.
const (
	DefaultLimiterHorizon = 200 * time.Millisecond
	DefaultMaxClockSkew   = time.Second
)

// kvOpTimeout bounds one claim's bucket operations.
const kvOpTimeout = 2 * time.Second

// Keys of the limiter's bucket.
const (
	limitKeyCooldown    = "cooldown"
	limitKeyProject     = "rate.project"
	limitKeyModelPrefix = "rate.model."
)

func (c *LimiterConfig) setDefaults() {
	if c.Horizon == 0 {
		c.Horizon = DefaultLimiterHorizon
	}
	if c.MaxClockSkew == 0 {
		c.MaxClockSkew = DefaultMaxClockSkew
	}
}

// Validate reports every invalid field at once.
func (c LimiterConfig) Validate() error {
	var errs []error
	if c.Bucket == "" {
		errs = append(errs, errors.New("rate limiter needs a bucket"))
	}
	if c.RPM < 0 {
		errs = append(errs, fmt.Errorf("LaaS requests per minute must not be negative, got %d", c.RPM))
	}
	if c.Horizon < 10*time.Millisecond || c.Horizon > 10*time.Second {
		errs = append(errs, fmt.Errorf("rate limiter horizon must be 10ms to 10s, got %s", c.Horizon))
	}
	if c.MaxClockSkew < 0 {
		errs = append(errs, fmt.Errorf("rate limiter clock skew must not be negative, got %s", c.MaxClockSkew))
	}
	return errors.Join(errs...)
}

// rateScope is one shared schedule: a key and the spacing of its slots.
type rateScope struct {
	key      string
	interval time.Duration
}

// rateGate is what one kind of call waits for: the schedules it needs a slot in
// (the model's first), how far ahead a batch call may claim, and the turn
// that lets one caller in this process claim at a time.
type rateGate struct {
	scopes     []rateScope
	batchReach time.Duration
	turn       laneTurn
}

// batchReachMin is the shortest reach of a batch claim: time for a claim
// (one bucket round trip) and a timer's wake, with room to spare, so that
// a batch call claims its slot before the slot starts and batch work alone
// still uses the whole budget.
const batchReachMin = 20 * time.Millisecond

func newRateGate(horizon time.Duration, scopes ...rateScope) *rateGate {
	interval := scopes[0].interval
	for _, s := range scopes[1:] {
		interval = min(interval, s.interval)
	}
	return &rateGate{scopes: scopes, batchReach: min(horizon, max(interval, batchReachMin))}
}

// reach is how long before its start a call of lane may claim a slot.
func (g *rateGate) reach(lane Lane, horizon time.Duration) time.Duration {
	if lane == LaneBatch {
		return g.batchReach
	}
	return horizon
}

// laneTurn lets one caller of a rateGate in this process claim at a time:
// interactive callers before batch callers, each lane in arrival order. A
// batch holder is told (by take's channel) when an interactive caller
// waits, and gives the turn up with yield if it has not claimed yet.
type laneTurn struct {
	mu      sync.Mutex
	held    bool
	waiting [laneCount][]*turnWaiter
	urgent  chan struct{} // the batch holder's: closed when an interactive caller waits
}

type turnWaiter struct {
	granted chan struct{} // closed when the turn is this caller's
	urgent  chan struct{} // set before granted is closed
}

// take waits for the turn, or returns ctx's error. The channel it returns
// is closed when an interactive caller starts waiting for the turn; nil
// (never closed) for an interactive caller, who never gives it up.
func (t *laneTurn) take(ctx context.Context, lane Lane) (<-chan struct{}, error) {
	t.mu.Lock()
	if !t.held {
		t.held = true
		urgent := t.grant(lane)
		t.mu.Unlock()
		return urgent, nil
	}
	w := &turnWaiter{granted: make(chan struct{})}
	t.waiting[lane] = append(t.waiting[lane], w)
	if lane == LaneInteractive && t.urgent != nil {
		close(t.urgent)
		t.urgent = nil
	}
	t.mu.Unlock()
	return t.await(ctx, lane, w)
}

// yield hands a batch holder's turn to the interactive callers waiting and
// waits for it again, first of the batch callers; it keeps the turn if they
// have gone. On ctx's error the turn is no longer held.
func (t *laneTurn) yield(ctx context.Context) (<-chan struct{}, error) {
	t.mu.Lock()
	if len(t.waiting[LaneInteractive]) == 0 {
		urgent := t.grant(LaneBatch)
		t.mu.Unlock()
		return urgent, nil
	}
	w := &turnWaiter{granted: make(chan struct{})}
	t.waiting[LaneBatch] = slices.Insert(t.waiting[LaneBatch], 0, w)
	t.handOver()
	t.mu.Unlock()
	return t.await(ctx, LaneBatch, w)
}

// release gives the turn up.
func (t *laneTurn) release() {
	t.mu.Lock()
	t.handOver()
	t.mu.Unlock()
}

// await waits until w is given the turn; if ctx ends first, w leaves the
// queue (or passes on a turn given meanwhile).
func (t *laneTurn) await(ctx context.Context, lane Lane, w *turnWaiter) (<-chan struct{}, error) {
	select {
	case <-w.granted:
		return w.urgent, nil
	case <-ctx.Done():
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	select {
	case <-w.granted:
		t.handOver()
	default:
		t.waiting[lane] = slices.DeleteFunc(t.waiting[lane], func(x *turnWaiter) bool { return x == w })
	}
	return nil, ctx.Err()
}

// handOver gives the turn to the first waiter of the first lane that has
// one, or frees it; t.mu is held.
func (t *laneTurn) handOver() {
	for lane, q := range t.waiting {
		if len(q) > 0 {
			w := q[0]
			t.waiting[lane] = slices.Delete(q, 0, 1)
			w.urgent = t.grant(Lane(lane))
			close(w.granted)
			return
		}
	}
	t.held = false
	t.urgent = nil
}

// grant records a new holder of lane and returns its urgent channel; t.mu
// is held.
func (t *laneTurn) grant(lane Lane) chan struct{} {
	t.urgent = nil
	if lane == LaneBatch {
		t.urgent = make(chan struct{})
	}
	return t.urgent
}

type modelGateKey struct {
	alias string
	rpm   int
}

// kvState is a key's value as last seen: a time in unix nanoseconds, the
// cooldown's duration, and the key's revision (0: absent).
type kvState struct {
	at, dur int64
	rev     uint64
}

// NewKVLimiter returns a limiter over cfg.Bucket, the bucket every worker
// process shares (see queue.Ensure), once it has loaded the bucket's current
// state. Close stops it.
func NewKVLimiter(ctx context.Context, js jetstream.JetStream, cfg LimiterConfig, log *slog.Logger) (*KVLimiter, error) {
	return newKVLimiter(ctx, js, cfg, log, time.Now)
}

// newKVLimiter is NewKVLimiter with its wall clock given.
func newKVLimiter(ctx context.Context, js jetstream.JetStream, cfg LimiterConfig, log *slog.Logger, now func() time.Time) (*KVLimiter, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	kv, err := js.KeyValue(ctx, cfg.Bucket)
	if err != nil {
		return nil, fmt.Errorf("rate-limit bucket %s: %w", cfg.Bucket, err)
	}
	l := &KVLimiter{kv: kv, cfg: cfg, log: log, now: now, keys: map[string]kvState{}, changed: make(chan struct{}),
		claiming: make(chan struct{}, 1), watchDone: make(chan struct{})}
	if cfg.RPM > 0 {
		l.project = newRateGate(cfg.Horizon, rateScope{key: limitKeyProject, interval: time.Minute / time.Duration(cfg.RPM)})
	}
	watchCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	w, err := kv.WatchAll(watchCtx)
	if err != nil {
		stop()
		return nil, fmt.Errorf("watch rate-limit bucket %s: %w", cfg.Bucket, err)
	}
	// A watch does not survive a NATS server restart quickly (its ordered
	// consumer notices only after missed heartbeats): start a new one on
	// every reconnect.
	nc := js.Conn()
	reconnected := nc.StatusChanged(nats.CONNECTED)
	l.stopWatch = func() { stop(); nc.RemoveStatusListener(reconnected) }
	ready := make(chan struct{})
	go l.watch(watchCtx, w, ready, reconnected)
	select {
	case <-ready:
	case <-ctx.Done():
		l.Close()
		return nil, fmt.Errorf("load rate-limit bucket %s: %w", cfg.Bucket, ctx.Err())
	}
	return l, nil
}

// Close stops the limiter's watch. Wait must not be called after Close.
func (l *KVLimiter) Close() {
	l.stopWatch()
	<-l.watchDone
}

// watch keeps l.keys and l.cooldown up to date from w, and from a new watch
// after every reconnect or when w ends, until ctx ends. It closes ready once
// the bucket's current values are in.
func (l *KVLimiter) watch(ctx context.Context, w jetstream.KeyWatcher, ready chan struct{}, reconnected <-chan nats.Status) {
	defer close(l.watchDone)
	for {
		again := l.follow(ctx, w, &ready, reconnected)
		_ = w.Stop()
		if !again {
			return
		}
		for {
			var err error
			if w, err = l.kv.WatchAll(ctx); err == nil {
				break
			}
			if ctx.Err() != nil {
				return
			}
			l.warnEvery(&l.kvWarned, "rate limiter: cannot watch the shared bucket; retrying", "error", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			case <-reconnected:
			}
		}
	}
}

// follow applies w's updates until ctx ends (false) or the watch should be
// started again (true).
func (l *KVLimiter) follow(ctx context.Context, w jetstream.KeyWatcher, ready *chan struct{}, reconnected <-chan nats.Status) bool {
	// The current values a new watch starts with are the bucket's state
	// now, even if their revisions are lower than the ones known (a memory
	// store that lost its data). Updates after them only ever move forward.
	initial := true
	for {
		select {
		case <-ctx.Done():
			return false
		case <-reconnected:
			return true
		case e, ok := <-w.Updates():
			switch {
			case !ok:
				return ctx.Err() == nil
			case e == nil: // the current values are in
				initial = false
				if *ready != nil {
					close(*ready)
					*ready = nil
				}
			default:
				l.apply(e, initial)
			}
		}
	}
}

// apply records one watched entry; force as in store.
func (l *KVLimiter) apply(e jetstream.KeyValueEntry, force bool) {
	st := kvState{rev: e.Revision()}
	if e.Operation() == jetstream.KeyValuePut {
		var ok bool
		if st, ok = decodeState(e.Value()); !ok {
			l.log.Warn("rate limiter: ignoring a malformed value", "key", e.Key())
			return
		}
		st.rev = e.Revision()
	}
	l.store(e.Key(), st, force)
}

// store records a key's state, unless a newer revision is known already;
// force records it anyway (what the bucket holds now, read by a Get or a new
// watch).
func (l *KVLimiter) store(key string, st kvState, force bool) {
	l.mu.Lock()
	if cur, ok := l.keys[key]; ok && !force && cur.rev >= st.rev {
		l.mu.Unlock()
		return
	}
	l.keys[key] = st
	close(l.changed)
	l.changed = make(chan struct{})
	l.mu.Unlock()
	if key == limitKeyCooldown && st.at > 0 {
		// Seen from a clock far ahead, a cooldown would last too long.
		until := min(st.at, l.now().Add(time.Duration(st.dur)+l.cfg.MaxClockSkew).UnixNano())
		l.raiseCooldown(until)
	}
}

func (l *KVLimiter) raiseCooldown(until int64) {
	for {
		cur := l.cooldown.Load()
		if cur >= until || l.cooldown.CompareAndSwap(cur, until) {
			return
		}
	}
}

// Wait blocks until a call for model may start: no cooldown is on, and the
// call has its slot in the project's schedule and in the model's. It returns
// ctx's error as soon as ctx ends. A bucket that cannot be reached makes it
// retry (and log) until ctx ends: limits are never skipped.
func (l *KVLimiter) Wait(ctx context.Context, model schema.Model, lane Lane) error {
	g := l.gateFor(model)
	for {
		if err := l.waitCooldown(ctx); err != nil {
			return err
		}
		if g == nil {
			return nil
		}
		at, err := l.claim(ctx, g, lane)
		if err != nil {
			return err
		}
		if err := sleepOrWake(ctx, at.Sub(l.now()), nil, nil); err != nil {
			return err
		}
		if l.now().UnixNano() >= l.cooldown.Load() {
			return nil
		}
		// A 429 came in while this call waited for its slot: start over.
	}
}

// Throttled starts (or extends) a cooldown of d for every worker process:
// this one at once, the others when the bucket's watch tells them.
func (l *KVLimiter) Throttled(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	until := l.now().Add(d).UnixNano()
	l.raiseCooldown(until)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	value := strconv.AppendInt(nil, until, 10)
	value = strconv.AppendInt(append(value, ','), int64(d), 10)
	for range 10 {
		cur := l.state(limitKeyCooldown)
		if cur.at >= until {
			return // a longer cooldown is on already
		}
		rev, err := l.cas(ctx, limitKeyCooldown, value, cur.rev)
		if err == nil {
			l.store(limitKeyCooldown, kvState{at: until, dur: int64(d), rev: rev}, false)
			return
		}
		if !isConflict(err) {
			l.log.Warn("rate limiter: could not share the cooldown with other workers", "cooldown", d, "error", err)
			return
		}
		if err := l.refresh(ctx, limitKeyCooldown); err != nil {
			l.log.Warn("rate limiter: could not share the cooldown with other workers", "cooldown", d, "error", err)
			return
		}
	}
}

// gateFor returns the rateGate a call for m waits at, or nil when no rate limit
// applies to it.
func (l *KVLimiter) gateFor(m schema.Model) *rateGate {
	if m.RPM <= 0 {
		return l.project
	}
	k := modelGateKey{m.Alias, m.RPM}
	if g, ok := l.gates.Load(k); ok {
		return g.(*rateGate)
	}
	scopes := []rateScope{{key: modelKey(m.Alias), interval: time.Minute / time.Duration(m.RPM)}}
	if l.project != nil {
		scopes = append(scopes, l.project.scopes[0])
	}
	g, _ := l.gates.LoadOrStore(k, newRateGate(l.cfg.Horizon, scopes...))
	return g.(*rateGate)
}

// modelKey is the bucket key of a model's schedule; the alias is encoded
// because it may hold characters a key may not.
func modelKey(alias string) string {
	if alias == "" {
		return limitKeyModelPrefix + "-"
	}
	return limitKeyModelPrefix + base64.RawURLEncoding.EncodeToString([]byte(alias))
}

func (l *KVLimiter) waitCooldown(ctx context.Context) error {
	for {
		d := time.Duration(l.cooldown.Load() - l.now().UnixNano())
		if d <= 0 {
			return nil
		}
		if err := sleepOrWake(ctx, d, nil, nil); err != nil {
			return err
		}
	}
}

// claim takes g's turn in this process and claims a slot in each of g's
// schedules; it returns when the call may start. A batch call gives the
// turn up while it waits, whenever an interactive call wants it.
func (l *KVLimiter) claim(ctx context.Context, g *rateGate, lane Lane) (time.Time, error) {
	urgent, err := g.turn.take(ctx, lane)
	if err != nil {
		return time.Time{}, err
	}
	held := true
	defer func() {
		if held {
			g.turn.release()
		}
	}()
	backoff := 50 * time.Millisecond
	for {
		at, wait, changed, err := l.reserve(ctx, g, lane)
		switch {
		case err != nil:
			if ctx.Err() != nil {
				return time.Time{}, ctx.Err()
			}
			l.warnEvery(&l.kvWarned, "rate limiter: the shared bucket is unavailable; calls wait", "error", err)
			wait, changed = backoff, nil
			backoff = min(2*backoff, 2*time.Second)
		case !at.IsZero():
			return at, nil
		}
		if err := sleepOrWake(ctx, wait, changed, urgent); err != nil {
			return time.Time{}, err
		}
		select {
		case <-urgent: // nothing claimed yet: let the interactive call go first
			if urgent, err = g.turn.yield(ctx); err != nil {
				held = false
				return time.Time{}, err
			}
		default:
		}
	}
}

// reserve claims the call's slots if they start within its lane's reach
// (Horizon, or g.batchReach). It returns the start, or how long to wait
// (woken early by changed) before trying again; neither means try again
// now.
func (l *KVLimiter) reserve(ctx context.Context, g *rateGate, lane Lane) (at time.Time, wait time.Duration, changed <-chan struct{}, err error) {
	select {
	case l.claiming <- struct{}{}:
	case <-ctx.Done():
		return time.Time{}, 0, nil, ctx.Err()
	}
	defer func() { <-l.claiming }()
	// A bucket that does not answer must not hold the other claims up.
	ctx, cancel := context.WithTimeout(ctx, kvOpTimeout)
	defer cancel()
	now := l.now()
	earliest := max(now.UnixNano(), l.cooldown.Load())
	slots := make([]kvState, len(g.scopes))
	l.mu.Lock()
	changed = l.changed
	for i, s := range g.scopes {
		slots[i] = l.keys[s.key]
	}
	l.mu.Unlock()
	// Each schedule's slot starts at its own next free time; the call
	// starts when the last of them does.
	t := earliest
	for i, s := range g.scopes {
		t = max(t, l.sane(s, slots[i].at, now))
	}
	reach := now.Add(g.reach(lane, l.cfg.Horizon)).UnixNano()
	if t > reach {
		return time.Time{}, time.Duration(t - reach), changed, nil
	}
	for i, s := range g.scopes {
		cur := slots[i]
		for {
			start := max(earliest, l.sane(s, cur.at, now))
			if i > 0 && start > now.Add(2*l.cfg.Horizon).UnixNano() {
				return time.Time{}, 0, nil, nil // the earlier slots go unused
			}
			next := start + int64(s.interval)
			rev, err := l.cas(ctx, s.key, strconv.AppendInt(nil, next, 10), cur.rev)
			if err == nil {
				l.store(s.key, kvState{at: next, rev: rev}, false)
				t = max(t, start)
				break
			}
			if !isConflict(err) {
				return time.Time{}, 0, nil, err
			}
			if err := l.refresh(ctx, s.key); err != nil {
				return time.Time{}, 0, nil, err
			}
			if i == 0 {
				return time.Time{}, 0, nil, nil // nothing claimed yet: recheck the horizon
			}
			cur = l.state(s.key)
		}
	}
	return time.Unix(0, t), 0, nil, nil
}

// sane returns a schedule's next start as this process should take it: a
// time further ahead than any process could have claimed comes from a clock
// far ahead of this one, and is taken as now.
func (l *KVLimiter) sane(s rateScope, at int64, now time.Time) int64 {
	limit := now.Add(2*l.cfg.Horizon + s.interval + l.cfg.MaxClockSkew).UnixNano()
	if at <= limit {
		return at
	}
	l.warnEvery(&l.skewWarned, "rate limiter: a worker's clock is ahead of this one by more than the allowed skew; pacing across them is not exact until the clocks agree",
		"key", s.key, "ahead", time.Duration(at-now.UnixNano()-int64(2*l.cfg.Horizon+s.interval)).Round(time.Millisecond), "max_clock_skew", l.cfg.MaxClockSkew)
	return now.UnixNano()
}

// cas writes value to key if its revision is still rev (0: absent).
func (l *KVLimiter) cas(ctx context.Context, key string, value []byte, rev uint64) (uint64, error) {
	if rev == 0 {
		return l.kv.Create(ctx, key, value)
	}
	return l.kv.Update(ctx, key, value, rev)
}

func isConflict(err error) bool {
	return errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists)
}

// refresh reads key from the bucket after a lost compare-and-set; the watch
// may not have delivered the winner's write yet.
func (l *KVLimiter) refresh(ctx context.Context, key string) error {
	e, err := l.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		l.store(key, kvState{}, true)
		return nil
	}
	if err != nil {
		return err
	}
	st, ok := decodeState(e.Value())
	if !ok {
		st = kvState{} // overwritten by the next claim
	}
	st.rev = e.Revision()
	l.store(key, st, true)
	return nil
}

func (l *KVLimiter) state(key string) kvState {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.keys[key]
}

// decodeState reads "<unix ns>" or "<unix ns>,<duration ns>".
func decodeState(v []byte) (kvState, bool) {
	at, dur, hasDur := strings.Cut(string(v), ",")
	var st kvState
	var err error
	if st.at, err = strconv.ParseInt(at, 10, 64); err != nil {
		return st, false
	}
	if hasDur {
		if st.dur, err = strconv.ParseInt(dur, 10, 64); err != nil {
			return st, false
		}
	}
	return st, true
}

// warnEvery logs at most once a minute per counter.
func (l *KVLimiter) warnEvery(last *atomic.Int64, msg string, args ...any) {
	now := time.Now().UnixNano()
	prev := last.Load()
	if now-prev < int64(time.Minute) || !last.CompareAndSwap(prev, now) {
		return
	}
	l.log.Warn(msg, args...)
}

// sleepOrWake waits d, or until wake or urgent is closed (nil: never); it
// returns ctx's error if ctx ends first.
func sleepOrWake(ctx context.Context, d time.Duration, wake, urgent <-chan struct{}) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-wake:
		return nil
	case <-urgent:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
