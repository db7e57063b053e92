package worker

// This file holds KVCap, the concurrency cap every worker process shares
// through one JetStream key-value bucket (queue.BucketSlots): its
// configuration, construction and Acquire. The leases (claim, refresh,
// release) are in cap_lease.go, the bucket watch and the lanes' order in
// cap_watch.go.

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/laas-bridge/laas-bridge/queue"
	"github.com/laas-bridge/laas-bridge/schema"
)

// ConcurrencyCap bounds the LaaS calls in flight across every worker
// process. Implementations must be safe for concurrent use.
type ConcurrencyCap interface {
	// Acquire waits until a call for model, of a job from lane, holds a
	// slot under every cap that applies to it, and returns the func that
	// gives them back (call it once, when the call is over). It returns a
	// nil release and no error when no cap applies, and ctx's error if ctx
	// ends first (holding nothing then). lost is called at most once, from
	// another goroutine, if a slot is lost while held (the process could
	// not renew its lease in time): the call should stop.
	Acquire(ctx context.Context, model schema.Model, lane Lane, lost func()) (release func(), err error)
	// Applies reports whether any cap applies to a call for model.
	Applies(model schema.Model) bool
}

// KVCap is the ConcurrencyCap shared by every worker process: the project's
// cap (CapConfig.Max, BRIDGE_LAAS_MAX_CONCURRENCY) and each model's
// (schema.Model.MaxParallelRequests) hold for all processes and both lanes
// together. Its only shared state is a JetStream key-value bucket
// (queue.BucketSlots); there is no leader.
//
// # Slots: leases with a server-side TTL
//
// A cap of n is n keys, "<scope>.slot.0" .. "<scope>.slot.<n-1>" (scope
// "project", or "model.<alias, base64>"). A call holds a slot by writing
// its key with a compare-and-set on the revision it last saw (an absent
// key, or the marker a released or expired lease left), so no two holders
// ever have the same key: at most n calls hold a slot of the scope. A call
// of a capped model holds a slot of its model's cap and then one of the
// project's, always in that order (so no two calls wait for each other),
// and gives both back when its call is over.
//
// Each lease carries a TTL (jetstream.KeyTTL, in whole seconds: the
// server's resolution) that the server enforces by its own clock: while
// it holds a lease a process rewrites it about every LeaseTTL/3, and a
// process that dies holding one leaves it to expire, LeaseTTL after its
// last rewrite. LeaseTTL is three fifths of the lane consumers' AckWait
// (3 s of the default 5 s; at least 1 s), so a dead worker's slots are
// free again within its AckWait, when its jobs are handed out again. The
// expiry is the server's, so the machines' clocks play no part; this
// process measures only durations on its own clock. A waiting process
// also takes over a lease it has not seen rewritten for LeaseTTL and one
// beat (by compare-and-set on the revision it saw, which fails if the
// holder did rewrite it), in case the expiry's marker never reached it.
// Every held lease is rewritten at once. A process that cannot rewrite a
// lease (cut off from NATS) takes it as lost half a beat before the server
// may remove it, by a timer of the lease's own however long the writes
// hang: it calls lost, and the pool stops the call and hands the job back.
//
// # Lanes: interactive calls first
//
// Inside one process, callers of one scope take turns (the rate limiter's
// laneTurn): interactive callers first, each lane in arrival order, and a
// batch caller gives the turn up when an interactive caller waits for it.
// Across processes, a process whose interactive callers wait for a slot of
// a scope says so in the bucket ("<scope>.wait.<process>", with the same
// TTL, removed when none waits), and a batch caller takes no slot while
// any other process says so. So a batch call never takes a slot an
// interactive call is waiting for, once the waiting process's key reached
// the batch caller's process (one watch delivery, typically well under a
// millisecond). While interactive calls alone keep the cap full, batch
// calls wait, holding their jobs, until the interactive demand falls
// below the cap or their deadlines pass; that order is intended.
//
// # Overhead
//
// With no cap for the call's model and no project cap, Acquire compares
// two integers: no bucket round trip, no allocation. With a cap, a call
// costs one compare-and-set to take each slot and one write to give it
// back, plus one rewrite per held lease every LeaseTTL/3; every process's
// watch sees every write.
//
// All processes should run with the same caps: a process with a larger
// cap uses more slot keys than the others, so the calls in flight are
// bounded by the largest cap of any running process (a process that sees
// a project slot beyond its own cap says so in its log, once).
type KVCap struct {
	js   jetstream.JetStream
	kv   jetstream.KeyValue
	cfg  CapConfig
	ttl  time.Duration // a lease's TTL
	beat time.Duration // how often held leases are rewritten
	subj string        // the bucket's subject prefix, "$KV.<bucket>."
	self []byte        // this process's id, the value of its leases
	log  *slog.Logger
	now  func() time.Time

	mu      sync.Mutex
	slots   map[string]slotState            // slot key -> as last seen
	waits   map[string]map[string]time.Time // scope -> other processes' wait keys -> when last written
	changed chan struct{}                   // closed and replaced whenever slots or waits change

	project *capScope // nil: no project cap
	models  sync.Map  // modelCapKey -> *capScope

	held   sync.Map      // *lease -> struct{}: the leases this process holds
	kick   chan struct{} // wakes the keeper at once (a scope's waiters are gone)
	stop   chan struct{}
	done   chan struct{}
	closed atomic.Bool

	stream    atomic.Pointer[jetstream.Stream] // the bucket's, for rereads
	kvWarned  atomic.Int64
	stopWatch func()
}

