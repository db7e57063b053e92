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

// KeyStateConfig returns the KV bucket of virtual keys' shared limit
// state (package keys): one value per key, the latest only, changed by
// compare-and-set. A key's state lives on while the key is used: its
// budget period's spend must not expire before the period does.
func (c Config) KeyStateConfig() jetstream.KeyValueConfig {
	c.setDefaults()
	return jetstream.KeyValueConfig{
		Bucket:      schema.BucketKeyState,
		Description: "laas-bridge virtual keys' limit state: rpm slots, parallel leases, tokens and spend",
		History:     1,
		Storage:     c.storage(),
		Replicas:    c.Replicas,
	}
}

// --- end virtual keys ---
