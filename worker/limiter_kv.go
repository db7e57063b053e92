package worker

// This file holds KVLimiter, the Limiter every worker process shares
// through one JetStream key-value bucket: its configuration, construction,
// Wait and Throttled. The schedule claims are in limiter_claim.go, the
// bucket watch in limiter_watch.go and the lanes in limiter_lanes.go.

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/laas-bridge/laas-bridge/queue"
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

	stopWatch func() // ends the bucket's watch (queue.FollowBucket)
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

type modelGateKey struct {
	alias string
	rpm   int
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
		claiming: make(chan struct{}, 1)}
	if cfg.RPM > 0 {
		l.project = newRateGate(cfg.Horizon, rateScope{key: limitKeyProject, interval: time.Minute / time.Duration(cfg.RPM)})
	}
	// Every process watches the bucket: Wait reads the copy, not the bucket.
	l.stopWatch, err = queue.FollowBucket(ctx, kv, js.Conn(), l.apply, func(err error) {
		l.warnEvery(&l.kvWarned, "rate limiter: cannot watch the shared bucket; retrying", "error", err)
	})
	if err != nil {
		return nil, fmt.Errorf("rate-limit bucket %s: %w", cfg.Bucket, err)
	}
	return l, nil
}

// Close stops the limiter's watch. Wait must not be called after Close.
func (l *KVLimiter) Close() { l.stopWatch() }

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