var _ ConcurrencyCap = (*KVCap)(nil)

// CapConfig configures a KVCap. Every process should use the same values.
type CapConfig struct {
	// Bucket is the KV bucket every worker process shares
	// (queue.BucketSlots); required.
	Bucket string
	// Max caps the LaaS calls in flight over every worker process and both
	// lanes; 0 means no project cap (models may still have their own).
	Max int
	// AckWait is the lane consumers' AckWait; a lease's TTL is three fifths
	// of it, at least 1s. Default queue.DefaultAckWait.
	AckWait time.Duration
	// Process names this process in the bucket; default a unique id.
	Process string
}

// Validate reports every invalid field at once.
func (c CapConfig) Validate() error {
	var errs []error
	if c.Bucket == "" {
		errs = append(errs, errors.New("concurrency cap needs a bucket"))
	}
	if c.Max < 0 {
		errs = append(errs, fmt.Errorf("LaaS max concurrency must not be negative, got %d", c.Max))
	}
	if c.AckWait < 0 {
		errs = append(errs, fmt.Errorf("concurrency cap ack wait must not be negative, got %s", c.AckWait))
	}
	return errors.Join(errs...)
}

// LeaseTTL is the TTL of a slot's lease under a consumer AckWait of
// ackWait: three fifths of it in whole seconds (the server's resolution),
// at least one second. A dead holder's slot is free again within it.
func LeaseTTL(ackWait time.Duration) time.Duration {
	return max(time.Second, (ackWait * 3 / 5).Truncate(time.Second))
}

// slotState is a slot key as last seen: its revision, whether a lease
// holds it (false: absent, or a marker), and when it was seen (this
// process's clock).
type slotState struct {
	rev  uint64
	live bool
	seen time.Time
}

// capScope is one cap: its keys' prefix and size, and this process's turn
// and waiting interactive callers.
type capScope struct {
	prefix string
	n      int
	turn   laneTurn

	interactive atomic.Int32 // interactive callers of this process waiting for a slot
	advMu       sync.Mutex   // held while this process's wait key is written
	advertised  bool         // this process's wait key is in the bucket
	larger      atomic.Bool  // another process's cap was seen to be larger (warned)
}

type modelCapKey struct {
	alias string
	n     int
}

