package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/laas-bridge/laas-bridge/admission/multimodal"
	"github.com/laas-bridge/laas-bridge/laas"
	"github.com/laas-bridge/laas-bridge/queue/failover"
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
	Envelope schema.Envelope
	// Reason is the last error, as the caller got it.
	Reason   schema.ErrorDetail
	Status   int
	Attempts int
	// FirstAttempt is approximate: the last attempt's start minus the
	// backoff is not tracked, so it is the envelope's EnqueuedAt.
	LastAttempt time.Time
	FailedAt    time.Time
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
	catalog    *schema.Catalog
	log        *slog.Logger
	ackWait    time.Duration
	maxDeliver int
	cancels    *cancels
	limiter    Limiter      // nil: no pacing
	dead       DeadLetterer // nil: none kept
	metricsReg prometheus.Registerer
	metrics    *poolMetrics // nil: none kept
}

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
	p := &Pool{cfg: cfg, nc: nc, js: js, cons: cons, batch: batch, bodies: bodies, answers: answers, jobs: jobs, inlineMax: int(nc.MaxPayload() / 2), up: up, catalog: catalog, log: log,
		ackWait: info.Config.AckWait, maxDeliver: info.Config.MaxDeliver}
	if p.ackWait <= 0 {
		p.ackWait = 30 * time.Second
	}
	for _, o := range opts {
		o(p)
	}
	if p.metrics, err = newPoolMetrics(p.metricsReg, catalog); err != nil {
		return nil, err
	}
	p.limiter = p.metrics.timed(p.limiter)
	// Remember a cancelled id as long as a request may wait in the queue.
	if p.cancels, err = newCancels(nc, schema.MaxRequestTimeout); err != nil {
		return nil, err
	}
	return p, nil
}

// Run pulls and runs jobs until ctx is done. Then it stops pulling, hands
// jobs that arrive from a pull still open back to the queue at once, and
// waits up to ShutdownGrace for calls in flight; calls still running then
// are abandoned and redelivered to another worker.
//
// A job is pulled only for a slot that is free: a job the server has handed
// out but no slot has taken would wait without InProgress acks, and past
// AckWait the server would hand it out again (and LaaS be called twice).
func (p *Pool) Run(ctx context.Context) error {
	defer p.cancels.close()
	// In-flight calls outlive ctx by up to ShutdownGrace.
	work, abandon := context.WithCancel(context.WithoutCancel(ctx))
	defer abandon()
	var wg sync.WaitGroup
	slots := make(chan struct{}, p.cfg.Concurrency)
	// A goroutine that finished a job waits a while for the next one
	// rather than exit: a fresh goroutine per job grew its stack again
	// while decoding every request (about 5% of a busy worker's CPU).
	idle := make(chan jetstream.Msg) // unbuffered: only a waiting runner takes a job
	quit := make(chan struct{})      // closed once pulling has stopped
	runner := func(msg jetstream.Msg) {
		t := time.NewTimer(runnerIdle)
		defer t.Stop()
		for {
			p.handle(work, msg)
			<-slots
			wg.Done()
			t.Reset(runnerIdle)
			select {
			case msg = <-idle:
			case <-t.C:
				return
			case <-quit:
				return
			}
		}
	}
	start := func(msg jetstream.Msg) bool {
		if ctx.Err() != nil { // shutting down: the job goes back
			_ = msg.Nak()
			return false
		}
		wg.Add(1)
		select {
		case idle <- msg:
		default:
			go runner(msg)
		}
		return true
	}
	p.log.Info("worker pool started", "concurrency", p.cfg.Concurrency, "max_deliver", p.maxDeliver, "ack_wait", p.ackWait)
	// Two pullers, so a pull is open while the other is being set up: a job
	// published between two pulls does not wait for a round trip.
	var pullers sync.WaitGroup
	for range min(2, p.cfg.Concurrency) {
		pullers.Go(func() {
			batchBusy := false // the batch lane had jobs at the last look
			for ctx.Err() == nil {
				select { // wait for one free slot, then take every free one
				case slots <- struct{}{}:
				case <-ctx.Done():
					continue
				}
				free := 1
			reserve:
				for free < p.cfg.Concurrency {
					select {
					case slots <- struct{}{}:
						free++
					default:
						break reserve
					}
				}
				var started int
				started, batchBusy = p.pull(ctx, free, batchBusy, start)
				for range free - started {
					<-slots
				}
			}
		})
	}
	pullers.Wait()
	close(quit)

	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(p.cfg.ShutdownGrace):
		p.log.Warn("shutdown grace over; abandoning calls in flight to redelivery")
		abandon()
		<-done
	}
	p.log.Info("worker pool stopped")
	return nil
}

