package worker

// This file holds the pool's Prometheus metrics (laas_bridge_worker_*),
// their label vocabularies, and the wrapper that times rate-limit waits.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/laas-bridge/laas-bridge/laas"
	"github.com/laas-bridge/laas-bridge/schema"
)

// WithMetrics registers the pool's metrics (laas_bridge_worker_*) in reg
// when the pool is built; NewPool fails if they cannot be registered. Nil
// reg: no metrics.
func WithMetrics(reg prometheus.Registerer) Option { return func(p *Pool) { p.metricsReg = reg } }

// ModelUnknown is the model label of a job whose model is not in the
// catalogue (a producer that skipped the gateway): labels only ever carry
// configured aliases.
const ModelUnknown = "unknown"

// Reasons a job is handed back for another attempt: the retries_total
// reason label.
const (
	retryRateLimited     = "rate_limited"     // LaaS answered 429
	retryUpstreamError   = "upstream_error"   // LaaS answered 5xx
	retryUpstreamTimeout = "upstream_timeout" // LaaS did not answer in time
	retryConnection      = "connection_error" // no answer from LaaS at all
	retryBodyUnavailable = "body_unavailable" // the large-body store did not answer
	retryReplyFailed     = "reply_failed"     // the answer could not be published
	retryHandedBack      = "handed_back"      // the rate-limit wait ended early, or a kept answer could not be sent
)

// When a caller's cancellation reached the job: the cancellations_total
// when label.
const (
	cancelledBeforeStart = "before_start"
	cancelledDuringCall  = "during_call"
)

// Reasons a job becomes a dead letter: the dead_letters_total reason label.
const (
	deadAttemptsExhausted = "attempts_exhausted"     // a retryable failure on its last attempt
	deadMaxDeliveries     = "max_deliveries_reached" // no worker finished it in MaxDeliver deliveries
)

const metricsNamespace, metricsSubsystem = "laas_bridge", "worker"

// Histogram buckets, in seconds.
var (
	// LaaS calls take from well under a second to minutes.
	upstreamBuckets = []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600}
	// A job waits from milliseconds (idle workers) to its deadline.
	queueWaitBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}
	// A rate-limit slot is usually free at once, at worst after a cooldown.
	limiterBuckets = []float64{0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120}
)

// poolMetrics are a pool's Prometheus metrics. A nil *poolMetrics records
// nothing, so a pool without a registry needs no checks. Safe for
// concurrent use.
type poolMetrics struct {
	catalog       *atomic.Pointer[schema.Catalog] // the pool's
	jobs          *prometheus.CounterVec          // model, status
	queueWait     *prometheus.HistogramVec        // model
	upstream      *prometheus.HistogramVec        // model, status
	retries       *prometheus.CounterVec          // model, reason
	deadLetters   *prometheus.CounterVec          // reason
	limiterWait   *prometheus.HistogramVec
	cancellations *prometheus.CounterVec // when
	cancelDrops   prometheus.Counter
	tokens        *prometheus.CounterVec // model, direction
	inFlight      prometheus.Gauge
	capInUse      *prometheus.GaugeVec     // model, lane
	capWaitingNow *prometheus.GaugeVec     // model, lane
	capWait       *prometheus.HistogramVec // model, lane
	replies       *prometheus.CounterVec   // path
}

