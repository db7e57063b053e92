package queue

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/laas-bridge/laas-bridge/schema"
)

// --- response cache (bridge's exact response cache) ---

// CacheMaxBytes bounds the response cache bucket; when full, the oldest
// entries go first (DiscardOld), as a cache should.
const CacheMaxBytes = 256 << 20

// CacheMarkerTTL is how long the bucket keeps the marker of an entry its
// TTL removed. Setting it is what lets entries carry their own TTL
// (jetstream.KeyTTL): the bucket allows per-message TTLs.
const CacheMarkerTTL = time.Minute

// CacheConfig returns the response cache's KV bucket: one value per key
// (history 1), each entry with its own TTL, none kept longer than
// schema.MaxCacheTTL, at most CacheMaxBytes.
func (c Config) CacheConfig() jetstream.KeyValueConfig {
	c.setDefaults()
	return jetstream.KeyValueConfig{
		Bucket:         schema.BucketCache,
		Description:    "laas-bridge exact response cache: completions of models with a cache TTL",
		History:        1,
		TTL:            schema.MaxCacheTTL,
		MaxBytes:       CacheMaxBytes,
		LimitMarkerTTL: CacheMarkerTTL,
		Storage:        c.storage(),
		Replicas:       c.Replicas,
	}
}

// cacheSpec is the response cache's part of Ensure. The bucket is created
// through the KV API (which turns on per-message TTLs), and then its
// discard policy is set to DiscardOld: the KV API creates every bucket with
// DiscardNew, which for a cache would refuse new answers once full rather
// than drop the oldest. On an existing bucket the policy is kept at that.
func (c Config) cacheSpec(js jetstream.JetStream, with func(...string) []string) streamSpec {
	cfg := c.CacheConfig()
	want := kvStream(cfg)
	want.Discard = jetstream.DiscardOld
	return streamSpec{
		kind: "key-value bucket", name: cfg.Bucket, want: want,
		set: with(setDescription, setDiscard, setMaxAge, setMaxBytes, setMaxMsgsPerSubject),
		create: func(ctx context.Context) error {
			if _, err := js.CreateKeyValue(ctx, cfg); err != nil {
				return err
			}
			s, err := js.Stream(ctx, want.Name)
			if err != nil {
				return err
			}
			sc := s.CachedInfo().Config
			sc.Discard = jetstream.DiscardOld
			if _, err := js.UpdateStream(ctx, sc); err != nil {
				return fmt.Errorf("set the discard policy to old: %w", err)
			}
			return nil
		},
	}
}

// --- end response cache ---