// NewKVCap returns a cap over cfg.Bucket, the bucket every worker process
// shares (see queue.Ensure), once it has loaded the bucket's current
// state. Close stops it.
func NewKVCap(ctx context.Context, js jetstream.JetStream, cfg CapConfig, log *slog.Logger) (*KVCap, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.AckWait == 0 {
		cfg.AckWait = queue.DefaultAckWait
	}
	if cfg.Process == "" {
		cfg.Process = nuid.Next()
	}
	kv, err := js.KeyValue(ctx, cfg.Bucket)
	if err != nil {
		return nil, fmt.Errorf("concurrency-cap bucket %s: %w", cfg.Bucket, err)
	}
	ttl := LeaseTTL(cfg.AckWait)
	c := &KVCap{js: js, kv: kv, cfg: cfg, ttl: ttl, beat: ttl / 3, subj: "$KV." + cfg.Bucket + ".", self: []byte(cfg.Process),
		log: log, now: time.Now, slots: map[string]slotState{}, waits: map[string]map[string]time.Time{}, changed: make(chan struct{}),
		kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	if cfg.Max > 0 {
		c.project = &capScope{prefix: "project", n: cfg.Max}
	}
	c.stopWatch, err = queue.FollowBucket(ctx, kv, js.Conn(), c.apply, func(err error) {
		c.warnEvery("concurrency cap: cannot watch the shared bucket; retrying", "error", err)
	})
	if err != nil {
		return nil, fmt.Errorf("concurrency-cap bucket %s: %w", cfg.Bucket, err)
	}
	go c.keep()
	return c, nil
}

// Close stops renewing leases and the bucket's watch. Leases still held
// then expire by their TTL. Acquire must not be called after Close.
func (c *KVCap) Close() {
	if c.closed.Swap(true) {
		return
	}
	close(c.stop)
	<-c.done
	c.stopWatch()
}

// Applies implements ConcurrencyCap: the project has a cap, or model has.
func (c *KVCap) Applies(model schema.Model) bool {
	return model.MaxParallelRequests > 0 || c.project != nil
}

// Acquire implements ConcurrencyCap: a slot of the model's cap (when it
// has one), then one of the project's (when there is one).
func (c *KVCap) Acquire(ctx context.Context, model schema.Model, lane Lane, lost func()) (func(), error) {
	if model.MaxParallelRequests <= 0 && c.project == nil {
		return nil, nil
	}
	var once sync.Once
	lostOnce := func() {
		if lost != nil {
			once.Do(lost)
		}
	}
	var got [2]*lease
	n := 0
	for _, s := range [2]*capScope{c.modelScope(model), c.project} {
		if s == nil {
			continue
		}
		l, err := c.take(ctx, s, lane, lostOnce)
		if err != nil {
			for _, l := range got[:n] {
				c.release(l)
			}
			return nil, err
		}
		got[n] = l
		n++
	}
	return func() {
		for _, l := range got[:n] {
			c.release(l)
		}
	}, nil
}

// modelScope is m's own cap, or nil when it has none.
func (c *KVCap) modelScope(m schema.Model) *capScope {
	if m.MaxParallelRequests <= 0 {
		return nil
	}
	k := modelCapKey{m.Alias, m.MaxParallelRequests}
	if s, ok := c.models.Load(k); ok {
		return s.(*capScope)
	}
	s, _ := c.models.LoadOrStore(k, &capScope{prefix: modelScopePrefix(m.Alias), n: m.MaxParallelRequests})
	return s.(*capScope)
}

// modelScopePrefix is the key prefix of a model's cap; the alias is
// encoded because it may hold characters a key may not.
func modelScopePrefix(alias string) string {
	if alias == "" {
		return "model.-"
	}
	return "model." + base64.RawURLEncoding.EncodeToString([]byte(alias))
}

func slotKey(s *capScope, i int) string { return s.prefix + ".slot." + strconv.Itoa(i) }

// take waits for a slot of s, in lane order, and claims it.
func (c *KVCap) take(ctx context.Context, s *capScope, lane Lane, lost func()) (*lease, error) {
	if lane == LaneInteractive {
		s.interactive.Add(1)
		defer func() {
			if s.interactive.Add(-1) == 0 {
				select { // the keeper withdraws the wait key
				case c.kick <- struct{}{}:
				default:
				}
			}
		}()
	}
	urgent, err := s.turn.take(ctx, lane)
	if err != nil {
		return nil, err
	}
	held := true
	defer func() {
		if held {
			s.turn.release()
		}
	}()
	backoff := 50 * time.Millisecond
	start := rand.IntN(s.n) // processes start their search at different slots
	for {
		key, rev, wait, changed := c.pick(s, lane, start)
		if key != "" {
			l, err := c.claim(ctx, key, rev, lost)
			switch {
			case err == nil:
				return l, nil
			case ctx.Err() != nil:
				return nil, ctx.Err()
			case isWrongLastSeq(err):
				if err := c.reread(ctx, key); err != nil && ctx.Err() == nil {
					c.warnEvery("concurrency cap: the shared bucket is unavailable; calls wait", "error", err)
				}
				continue
			default:
				c.warnEvery("concurrency cap: the shared bucket is unavailable; calls wait", "error", err)
				wait, changed = backoff, nil
				backoff = min(2*backoff, 2*time.Second)
			}
		} else if lane == LaneInteractive {
			c.advertise(ctx, s)
		}
		if err := sleepOrWake(ctx, wait, changed, urgent); err != nil {
			return nil, err
		}
		select {
		case <-urgent: // nothing claimed: let the interactive caller go first
			if urgent, err = s.turn.yield(ctx); err != nil {
				held = false
				return nil, err
			}
		default:
		}
	}
}

// pick returns a free slot of s for a caller of lane (its key and the
// revision to claim it at), or how long to wait, woken early by changed.
// A slot is free when no lease holds it, or when its lease has not been
// rewritten for a lease's TTL and a beat (its holder is gone; the claim's
// compare-and-set finds out). A batch caller gets none while another
// process's interactive callers wait for s.
func (c *KVCap) pick(s *capScope, lane Lane, start int) (key string, rev uint64, wait time.Duration, changed <-chan struct{}) {
	now := c.now()
	stale := c.ttl + c.beat
	wait = stale
	c.mu.Lock()
	defer c.mu.Unlock()
	changed = c.changed
	if lane == LaneBatch {
		for _, seen := range c.waits[s.prefix] {
			if left := seen.Add(stale).Sub(now); left > 0 {
				return "", 0, min(wait, left), changed
			}
		}
	}
	for j := range s.n {
		k := slotKey(s, (start+j)%s.n)
		st := c.slots[k]
		if !st.live {
			return k, st.rev, 0, changed
		}
		left := st.seen.Add(stale).Sub(now)
		if left <= 0 {
			return k, st.rev, 0, changed
		}
		wait = min(wait, left)
	}
	return "", 0, wait, changed
}

// warnEvery logs at most once a minute.
func (c *KVCap) warnEvery(msg string, args ...any) {
	now := time.Now().UnixNano()
	prev := c.kvWarned.Load()
	if now-prev < int64(time.Minute) || !c.kvWarned.CompareAndSwap(prev, now) {
		return
	}
	c.log.Warn(msg, args...)
}