// newPoolMetrics registers a pool's metrics in reg; nil reg means none.
// Model labels are resolved against catalog.
func newPoolMetrics(reg prometheus.Registerer, catalog *atomic.Pointer[schema.Catalog]) (*poolMetrics, error) {
	if reg == nil {
		return nil, nil
	}
	opts := func(name, help string) prometheus.Opts {
		return prometheus.Opts{Namespace: metricsNamespace, Subsystem: metricsSubsystem, Name: name, Help: help}
	}
	hist := func(name, help string, buckets []float64) prometheus.HistogramOpts {
		return prometheus.HistogramOpts{Namespace: metricsNamespace, Subsystem: metricsSubsystem, Name: name, Help: help, Buckets: buckets}
	}
	m := &poolMetrics{
		catalog: catalog,
		jobs: prometheus.NewCounterVec(prometheus.CounterOpts(opts("jobs_total",
			"Jobs answered, by model alias and the status of the answer (LaaS's answer, or the bridge's refusal).")),
			[]string{"model", "status"}),
		queueWait: prometheus.NewHistogramVec(hist("queue_wait_seconds",
			"Time from a job's enqueue to its first delivery to a worker, by model alias.", queueWaitBuckets),
			[]string{"model"}),
		upstream: prometheus.NewHistogramVec(hist("upstream_duration_seconds",
			"Duration of LaaS calls, by model alias and LaaS's HTTP status (timeout, cancelled or error when there was none).", upstreamBuckets),
			[]string{"model", "status"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts(opts("retries_total",
			"Jobs handed back to the queue for another attempt, by model alias and reason.")),
			[]string{"model", "reason"}),
		limiterWait: prometheus.NewHistogramVec(hist("rate_limit_wait_seconds",
			"Time LaaS calls waited for the shared rate limiter, by lane (interactive or batch; batch calls give way to interactive ones).", limiterBuckets),
			[]string{"lane"}),
		cancellations: prometheus.NewCounterVec(prometheus.CounterOpts(opts("cancellations_total",
			"Jobs stopped because their caller went away: before_start (LaaS not called) or during_call (the call aborted).")),
			[]string{"when"}),
		cancelDrops: prometheus.NewCounter(prometheus.CounterOpts(opts("cancelled_ids_dropped_total",
			"Cancelled request ids forgotten before their job's deadline because the set of them was full: such a job, still queued, runs and its answer is discarded."))),
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts(opts("tokens_total",
			"Tokens LaaS reported in its answers' usage, by model alias and direction (in: prompt, out: completion).")),
			[]string{"model", "direction"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts(opts("in_flight",
			"Jobs this process is working on (including the rate-limit wait and the LaaS call)."))),
		capInUse: prometheus.NewGaugeVec(prometheus.GaugeOpts(opts("concurrency_slots_in_use",
			"LaaS calls this process runs holding concurrency-cap slots (BRIDGE_LAAS_MAX_CONCURRENCY, a model's max_parallel_requests), by model alias and lane; sum over processes for the whole cap.")),
			[]string{"model", "lane"}),
		capWaitingNow: prometheus.NewGaugeVec(prometheus.GaugeOpts(opts("concurrency_waiting",
			"LaaS calls this process has waiting for a concurrency-cap slot now, by model alias and lane.")),
			[]string{"model", "lane"}),
		capWait: prometheus.NewHistogramVec(hist("concurrency_wait_seconds",
			"Time LaaS calls waited for their concurrency-cap slots (however the wait ended), by model alias and lane; its _count is the waits.", limiterBuckets),
			[]string{"model", "lane"}),
		replies: prometheus.NewCounterVec(prometheus.CounterOpts(opts("replies_total",
			"Replies handed to gateways, by path: direct (the gateway took it at once; not stored) or stream (stored in the replies stream).")),
			[]string{"path"}),
	}
	for _, c := range []prometheus.Collector{m.jobs, m.queueWait, m.upstream, m.retries, m.limiterWait, m.cancellations, m.cancelDrops, m.tokens, m.inFlight, m.replies, m.capInUse, m.capWaitingNow, m.capWait} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("worker metrics: %w", err)
		}
	}
	var err error
	if m.deadLetters, err = deadLettersCounter(reg); err != nil {
		return nil, err
	}
	return m, nil
}

// deadLettersCounter registers dead_letters_total in reg, or returns the
// one already there: the pool and DeadLetters' max-deliveries watcher share
// it.
func deadLettersCounter(reg prometheus.Registerer) (*prometheus.CounterVec, error) {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: metricsNamespace, Subsystem: metricsSubsystem, Name: "dead_letters_total",
		Help: "Jobs that ran out of attempts, by reason (attempts_exhausted, max_deliveries_reached)."}, []string{"reason"})
	err := reg.Register(c)
	if are, ok := errors.AsType[prometheus.AlreadyRegisteredError](err); ok {
		if existing, ok := are.ExistingCollector.(*prometheus.CounterVec); ok {
			return existing, nil
		}
	}
	if err != nil {
		return nil, fmt.Errorf("worker metrics: %w", err)
	}
	return c, nil
}

// model is the label for alias: itself when configured, else ModelUnknown.
func (m *poolMetrics) model(alias string) string {
	if mod, ok := m.catalog.Load().Lookup(alias); ok {
		return mod.Alias
	}
	return ModelUnknown
}

// handling counts a job in flight until the returned func is called.
func (m *poolMetrics) handling() (done func()) {
	if m == nil {
		return func() {}
	}
	m.inFlight.Inc()
	return m.inFlight.Dec
}

// capWaiting counts a call waiting for its concurrency slots until the
// returned func is called with how long it waited.
func (m *poolMetrics) capWaiting(alias string, lane Lane) (done func(time.Duration)) {
	if m == nil {
		return func(time.Duration) {}
	}
	model := m.model(alias)
	g := m.capWaitingNow.WithLabelValues(model, lane.String())
	g.Inc()
	return func(d time.Duration) {
		g.Dec()
		m.capWait.WithLabelValues(model, lane.String()).Observe(d.Seconds())
	}
}

