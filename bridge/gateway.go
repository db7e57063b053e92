package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/laas-bridge/laas-bridge/admission"
	"github.com/laas-bridge/laas-bridge/batch"
	"github.com/laas-bridge/laas-bridge/internal/tracing"
	"github.com/laas-bridge/laas-bridge/queue/jobstore"
	"github.com/laas-bridge/laas-bridge/schema"
)

// Config configures a gateway instance.
type Config struct {
	// MasterKey, when set, is required as "Authorization: Bearer <key>" on
	// every API route. Health routes never need it.
	MasterKey schema.Secret
	// InstanceID names this gateway's reply subjects; default a random NUID.
	InstanceID string
	// Subject is where chat requests are published; default the interactive lane.
	Subject string
	// PublishTimeout bounds the wait for the stream's ack, retries across a
	// stream leader election on a NATS cluster included (JetStream elects a
	// new leader within 4 to 9 s); default 15s.
	PublishTimeout time.Duration
	// ShutdownGrace is how long Serve waits for callers on shutdown; default 30s.
	ShutdownGrace time.Duration
	// KeepAlive is how often a streamed answer (stream: true) that is still
	// queued sends an SSE comment, so proxies do not cut the idle
	// connection; default 10s.
	KeepAlive time.Duration
	// AllowPresetOverride lets a request name its own preset_hash.
	AllowPresetOverride bool
	// Limits enforces virtual keys' limits at admission (keys.Limits); nil
	// enforces none.
	Limits admission.KeyLimits
	// MaxBodyBytes is the largest request body accepted; larger gets 413.
	// The default, 64 MiB, fits the largest request LaaS accepts: a 32 MB
	// PDF and three 4 MB images, base64-encoded.
	MaxBodyBytes int64
	// Metrics, when set, receives the gateway's metrics (laas_bridge_gateway_*)
	// and is served, whole, on GET /metrics, which never needs the master
	// key. Nil: no metrics and no /metrics route.
	Metrics MetricsRegistry
	// MaxFileBytes is the largest file POST /v1/files accepts (the Batch
	// API's own limit; MaxBodyBytes does not apply there). Default
	// DefaultMaxFileBytes, OpenAI's 200 MB.
	MaxFileBytes int64
	// Keys finds the virtual keys callers send as Bearer tokens beside
	// the master key; nil: only the master key works. A Keys that can
	// also manage keys (keys.Store) serves /key/generate, /key/info,
	// /key/update, /key/delete, /key/list, /key/block and /key/unblock.
	Keys KeyLookup
	// Usage, when set, gives /key/info each key's spend, tokens and
	// requests in its budget window; nil shows zero.
	Usage KeyUsage
	// MaxInflightBytes caps the bytes of request bodies held in memory at
	// once (chat completions, jobs); a body that would go over it is
	// refused with 503 server_overloaded and Retry-After before it is
	// read. At least MaxBodyBytes. Default InflightBudget of the process's
	// memory limit (GOMEMLIMIT).
	MaxInflightBytes int64
	// BodyReadTimeout bounds the reading of a request body (chat
	// completions, jobs): a body not all there by then gets 408. The
	// answer's own wait is not bounded by it. Default
	// DefaultBodyReadTimeout.
	BodyReadTimeout time.Duration
	// MaxJobWatchers caps the long polls (GET /v1/queue/jobs/{id}?wait=)
	// waiting at once; one more gets 503 server_overloaded. Default
	// DefaultMaxJobWatchers.
	MaxJobWatchers int
	// Micro configures the NATS request/reply endpoint (see micro.go),
	// which Serve runs beside HTTP.
	Micro MicroConfig
	// BatchMaxPerOwner is the most batches one virtual key may have not
	// yet finished (BRIDGE_BATCH_MAX_PER_OWNER); POST /v1/batches past it
	// is refused with 429, so one key cannot fill every runner with its
	// batches. The admin (the master key) is not capped. Default
	// DefaultBatchMaxPerOwner.
	BatchMaxPerOwner int
	// AccessLog, when set, gets one line per request answered over HTTP
	// (health probes and metrics scrapes aside) and over the NATS
	// endpoint; nil writes none.
	AccessLog *AccessLog
	// Tracer, when not nil, traces every HTTP request in a server span
	// that continues the caller's traceparent, and the admission core's
	// work below it, whose context the lane message carries to the
	// worker. Nil is tracing off.
	Tracer *tracing.Tracer
}

