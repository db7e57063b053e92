package queue_test

import (
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/laas-bridge/laas-bridge/queue"
	"github.com/laas-bridge/laas-bridge/schema"
)

// TestEnsureKeys: Ensure provisions the virtual keys' bucket with one
// history entry, no TTL (a key's expiry is in its value) and the queue's
// replicas and storage.
func TestEnsureKeys(t *testing.T) {
	_, js := startServer(t)
	ctx := testContext(t)
	if _, err := queue.Ensure(ctx, js, queue.Config{Memory: true}); err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	kv, err := js.KeyValue(ctx, schema.BucketKeys)
	if err != nil {
		t.Fatalf("keys bucket: %v", err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	info := st.(*jetstream.KeyValueBucketStatus).StreamInfo()
	if st.History() != 1 || st.TTL() != 0 || info.Config.Replicas != 1 || info.Config.Storage != jetstream.MemoryStorage {
		t.Errorf("keys bucket: history %d, TTL %s, replicas %d, storage %s; want 1, 0, 1, Memory",
			st.History(), st.TTL(), info.Config.Replicas, info.Config.Storage)
	}
}
