package queue

import (
	"github.com/nats-io/nats.go/jetstream"

	"github.com/laas-bridge/laas-bridge/schema"
)

// --- virtual keys (package keys) ---

// KeysConfig returns the KV bucket of virtual keys. Keys never expire by
// age (a key's own expiry is in its value), and every write is a
// compare-and-set on the entry's revision, so one history entry is enough.
// A deleted key leaves a delete marker, which every gateway's watch reads
// as "gone".
func (c Config) KeysConfig() jetstream.KeyValueConfig {
	c.setDefaults()
	return jetstream.KeyValueConfig{
		Bucket:      schema.BucketKeys,
		Description: "laas-bridge virtual keys: settings by token (the secret's SHA-256)",
		History:     1,
		Storage:     c.storage(),
		Replicas:    c.Replicas,
	}
}

// --- end virtual keys ---