// DefaultBatchMaxPerOwner is Config.BatchMaxPerOwner's default.
const DefaultBatchMaxPerOwner = 16

// DefaultMaxBodyBytes is Config.MaxBodyBytes's default.
const DefaultMaxBodyBytes = 64 << 20

var instanceIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

func (c *Config) setDefaults() {
	if c.InstanceID == "" {
		// A NUID, not schema.NewID: it names this process (its reply
		// subjects, logs), not anyone's data; NATS permissions, not its
		// secrecy, keep others off its replies.
		c.InstanceID = nuid.Next()
	}
	if c.Subject == "" {
		c.Subject = schema.SubjectInteractive
	}
	if c.PublishTimeout == 0 {
		c.PublishTimeout = 15 * time.Second
	}
	if c.ShutdownGrace == 0 {
		c.ShutdownGrace = 30 * time.Second
	}
	if c.KeepAlive == 0 {
		c.KeepAlive = 10 * time.Second
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if c.MaxFileBytes == 0 {
		c.MaxFileBytes = DefaultMaxFileBytes
	}
	if c.MaxInflightBytes == 0 {
		c.MaxInflightBytes = InflightBudget(debug.SetMemoryLimit(-1), c.MaxBodyBytes)
	}
	if c.BodyReadTimeout == 0 {
		c.BodyReadTimeout = DefaultBodyReadTimeout
	}
	if c.MaxJobWatchers == 0 {
		c.MaxJobWatchers = DefaultMaxJobWatchers
	}
	if c.BatchMaxPerOwner == 0 {
		c.BatchMaxPerOwner = DefaultBatchMaxPerOwner
	}
	c.Micro.setDefaults()
}

// Validate reports every invalid field at once.
func (c Config) Validate() error {
	var errs []error
	if !instanceIDPattern.MatchString(c.InstanceID) {
		errs = append(errs, fmt.Errorf("gateway instance id %q must be 1-64 of [A-Za-z0-9_-]", c.InstanceID))
	}
	if c.PublishTimeout <= 0 {
		errs = append(errs, errors.New("publish timeout must be positive"))
	}
	if c.ShutdownGrace < 0 {
		errs = append(errs, errors.New("shutdown grace must not be negative"))
	}
	if c.KeepAlive <= 0 {
		errs = append(errs, errors.New("stream keep-alive interval must be positive"))
	}
	if c.MaxBodyBytes < 1<<20 {
		errs = append(errs, fmt.Errorf("max body bytes must be at least 1 MiB, got %d", c.MaxBodyBytes))
	}
	if c.MaxFileBytes < 1<<20 {
		errs = append(errs, fmt.Errorf("max file bytes must be at least 1 MiB, got %d", c.MaxFileBytes))
	}
	if c.MaxInflightBytes < c.MaxBodyBytes {
		errs = append(errs, fmt.Errorf("max in-flight body bytes (%d) must be at least the max body bytes (%d), or the largest bodies are refused forever", c.MaxInflightBytes, c.MaxBodyBytes))
	}
	if c.BodyReadTimeout < 0 {
		errs = append(errs, errors.New("body read timeout must not be negative"))
	}
	if c.MaxJobWatchers < 0 {
		errs = append(errs, errors.New("max job watchers must not be negative"))
	}
	if c.BatchMaxPerOwner < 1 {
		errs = append(errs, fmt.Errorf("batches one key may have unfinished (BRIDGE_BATCH_MAX_PER_OWNER) must be at least 1, got %d", c.BatchMaxPerOwner))
	}
	errs = append(errs, c.Micro.Validate())
	return errors.Join(errs...)
}

// Gateway is the HTTP front end. Create it with New, serve it with Serve.
type Gateway struct {
	cfg  Config
	nc   *nats.Conn
	js   jetstream.JetStream
	log  *slog.Logger
	corr *correlator
	// positions answers where queued requests stand (queuepos.go).
	positions *queuePositions
	metrics   *metrics   // nil: none kept
	access    *AccessLog // nil: no access lines
	echo      *echo.Echo
	core      *admission.Core // the one way into the queue
	cache     *responseCache  // the response cache (cache.go)
	bodies    jetstream.ObjectStore
	batches   *batch.Store    // Batch API files and batches
	jobs      *jobstore.Store // async jobs (jobs.go)
	stored    *responseStore  // stored responses (responses.go)
	created   int64           // the models' "created" time
	master    []byte          // the master key; nil: none
	budget    *bodyBudget     // request bodies held in memory (budget.go)
	watchers  atomic.Int64    // long polls waiting (jobs.go)
	draining  atomic.Bool
	stopping  chan struct{} // closed when draining begins: long polls answer at once
	closing   chan struct{} // closed when the shutdown grace is over
}

// New subscribes to this instance's replies and builds the routes. The
// stream and the large-body store must already exist (see queue.Ensure).
// Close releases the subscription.
func New(cfg Config, nc *nats.Conn, js jetstream.JetStream, catalog *schema.Catalog, log *slog.Logger) (*Gateway, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	bodies, err := js.ObjectStore(ctx, schema.BucketBodies)
	if err != nil {
		return nil, fmt.Errorf("large-body store %s: %w", schema.BucketBodies, err)
	}
	acfg := admission.Config{AllowPresetOverride: cfg.AllowPresetOverride, MaxBodyBytes: cfg.MaxBodyBytes, PublishTimeout: cfg.PublishTimeout, Limits: cfg.Limits, Tracer: cfg.Tracer}
	if r, ok := cfg.Keys.(admission.KeyResolver); ok {
		acfg.Keys = r // the core judges every door's request by its key as it is now
	}
	core, err := admission.Open(ctx, acfg, js, catalog, log.With("gateway", cfg.InstanceID))
	if err != nil {
		return nil, err
	}
	batches, err := batch.Open(ctx, js)
	if err != nil {
		return nil, err
	}
	jobs, err := jobstore.Open(ctx, js)
	if err != nil {
		return nil, err
	}
	cache, err := newResponseCache(ctx, js, cfg.Metrics, log.With("gateway", cfg.InstanceID))
	if err != nil {
		return nil, err
	}
	stored, err := openResponseStore(ctx, js, log.With("gateway", cfg.InstanceID))
	if err != nil {
		return nil, err
	}
	corr, err := newCorrelator(nc, cfg.InstanceID)
	if err != nil {
		return nil, err
	}
	g := &Gateway{
		cfg: cfg, nc: nc, js: js, log: log.With("gateway", cfg.InstanceID), corr: corr, positions: newQueuePositions(js),
		core:     core,
		cache:    cache,
		bodies:   bodies,
		batches:  batches,
		jobs:     jobs,
		stored:   stored,
		access:   cfg.AccessLog,
		budget:   &bodyBudget{max: cfg.MaxInflightBytes},
		stopping: make(chan struct{}),
		created:  time.Now().Unix(),
		closing:  make(chan struct{}),
	}
	if cfg.MasterKey != "" {
		g.master = []byte(cfg.MasterKey.Reveal())
	}
	if g.metrics, err = newMetrics(cfg.Metrics, js, g.budget, g.log); err != nil {
		_ = corr.close()
		return nil, err
	}
	g.echo = g.routes()
	g.log.Info("request body budget", "max_inflight_bytes", cfg.MaxInflightBytes, "max_body_bytes", cfg.MaxBodyBytes,
		"body_read_timeout", cfg.BodyReadTimeout.String(), "max_job_watchers", cfg.MaxJobWatchers, "micro_max_in_flight", cfg.Micro.MaxInFlight)
	// A reply sent while this gateway was disconnected is not lost: a
	// reply the gateway does not confirm, workers store in a stream; read
	// them back on reconnect.
	prev := nc.Opts.ReconnectedCB
	nc.SetReconnectHandler(func(c *nats.Conn) {
		if prev != nil {
			prev(c)
		}
		go g.recoverReplies()
	})
	return g, nil
}

// recoverReplies looks up, in the replies stream, the reply of every caller
// still waiting, and hands over those that arrived while the gateway was
// disconnected.
func (g *Gateway) recoverReplies() {
	ids := g.corr.waitingIDs()
	if len(ids) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stream, err := g.js.Stream(ctx, schema.StreamReplies)
	if err != nil {
		g.log.Error("could not read back replies after a reconnect", "waiting_callers", len(ids), "error", err)
		return
	}
	recovered := 0
	for _, id := range ids {
		m, err := stream.GetLastMsgForSubject(ctx, g.corr.subject(id))
		if err != nil { // not answered yet (or gone): the subscription will bring it
			continue
		}
		g.corr.deliverID(id, m.Data)
		recovered++
	}
	g.log.Info("replies read back after a reconnect", "waiting_callers", len(ids), "recovered", recovered)
}

// Core is the gateway's admission core, for the other doors it runs
// beside HTTP (the batch runner).
func (g *Gateway) Core() *admission.Core { return g.core }

// SetCatalog puts a reloaded model catalogue in force for the requests
// that come next (admission.Core.SetCatalog); /v1/models lists it.
func (g *Gateway) SetCatalog(catalog *schema.Catalog) { g.core.SetCatalog(catalog) }

// DeliverLocal takes a worker's reply on a direct subject when it is this
// gateway's (worker.Pool.HandRepliesTo, for a worker in this process),
// as the fast path over NATS takes it; false when it is not.
func (g *Gateway) DeliverLocal(direct string, data []byte) bool {
	return g.corr.deliverLocal(direct, data)
}

// Handler returns the HTTP handler, for tests and custom servers.
func (g *Gateway) Handler() http.Handler { return g.echo }

// Close stops listening for replies.
func (g *Gateway) Close() error { return g.corr.close() }

// Serve answers HTTP on ln, and NATS requests on the micro endpoint, until
// ctx is done; then it turns readiness to 503, stops accepting connections
// and requests and waits up to ShutdownGrace for callers still waiting on
// an answer.
func (g *Gateway) Serve(ctx context.Context, ln net.Listener) error {
	endpoint, err := g.startMicro()
	if err != nil {
		return err
	}
	defer endpoint.stop()
	producers, err := g.startProducers(ctx)
	if err != nil {
		return err
	}
	defer producers.stop()
	srv := &http.Server{
		Handler:           g.echo,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(g.log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	g.log.Info("gateway listening", "addr", ln.Addr().String())
	select {
	case err := <-errc:
		return fmt.Errorf("http server: %w", err)
	case <-ctx.Done():
	}
	g.draining.Store(true)
	close(g.stopping)
	endpoint.stop()
	g.log.Info("gateway shutting down", "waiting_callers", g.corr.pending())
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), g.cfg.ShutdownGrace)
	defer cancel()
	err = srv.Shutdown(sctx)
	if err == nil {
		err = endpoint.wait(sctx)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		// Callers still waiting get a 503 they can retry, not a reset.
		waiting := g.corr.pending()
		close(g.closing)
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		err = errors.Join(srv.Shutdown(fctx), endpoint.wait(fctx))
		g.log.Warn("shutdown grace over; waiting callers answered 503", "callers", waiting)
	}
	if err != nil {
		return fmt.Errorf("gateway shutdown: %w", err)
	}
	return nil
}

// shuttingDown is the answer of a caller still waiting when the shutdown
// grace is over.
func shuttingDown() *schema.Error {
	return &schema.Error{Status: http.StatusServiceUnavailable, Type: schema.TypeServer, Code: CodeShuttingDown,
		Message: "This gateway is shutting down; send the request again.", RetryAfter: 1}
}

// CodeShuttingDown is the error code of a caller cut off by shutdown.
const CodeShuttingDown = "gateway_shutting_down"
