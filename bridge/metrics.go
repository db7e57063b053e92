package bridge

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/laas-bridge/laas-bridge/internal/accesslog"
	"github.com/laas-bridge/laas-bridge/schema"
)

// MetricsRegistry is where a gateway registers its metrics and what its
// GET /metrics serves; *prometheus.Registry implements it. The registry may
// hold other metrics too (`serve` puts the workers' in the same one).
type MetricsRegistry interface {
	prometheus.Registerer
	prometheus.Gatherer
}

// ModelUnknown is the model label of a chat request whose model is not in
// the catalogue (or that could not be read at all): labels only ever carry
// configured aliases, so a caller cannot grow the label set.
const ModelUnknown = "unknown"

// Queue depth is read from NATS at most once per queueDepthEvery, with
// queueDepthTimeout for the read; a scrape in between gets the cached value.
const (
	queueDepthEvery   = 5 * time.Second
	queueDepthTimeout = 2 * time.Second
)

// latencyBuckets are the histogram buckets, in seconds, of the end-to-end
// latency: LaaS calls take from well under a second to minutes.
var latencyBuckets = []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600}

// metrics are the gateway's Prometheus metrics. A nil *metrics records
// nothing, so a gateway without a registry needs no checks.
type metrics struct {
	requests      *prometheus.CounterVec   // model, status, stream
	duration      *prometheus.HistogramVec // model
	inFlight      prometheus.Gauge
	cancellations prometheus.Counter
	queueFull     prometheus.Counter
	overloaded    *prometheus.CounterVec // limit
}

// The limit label of laas_bridge_gateway_overloaded_total: which cap
// refused a request with server_overloaded.
const (
	limitBodyBytes   = "body_bytes"   // Config.MaxInflightBytes
	limitJobWatchers = "job_watchers" // Config.MaxJobWatchers
	limitMicro       = "micro"        // MicroConfig.MaxInFlight
)

// refused counts a request refused by limit.
func (m *metrics) refused(limit string) {
	if m != nil {
		m.overloaded.WithLabelValues(limit).Inc()
	}
}

// newMetrics registers the gateway's metrics in reg; nil reg means none.
func newMetrics(reg prometheus.Registerer, js jetstream.JetStream, budget *bodyBudget, log *slog.Logger) (*metrics, error) {
	if reg == nil {
		return nil, nil
	}
	const ns, sub = "laas_bridge", "gateway"
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "requests_total",
			Help: "Chat completion requests answered, by model alias, HTTP status (499: the caller went away) and stream."},
			[]string{"model", "status", "stream"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "request_duration_seconds",
			Help:    "Time from a queued chat request's arrival to its answer (or the caller leaving), by model alias.",
			Buckets: latencyBuckets}, []string{"model"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "in_flight",
			Help: "Callers waiting for an answer."}),
		cancellations: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "cancellations_total",
			Help: "Chat requests whose caller went away before the answer."}),
		queueFull: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "queue_full_total",
			Help: "Chat requests refused with 429 queue_full because the request stream was full."}),
		overloaded: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "overloaded_total",
			Help: "Requests refused with 503 server_overloaded, by the limit that refused them (body_bytes, job_watchers, micro)."}, []string{"limit"}),
	}
	bodyBytes := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "body_bytes_in_flight",
		Help: "Bytes of request bodies held in memory now, against BRIDGE_MAX_INFLIGHT_BYTES."}, func() float64 { return float64(budget.inUse()) })
	depth := &queueDepth{js: js, log: log, desc: prometheus.NewDesc(prometheus.BuildFQName(ns, sub, "queue_depth"),
		"Jobs waiting in the request stream that no worker has taken yet, per workers' consumer (read from NATS at most every 5s).",
		[]string{"consumer"}, nil)}
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.inFlight, m.cancellations, m.queueFull, m.overloaded, bodyBytes, depth} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("gateway metrics: %w", err)
		}
	}
	return m, nil
}

// observation is what a request's handler learns for its metrics and its
// access line.
type observation struct {
	model            string // a catalogue alias; "" when unknown
	stream           bool
	queued           bool   // the request reached the queue (or a kept answer)
	lane             string // the lane it was queued in
	errorCode        string // of an error sent inside a streamed answer already under way
	accesslog.Timing        // from the worker's reply
	accesslog.Tokens        // the answer's usage
}

// observationKey holds a request's *observation in the echo context.
const observationKey = "laas_bridge_observation"

