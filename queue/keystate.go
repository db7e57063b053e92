package queue

import (
	"github.com/nats-io/nats.go/jetstream"

	"github.com/laas-bridge/laas-bridge/schema"
)

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