// runnerIdle is how long a goroutine that finished a job waits for the
// next one before it exits.
const runnerIdle = 5 * time.Second

// idlePull is how long a pull waits for an interactive job when neither
// lane has one; a batch job arriving meanwhile waits at most this long.
const idlePull = time.Second

// pull fetches up to n jobs and hands each to start, interactive jobs
// first: it waits (up to idlePull) for interactive jobs unless the batch
// lane had jobs last time, then takes what the batch lane has for the slots
// still free. It returns how many jobs start took, and whether the batch
// lane had any.
func (p *Pool) pull(ctx context.Context, n int, batchBusy bool, start func(jetstream.Msg) bool) (started int, batchHad bool) {
	run := func(b jetstream.MessageBatch, err error) (int, error) {
		if err != nil {
			return 0, err
		}
		got := 0
		for msg := range b.Messages() {
			if start(msg) {
				got++
			}
		}
		return got, b.Error()
	}
	var err error
	if batchBusy {
		started, err = run(p.cons.FetchNoWait(n))
	} else {
		started, err = run(p.cons.Fetch(n, jetstream.FetchMaxWait(idlePull)))
	}
	if err == nil && started < n && ctx.Err() == nil {
		var got int
		got, err = run(p.batch.FetchNoWait(n - started))
		started += got
		batchHad = got > 0
	}
	if err != nil && ctx.Err() == nil {
		p.log.Warn("pull failed", "error", err)
		select {
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
		}
	}
	return started, batchHad
}

// job is one delivery of one request.
type job struct {
	msg      jetstream.Msg
	env      schema.Envelope
	replyTo  string
	attempt  int
	received time.Time
}

