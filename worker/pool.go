package worker

// This file holds the pool's contract: what it needs (Upstream, Limiter in
// lane.go, DeadLetterer), its configuration and options, and NewPool. How
// it runs is in run.go and pull.go; how it handles a delivery in
// handler.go and the step_*.go files.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/laas-bridge/laas-bridge/internal/accesslog"
	"github.com/laas-bridge/laas-bridge/internal/tracing"
	"github.com/laas-bridge/laas-bridge/laas"
	"github.com/laas-bridge/laas-bridge/queue"
	"github.com/laas-bridge/laas-bridge/queue/jobstore"
	"github.com/laas-bridge/laas-bridge/schema"
)

// Upstream runs one LaaS call. *laas.Client implements it.
type Upstream interface {
	Complete(ctx context.Context, req *schema.LaaSRequest) (*schema.LaaSResponse, error)
}

var _ Upstream = (*laas.Client)(nil)

// DeadLetter is a job that ran out of attempts.
type DeadLetter struct {
	// Envelope is the job's envelope as the worker read it.
	Envelope schema.Envelope
	// Reason is the last error, as the caller got it; Status its HTTP
	// status.
	Reason schema.ErrorDetail
	Status int
	// Attempts is how many deliveries the job had.
	Attempts int
	// LastAttempt is when the last attempt began: its LaaS call's start,
	// or when the worker gave up on an attempt that never reached LaaS.
	// The first attempt is not tracked; the envelope's EnqueuedAt is the
	// nearest.
	LastAttempt time.Time
	// FailedAt is when the job was given up.
	FailedAt time.Time
}

// DeadLetterer keeps jobs that ran out of attempts, for inspection and
// replay. Implementations must be safe for concurrent use.
type DeadLetterer interface {
	DeadLetter(ctx context.Context, dl DeadLetter) error
}

// Option configures a Pool.
type Option func(*Pool)

// WithLimiter paces LaaS calls with l.
func WithLimiter(l Limiter) Option { return func(p *Pool) { p.limiter = l } }

// WithConcurrencyCap holds every LaaS call to c's caps (KVCap: the
// project's BRIDGE_LAAS_MAX_CONCURRENCY and each model's
// max_parallel_requests, over every worker process). Without it, the
// default, no step is added to a job's path.
func WithConcurrencyCap(c ConcurrencyCap) Option { return func(p *Pool) { p.caps = c } }

// WithTracer traces each job (step_trace.go) with t; a nil t, the
// default, is tracing off.
func WithTracer(t *tracing.Tracer) Option { return func(p *Pool) { p.tracer = t } }

// WithAccessLog writes an access line (door "batch") for every job
// nobody waits for over HTTP (Envelope.Job: async jobs, Batch API lines,
// direct producers' jobs), as it is answered; a nil l, the default,
// writes none. Requests with a caller get theirs from the gateway.
func WithAccessLog(l *accesslog.Log) Option { return func(p *Pool) { p.access = l } }

// WithDeadLetters keeps jobs that ran out of attempts in d.
func WithDeadLetters(d DeadLetterer) Option { return func(p *Pool) { p.dead = d } }

// Config configures a worker pool.
type Config struct {
	// Concurrency is how many LaaS calls this pool runs at once; default 64.
	Concurrency int
	// ShutdownGrace is how long in-flight calls may run after shutdown
	// begins before they are abandoned to redelivery; default 30s.
	ShutdownGrace time.Duration
	// AllowPresetOverride lets a request name its own preset_hash.
	AllowPresetOverride bool
	// RetryBase and RetryMax bound the exponential backoff between attempts
	// at a retryable failure; defaults 500ms and 30s.
	RetryBase, RetryMax time.Duration
}

// DefaultConcurrency is Config.Concurrency's default.
const DefaultConcurrency = 64

func (c *Config) setDefaults() {
	if c.Concurrency == 0 {
		c.Concurrency = DefaultConcurrency
	}
	if c.ShutdownGrace == 0 {
		c.ShutdownGrace = 30 * time.Second
	}
	if c.RetryBase == 0 {
		c.RetryBase = 500 * time.Millisecond
	}
	if c.RetryMax == 0 {
		c.RetryMax = 30 * time.Second
	}
}

// Validate reports every invalid field at once.
func (c Config) Validate() error {
	var errs []error
	if c.Concurrency < 1 || c.Concurrency > 10_000 {
		errs = append(errs, fmt.Errorf("worker concurrency must be 1 to 10000, got %d", c.Concurrency))
	}
	if c.ShutdownGrace < 0 {
		errs = append(errs, errors.New("worker shutdown grace must not be negative"))
	}
	if c.RetryBase <= 0 || c.RetryMax < c.RetryBase {
		errs = append(errs, fmt.Errorf("retry backoff must satisfy 0 < base <= max, got %s and %s", c.RetryBase, c.RetryMax))
	}
	return errors.Join(errs...)
}

