package queue_test

import (
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/laas-bridge/laas-bridge/queue"
	"github.com/laas-bridge/laas-bridge/schema"
)

// TestEnsureCacheBucket: Ensure makes the response cache bucket with
// per-key TTLs allowed, one value per key, a 24 h cap, a size bound that
// drops the oldest entries (not the new ones) when full; an entry created
// with a 1 s TTL is gone within seconds while the bucket stays; a second
// Ensure changes nothing.
func TestEnsureCacheBucket(t *testing.T) {
	_, js := startServer(t)
	ctx := testContext(t)
	for range 2 {
		if _, err := queue.Ensure(ctx, js, queue.Config{Memory: true}); err != nil {
			t.Fatal(err)
		}
		sc := streamConfig(t, ctx, js, "KV_"+schema.BucketCache)
		if !sc.AllowMsgTTL || sc.SubjectDeleteMarkerTTL != queue.CacheMarkerTTL || sc.Discard != jetstream.DiscardOld ||
			sc.MaxBytes != queue.CacheMaxBytes || sc.MaxAge != schema.MaxCacheTTL || sc.MaxMsgsPerSubject != 1 || sc.Storage != jetstream.MemoryStorage {
			t.Errorf("cache bucket: allow_msg_ttl %v marker %s discard %v max_bytes %d max_age %s history %d storage %v",
				sc.AllowMsgTTL, sc.SubjectDeleteMarkerTTL, sc.Discard, sc.MaxBytes, sc.MaxAge, sc.MaxMsgsPerSubject, sc.Storage)
		}
	}
	kv, err := js.KeyValue(ctx, schema.BucketCache)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Create(ctx, "k", []byte("v"), jetstream.KeyTTL(time.Second)); err != nil {
		t.Fatalf("create with a TTL: %v", err)
	}
	if _, err := kv.Create(ctx, "k", []byte("w"), jetstream.KeyTTL(time.Second)); !errors.Is(err, jetstream.ErrKeyExists) {
		t.Errorf("second create: %v, want ErrKeyExists", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := kv.Get(ctx, "k")
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			break
		}
		if err != nil {
			t.Fatalf("get: %v", err)
		}
		if time.Now().After(deadline) {
			t.Fatal("an entry with a 1 s TTL is still there after 10 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := kv.Create(ctx, "k", []byte("again"), jetstream.KeyTTL(time.Minute)); err != nil {
		t.Errorf("create after expiry: %v", err)
	}
}