func (p *Pool) handle(ctx context.Context, msg jetstream.Msg) {
	defer p.metrics.handling()()
	var j job
	defer func() {
		if r := recover(); r != nil {
			p.log.Error("panic while handling a job; the job is terminated", "request_id", j.env.ID, "subject", msg.Subject(), "panic", r)
			_ = msg.Term()
		}
	}()
	j = job{msg: msg, replyTo: msg.Headers().Get(schema.HeaderReplyTo), attempt: 1, received: time.Now()}
	if md, err := msg.Metadata(); err == nil {
		j.attempt = int(md.NumDelivered)
	}
	if err := p.decodeJob(&j); err != nil {
		p.log.Error("dropping a message that is not a valid request", "subject", msg.Subject(), "error", err)
		_ = msg.Term()
		return
	}
	log := p.log.With("request_id", j.env.ID, "model", j.env.Model, "attempt", j.attempt)
	p.metrics.taken(&j)
	// Tell the server the job is being worked on from the start: fetching a
	// large body and checking a PDF can take a while too.
	stopProgress := p.keepAlive(ctx, msg)
	defer stopProgress()
	if j.env.Job && p.startJob(ctx, log, &j) { // answered already, cancelled or a duplicate
		return
	}
	if p.cancels.isCancelled(j.env.ID) {
		log.Info("job skipped: its caller went away before it started")
		p.metrics.cancelled(cancelledBeforeStart)
		p.drop(log, &j)
		return
	}

	if !j.env.Deadline.IsZero() && !j.received.Before(j.env.Deadline) {
		p.finish(log, &j, schema.ErrorReply(j.env.ID, &schema.Error{
			Status: http.StatusGatewayTimeout, Type: schema.TypeTimeout, Code: schema.CodeDeadlineExceeded,
			Message: fmt.Sprintf("The request waited %s in the queue and passed its deadline before a worker could start it.",
				j.received.Sub(j.env.EnqueuedAt).Round(time.Millisecond)),
		}), 0)
		return
	}
	if j.env.IdempotencyKey != "" {
		if e, err := p.answers.Get(ctx, j.env.IdempotencyKey); err == nil {
			log.Info("answered from the idempotency store; LaaS not called")
			if j.replyTo != "" {
				if err := p.sendReply(j.replyTo, e.Value()); err != nil {
					log.Warn("could not send the kept answer", "error", err)
					p.retryLater(log, &j, time.Second, err)
					return
				}
			}
			p.drop(log, &j)
			return
		}
	}
	if j.env.RequestRef != "" {
		if err := p.claimRequest(ctx, &j.env); err != nil {
			log.Error("large request body unavailable", "error", err)
			if ctx.Err() == nil && !errors.Is(err, jetstream.ErrObjectNotFound) && j.attempt < p.maxDeliver {
				p.metrics.retried(j.env.Model, retryBodyUnavailable)
				_ = msg.NakWithDelay(time.Second) // the store may come back
				return
			}
			p.finish(log, &j, schema.ErrorReply(j.env.ID, &schema.Error{Status: http.StatusInternalServerError, Type: schema.TypeServer,
				Message: "The request's body could not be read from the queue's store; send the request again.", Cause: err}), 0)
			return
		}
	}
	laasReq, model, err := p.prepare(ctx, &j.env)
	if err != nil && ctx.Err() != nil { // shutdown, not the request's fault
		_ = msg.Nak()
		return
	}
	if err != nil {
		p.finish(log, &j, schema.ErrorReply(j.env.ID, schema.AsError(err)), 0)
		return
	}

	callCtx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	callCtx, cancel := context.WithDeadline(callCtx, callDeadline(&j, model))
	defer cancel()
	if !p.cancels.start(j.env.ID, stop) {
		log.Info("job skipped: its caller went away before it started")
		p.metrics.cancelled(cancelledBeforeStart)
		p.drop(log, &j)
		return
	}
	defer p.cancels.done(j.env.ID)
	if p.limiter != nil {
		if err := p.limiter.Wait(callCtx, model, laneOf(msg.Subject())); err != nil {
			p.handBack(log, &j, callCtx, err)
			return
		}
	}
	start := time.Now()
	resp, err := p.up.Complete(callCtx, laasReq)
	upstream := time.Since(start)
	p.metrics.called(model.Alias, err, upstream)

	if err != nil {
		if ctx.Err() != nil { // shutdown abandoned the call: let another worker run it
			log.Warn("call abandoned at shutdown; job handed back", "error", err)
			_ = msg.Nak()
			return
		}
		if errors.Is(context.Cause(callCtx), errCallerGone) {
			log.Info("LaaS call aborted: its caller went away", "upstream_ms", upstream.Milliseconds())
			p.metrics.cancelled(cancelledDuringCall)
			p.drop(log, &j)
			return
		}
		var ue *laas.UpstreamError
		isUp := errors.As(err, &ue)
		if isUp && ue.Status == http.StatusTooManyRequests && p.limiter != nil {
			p.limiter.Throttled(ctx, p.throttleFor(&j, ue.RetryAfter))
		}
		e := schema.AsError(err)
		if isUp {
			e = ue.OpenAI()
		}
		if isUp && ue.Retryable() {
			if delay, ok := p.retryDelay(&j, ue.RetryAfter); ok {
				log.Warn("upstream failed; will retry", "status", ue.Status, "delay", delay, "error", err)
				p.metrics.retried(model.Alias, retryReason(ue))
				_ = msg.NakWithDelay(delay)
				return
			}
			p.deadLetter(log, &j, e, start)
		}
		log.Warn("upstream failed; answering with an error", "status", e.Status, "code", e.Code, "error", err)
		p.finish(log, &j, schema.ErrorReply(j.env.ID, e), upstream)
		return
	}
	cc, err := laas.FromLaaS(resp, "chatcmpl-"+j.env.ID, model.Alias, time.Now())
	if err != nil {
		e := &schema.Error{Status: http.StatusBadGateway, Type: schema.TypeUpstream, Code: schema.CodeUpstreamError,
			Message: "LaaS answered with something that is not a chat completion: " + err.Error(), Cause: err}
		p.finish(log, &j, schema.ErrorReply(j.env.ID, e), upstream)
		return
	}
	p.finish(log, &j, schema.Reply{ID: j.env.ID, Status: http.StatusOK, Completion: cc}, upstream)
}