// Pool runs jobs from the shared consumer. Create it with NewPool and start
// it with Run.
type Pool struct {
	cfg        Config
	nc         *nats.Conn
	js         jetstream.JetStream
	cons       jetstream.Consumer // the interactive lane
	batch      jetstream.Consumer // the batch lane
	bodies     jetstream.ObjectStore
	answers    jetstream.KeyValue
	jobs       *jobstore.Store // job states and results (see jobs.go)
	inlineMax  int
	up         Upstream
	catalog    atomic.Pointer[schema.Catalog] // SetCatalog swaps it
	log        *slog.Logger
	ackWait    time.Duration
	maxDeliver int
	cancels    *cancels
	limiter    Limiter        // nil: no pacing
	caps       ConcurrencyCap // nil: no concurrency cap
	dead       DeadLetterer   // nil: none kept
	metricsReg prometheus.Registerer
	metrics    *poolMetrics // nil: none kept
	ledger     KeyLedger    // nil: keys' usage is not counted
	keys       KeyResolver  // nil: keys are not looked up
	keyMetrics *keyMetrics  // nil: none kept

	// beats signals the deliveries being worked on (keepInProgress),
	// made on first use from ackWait.
	beatOnce sync.Once
	beats    *heartbeat
	// send hands an encoded reply to a gateway: sendReply (tests replace it).
	send func(subject string, data []byte) error
	// local, when set, hands a reply on a direct subject to a gateway in
	// this process (see HandRepliesTo); false: not that gateway's.
	local atomic.Pointer[func(direct string, data []byte) bool]
	// tracer traces each job (step_trace.go); nil: tracing off.
	tracer *tracing.Tracer
	access *accesslog.Log // nil: no access lines
	// handler runs one delivery: every step of newHandler.
	handler handlerFunc
}

// SetCatalog puts a reloaded model catalogue in force for the jobs taken
// next; a job already taken runs on the model it was prepared with.
func (p *Pool) SetCatalog(catalog *schema.Catalog) { p.catalog.Store(catalog) }

// HandRepliesTo makes the pool hand a reply whose direct subject belongs
// to a gateway in this process (laas-bridge serve) straight to it, as the
// gateway would take it from NATS on the fast path, without the NATS
// round trip; deliver reports whether the subject was its. Safe to call
// while the pool runs.
func (p *Pool) HandRepliesTo(deliver func(direct string, data []byte) bool) { p.local.Store(&deliver) }

// NewPool builds a pool over cons, which must be the workers' consumer on
// the request stream; the large-body store must exist (see queue.Ensure).
func NewPool(cfg Config, js jetstream.JetStream, cons jetstream.Consumer, up Upstream, catalog *schema.Catalog, log *slog.Logger, opts ...Option) (*Pool, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	batch, err := js.Consumer(ctx, schema.StreamRequests, schema.ConsumerBatch)
	if err != nil {
		return nil, fmt.Errorf("batch lane consumer %s: %w", schema.ConsumerBatch, err)
	}
	bodies, err := js.ObjectStore(ctx, schema.BucketBodies)
	if err != nil {
		return nil, fmt.Errorf("large-body store %s: %w", schema.BucketBodies, err)
	}
	answers, err := js.KeyValue(ctx, schema.BucketAnswers)
	if err != nil {
		return nil, fmt.Errorf("answers bucket %s: %w", schema.BucketAnswers, err)
	}
	jobs, err := jobstore.Open(ctx, js)
	if err != nil {
		return nil, err
	}
	info := cons.CachedInfo()
	nc := js.Conn()
	p := &Pool{cfg: cfg, nc: nc, js: js, cons: cons, batch: batch, bodies: bodies, answers: answers, jobs: jobs, inlineMax: int(nc.MaxPayload() / 2), up: up, log: log,
		ackWait: info.Config.AckWait, maxDeliver: info.Config.MaxDeliver}
	p.catalog.Store(catalog)
	if p.ackWait <= 0 {
		p.ackWait = queue.DefaultAckWait
	}
	for _, o := range opts {
		o(p)
	}
	if p.metrics, err = newPoolMetrics(p.metricsReg, &p.catalog); err != nil {
		return nil, err
	}
	if p.ledger != nil {
		if p.keyMetrics, err = newKeyMetrics(p.metricsReg); err != nil {
			return nil, err
		}
	}
	p.limiter = p.metrics.timed(p.limiter)
	p.send = p.sendReply
	p.handler = p.newHandler()
	// A cancel that names no deadline: remember the id as long as a
	// request may wait in the queue.
	if p.cancels, err = newCancels(nc, schema.MaxRequestTimeout, maxCancelled, p.metrics.cancelDropped); err != nil {
		return nil, err
	}
	return p, nil
}
