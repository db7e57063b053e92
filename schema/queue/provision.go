package queue

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/laas-bridge/laas-bridge/schema"
)

// Config sizes the request stream and the workers' consumer.
type Config struct {
	// Replicas of the stream and consumer: 1 on one server, 3 on a cluster.
	Replicas int
	// MaxMsgs and MaxBytes bound the stream; a full stream refuses new
	// requests (DiscardNew) rather than dropping accepted ones.
	MaxMsgs  int64
	MaxBytes int64
	// AckWait is how long a worker may hold a job without an ack or an
	// in-progress signal before it is redelivered.
	AckWait time.Duration
	// MaxDeliver bounds the attempts at one job.
	MaxDeliver int
	// MaxAckPending caps jobs in flight across every worker.
	MaxAckPending int
	// DuplicateWindow is how long a request id is remembered for
	// de-duplication (Nats-Msg-Id).
	DuplicateWindow time.Duration
	// BodiesMaxBytes bounds the object store of large request bodies.
	BodiesMaxBytes int64
	// BodiesTTL removes a large body left behind (a job that never
	// finished); normally a worker deletes it when the job ends.
	BodiesTTL time.Duration
	// AnswersTTL is how long a finished answer to a request with an
	// Idempotency-Key is kept and replayed.
	AnswersTTL time.Duration
	// Memory keeps the stream in memory instead of on disk (tests only).
	Memory bool
}

// Defaults for Config's zero fields.
const (
	DefaultMaxMsgs         = 100_000
	DefaultMaxBytes        = 1 << 30
	DefaultAckWait         = 30 * time.Second
	DefaultMaxDeliver      = 5
	DefaultMaxAckPending   = 1_000
	DefaultDuplicateWindow = 10 * time.Minute // as long as a default request may take
	DefaultAnswersTTL      = 24 * time.Hour
	DefaultBodiesMaxBytes  = 4 << 30
	MemoryBodiesMaxBytes   = 256 << 20 // the default with Memory set
	DefaultBodiesTTL       = 24 * time.Hour
)

func (c *Config) setDefaults() {
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.MaxMsgs == 0 {
		c.MaxMsgs = DefaultMaxMsgs
	}
	if c.MaxBytes == 0 {
		c.MaxBytes = DefaultMaxBytes
	}
	if c.AckWait == 0 {
		c.AckWait = DefaultAckWait
	}
	if c.MaxDeliver == 0 {
		c.MaxDeliver = DefaultMaxDeliver
	}
	if c.MaxAckPending == 0 {
		c.MaxAckPending = DefaultMaxAckPending
	}
	if c.DuplicateWindow == 0 {
		c.DuplicateWindow = DefaultDuplicateWindow
	}
	if c.BodiesMaxBytes == 0 {
		c.BodiesMaxBytes = DefaultBodiesMaxBytes
		if c.Memory {
			c.BodiesMaxBytes = MemoryBodiesMaxBytes
		}
	}
	if c.BodiesTTL == 0 {
		c.BodiesTTL = DefaultBodiesTTL
	}
	if c.AnswersTTL == 0 {
		c.AnswersTTL = DefaultAnswersTTL
	}
}

// Validate reports every invalid field at once.
func (c Config) Validate() error {
	var errs []error
	if c.Replicas < 1 || c.Replicas > 5 {
		errs = append(errs, fmt.Errorf("stream replicas must be 1 to 5, got %d", c.Replicas))
	}
	if c.MaxMsgs < 1 {
		errs = append(errs, fmt.Errorf("queue max messages must be positive, got %d", c.MaxMsgs))
	}
	if c.MaxBytes < 1<<20 {
		errs = append(errs, fmt.Errorf("queue max bytes must be at least 1 MiB, got %d", c.MaxBytes))
	}
	if c.AckWait < time.Second {
		errs = append(errs, fmt.Errorf("ack wait must be at least 1s, got %s", c.AckWait))
	}
	if c.MaxDeliver < 1 {
		errs = append(errs, fmt.Errorf("max deliver must be positive, got %d", c.MaxDeliver))
	}
	if c.MaxAckPending < 1 {
		errs = append(errs, fmt.Errorf("max ack pending must be positive, got %d", c.MaxAckPending))
	}
	if c.BodiesMaxBytes < 64<<20 {
		errs = append(errs, fmt.Errorf("large-body store max bytes must be at least 64 MiB, got %d", c.BodiesMaxBytes))
	}
	if c.BodiesTTL < time.Hour {
		errs = append(errs, fmt.Errorf("large-body TTL must be at least 1h, got %s", c.BodiesTTL))
	}
	if c.AnswersTTL < time.Minute {
		errs = append(errs, fmt.Errorf("idempotent answers TTL must be at least 1m, got %s", c.AnswersTTL))
	}
	return errors.Join(errs...)
}

