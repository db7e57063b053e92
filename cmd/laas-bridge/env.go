package main

import (
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/kelseyhightower/envconfig"

	"github.com/laas-bridge/laas-bridge/schema"
	"github.com/laas-bridge/laas-bridge/schema/queue"
)

// Env holds every environment setting. The names are fixed: existing .env
// files of the earlier LiteLLM handler keep working.
type Env struct {
	LaaSProjectCode schema.Secret `envconfig:"LAAS_PROJECT_CODE"`
	LaaSAPIKey      schema.Secret `envconfig:"LAAS_API_KEY"`
	LaaSPresetHash  string        `envconfig:"LAAS_PRESET_HASH"`
	LaaSBaseURL     string        `envconfig:"LAAS_BASE_URL" default:"https://api-laas.wanted.co.kr"`

	Listen      string        `envconfig:"BRIDGE_LISTEN" default:":4000"`
	Config      string        `envconfig:"BRIDGE_CONFIG"`
	DataDir     string        `envconfig:"BRIDGE_DATA_DIR" default:"./data"`
	MasterKey   schema.Secret `envconfig:"BRIDGE_MASTER_KEY"`
	NATSURL     string        `envconfig:"NATS_URL"`
	NATSListen  string        `envconfig:"BRIDGE_NATS_LISTEN" default:"127.0.0.1:4222"`
	Concurrency int           `envconfig:"BRIDGE_WORKER_CONCURRENCY" default:"64"`
	MaxBody     int64         `envconfig:"BRIDGE_MAX_BODY_BYTES" default:"67108864"`
	QueueMsgs   int64         `envconfig:"BRIDGE_QUEUE_MAX_MSGS" default:"100000"`
	QueueBytes  int64         `envconfig:"BRIDGE_QUEUE_MAX_BYTES" default:"1073741824"`
	AckWait     time.Duration `envconfig:"BRIDGE_ACK_WAIT" default:"30s"`
	ResultsTTL  time.Duration `envconfig:"BRIDGE_RESULTS_TTL" default:"24h"`
	LogLevel    string        `envconfig:"BRIDGE_LOG_LEVEL" default:"info"`
	LogFormat   string        `envconfig:"BRIDGE_LOG_FORMAT" default:"text"`

	// MetricsListen is an address that serves /metrics ("": none); a
	// gateway also serves it on its own port.
	MetricsListen string `envconfig:"BRIDGE_METRICS_LISTEN"`

	// LaaSRPM is the LaaS project's requests per minute over every worker
	// process (0: none); LaaSMaxConcurrency caps its calls in flight (the
	// consumer's MaxAckPending; 0: queue.DefaultMaxAckPending).
	LaaSRPM            int `envconfig:"BRIDGE_LAAS_RPM" default:"0"`
	LaaSMaxConcurrency int `envconfig:"BRIDGE_LAAS_MAX_CONCURRENCY" default:"0"`

	MockListen  string        `envconfig:"MOCK_LAAS_LISTEN" default:"127.0.0.1:9901"`
	MockLatency time.Duration `envconfig:"MOCK_LAAS_LATENCY"`
	MockRate429 float64       `envconfig:"MOCK_LAAS_RATE_429"`
	MockRate500 float64       `envconfig:"MOCK_LAAS_RATE_500"`
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
	if e.LaaSMaxConcurrency < 0 {
		return e, fmt.Errorf("BRIDGE_LAAS_MAX_CONCURRENCY must be 0 (the default, %d) or more, got %d", queue.DefaultMaxAckPending, e.LaaSMaxConcurrency)
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