// observationOf is the request's observation; a throwaway one when the
// gateway keeps neither metrics nor an access log.
func observationOf(c echo.Context) *observation {
	if o := observed(c); o != nil {
		return o
	}
	return &observation{}
}

// observed is the request's observation, nil when nobody reads it.
func observed(c echo.Context) *observation {
	o, _ := c.Get(observationKey).(*observation)
	return o
}

// metricsModel is the model label of an observation.
func (o *observation) metricsModel() string {
	if o.model == "" {
		return ModelUnknown
	}
	return o.model
}

// request notes what the decoded request says: the model, when it is a
// configured alias, and whether it streams.
func (o *observation) request(req *schema.ChatCompletionRequest, catalog *schema.Catalog) {
	o.stream = req.Stream
	if m, ok := catalog.Lookup(req.Model); ok {
		o.model = m.Alias
	}
}

// observe counts every chat request by its final status, and times those
// that were queued. It wraps the key check, so refused keys count too.
func (g *Gateway) observe(next echo.HandlerFunc) echo.HandlerFunc {
	if g.metrics == nil {
		return next
	}
	return func(c echo.Context) (err error) {
		start := time.Now()
		o := observed(c) // the access log's, when it keeps one
		if o == nil {
			o = &observation{}
			c.Set(observationKey, o)
		}
		defer func() {
			status := c.Response().Status
			r := recover()
			switch {
			case r != nil: // the recover middleware answers 500
				status = http.StatusInternalServerError
			case err != nil:
				e := g.toError(err, c.Request())
				// A streamed answer already under way keeps its 200,
				// unless the caller left.
				if !c.Response().Committed || e.Status == statusClientClosed {
					status = e.Status
				}
				if e.Code == schema.CodeQueueFull {
					g.metrics.queueFull.Inc()
				}
			}
			if status == statusClientClosed {
				g.metrics.cancellations.Inc()
			}
			g.metrics.requests.WithLabelValues(o.metricsModel(), strconv.Itoa(status), strconv.FormatBool(o.stream)).Inc()
			if o.queued {
				g.metrics.duration.WithLabelValues(o.metricsModel()).Observe(time.Since(start).Seconds())
			}
			if r != nil {
				panic(r)
			}
		}()
		return next(c)
	}
}

// callerWaiting counts a caller waiting for its answer until the returned
// func is called.
func (m *metrics) callerWaiting() (done func()) {
	if m == nil {
		return func() {}
	}
	m.inFlight.Inc()
	return m.inFlight.Dec
}

// metricsHandler serves reg in Prometheus' text format.
func metricsHandler(reg prometheus.Gatherer, log *slog.Logger) echo.HandlerFunc {
	h := promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:      slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		ErrorHandling: promhttp.ContinueOnError, // a failing collector does not hide the others
		Timeout:       10 * time.Second,
	})
	return echo.WrapHandler(h)
}

// queueDepth reports, on scrape, how many jobs wait in each consumer of
// the request stream. It reads NATS at most once per queueDepthEvery, so
// many scrapers cost NATS no more than one; when NATS does not answer, the
// gauge is left out rather than reporting a stale value. Safe for
// concurrent use.
type queueDepth struct {
	js   jetstream.JetStream
	log  *slog.Logger
	desc *prometheus.Desc

	mu      sync.Mutex
	readAt  time.Time
	pending map[string]uint64 // consumer name -> jobs not yet delivered
}

var _ prometheus.Collector = (*queueDepth)(nil)

func (q *queueDepth) Describe(ch chan<- *prometheus.Desc) { ch <- q.desc }

func (q *queueDepth) Collect(ch chan<- prometheus.Metric) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if time.Since(q.readAt) >= queueDepthEvery {
		q.pending = q.read()
		q.readAt = time.Now()
	}
	for name, n := range q.pending {
		ch <- prometheus.MustNewConstMetric(q.desc, prometheus.GaugeValue, float64(n), name)
	}
}

// read asks NATS for the pending count of every consumer on the request
// stream; nil when it cannot.
func (q *queueDepth) read() map[string]uint64 {
	ctx, cancel := context.WithTimeout(context.Background(), queueDepthTimeout)
	defer cancel()
	stream, err := q.js.Stream(ctx, schema.StreamRequests)
	if err != nil {
		q.log.Debug("queue depth unavailable", "error", err)
		return nil
	}
	out := map[string]uint64{}
	list := stream.ListConsumers(ctx)
	for info := range list.Info() {
		out[info.Name] = info.NumPending
	}
	if err := list.Err(); err != nil {
		q.log.Debug("queue depth unavailable", "error", err)
		return nil
	}
	return out
}
