package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
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
	// in-progress signal before it is redelivered: how long the jobs of a
	// worker that died wait before another worker runs them. Workers send
	// in-progress signals while they hold a job (worker.Pool), so a long
	// LaaS call is not redelivered however long it takes. The default is
	// short (seconds) for a quick recovery; the cost is a signal per job
	// held about every second, and a second LaaS call for a job whose worker
	// stalls (no CPU, no connection to NATS) for most of AckWait.
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
	// Idempotency-Key, or to a Batch API line, is kept (and replayed).
	// Default DefaultAnswersTTL, 48 h: a batch runs up to its 24 h
	// completion window and is finalized from these answers after, so
	// they outlive it by as long again (a late or retried finalization).
	// Unset, Ensure raises an existing bucket's shorter TTL to the default
	// and keeps a longer one; set, it applies it as it is.
	AnswersTTL time.Duration
	// --- dead letters ---
	// DeadMaxAge is how long a dead letter is kept in StreamDead; zero
	// means 7 days.
	DeadMaxAge time.Duration
	// DeadMaxBytes bounds StreamDead; when full the oldest dead letters go
	// first. Zero means 1 GiB (64 MiB with Memory set).
	DeadMaxBytes int64
	// --- end dead letters ---
	// --- jobs (see jobs.go) ---
	// ResultsTTL is how long a job's result (StreamResults) and state
	// (BucketJobs) are kept; zero means 24 h.
	ResultsTTL time.Duration
	// ResultsMaxBytes bounds StreamResults; when full the oldest results go
	// first. Zero means 1 GiB (64 MiB with Memory set).
	ResultsMaxBytes int64
	// --- end jobs ---
	// Memory keeps the stream in memory instead of on disk (tests only).
	Memory bool
}

