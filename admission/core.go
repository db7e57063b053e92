package admission

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/laas-bridge/laas-bridge/admission/multimodal"
	"github.com/laas-bridge/laas-bridge/internal/tracing"
	"github.com/laas-bridge/laas-bridge/queue/jobstore"
	"github.com/laas-bridge/laas-bridge/schema"
)

// Config configures the admission core.
type Config struct {
	// AllowPresetOverride lets a request name its own preset_hash.
	AllowPresetOverride bool
	// MaxBodyBytes bounds a request body; default DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// PublishTimeout bounds a publish, retried across a stream leader
	// election until then; default 10s.
	PublishTimeout time.Duration
	// InlineMax is the largest body sent inside a queue message; larger
	// ones go through the object store. Default: half the connection's max
	// payload, since JSON-escaping can grow a body inside the envelope.
	InlineMax int
	// Limits enforces virtual keys' rpm, tpm, parallel and budget limits;
	// nil enforces none.
	Limits KeyLimits
	// Keys finds a caller's key as it is now (the keys store); nil takes
	// the key the door gave.
	Keys KeyResolver
	// Tracer, when not nil, traces each Admit in an admission span and
	// puts its context on the lane message (traceparent, tracestate);
	// nil is tracing off.
	Tracer *tracing.Tracer
}

// DefaultMaxBodyBytes is Config.MaxBodyBytes's default: LaaS's 32 MB PDF
// as base64, with room for the rest of the request.
const DefaultMaxBodyBytes = 64 << 20

func (c *Config) setDefaults(js jetstream.JetStream) {
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if c.PublishTimeout == 0 {
		c.PublishTimeout = 10 * time.Second
	}
	if c.InlineMax == 0 {
		c.InlineMax = int(js.Conn().MaxPayload() / 2)
	}
}

// Validate reports every invalid field at once.
func (c Config) Validate() error {
	var errs []error
	if c.MaxBodyBytes < 0 {
		errs = append(errs, fmt.Errorf("max body bytes must not be negative, got %d", c.MaxBodyBytes))
	}
	if c.PublishTimeout < 0 {
		errs = append(errs, fmt.Errorf("publish timeout must not be negative, got %s", c.PublishTimeout))
	}
	if c.InlineMax < 0 {
		errs = append(errs, fmt.Errorf("inline max must not be negative, got %d", c.InlineMax))
	}
	return errors.Join(errs...)
}

// Core admits requests into the queue. Create it with Open; safe for
// concurrent use by every door.
type Core struct {
	cfg     Config
	js      jetstream.JetStream
	bodies  jetstream.ObjectStore
	answers jetstream.KeyValue
	jobs    *jobstore.Store
	catalog atomic.Pointer[schema.Catalog] // SetCatalog swaps it
	log     *slog.Logger
	// media checks images and PDFs, reading at most GOMAXPROCS PDFs at
	// once across every door of the process.
	media *multimodal.Checker
}

// Open opens the buckets the core writes to (queue.Ensure must have made
// them); ctx bounds that I/O.
func Open(ctx context.Context, cfg Config, js jetstream.JetStream, catalog *schema.Catalog, log *slog.Logger) (*Core, error) {
	cfg.setDefaults(js)
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if catalog == nil {
		return nil, errors.New("admission: no model catalogue")
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
	c := &Core{cfg: cfg, js: js, bodies: bodies, answers: answers, jobs: jobs, log: log,
		media: multimodal.NewChecker(0)}
	c.catalog.Store(catalog)
	return c, nil
}

// Catalog is the model catalogue in force.
func (c *Core) Catalog() *schema.Catalog { return c.catalog.Load() }

// SetCatalog puts catalog in force (a config reload): a request checked
// before keeps the model it was checked against (its deadline, the alias
// it was queued under); the next one is checked against catalog.
func (c *Core) SetCatalog(catalog *schema.Catalog) { c.catalog.Store(catalog) }