// claimRequest fetches a request body that travelled through the object store.
func (p *Pool) claimRequest(ctx context.Context, env *schema.Envelope) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	data, err := p.bodies.GetBytes(ctx, env.RequestRef)
	if err != nil {
		return fmt.Errorf("fetch request body %s: %w", env.RequestRef, err)
	}
	env.Request = data
	return nil
}

// prepare turns the envelope into the LaaS call; its errors are the caller's
// (a request published by a producer that skipped the gateway's checks).
func (p *Pool) prepare(ctx context.Context, env *schema.Envelope) (*schema.LaaSRequest, schema.Model, error) {
	model, ok := p.catalog.Lookup(env.Model)
	if !ok {
		return nil, model, schema.ModelNotFound(env.Model)
	}
	req, err := schema.DecodeChatRequest(env.Request)
	if err != nil {
		return nil, model, err
	}
	if err := req.Validate(); err != nil {
		return nil, model, err
	}
	if _, err := multimodal.Check(ctx, req); err != nil {
		return nil, model, err
	}
	if req.PresetHash != "" {
		if !p.cfg.AllowPresetOverride {
			return nil, model, schema.PresetOverrideDisabled()
		}
		model.PresetHash = req.PresetHash
	}
	laasReq, err := laas.ToLaaS(req, model)
	return laasReq, model, err
}

// finish publishes the reply, then acknowledges the job: a crash between
// the two redelivers the job rather than losing its answer. A large request
// body is deleted once the job is acknowledged.
func (p *Pool) finish(log *slog.Logger, j *job, rep schema.Reply, upstream time.Duration) {
	rep.Attempts = j.attempt
	rep.QueueMs = max(0, j.received.Sub(j.env.EnqueuedAt).Milliseconds())
	rep.UpstreamMs = upstream.Milliseconds()
	if j.env.IdempotencyKey != "" {
		p.keepAnswer(log, j.env.IdempotencyKey, &rep)
	}
	if j.env.Job && !p.keepResult(log, j, &rep) {
		return // handed back
	}
	if j.replyTo != "" {
		if err := p.publishReply(j.replyTo, &rep); err != nil {
			if j.attempt < p.maxDeliver {
				log.Error("publishing the reply failed; job handed back", "error", err)
				p.metrics.retried(j.env.Model, retryReplyFailed)
				_ = j.msg.NakWithDelay(time.Second)
				return
			}
			log.Error("publishing the reply failed on the last attempt; the answer is lost", "error", err)
		}
	}
	if err := j.msg.Ack(); err != nil {
		log.Warn("ack failed; the job may be redelivered", "error", err)
	}
	p.deleteBody(log, j)
	p.metrics.finished(j, &rep)
	log.Info("job done", "status", rep.Status, "queue_ms", rep.QueueMs, "upstream_ms", rep.UpstreamMs)
}

// handBack returns a job whose call could not start (the limiter's wait
// ended) to the queue, or fails it if its deadline is what ended the wait.
func (p *Pool) handBack(log *slog.Logger, j *job, callCtx context.Context, err error) {
	switch {
	case errors.Is(context.Cause(callCtx), errCallerGone):
		p.metrics.cancelled(cancelledBeforeStart)
		p.drop(log, j)
	case errors.Is(err, context.DeadlineExceeded) && !time.Now().Before(j.env.Deadline):
		p.finish(log, j, schema.ErrorReply(j.env.ID, &schema.Error{
			Status: http.StatusGatewayTimeout, Type: schema.TypeTimeout, Code: schema.CodeDeadlineExceeded,
			Message: fmt.Sprintf("The request passed its deadline waiting for the LaaS rate limit, %s after it was queued.",
				time.Since(j.env.EnqueuedAt).Round(time.Millisecond)),
		}), 0)
	default:
		p.retryLater(log, j, 0, err)
	}
}

