package queue_test

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/laas-bridge/laas-bridge/queue"
	"github.com/laas-bridge/laas-bridge/schema"
)

func TestDeadConfig(t *testing.T) {
	for _, tc := range []struct {
		name     string
		cfg      queue.Config
		storage  jetstream.StorageType
		maxAge   time.Duration
		maxBytes int64
	}{
		{"defaults", queue.Config{}, jetstream.FileStorage, 7 * 24 * time.Hour, 1 << 30},
		{"memory (tests)", queue.Config{Memory: true}, jetstream.MemoryStorage, 7 * 24 * time.Hour, 64 << 20},
		{"set", queue.Config{Replicas: 3, DeadMaxAge: 48 * time.Hour, DeadMaxBytes: 5 << 20}, jetstream.FileStorage, 48 * time.Hour, 5 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.cfg.DeadConfig()
			replicas := max(tc.cfg.Replicas, 1)
			if got.Name != schema.StreamDead || len(got.Subjects) != 1 || got.Subjects[0] != "laas.dead.>" ||
				got.Retention != jetstream.LimitsPolicy || got.Discard != jetstream.DiscardOld ||
				got.Storage != tc.storage || got.MaxAge != tc.maxAge || got.MaxBytes != tc.maxBytes ||
				got.Replicas != replicas || got.Duplicates != queue.DefaultDuplicateWindow {
				t.Errorf("DeadConfig() = %+v", got)
			}
		})
	}
}

func TestDeadConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		modify func(*queue.Config)
		want   string
	}{
		{"zero means the defaults", func(*queue.Config) {}, ""},
		{"max age under 1h", func(c *queue.Config) { c.DeadMaxAge = 59 * time.Minute }, "dead-letter max age must be at least 1h, got 59m0s"},
		{"negative max age", func(c *queue.Config) { c.DeadMaxAge = -time.Hour }, "dead-letter max age must be at least 1h, got -1h0m0s"},
		{"max bytes under 1 MiB", func(c *queue.Config) { c.DeadMaxBytes = 1<<20 - 1 }, "dead-letter max bytes must be at least 1 MiB, got 1048575"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := queue.Config{Replicas: 1, MaxMsgs: 1, MaxBytes: 1 << 20, AckWait: time.Second, MaxDeliver: 1, MaxAckPending: 1,
				BodiesMaxBytes: 64 << 20, BodiesTTL: time.Hour, AnswersTTL: time.Minute}
			tc.modify(&c)
			got := ""
			if err := c.Validate(); err != nil {
				got = err.Error()
			}
			if got != tc.want {
				t.Errorf("Validate() = %q, want %q", got, tc.want)
			}
		})
	}
}
