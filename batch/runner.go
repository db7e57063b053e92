package batch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/laas-bridge/laas-bridge/admission"
	"github.com/laas-bridge/laas-bridge/schema"
)

// RunnerConfig configures a Runner.
type RunnerConfig struct {
	// Owner names this runner in leases; default a random NUID.
	Owner string
	// LeaseTTL is how long a batch stays with a runner that stopped
	// renewing its lease (it renews every third of it); default 15s.
	LeaseTTL time.Duration
	// ScanInterval is how often the runner looks for batches to drive;
	// default 2s.
	ScanInterval time.Duration
	// SaveInterval is how often a running batch's counts and progress are
	// written; default 1s.
	SaveInterval time.Duration
	// Window is the most lines of one batch queued and not yet answered;
	// default 1000.
	Window int
	// MaxActive is the most batches this runner drives at once
	// (BRIDGE_BATCH_MAX_ACTIVE); the others wait for a runner with room:
	// another gateway's, or this one's at a later scan. Default
	// DefaultMaxActive.
	MaxActive int
	// MaxBodyBytes bounds a batch line's request body, as
	// admission Config.MaxBodyBytes bounds any request's
	// (BRIDGE_MAX_BODY_BYTES); see Validator.MaxBodyBytes. Default
	// admission.DefaultMaxBodyBytes.
	MaxBodyBytes int64
}

// DefaultMaxActive is RunnerConfig.MaxActive's default: a runner holds a
// plan (up to schema.MaxBatchLines lines) and a reader of the input file
// for each batch it drives.
const DefaultMaxActive = 4

func (c *RunnerConfig) setDefaults() {
	if c.Owner == "" {
		// A NUID, not schema.NewID: it names a process in leases and
		// logs, not anyone's data, and needs only to be unique.
		c.Owner = nuid.Next()
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = 15 * time.Second
	}
	if c.ScanInterval == 0 {
		c.ScanInterval = 2 * time.Second
	}
	if c.SaveInterval == 0 {
		c.SaveInterval = time.Second
	}
	if c.Window == 0 {
		c.Window = 1000
	}
	if c.MaxActive == 0 {
		c.MaxActive = DefaultMaxActive
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = admission.DefaultMaxBodyBytes
	}
}

// Validate reports every invalid field at once.
func (c RunnerConfig) Validate() error {
	var errs []error
	if c.LeaseTTL < time.Second {
		errs = append(errs, fmt.Errorf("batch lease TTL must be at least 1s, got %s", c.LeaseTTL))
	}
	if c.ScanInterval <= 0 || c.SaveInterval <= 0 {
		errs = append(errs, errors.New("batch scan and save intervals must be positive"))
	}
	if c.Window < 1 {
		errs = append(errs, fmt.Errorf("batch window must be positive, got %d", c.Window))
	}
	if c.MaxActive < 1 {
		errs = append(errs, fmt.Errorf("batches a runner drives at once (BRIDGE_BATCH_MAX_ACTIVE) must be at least 1, got %d", c.MaxActive))
	}
	if c.MaxBodyBytes < 1 {
		errs = append(errs, fmt.Errorf("batch line body limit must be positive, got %d", c.MaxBodyBytes))
	}
	return errors.Join(errs...)
}

// Runner drives batches: validates their lines, queues them, collects the
// answers, writes the output and error files. Every gateway runs one; see
// the package doc for how they share the work.
type Runner struct {
	cfg       RunnerConfig
	js        jetstream.JetStream
	nc        *nats.Conn
	store     *Store
	answers   jetstream.KeyValue
	core      *admission.Core
	validator Validator
	log       *slog.Logger

	mu      sync.Mutex
	running map[string]string // batch id -> its Record.CreatedBy
	wg      sync.WaitGroup
}

// NewRunner builds a runner; the queue's streams and buckets must exist.
func NewRunner(cfg RunnerConfig, js jetstream.JetStream, store *Store, core *admission.Core, log *slog.Logger) (*Runner, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	answers, err := js.KeyValue(ctx, schema.BucketAnswers)
	if err != nil {
		return nil, fmt.Errorf("answers bucket %s: %w", schema.BucketAnswers, err)
	}
	nc := js.Conn()
	return &Runner{
		cfg: cfg, js: js, nc: nc, store: store, answers: answers, core: core,
		validator: Validator{Core: core, MaxBodyBytes: cfg.MaxBodyBytes},
		log:       log.With("batch_runner", cfg.Owner),
		running:   map[string]string{},
	}, nil
}