// retryLater hands a job back to the queue after delay, unless this was
// its last delivery: then it is answered with err as a 503 (and kept as a
// dead letter), so it never stays in the queue with no attempt left.
func (p *Pool) retryLater(log *slog.Logger, j *job, delay time.Duration, err error) {
	if p.maxDeliver <= 0 || j.attempt < p.maxDeliver {
		log.Warn("job handed back to the queue", "delay", delay, "error", err)
		p.metrics.retried(j.env.Model, retryHandedBack)
		_ = j.msg.NakWithDelay(delay)
		return
	}
	e := &schema.Error{Status: http.StatusServiceUnavailable, Type: schema.TypeServer, Code: schema.CodeQueueUnavailable,
		Message: "The bridge could not run the request within its attempts; try again shortly.", RetryAfter: 1, Cause: err}
	p.deadLetter(log, j, e, time.Now())
	p.finish(log, j, schema.ErrorReply(j.env.ID, e), 0)
}

// decodeJob reads and checks the envelope. A producer that skipped the
// gateway is not trusted: the reply subject must be a reply subject, the
// large body must be the request's own, the id must be a plain token.
func (p *Pool) decodeJob(j *job) error {
	if err := json.Unmarshal(j.msg.Data(), &j.env); err != nil {
		return err
	}
	if !schema.ValidRequestID(j.env.ID) {
		return fmt.Errorf("request id %q is not 1-64 of [A-Za-z0-9_-]", j.env.ID)
	}
	if j.replyTo != "" && !schema.ValidReplySubject(j.replyTo) {
		return fmt.Errorf("%s %q is not a reply subject", schema.HeaderReplyTo, j.replyTo)
	}
	if j.env.RequestRef != "" && j.env.RequestRef != j.env.ID {
		return fmt.Errorf("request_ref %q is not the request's own id", j.env.RequestRef)
	}
	if j.env.Deadline.IsZero() { // a producer may leave it out: the default timeout
		start := j.env.EnqueuedAt
		if start.IsZero() {
			start = j.received
		}
		j.env.Deadline = start.Add(defaultTimeout(&j.env))
	}
	if j.env.Job {
		j.env.IdempotencyKey = "" // a job's id is its key
	}
	return nil
}

// throttleFor is how long every worker holds off after a 429: Retry-After
// when LaaS gave one, else exponential in the job's attempts.
func (p *Pool) throttleFor(j *job, retryAfter time.Duration) time.Duration {
	if retryAfter > 0 {
		return retryAfter
	}
	return min(p.cfg.RetryMax, p.cfg.RetryBase<<min(j.attempt-1, 20))
}

// deadLetter keeps a job that ran out of attempts, if the pool keeps them.
func (p *Pool) deadLetter(log *slog.Logger, j *job, e *schema.Error, lastAttempt time.Time) {
	p.metrics.deadLettered()
	if p.dead == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dl := DeadLetter{Envelope: j.env, Reason: e.Body().Error, Status: e.Status, Attempts: j.attempt, LastAttempt: lastAttempt, FailedAt: time.Now()}
	if err := p.dead.DeadLetter(ctx, dl); err != nil {
		log.Error("could not keep the dead letter", "error", err)
	}
}

// drop ends a job nobody waits for any more: acknowledged, no reply. A
// job (Envelope.Job) gets a cancelled result instead.
func (p *Pool) drop(log *slog.Logger, j *job) {
	if j.env.Job {
		p.finish(log, j, schema.ErrorReply(j.env.ID, schema.JobCancelledError()), 0)
		return
	}
	if err := j.msg.Ack(); err != nil {
		log.Warn("ack failed; the job may be redelivered", "error", err)
	}
	p.deleteBody(log, j)
}