// Defaults for Config's zero fields.
const (
	DefaultMaxMsgs         = 100_000
	DefaultMaxBytes        = 1 << 30
	DefaultAckWait         = 5 * time.Second  // short: see Config.AckWait
	oldDefaultAckWait      = 30 * time.Second // the default before issue 13; Ensure warns of a lane consumer still on it
	DefaultMaxDeliver      = 5
	DefaultMaxAckPending   = 1_000
	DefaultDuplicateWindow = 10 * time.Minute // as long as a default request may take
	DefaultAnswersTTL      = 48 * time.Hour   // see AnswersTTL
	DefaultBodiesMaxBytes  = 4 << 30
	MemoryBodiesMaxBytes   = 256 << 20 // the default with Memory set
	DefaultBodiesTTL       = 24 * time.Hour
	DefaultDeadMaxAge      = 7 * 24 * time.Hour
	DefaultDeadMaxBytes    = 1 << 30
	MemoryDeadMaxBytes     = 64 << 20 // the default with Memory set
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
	if c.DeadMaxAge == 0 {
		c.DeadMaxAge = DefaultDeadMaxAge
	}
	if c.DeadMaxBytes == 0 {
		c.DeadMaxBytes = DefaultDeadMaxBytes
		if c.Memory {
			c.DeadMaxBytes = MemoryDeadMaxBytes
		}
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
	// Zero dead-letter limits mean the defaults (fields added later than
	// the others, so a Config written before them stays valid).
	if c.DeadMaxAge != 0 && c.DeadMaxAge < time.Hour {
		errs = append(errs, fmt.Errorf("dead-letter max age must be at least 1h, got %s", c.DeadMaxAge))
	}
	if c.DeadMaxBytes != 0 && c.DeadMaxBytes < 1<<20 {
		errs = append(errs, fmt.Errorf("dead-letter max bytes must be at least 1 MiB, got %d", c.DeadMaxBytes))
	}
	errs = append(errs, c.validateJobs()...)
	return errors.Join(errs...)
}

// StreamConfig returns the request stream's configuration.
func (c Config) StreamConfig() jetstream.StreamConfig {
	c.setDefaults()
	return jetstream.StreamConfig{
		Name:        schema.StreamRequests,
		Description: "laas-bridge pending chat requests (work queue)",
		// The submit subjects of direct producers and the two lanes; a
		// publish to any other subject fails at once instead of waiting
		// for a consumer that does not exist.
		Subjects:   []string{schema.SubjectSubmit, schema.SubjectSubmitInteractive, schema.SubjectInteractive, schema.SubjectBatch},
		Retention:  jetstream.WorkQueuePolicy,
		Discard:    jetstream.DiscardNew,
		MaxMsgs:    c.MaxMsgs,
		MaxBytes:   c.MaxBytes,
		Storage:    c.storage(),
		Replicas:   c.Replicas,
		Duplicates: c.DuplicateWindow,
		// No job may wait longer than its deadline; this only removes a
		// job that no worker could ever finish, after it expired anyway.
		MaxAge: schema.MaxRequestTimeout + time.Hour,
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

// DeadConfig returns the dead-letter stream's configuration: a limits
// stream (reading does not consume), oldest dropped first when full, the
// same duplicate window as the request stream so a job dead-lettered twice
// is kept once.
func (c Config) DeadConfig() jetstream.StreamConfig {
	c.setDefaults()
	return jetstream.StreamConfig{
		Name:        schema.StreamDead,
		Description: "laas-bridge dead letters: jobs that ran out of attempts",
		Subjects:    []string{schema.SubjectDead + ".>"},
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      c.DeadMaxAge,
		MaxBytes:    c.DeadMaxBytes,
		Storage:     c.storage(),
		Replicas:    c.Replicas,
		Duplicates:  c.DuplicateWindow,
	}
}

// ConsumerConfig returns the workers' shared durable pull consumer of the
// interactive lane.
func (c Config) ConsumerConfig() jetstream.ConsumerConfig {
	return c.laneConsumer(schema.ConsumerWorkers, schema.SubjectInteractive, "laas-bridge workers, interactive lane")
}

// BatchConsumerConfig returns the workers' shared consumer of the batch lane.
func (c Config) BatchConsumerConfig() jetstream.ConsumerConfig {
	return c.laneConsumer(schema.ConsumerBatch, schema.SubjectBatch, "laas-bridge workers, batch lane")
}

// AdmissionAckWait is the admission door's AckWait at least (see
// AdmissionConsumerConfig).
const AdmissionAckWait = 30 * time.Second

// AdmissionConsumerConfig returns the admission door's consumer of the
// submit subjects (laas.requests.*, one token: no lane matches it). A
// message stays until it is queued on a lane or answered with a refusal,
// however many deliveries that takes (a full queue hands it back).
func (c Config) AdmissionConsumerConfig() jetstream.ConsumerConfig {
	c.setDefaults()
	return jetstream.ConsumerConfig{
		Durable:       schema.ConsumerAdmission,
		Description:   "laas-bridge admission door: jobs published by programs",
		FilterSubject: schema.SubjectRequests + ".*",
		AckPolicy:     jetstream.AckExplicitPolicy,
		// Longer than the lanes': the door sends no in-progress signals,
		// and a message admitted twice is queued once (Nats-Msg-Id).
		AckWait:       max(c.AckWait, AdmissionAckWait),
		MaxDeliver:    -1,
		MaxAckPending: c.MaxAckPending,
		Replicas:      c.Replicas,
	}
}

func (c Config) laneConsumer(name, subject, description string) jetstream.ConsumerConfig {
	c.setDefaults()
	return jetstream.ConsumerConfig{
		Durable:       name,
		Description:   description,
		FilterSubject: subject,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       c.AckWait,
		MaxDeliver:    c.MaxDeliver,
		MaxAckPending: c.MaxAckPending,
		Replicas:      c.Replicas,
	}
}

// RepliesMaxAge is how long a reply stays in StreamReplies for a gateway
// that reconnects; the gateway waits on the caller's deadline, but a reply
// is read back only after a reconnect, which takes seconds.
const RepliesMaxAge = 15 * time.Minute

// RepliesMaxBytes bounds StreamReplies; the oldest replies go first. Large
// answers travel through the object store, so replies are small.
const RepliesMaxBytes = 256 << 20

// RepliesConfig returns the stream that keeps recent replies.
func (c Config) RepliesConfig() jetstream.StreamConfig {
	c.setDefaults()
	return jetstream.StreamConfig{
		Name:        schema.StreamReplies,
		Description: "laas-bridge recent replies, read back by gateways after a reconnect",
		Subjects:    []string{schema.SubjectReplies + ".>"},
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      RepliesMaxAge,
		MaxBytes:    RepliesMaxBytes,
		Storage:     c.storage(),
		Replicas:    c.Replicas,
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

// --- rate limiter (worker.KVLimiter) ---

// BucketLimits is the KV bucket of the workers' shared rate limiter
// (worker.KVLimiter): the project's and each model's call schedule and the
// cooldown after a 429.
const BucketLimits = "LAAS_LIMITS"

// LimitsTTL removes a limiter key nobody has updated for this long (a model
// that left the config); an absent key means no call is scheduled.
const LimitsTTL = 24 * time.Hour

// LimitsConfig returns the rate limiter's KV bucket. It keeps only each
// key's latest value: the limiter's writes are compare-and-set on it.
func (c Config) LimitsConfig() jetstream.KeyValueConfig {
	c.setDefaults()
	return jetstream.KeyValueConfig{
		Bucket:      BucketLimits,
		Description: "laas-bridge shared rate limits: call schedules and 429 cooldown",
		History:     1,
		TTL:         LimitsTTL,
		Storage:     c.storage(),
		Replicas:    c.Replicas,
	}
}

// --- end rate limiter ---

// Ensure creates the request, reply and dead-letter streams, the
// large-body object store, the answers, rate-limit, concurrency-cap, virtual-key and
// response cache buckets and the two lane consumers when they are missing,
// and returns the interactive lane's consumer. On what exists it changes only the settings the bridge owns
// (subjects, retention, filters, ...) and those set in cfg: a zero field
// keeps the server's value (the default applies only to what Ensure
// creates). It is safe to call from every process at once, and it never
// deletes data: a change JetStream cannot make in place, or one that would
// drop stored messages, is logged as a warning naming the setting and
// skipped (an error when the bridge cannot work without it).
func Ensure(ctx context.Context, js jetstream.JetStream, cfg Config, opts ...EnsureOption) (jetstream.Consumer, error) {
	o := ensureOptions{log: slog.Default()}
	for _, opt := range opts {
		opt(&o)
	}
	explicit := cfg
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	// Settings of every stream and bucket this process set explicitly.
	common := setIf(setIf(nil, explicit.Replicas != 0, setReplicas), explicit.Memory, setStorage)
	owned := []string{setDescription, setSubjects, setRetention, setDiscard}
	with := func(names ...string) []string { return append(slices.Clone(common), names...) }

	requests := append(with(owned...), setMaxAge)
	requests = setIf(requests, explicit.MaxMsgs != 0, setMaxMsgs)
	requests = setIf(requests, explicit.MaxBytes != 0, setMaxBytes)
	requests = setIf(requests, explicit.DuplicateWindow != 0, setDuplicates)
	dead := with(owned...)
	dead = setIf(dead, explicit.DeadMaxAge != 0, setMaxAge)
	dead = setIf(dead, explicit.DeadMaxBytes != 0, setMaxBytes)
	dead = setIf(dead, explicit.DuplicateWindow != 0, setDuplicates)
	bodies := with(setDescription)
	bodies = setIf(bodies, explicit.BodiesTTL != 0, setMaxAge)
	bodies = setIf(bodies, explicit.BodiesMaxBytes != 0, setMaxBytes)
	// The answers must outlive the longest batch (DefaultAnswersTTL): a
	// process that sets no TTL raises a shorter one (a bucket made by an
	// older version) and keeps a longer one.
	answers := with(setDescription, setMinMaxAge)
	if explicit.AnswersTTL != 0 {
		answers = with(setDescription, setMaxAge)
	}

	results := with(append(owned, setMaxMsgsPerSubject)...)
	results = setIf(results, explicit.ResultsTTL != 0, setMaxAge)
	results = setIf(results, explicit.ResultsMaxBytes != 0, setMaxBytes)
	jobs := setIf(with(setDescription), explicit.ResultsTTL != 0, setMaxAge)

	bodiesCfg, answersCfg, limitsCfg := cfg.BodiesConfig(), cfg.AnswersConfig(), cfg.LimitsConfig()
	jobsCfg, filesCfg, batchesCfg, responsesCfg := cfg.JobsConfig(), cfg.FilesConfig(), cfg.BatchesConfig(), cfg.ResponsesConfig()
	keyStateCfg, keysCfg, slotsCfg := cfg.KeyStateConfig(), cfg.KeysConfig(), cfg.SlotsConfig()
	for _, spec := range []streamSpec{
		{want: cfg.StreamConfig(), set: requests},
		{want: cfg.RepliesConfig(), set: with(append(owned, setMaxAge, setMaxBytes)...)},
		{want: cfg.DeadConfig(), set: dead},
		{
			kind: "object store", name: bodiesCfg.Bucket, want: objectStream(bodiesCfg), set: bodies,
			create: func(ctx context.Context) error { _, err := js.CreateObjectStore(ctx, bodiesCfg); return err },
		},
		{
			kind: "key-value bucket", name: answersCfg.Bucket, want: kvStream(answersCfg), set: answers,
			create: func(ctx context.Context) error { _, err := js.CreateKeyValue(ctx, answersCfg); return err },
		},
		{ // rate limiter
			kind: "key-value bucket", name: limitsCfg.Bucket, want: kvStream(limitsCfg), set: with(setDescription, setMaxAge, setMaxMsgsPerSubject),
			create: func(ctx context.Context) error { _, err := js.CreateKeyValue(ctx, limitsCfg); return err },
		},
		{ // concurrency cap (worker.KVCap): leases with their own TTL
			kind: "key-value bucket", name: slotsCfg.Bucket, want: kvStream(slotsCfg), set: with(setDescription, setMaxAge, setMaxMsgsPerSubject),
			create: func(ctx context.Context) error { _, err := js.CreateKeyValue(ctx, slotsCfg); return err },
		},
		{ // virtual keys' limits (package keys)
			kind: "key-value bucket", name: keyStateCfg.Bucket, want: kvStream(keyStateCfg), set: with(setDescription),
			create: func(ctx context.Context) error { _, err := js.CreateKeyValue(ctx, keyStateCfg); return err },
		},
		// Direct jobs (jobs.go): results kept for producers, job states.
		{want: cfg.ResultsConfig(), set: results},
		{
			kind: "key-value bucket", name: jobsCfg.Bucket, want: kvStream(jobsCfg), set: jobs,
			create: func(ctx context.Context) error { _, err := js.CreateKeyValue(ctx, jobsCfg); return err },
		},
		{ // the Responses API's stored responses (bridge/responses.go), as long as job results
			kind: "key-value bucket", name: responsesCfg.Bucket, want: kvStream(responsesCfg), set: jobs,
			create: func(ctx context.Context) error { _, err := js.CreateKeyValue(ctx, responsesCfg); return err },
		},
		// Batch API (batch.go): files and batch records.
		{
			kind: "object store", name: filesCfg.Bucket, want: objectStream(filesCfg), set: with(setDescription, setMaxAge),
			create: func(ctx context.Context) error { _, err := js.CreateObjectStore(ctx, filesCfg); return err },
		},
		{
			kind: "key-value bucket", name: batchesCfg.Bucket, want: kvStream(batchesCfg), set: with(setDescription, setMaxAge),
			create: func(ctx context.Context) error { _, err := js.CreateKeyValue(ctx, batchesCfg); return err },
		},
		{ // virtual keys (keys.go)
			kind: "key-value bucket", name: keysCfg.Bucket, want: kvStream(keysCfg), set: with(setDescription),
			create: func(ctx context.Context) error { _, err := js.CreateKeyValue(ctx, keysCfg); return err },
		},
		cfg.cacheSpec(js, with), // the gateways' response cache (cache.go)
	} {
		if err := ensureStream(ctx, js, o.log, spec); err != nil {
			return nil, err
		}
	}
	consumer := []string{setDescription, setFilterSubject, setAckPolicy}
	consumer = setIf(consumer, explicit.Replicas != 0, setReplicas)
	consumer = setIf(consumer, explicit.AckWait != 0, setAckWait)
	consumer = setIf(consumer, explicit.MaxDeliver != 0, setMaxDeliver)
	// MaxAckPending (the global cap on jobs in flight) set by one process
	// is kept by the next one started without it.
	consumer = setIf(consumer, explicit.MaxAckPending != 0, setMaxAckPending)
	// The interactive consumer first: an older one without a filter would
	// overlap the batch lane's, which a work queue refuses.
	cons, err := ensureConsumer(ctx, js, o.log, schema.StreamRequests, cfg.ConsumerConfig(), consumer)
	if err != nil {
		return nil, err
	}
	batchCons, err := ensureConsumer(ctx, js, o.log, schema.StreamRequests, cfg.BatchConsumerConfig(), consumer)
	if err != nil {
		return nil, err
	}
	// A lane consumer still on the old default AckWait (30s) is not moved
	// by itself: workers of that release signal in-progress only every
	// 10 s, and would have every call longer than 5 s run again (and a
	// long one dead-lettered) while a rolling upgrade mixes them with new
	// processes. The operator moves it once every worker is new.
	if explicit.AckWait == 0 {
		for _, c := range []jetstream.Consumer{cons, batchCons} {
			if cc := c.CachedInfo().Config; cc.AckWait == oldDefaultAckWait {
				o.log.Warn("lane consumer keeps the AckWait of an older release; once every worker runs this one, set BRIDGE_ACK_WAIT=5s on one process so a dead worker's jobs run again within seconds",
					"name", cc.Durable, "ack_wait", cc.AckWait.String())
			}
		}
	}
	// After the lanes: a lane consumer from before the admission door
	// filtered on a submit subject, which this one now takes.
	if _, err := ensureConsumer(ctx, js, o.log, schema.StreamRequests, cfg.AdmissionConsumerConfig(), []string{setDescription, setFilterSubject, setAckPolicy}); err != nil {
		return nil, err
	}
	return cons, nil
}

// kvStream is the part of a key-value bucket's stream that Ensure compares
// with an existing bucket (jetstream.CreateKeyValue makes the rest).
func kvStream(c jetstream.KeyValueConfig) jetstream.StreamConfig {
	history := int64(max(c.History, 1))
	return jetstream.StreamConfig{Name: "KV_" + c.Bucket, Description: c.Description, MaxAge: c.TTL, MaxMsgsPerSubject: history,
		MaxBytes: c.MaxBytes, Storage: c.Storage, Replicas: max(c.Replicas, 1)}
}

// objectStream is kvStream for an object store.
func objectStream(c jetstream.ObjectStoreConfig) jetstream.StreamConfig {
	return jetstream.StreamConfig{Name: "OBJ_" + c.Bucket, Description: c.Description, MaxAge: c.TTL, MaxBytes: c.MaxBytes,
		Storage: c.Storage, Replicas: max(c.Replicas, 1)}
}
