package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/laas-bridge/laas-bridge/bridge"
	"github.com/laas-bridge/laas-bridge/internal/config"
	"github.com/laas-bridge/laas-bridge/keys"
	"github.com/laas-bridge/laas-bridge/laas"
	"github.com/laas-bridge/laas-bridge/laas/laasmock"
	"github.com/laas-bridge/laas-bridge/queue"
	"github.com/laas-bridge/laas-bridge/queue/failover"
	"github.com/laas-bridge/laas-bridge/schema"
	"github.com/laas-bridge/laas-bridge/worker"
)

// Demo credentials: only the in-process mock ever sees them.
const (
	demoProject = "demo-project"
	demoAPIKey  = "demo-api-key"
	demoPreset  = "demo-preset"
)

// runBridge runs `serve`, `gateway` or `worker`.
func runBridge(ctx context.Context, cmd string, args []string, stdout, stderr io.Writer) error {
	// SIGHUP reloads the config (reload.go); taken from the start, so one
	// that comes before the reloader runs (or with no file to reload)
	// does not end the process, as it would by default.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	env, err := readEnv()
	if err != nil {
		return err
	}
	hasGateway, hasWorker := cmd != "worker", cmd != "gateway"
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	demo := false
	if cmd == "serve" {
		fs.BoolVar(&demo, "demo", false, "answer from a built-in LaaS mock instead of LaaS (no account needed)")
		fs.StringVar(&env.DataDir, "data-dir", env.DataDir, "where the embedded NATS keeps its file store and, with --nats-listen, the nkey seed clients need (BRIDGE_DATA_DIR)")
		fs.StringVar(&env.NATSListen, "nats-listen", env.NATSListen, "address where the embedded NATS takes other programs, which sign in with the nkey seed it generates; empty (the default) for none (BRIDGE_NATS_LISTEN)")
	}
	secretFlag(fs, &env.NATSURL, "nats-url", "NATS server URLs, comma-separated (NATS_URL)")
	fs.StringVar(&env.Config, "config", env.Config, "LiteLLM-format model config (BRIDGE_CONFIG; default config.yaml when present)")
	if hasGateway {
		fs.StringVar(&env.Listen, "listen", env.Listen, "HTTP listen address (BRIDGE_LISTEN)")
	}
	fs.StringVar(&env.AccessLog, "access-log", env.AccessLog, "one JSON line per request (a worker: per job): off, stdout or a file path (BRIDGE_ACCESS_LOG)")
	if hasWorker {
		fs.IntVar(&env.Concurrency, "concurrency", env.Concurrency, "LaaS calls this process runs at once (BRIDGE_WORKER_CONCURRENCY)")
		secretFlag(fs, &env.LaaSBaseURL, "laas-base-url", "LaaS base URL (LAAS_BASE_URL; default https://api-laas.wanted.co.kr)")
		fs.StringVar(&env.LaaSPresetHash, "preset-hash", env.LaaSPresetHash, "preset for models without their own (LAAS_PRESET_HASH)")
	}
	metricsUsage := "address that serves Prometheus /metrics; empty for none (BRIDGE_METRICS_LISTEN)"
	if hasGateway {
		metricsUsage = "another address that serves Prometheus /metrics, besides the gateway's own port; empty for none (BRIDGE_METRICS_LISTEN)"
	}
	fs.StringVar(&env.MetricsListen, "metrics-listen", env.MetricsListen, metricsUsage)
	fs.StringVar(&env.LogLevel, "log-level", env.LogLevel, "debug, info, warn or error (BRIDGE_LOG_LEVEL)")
	fs.StringVar(&env.LogFormat, "log-format", env.LogFormat, "text or json (BRIDGE_LOG_FORMAT)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	log, err := newLogger(stderr, env.LogLevel, env.LogFormat)
	if err != nil {
		return err
	}
	log = log.With("role", cmd)
	memLimit := setMemoryLimit(log) // GOMEMLIMIT from the cgroup, before anything allocates much
	// Traces when OTEL_* asks for them (tracing.go); tracer is nil when off.
	tracer, stopTracing, err := startTracing(ctx, cmd, log)
	if err != nil {
		return err
	}
	defer stopTracing() // after the roles stop: their last spans are flushed
	openAPI := ""
	if hasGateway {
		if openAPI, err = apiAuth(cmd, env, demo); err != nil {
			return err
		}
	}
	// One access log for the process: the gateway's doors and the worker's
	// jobs (door "batch").
	accessLog, closeAccessLog, err := openAccessLog(env.AccessLog, stdout)
	if err != nil {
		return err
	}
	defer closeAccessLog()
	if env.PprofListen != "" {
		stopPprof, err := servePprof(env.PprofListen, log)
		if err != nil {
			return err
		}
		defer stopPprof()
	}

	cfgFile, cfgPath, cfgData, err := readConfig(env.Config, log)
	if err != nil {
		return err
	}
	catalog := cfgFile.Catalog
	if cmd != "serve" && env.NATSURL == "" {
		return fmt.Errorf("NATS_URL is not set: `laas-bridge %s` connects to a NATS server with JetStream (set NATS_URL or --nats-url, or use `laas-bridge serve`, which embeds one)", cmd)
	}
	if env.NATSURL == "" && env.StreamReplicas != nil && *env.StreamReplicas > 1 {
		return fmt.Errorf("BRIDGE_STREAM_REPLICAS=%d needs a NATS cluster of at least %d servers, but `laas-bridge serve` without NATS_URL embeds a single server, which holds one replica: set NATS_URL to the cluster's servers (comma-separated), or leave BRIDGE_STREAM_REPLICAS unset or 1",
			*env.StreamReplicas, *env.StreamReplicas)
	}

	var up *laas.Client
	var headerTimeout time.Duration // the LaaS transport's, set once
	if hasWorker {
		if env.Concurrency < 1 {
			return fmt.Errorf("BRIDGE_WORKER_CONCURRENCY must be at least 1, got %d", env.Concurrency)
		}
		if demo {
			stopMock, err := startDemoMock(&env, log)
			if err != nil {
				return err
			}
			defer stopMock()
		} else if missing := missingLaaS(env, catalog); len(missing) > 0 {
			return fmt.Errorf("missing LaaS settings: %s. Set them in the environment or in .env, or run `laas-bridge serve --demo` to try the bridge with a built-in mock", strings.Join(missing, ", "))
		}
		catalog = catalog.WithDefaultPreset(env.LaaSPresetHash)
		headerTimeout = laas.LongestTimeout(catalog.Models())
		up, err = laas.NewClient(laas.Config{BaseURL: env.LaaSBaseURL, ProjectCode: env.LaaSProjectCode, APIKey: env.LaaSAPIKey,
			ResponseHeaderTimeout: headerTimeout}, nil)
		if err != nil {
			return err
		}
	}

	nc, stopNATS, err := connectNATS(cmd, env, log)
	if err != nil {
		return err
	}
	defer stopNATS()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	cons, err := ensureQueue(ctx, js, env.queueConfig(), log)
	if err != nil {
		return err
	}

	store, keyLimits, err := openKeys(ctx, js, log)
	if err != nil {
		return err
	}
	defer store.Close()
	// One registry per process: `serve` shows both sides' metrics on the
	// gateway's /metrics.
	reg := newRegistry()
	var pool *worker.Pool
	if hasWorker {
		// Dead letters: jobs that run out of attempts, and jobs that reach
		// MaxDeliver without a worker finishing them (watched before the
		// pool pulls, so no advisory is missed).
		deadCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
		dead, err := worker.NewDeadLetters(deadCtx, js, log, worker.DeadLettersWithMetrics(reg), worker.DeadLettersWithKeyLedger(keyLimits))
		if err == nil {
			var stopWatch func()
			if stopWatch, err = dead.WatchMaxDeliveries(deadCtx); err == nil {
				defer stopWatch()
			}
		}
		cancel()
		if err != nil {
			return err
		}
		// Rate limits shared by every worker process (LAAS_LIMITS bucket).
		limitCtx, cancelLimit := context.WithTimeout(ctx, 30*time.Second)
		limiter, err := newLimiter(limitCtx, js, env, log)
		cancelLimit()
		if err != nil {
			return err
		}
		defer limiter.Close()
		// --- end rate limits ---
		// The concurrency cap shared by every worker process (LAAS_SLOTS):
		// BRIDGE_LAAS_MAX_CONCURRENCY and each model's max_parallel_requests.
		capCtx, cancelCap := context.WithTimeout(ctx, 30*time.Second)
		caps, err := worker.NewKVCap(capCtx, js, worker.CapConfig{Bucket: queue.BucketSlots, Max: env.LaaSMaxConcurrency, AckWait: cons.CachedInfo().Config.AckWait}, log)
		cancelCap()
		if err != nil {
			return err
		}
		defer caps.Close()
		// Always in place, so a reloaded config may cap a model; a call no
		// cap applies to passes with two comparisons (docs/performance.md).
		poolOpts := []worker.Option{worker.WithDeadLetters(dead), worker.WithAccessLog(accessLog), worker.WithLimiter(limiter), worker.WithMetrics(reg),
			worker.WithKeyLedger(keyLimits, store), worker.WithTracer(tracer), worker.WithConcurrencyCap(caps)}
		if pool, err = worker.NewPool(worker.Config{Concurrency: env.Concurrency, AllowPresetOverride: cfgFile.AllowPresetOverride}, js, cons, up, catalog, log,
			poolOpts...); err != nil {
			return err
		}
	}
	var gw *bridge.Gateway
	var ln net.Listener
	if hasGateway {
		micro := microConfig(env.MicroSubject, env.MicroReplyPrefixes, version)
		micro.MaxInFlight = env.MicroMaxInFlight
		if gw, err = bridge.New(bridge.Config{MasterKey: env.MasterKey, Keys: store, Usage: keys.UsageReader(keyLimits, store), Limits: keyLimits,
			MaxBodyBytes: env.MaxBody, MaxFileBytes: env.MaxFile, AllowPresetOverride: cfgFile.AllowPresetOverride, Metrics: reg,
			Micro: micro, MaxInflightBytes: inflightBytes(env, memLimit),
			BodyReadTimeout: env.BodyReadTimeout, MaxJobWatchers: env.MaxJobWatchers, BatchMaxPerOwner: env.BatchMaxPerOwner, AccessLog: accessLog, Tracer: tracer}, nc, js, catalog, log); err != nil {
			return err
		}
		defer gw.Close()
		if pool != nil {
			// serve: this process's replies skip the NATS round trip.
			pool.HandRepliesTo(gw.DeliverLocal)
		}
		// Every gateway runs a batch runner (Batch API); leases in
		// LAAS_BATCHES keep each batch with one runner at a time.
		stopRunner, err := startBatchRunner(ctx, js, gw.Core(), env, log)
		if err != nil {
			return err
		}
		defer stopRunner()
		if ln, err = net.Listen("tcp", env.Listen); err != nil {
			return fmt.Errorf("listen on %s: %w", env.Listen, err)
		}
	}
	if openAPI != "" {
		log.Warn("BRIDGE_MASTER_KEY is not set: the API accepts any caller", "because", openAPI)
	}
	if cfgPath != "" {
		// Config reload: the model list, on SIGHUP and when the file changes.
		r, err := newConfigReloader(cfgPath, cfgData, func(cat *schema.Catalog) error {
			cat, err := catalogFor(cat, hasWorker, env.LaaSPresetHash, headerTimeout)
			if err != nil {
				return err
			}
			if pool != nil {
				pool.SetCatalog(cat)
			}
			if gw != nil {
				gw.SetCatalog(cat)
			}
			return nil
		}, reg, log)
		if err != nil {
			return err
		}
		reloadCtx, stopReload := context.WithCancel(ctx)
		defer stopReload()
		go r.run(reloadCtx, hup, env.ConfigWatch)
	} else {
		go func() {
			for {
				select {
				case <-hup:
					log.Warn("SIGHUP: there is no config file to reload (no BRIDGE_CONFIG, no config.yaml)")
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	if env.MetricsListen != "" {
		stopMetrics, err := serveMetrics(env.MetricsListen, reg, log)
		if err != nil {
			return err
		}
		defer stopMetrics()
	}
	return runRoles(ctx, gw, ln, pool)
}

// runRoles runs the gateway and the pool until ctx is done, then stops them
// in that order: the gateway waits for its callers while the workers still
// answer them.
func runRoles(ctx context.Context, gw *bridge.Gateway, ln net.Listener, pool *worker.Pool) error {
	poolCtx, stopPool := context.WithCancel(context.WithoutCancel(ctx))
	defer stopPool()
	gwCtx, stopGateway := context.WithCancel(ctx)
	defer stopGateway()
	poolDone := make(chan error, 1)
	if pool != nil {
		go func() {
			err := pool.Run(poolCtx)
			stopGateway() // a pool that ends stops the process
			poolDone <- err
		}()
	} else {
		close(poolDone)
	}
	var gwErr error
	if gw != nil {
		gwErr = gw.Serve(gwCtx, ln)
	} else {
		<-gwCtx.Done()
	}
	stopPool()
	return errors.Join(gwErr, <-poolDone)
}

// loadConfig reads the model config: path, or config.yaml when present.
func loadConfig(path string, log *slog.Logger) (*config.File, error) {
	f, _, _, err := readConfig(path, log)
	return f, err
}

// readConfig is loadConfig that also returns the path it read and its
// content ("" and nil when there was no file), for reloads.
func readConfig(path string, log *slog.Logger) (f *config.File, read string, data []byte, err error) {
	explicit := path != ""
	if !explicit {
		path = "config.yaml"
	}
	data, err = os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) && !explicit {
		log.Warn("no config.yaml found: no models are configured, so every chat request will answer model_not_found")
		empty, err := schema.NewCatalog(nil)
		return &config.File{Catalog: empty}, "", nil, err
	}
	if err != nil {
		return nil, "", nil, fmt.Errorf("read config: %w", err)
	}
	if f, err = config.Parse(path, data, os.LookupEnv); err != nil {
		return nil, "", nil, err
	}
	if len(f.Ignored) > 0 {
		log.Info("config keys laas-bridge does not use were ignored", "keys", strings.Join(f.Ignored, ","))
	}
	log.Info("config loaded", "path", path, "models", len(f.Catalog.Models()))
	return f, path, data, nil
}

// missingLaaS names the LaaS settings a worker needs and does not have.
func missingLaaS(env Env, catalog *schema.Catalog) []string {
	var missing []string
	if env.LaaSProjectCode == "" {
		missing = append(missing, "LAAS_PROJECT_CODE")
	}
	if env.LaaSAPIKey == "" {
		missing = append(missing, "LAAS_API_KEY")
	}
	if env.LaaSPresetHash == "" {
		if without := catalog.MissingPresets(); len(without) > 0 {
			missing = append(missing, fmt.Sprintf("LAAS_PRESET_HASH (models without their own preset_hash: %s)", strings.Join(without, ", ")))
		}
	}
	return missing
}

// startDemoMock serves the LaaS mock on a free loopback port and points env
// at it.
func startDemoMock(env *Env, log *slog.Logger) (stop func(), err error) {
	mock, err := laasmock.New(laasmock.Config{ProjectCode: demoProject, APIKey: demoAPIKey})
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("demo mock: %w", err)
	}
	srv := &http.Server{Handler: mock, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	env.LaaSBaseURL = "http://" + ln.Addr().String()
	env.LaaSProjectCode, env.LaaSAPIKey = demoProject, demoAPIKey
	if env.LaaSPresetHash == "" {
		env.LaaSPresetHash = demoPreset
	}
	log.Warn("DEMO MODE: answers come from the built-in LaaS mock, not from Wanted LaaS", "mock_url", env.LaaSBaseURL)
	return func() { _ = srv.Close() }, nil
}

// newLimiter opens the workers' shared rate limiter: BRIDGE_LAAS_RPM for the
// project, each model's rpm, and the cooldown after a 429.
func newLimiter(ctx context.Context, js jetstream.JetStream, env Env, log *slog.Logger) (*worker.KVLimiter, error) {
	l, err := worker.NewKVLimiter(ctx, js, worker.LimiterConfig{Bucket: queue.BucketLimits, RPM: env.LaaSRPM}, log)
	if err != nil {
		return nil, err
	}
	log.Info("rate limits", "project_rpm", env.LaaSRPM, "max_concurrency", env.LaaSMaxConcurrency)
	return l, nil
}

// microConfig is the NATS endpoint's configuration: subject "off" turns it
// off; its version is the binary's, or 0.0.0-dev when that is not SemVer
// (micro requires SemVer).
func microConfig(subject, replyPrefixes, version string) bridge.MicroConfig {
	v := strings.TrimPrefix(version, "v")
	if !semver.MatchString(v) {
		v = "0.0.0-dev"
	}
	var prefixes []string
	for _, p := range strings.Split(replyPrefixes, ",") {
		if p = strings.TrimSpace(p); p != "" {
			prefixes = append(prefixes, p)
		}
	}
	return bridge.MicroConfig{Disabled: strings.EqualFold(subject, "off"), Subject: subject, Version: v, ReplyPrefixes: prefixes}
}

// inflightBytes is BRIDGE_MAX_INFLIGHT_BYTES, or when unset a quarter of
// the memory limit (bridge.InflightBudget).
func inflightBytes(env Env, memLimit int64) int64 {
	if env.MaxInflightBytes != 0 {
		return env.MaxInflightBytes // bridge.Config.Validate refuses one below BRIDGE_MAX_BODY_BYTES
	}
	return bridge.InflightBudget(memLimit, env.MaxBody)
}

// semver is SemVer 2.0.0's suggested pattern, as micro checks it.
var semver = regexp.MustCompile(`^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$`)

// Ensure's patience: a process started with its NATS cluster (compose, a
// Kubernetes rollout) may come before JetStream has a meta leader, when
// every JetStream request goes unanswered. It retries such failures, each
// attempt bounded, until ensureWait has passed; other errors end it at once.
const (
	ensureAttempt = 10 * time.Second
	ensureWait    = 2 * time.Minute
	ensurePause   = time.Second
)

// ensurePatience bounds retryEnsure: each attempt, all attempts together,
// and the pause between two.
type ensurePatience struct {
	attempt, wait, pause time.Duration
}

// ensureQueue provisions the streams, buckets and consumers (queue.Ensure),
// waiting for JetStream as ensureWait allows.
func ensureQueue(ctx context.Context, js jetstream.JetStream, cfg queue.Config, log *slog.Logger) (jetstream.Consumer, error) {
	return retryEnsure(ctx, ensurePatience{attempt: ensureAttempt, wait: ensureWait, pause: ensurePause}, log,
		func(ctx context.Context) (jetstream.Consumer, error) {
			return queue.Ensure(ctx, js, cfg, queue.WithLogger(log))
		})
}

// retryEnsure calls ensure, each call bounded by p.attempt, until it
// succeeds, fails with an error failover.Retryable does not retry, ctx
// ends, or p.wait has passed.
func retryEnsure(ctx context.Context, p ensurePatience, log *slog.Logger, ensure func(context.Context) (jetstream.Consumer, error)) (jetstream.Consumer, error) {
	budget, cancel := context.WithTimeout(ctx, p.wait)
	defer cancel()
	for {
		actx, cancelAttempt := context.WithTimeout(budget, p.attempt)
		cons, err := ensure(actx)
		cancelAttempt()
		if err == nil || ctx.Err() != nil || !failover.Retryable(err) {
			return cons, err
		}
		if budget.Err() == nil {
			log.Warn("JetStream is not ready yet (a cluster still electing its leader?); retrying", "error", err)
		}
		select {
		case <-time.After(p.pause):
		case <-budget.Done():
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("JetStream was not ready within %s (are the NATS servers up, and has the cluster elected a meta leader?): %w", p.wait, err)
		}
	}
}

// openKeys opens the virtual keys (LAAS_KEYS, watched by every gateway,
// worker and replay) and their limits' state, shared by all of them.
func openKeys(ctx context.Context, js jetstream.JetStream, log *slog.Logger) (*keys.Store, *keys.Limits, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	store, err := keys.Open(ctx, js, log)
	if err != nil {
		return nil, nil, err
	}
	limits, err := keys.OpenLimits(ctx, js, log)
	if err != nil {
		store.Close()
		return nil, nil, err
	}
	return store, limits, nil
}