// capHolding counts a call holding its concurrency slots until the
// returned func is called.
func (m *poolMetrics) capHolding(alias string, lane Lane) (done func()) {
	if m == nil {
		return func() {}
	}
	g := m.capInUse.WithLabelValues(m.model(alias), lane.String())
	g.Inc()
	return g.Dec
}

// taken records how long a job waited in the queue for its first delivery.
func (m *poolMetrics) taken(j *job) {
	if m == nil || j.attempt != 1 || j.env.EnqueuedAt.IsZero() {
		return
	}
	m.queueWait.WithLabelValues(m.model(j.env.Model)).Observe(max(0, j.received.Sub(j.env.EnqueuedAt).Seconds()))
}

// finished counts a job answered with rep, and the tokens its answer used.
func (m *poolMetrics) finished(j *job, rep *schema.Reply) {
	if m == nil {
		return
	}
	model := m.model(j.env.Model)
	m.jobs.WithLabelValues(model, strconv.Itoa(rep.Status)).Inc()
	if rep.Completion != nil && rep.Completion.Usage != nil {
		m.tokens.WithLabelValues(model, "in").Add(float64(max(0, rep.Completion.Usage.PromptTokens)))
		m.tokens.WithLabelValues(model, "out").Add(float64(max(0, rep.Completion.Usage.CompletionTokens)))
	}
}

// called records a LaaS call that took d and ended with err.
func (m *poolMetrics) called(alias string, err error, d time.Duration) {
	if m == nil {
		return
	}
	m.upstream.WithLabelValues(m.model(alias), upstreamStatus(err)).Observe(d.Seconds())
}

// retried counts a job handed back for another attempt.
func (m *poolMetrics) retried(alias, reason string) {
	if m == nil {
		return
	}
	m.retries.WithLabelValues(m.model(alias), reason).Inc()
}

// cancelled counts a job stopped because its caller went away.
func (m *poolMetrics) cancelled(when string) {
	if m == nil {
		return
	}
	m.cancellations.WithLabelValues(when).Inc()
}

// cancelDropped counts a cancelled id forgotten early (the set was full).
func (m *poolMetrics) cancelDropped() {
	if m == nil {
		return
	}
	m.cancelDrops.Inc()
}

// Paths of a reply to a gateway (replies_total's path label).
const (
	replyDirect = "direct"
	replyStream = "stream"
	replyLocal  = "local" // to a gateway in this process (HandRepliesTo)
)

// replied counts a reply handed to a gateway by path.
func (m *poolMetrics) replied(path string) {
	if m == nil {
		return
	}
	m.replies.WithLabelValues(path).Inc()
}

// deadLettered counts a job that ran out of attempts.
func (m *poolMetrics) deadLettered() {
	if m == nil {
		return
	}
	m.deadLetters.WithLabelValues(deadAttemptsExhausted).Inc()
}

// timed returns l with its waits recorded; nil l stays nil.
func (m *poolMetrics) timed(l Limiter) Limiter {
	if m == nil || l == nil {
		return l
	}
	return timedLimiter{Limiter: l, wait: m.limiterWait}
}

// timedLimiter records how long each Wait took, however it ended.
type timedLimiter struct {
	Limiter
	wait *prometheus.HistogramVec
}

// Wait is the wrapped Limiter's, timed and labelled with lane.
func (t timedLimiter) Wait(ctx context.Context, model schema.Model, lane Lane) error {
	start := time.Now()
	err := t.Limiter.Wait(ctx, model, lane)
	t.wait.WithLabelValues(lane.String()).Observe(time.Since(start).Seconds())
	return err
}

// upstreamStatus is the status label of a LaaS call that ended with err.
func upstreamStatus(err error) string {
	if err == nil {
		return strconv.Itoa(http.StatusOK)
	}
	if ue, ok := errors.AsType[*laas.UpstreamError](err); ok {
		switch {
		case ue.Status != 0:
			return strconv.Itoa(ue.Status)
		case ue.Timeout:
			return "timeout"
		}
	}
	if errors.Is(err, context.Canceled) {
		return "cancelled"
	}
	return "error"
}

// retryReason is the retries_total reason of a retryable upstream failure.
func retryReason(ue *laas.UpstreamError) string {
	switch {
	case ue.Status == http.StatusTooManyRequests:
		return retryRateLimited
	case ue.Status >= 500:
		return retryUpstreamError
	case ue.Timeout:
		return retryUpstreamTimeout
	}
	return retryConnection
}