// StreamConfig returns the request stream's configuration.
func (c Config) StreamConfig() jetstream.StreamConfig {
	c.setDefaults()
	return jetstream.StreamConfig{
		Name:        schema.StreamRequests,
		Description: "laas-bridge pending chat requests (work queue)",
		Subjects:    []string{schema.SubjectRequests + ".>"},
		Retention:   jetstream.WorkQueuePolicy,
		Discard:     jetstream.DiscardNew,
		MaxMsgs:     c.MaxMsgs,
		MaxBytes:    c.MaxBytes,
		Storage:     c.storage(),
		Replicas:    c.Replicas,
		Duplicates:  c.DuplicateWindow,
	}
}

func (c Config) storage() jetstream.StorageType {
	if c.Memory {
		return jetstream.MemoryStorage
	}
	return jetstream.FileStorage
}

// BodiesConfig returns the object store of large request bodies.
func (c Config) BodiesConfig() jetstream.ObjectStoreConfig {
	c.setDefaults()
	return jetstream.ObjectStoreConfig{
		Bucket:      schema.BucketBodies,
		Description: "laas-bridge request bodies too large for a queue message",
		TTL:         c.BodiesTTL,
		MaxBytes:    c.BodiesMaxBytes,
		Storage:     c.storage(),
		Replicas:    c.Replicas,
	}
}

// ConsumerConfig returns the workers' shared durable pull consumer.
func (c Config) ConsumerConfig() jetstream.ConsumerConfig {
	c.setDefaults()
	return jetstream.ConsumerConfig{
		Durable:       schema.ConsumerWorkers,
		Description:   "laas-bridge workers",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       c.AckWait,
		MaxDeliver:    c.MaxDeliver,
		MaxAckPending: c.MaxAckPending,
		Replicas:      c.Replicas,
	}
}

// AnswersConfig returns the KV bucket of finished answers to requests that
// carried an Idempotency-Key.
func (c Config) AnswersConfig() jetstream.KeyValueConfig {
	c.setDefaults()
	return jetstream.KeyValueConfig{
		Bucket:      schema.BucketAnswers,
		Description: "laas-bridge answers to requests with an Idempotency-Key",
		TTL:         c.AnswersTTL,
		Storage:     c.storage(),
		Replicas:    c.Replicas,
	}
}

// Ensure creates or updates the request stream, the workers' consumer and
// the large-body object store to match cfg, and returns the consumer. It is
// safe to call from every process at once.
func Ensure(ctx context.Context, js jetstream.JetStream, cfg Config) (jetstream.Consumer, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if _, err := js.CreateOrUpdateStream(ctx, cfg.StreamConfig()); err != nil {
		return nil, fmt.Errorf("create or update stream %s: %w", schema.StreamRequests, err)
	}
	if _, err := js.CreateOrUpdateObjectStore(ctx, cfg.BodiesConfig()); err != nil {
		return nil, fmt.Errorf("create or update object store %s: %w", schema.BucketBodies, err)
	}
	if _, err := js.CreateOrUpdateKeyValue(ctx, cfg.AnswersConfig()); err != nil {
		return nil, fmt.Errorf("create or update key-value bucket %s: %w", schema.BucketAnswers, err)
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, schema.StreamRequests, cfg.ConsumerConfig())
	if err != nil {
		return nil, fmt.Errorf("create or update consumer %s: %w", schema.ConsumerWorkers, err)
	}
	return cons, nil
}
