package queue

import (
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// --- concurrency cap (worker.KVCap) ---

// BucketSlots is the KV bucket of the workers' shared concurrency cap
// (worker.KVCap): one key per call slot of the project's cap and of each
// model's, held by a lease with its own TTL, and a key per process whose
// interactive calls wait for a slot.
const BucketSlots = "LAAS_SLOTS"

// SlotsMarkerTTL is how long the bucket keeps the marker of a lease its TTL
// removed (a worker that died holding it). Setting it is what lets leases
// carry their own TTL (jetstream.KeyTTL), and what tells every worker's
// watch that the slot is free.
const SlotsMarkerTTL = time.Minute

// SlotsTTL removes a key nobody has written for this long: the marker a
// released lease leaves, a model's slots after it left the config. A
// lease is rewritten every second or so while it is held.
const SlotsTTL = time.Hour

// SlotsConfig returns the concurrency cap's KV bucket. It keeps only each
// key's latest value: the cap's writes are compare-and-set on it.
func (c Config) SlotsConfig() jetstream.KeyValueConfig {
	c.setDefaults()
	return jetstream.KeyValueConfig{
		Bucket:         BucketSlots,
		Description:    "laas-bridge concurrency cap: leases on LaaS call slots, shared by every worker",
		History:        1,
		TTL:            SlotsTTL,
		LimitMarkerTTL: SlotsMarkerTTL,
		Storage:        c.storage(),
		Replicas:       c.Replicas,
	}
}
