package main

import (
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/kelseyhightower/envconfig"

	"github.com/laas-bridge/laas-bridge/queue"
	"github.com/laas-bridge/laas-bridge/schema"
)

// Env holds every environment setting. The names are fixed: existing .env
// files of the earlier LiteLLM handler keep working.
type Env struct {
	LaaSProjectCode schema.Secret `envconfig:"LAAS_PROJECT_CODE"`
	LaaSAPIKey      schema.Secret `envconfig:"LAAS_API_KEY"`
	LaaSPresetHash  string        `envconfig:"LAAS_PRESET_HASH"`
	LaaSBaseURL     string        `envconfig:"LAAS_BASE_URL" default:"https://api-laas.wanted.co.kr"`

	Listen string `envconfig:"BRIDGE_LISTEN" default:":4000"`
	Config string `envconfig:"BRIDGE_CONFIG"`
	// ConfigWatch is how often the config file is checked for a change
	// (its model list is reloaded, as on SIGHUP); 0: on SIGHUP only.
	ConfigWatch time.Duration `envconfig:"BRIDGE_CONFIG_WATCH" default:"10s"`
	DataDir     string        `envconfig:"BRIDGE_DATA_DIR" default:"./data"`
	MasterKey   schema.Secret `envconfig:"BRIDGE_MASTER_KEY"`
	NATSURL     string        `envconfig:"NATS_URL"`
	NATSListen  string        `envconfig:"BRIDGE_NATS_LISTEN"`
	Concurrency int           `envconfig:"BRIDGE_WORKER_CONCURRENCY" default:"64"`
	MaxBody     int64         `envconfig:"BRIDGE_MAX_BODY_BYTES" default:"67108864"`
	MaxFile     int64         `envconfig:"BRIDGE_MAX_FILE_BYTES" default:"209715200"`
	LogLevel    string        `envconfig:"BRIDGE_LOG_LEVEL" default:"info"`
	LogFormat   string        `envconfig:"BRIDGE_LOG_FORMAT" default:"text"`
	// AccessLog is where a gateway writes one JSON line per request, and
	// a worker one per job: off, stdout, or a file path (see openAccessLog).
	AccessLog string `envconfig:"BRIDGE_ACCESS_LOG" default:"off"`

	// Auth is "none" to let `serve` and `gateway` start without
	// BRIDGE_MASTER_KEY, an open API; unset, they refuse to (see apiAuth).
	Auth string `envconfig:"BRIDGE_AUTH"`

	// The NATS client identity for NATS_URL (queue.Identity): paths to a
	// creds file or an nkey seed, a CA bundle, a client certificate and key.
	NATSCreds    string `envconfig:"NATS_CREDS"`
	NATSNKeySeed string `envconfig:"NATS_NKEY_SEED"`
	NATSCA       string `envconfig:"NATS_CA"`
	NATSCert     string `envconfig:"NATS_CERT"`
	NATSKey      string `envconfig:"NATS_KEY"`

	// Stream and consumer settings. Unset (zero or nil) keeps what the
	// server holds when the stream exists, and takes the queue package's
	// default when this process creates it; set, it is applied at start
	// (see queue.Ensure). The defaults are queue.DefaultMaxMsgs (100000),
	// queue.DefaultMaxBytes (1 GiB), queue.DefaultAckWait (5s) and one
	// replica.
	QueueMsgs  int64         `envconfig:"BRIDGE_QUEUE_MAX_MSGS"`
	QueueBytes int64         `envconfig:"BRIDGE_QUEUE_MAX_BYTES"`
	AckWait    time.Duration `envconfig:"BRIDGE_ACK_WAIT"`
	// ResultsTTL is how long direct job results and states are kept
	// (queue.DefaultResultsTTL, 24h, when created).
	ResultsTTL time.Duration `envconfig:"BRIDGE_RESULTS_TTL"`
	// StreamReplicas is the replicas of every stream, consumer, key-value
	// bucket and object store: 3 on a 3-node NATS cluster.
	StreamReplicas *int `envconfig:"BRIDGE_STREAM_REPLICAS"`

	// MetricsListen is an address that serves /metrics ("": none); a
	// gateway also serves it on its own port.
	MetricsListen string `envconfig:"BRIDGE_METRICS_LISTEN"`
	// PprofListen is an address that serves Go's profiler under
	// /debug/pprof/ ("": none). For diagnosis only; keep it on loopback.
	PprofListen string `envconfig:"BRIDGE_PPROF_LISTEN"`

	// MicroSubject is the NATS subject of the gateway's request/reply chat
	// endpoint (a nats.go/micro service); "off" turns it off.
	MicroSubject string `envconfig:"BRIDGE_MICRO_SUBJECT" default:"laas.api.chat"`
	// MicroReplyPrefixes are the reply-subject prefixes the micro endpoint
	// answers to, comma-separated; empty for the NATS default, "_INBOX.".
	MicroReplyPrefixes string `envconfig:"BRIDGE_MICRO_REPLY_PREFIXES"`

	// LaaSRPM is the LaaS project's requests per minute over every worker
	// process (0: none); LaaSMaxConcurrency caps its calls in flight over
	// every worker process and both lanes (worker.KVCap; 0: no cap).
	LaaSRPM            int `envconfig:"BRIDGE_LAAS_RPM" default:"0"`
	LaaSMaxConcurrency int `envconfig:"BRIDGE_LAAS_MAX_CONCURRENCY" default:"0"`

	// BatchMaxActive is the most batches one gateway's batch runner drives
	// at once (batch.RunnerConfig.MaxActive; 0: batch.DefaultMaxActive).
	BatchMaxActive int `envconfig:"BRIDGE_BATCH_MAX_ACTIVE"`
	// BatchMaxPerOwner is the most batches one virtual key may have not
	// finished (bridge.Config.BatchMaxPerOwner; 0:
	// bridge.DefaultBatchMaxPerOwner).
	BatchMaxPerOwner int `envconfig:"BRIDGE_BATCH_MAX_PER_OWNER"`

	// The gateway's memory budget (bridge.Config): the bytes of request
	// bodies held at once (0: a quarter of GOMEMLIMIT, see
	// bridge.InflightBudget), how long a body may take to arrive, and the
	// caps on job long polls and NATS endpoint callers waiting at once.
	MaxInflightBytes int64         `envconfig:"BRIDGE_MAX_INFLIGHT_BYTES" default:"0"`
	BodyReadTimeout  time.Duration `envconfig:"BRIDGE_BODY_READ_TIMEOUT" default:"60s"`
	MaxJobWatchers   int           `envconfig:"BRIDGE_MAX_JOB_WATCHERS" default:"256"`
	MicroMaxInFlight int           `envconfig:"BRIDGE_MICRO_MAX_INFLIGHT" default:"1024"`

	MockListen  string        `envconfig:"MOCK_LAAS_LISTEN" default:"127.0.0.1:9901"`
	MockLatency time.Duration `envconfig:"MOCK_LAAS_LATENCY"`
	MockRate429 float64       `envconfig:"MOCK_LAAS_RATE_429"`
	MockRate500 float64       `envconfig:"MOCK_LAAS_RATE_500"`
}