// deleteBody removes a job's large request body, if it had one.
func (p *Pool) deleteBody(log *slog.Logger, j *job) {
	if j.env.RequestRef == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.bodies.Delete(ctx, j.env.RequestRef); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
		log.Warn("could not delete the large request body; the store's TTL will", "error", err)
	}
}

// keepAnswer stores the final reply of a request with an Idempotency-Key,
// so a retry is answered from it. An answer too large for the store is not
// kept (logged): a retry after the dedupe window then runs again.
func (p *Pool) keepAnswer(log *slog.Logger, key string, rep *schema.Reply) {
	data, err := json.Marshal(rep)
	if err == nil && len(data) > p.inlineMax {
		err = fmt.Errorf("answer of %d bytes is too large to keep", len(data))
	}
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err = p.answers.Put(ctx, key, data)
		cancel()
	}
	if err != nil {
		log.Warn("could not keep the idempotent answer", "error", err)
	}
}

// publishReply sends rep to the gateway (see sendReply); an answer too
// large for a message goes through the object store and the reply names it.
func (p *Pool) publishReply(subject string, rep *schema.Reply) error {
	data, err := json.Marshal(rep)
	if err != nil {
		return err
	}
	if len(data) > p.inlineMax && rep.Completion != nil {
		completion, err := json.Marshal(rep.Completion)
		if err != nil {
			return err
		}
		ref := rep.ID + ".reply"
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := p.bodies.PutBytes(ctx, ref, completion); err != nil {
			return fmt.Errorf("store large answer: %w", err)
		}
		small := *rep
		small.Completion, small.CompletionRef = nil, ref
		if data, err = json.Marshal(small); err != nil {
			return err
		}
	}
	return p.sendReply(subject, data)
}

// directReplyTimeout bounds the wait for a gateway's answer on the reply's
// fast path; without an answer by then the reply goes through the stream.
const directReplyTimeout = 2 * time.Second

// sendReply hands a reply to the gateway. First the fast path: a core NATS
// request on the reply's direct subject, which no stream stores; the
// gateway answers once the reply is its caller's. When that fails (no
// gateway listening, as with a gateway that is reconnecting or one older
// than the fast path; a timeout), the reply is published through JetStream
// into StreamReplies, which keeps it for a gateway that reconnects, and the
// stream's ack is awaited. A reply that arrives twice is delivered once.
func (p *Pool) sendReply(subject string, data []byte) error {
	if direct, ok := schema.DirectReplySubject(subject); ok {
		if _, err := p.nc.Request(direct, data, directReplyTimeout); err == nil {
			p.metrics.replied(replyDirect)
			return nil
		}
	}
	// Retried across a leader election of StreamReplies (a NATS node
	// lost); a reply stored twice is delivered once.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, _, err := failover.Publish(ctx, p.js, &nats.Msg{Subject: subject, Data: data}); err != nil {
		return err
	}
	p.metrics.replied(replyStream)
	return nil
}

// keepAlive tells the server the job is still being worked on, so AckWait
// never redelivers a long call. The returned func stops it.
func (p *Pool) keepAlive(ctx context.Context, msg jetstream.Msg) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		t := time.NewTicker(p.ackWait / 3)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				_ = msg.InProgress()
			}
		}
	}()
	return cancel
}

// retryMargin is the time a retry must have left before the deadline: a
// retry that could only start as the caller gives up would turn the last
// real error (say a 429) into a timeout.
const retryMargin = time.Second

// retryDelay returns how long to wait before the next attempt, and false
// when no attempt is left: MaxDeliver is reached or the deadline would pass.
func (p *Pool) retryDelay(j *job, retryAfter time.Duration) (time.Duration, bool) {
	if p.maxDeliver > 0 && j.attempt >= p.maxDeliver {
		return 0, false
	}
	backoff := min(p.cfg.RetryMax, p.cfg.RetryBase<<min(j.attempt-1, 20))
	delay := backoff/2 + rand.N(backoff/2+1) // jitter in [backoff/2, backoff]
	delay = max(delay, retryAfter)
	if !j.env.Deadline.IsZero() && time.Now().Add(delay+retryMargin).After(j.env.Deadline) {
		return 0, false
	}
	return delay, true
}