// Run drives batches until ctx is done, then waits for the batches it was
// driving to stop (their leases lapse and another runner takes them).
func (r *Runner) Run(ctx context.Context) error {
	t := time.NewTicker(r.cfg.ScanInterval)
	defer t.Stop()
	for {
		r.scan(ctx)
		select {
		case <-ctx.Done():
			r.wg.Wait()
			return nil
		case <-t.C:
		}
	}
}

// scan takes active batches that have no live owner, while this runner
// drives fewer than MaxActive. Of the batches waiting, it takes first
// those whose creator (Record.CreatedBy) has the fewest batches running
// on this runner, the oldest first among equals: one caller's many long
// batches do not keep another caller's batch waiting behind all of them
// whenever a slot frees.
func (r *Runner) scan(ctx context.Context) {
	ids, err := r.store.activeIDs(ctx)
	if err != nil && !errors.Is(err, jetstream.ErrNoKeysFound) {
		if ctx.Err() == nil {
			r.log.Warn("could not list active batches", "error", err)
		}
		return
	}
	if r.full() {
		return // the rest wait for a runner with room
	}
	type candidate struct{ id, createdBy string }
	var waiting []candidate
	for id, markedAt := range ids {
		r.mu.Lock()
		_, busy := r.running[id]
		r.mu.Unlock()
		if busy {
			continue
		}
		rec, _, err := r.store.Batch(ctx, id)
		switch {
		case errors.Is(err, ErrNotFound):
			// A marker whose record was never written (its gateway died
			// between the two): remove it once it is clearly stale.
			if time.Since(markedAt) > time.Minute {
				_ = r.store.deactivate(ctx, id)
			}
			continue
		case err != nil:
			if ctx.Err() == nil {
				r.log.Warn("could not read a batch", "batch_id", id, "error", err)
			}
			continue
		case schema.BatchDone(rec.Batch.Status):
			_ = r.store.deactivate(ctx, id)
			continue
		case rec.Owner != r.cfg.Owner && rec.Owner != "" && time.Now().Before(rec.LeaseUntil):
			continue // another runner's; checked again when taken
		}
		waiting = append(waiting, candidate{id, rec.CreatedBy})
	}
	// Batch ids sort by creation time: oldest first among equals.
	slices.SortFunc(waiting, func(a, b candidate) int { return strings.Compare(a.id, b.id) })
	for len(waiting) > 0 && !r.full() {
		best := 0
		r.mu.Lock()
		for i, c := range waiting {
			if r.runningOf(c.createdBy) < r.runningOf(waiting[best].createdBy) {
				best = i
			}
		}
		r.mu.Unlock()
		c := waiting[best]
		waiting = slices.Delete(waiting, best, best+1)
		r.take(ctx, c.id)
	}
}

// full reports whether this runner drives MaxActive batches.
func (r *Runner) full() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.running) >= r.cfg.MaxActive
}

// runningOf counts the batches of createdBy this runner drives; r.mu held.
func (r *Runner) runningOf(createdBy string) int {
	n := 0
	for _, by := range r.running {
		if by == createdBy {
			n++
		}
	}
	return n
}

// take takes batch id when it has no live owner, and drives it.
func (r *Runner) take(ctx context.Context, id string) {
	rec, err := r.store.Update(ctx, id, func(rec *Record) error {
		if schema.BatchDone(rec.Batch.Status) {
			return errUnchanged
		}
		if rec.Owner != r.cfg.Owner && rec.Owner != "" && time.Now().Before(rec.LeaseUntil) {
			return errLeaseHeld
		}
		rec.Owner, rec.LeaseUntil = r.cfg.Owner, time.Now().Add(r.cfg.LeaseTTL)
		return nil
	})
	switch {
	case errors.Is(err, ErrNotFound), errors.Is(err, errLeaseHeld):
		return
	case IsUnchanged(err):
		_ = r.store.deactivate(ctx, id)
		return
	case err != nil:
		if ctx.Err() == nil {
			r.log.Warn("could not take a batch", "batch_id", id, "error", err)
		}
		return
	}
	r.mu.Lock()
	r.running[id] = rec.CreatedBy
	r.mu.Unlock()
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer func() { r.mu.Lock(); delete(r.running, id); r.mu.Unlock() }()
		r.drive(ctx, rec)
	}()
}