// queueConfig is the stream and consumer settings set in e; the zero
// fields are left to queue.Ensure (keep what exists, default what is new).
func (e Env) queueConfig() queue.Config {
	c := queue.Config{MaxMsgs: e.QueueMsgs, MaxBytes: e.QueueBytes, AckWait: e.AckWait, ResultsTTL: e.ResultsTTL}
	if e.LaaSMaxConcurrency > 0 {
		// The cap is the shared concurrency cap's (worker.KVCap), not the
		// lanes' MaxAckPending: that only bounds the jobs each lane hands
		// out at once, and must not be below the cap. Set here, it also
		// lifts a MaxAckPending an older release set to the cap.
		c.MaxAckPending = max(queue.DefaultMaxAckPending, e.LaaSMaxConcurrency)
	}
	if e.StreamReplicas != nil {
		c.Replicas = *e.StreamReplicas
	}
	return c
}

// natsIdentity is the identity this process presents to NATS_URL.
func (e Env) natsIdentity() queue.Identity {
	return queue.Identity{CredsFile: e.NATSCreds, NKeySeedFile: e.NATSNKeySeed, CAFile: e.NATSCA, CertFile: e.NATSCert, KeyFile: e.NATSKey}
}

// readEnv reads Env from the process environment.
func readEnv() (Env, error) {
	var e Env
	if err := envconfig.Process("", &e); err != nil {
		return e, fmt.Errorf("environment: %w", err)
	}
	if e.LaaSRPM < 0 {
		return e, fmt.Errorf("BRIDGE_LAAS_RPM must be 0 (no limit) or more, got %d", e.LaaSRPM)
	}
	if e.StreamReplicas != nil && (*e.StreamReplicas < 1 || *e.StreamReplicas > 5) {
		return e, fmt.Errorf("BRIDGE_STREAM_REPLICAS must be 1 to 5 (3 on a 3-node NATS cluster), got %d", *e.StreamReplicas)
	}
	if e.QueueMsgs < 0 || e.QueueBytes < 0 || e.AckWait < 0 || e.ResultsTTL < 0 {
		return e, fmt.Errorf("BRIDGE_QUEUE_MAX_MSGS, BRIDGE_QUEUE_MAX_BYTES, BRIDGE_ACK_WAIT and BRIDGE_RESULTS_TTL must not be negative")
	}
	if e.Auth != "" && e.Auth != "none" {
		return e, fmt.Errorf("BRIDGE_AUTH=%q: the only value is none, which lets serve and gateway run without BRIDGE_MASTER_KEY (an API anyone can call); leave it unset to require the key", e.Auth)
	}
	if e.LaaSMaxConcurrency < 0 {
		return e, fmt.Errorf("BRIDGE_LAAS_MAX_CONCURRENCY must be 0 (the default: no cap) or more, got %d", e.LaaSMaxConcurrency)
	}
	return e, nil
}

// newLogger builds the process logger on w.
func newLogger(w interface{ Write([]byte) (int, error) }, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("BRIDGE_LOG_LEVEL %q: use debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch strings.ToLower(format) {
	case "text", "":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("BRIDGE_LOG_FORMAT %q: use text or json", format)
}
