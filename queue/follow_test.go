package queue_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/laas-bridge/laas-bridge/queue"
)

// FollowBucket hands over the bucket's current values as initial before
// it returns, then every update as it comes, and nothing after stop.
// (Its restart after a NATS restart: TestStoreSurvivesNATSRestart in keys
// and the KVLimiter tests in worker.)
func TestFollowBucket(t *testing.T) {
	_, js := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "FOLLOW"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "a", []byte("1")); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var seen []string
	apply := func(e jetstream.KeyValueEntry, initial bool) {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, fmt.Sprintf("%s=%s/%v", e.Key(), e.Value(), initial))
	}
	got := func() string { mu.Lock(); defer mu.Unlock(); return fmt.Sprint(seen) }
	nc := js.Conn()
	stop, err := queue.FollowBucket(ctx, kv, nc, apply, func(err error) { t.Log(err) })
	if err != nil {
		t.Fatal(err)
	}
	if g := got(); g != "[a=1/true]" {
		t.Fatalf("after FollowBucket returned: %s, want the current value, initial", g)
	}
	if _, err := kv.Put(ctx, "b", []byte("2")); err != nil {
		t.Fatal(err)
	}
	for begin := time.Now(); got() != "[a=1/true b=2/false]"; time.Sleep(5 * time.Millisecond) {
		if time.Since(begin) > 10*time.Second {
			t.Fatalf("the update did not arrive within 10 s: %s", got())
		}
	}
	stop()
	if _, err := kv.Put(ctx, "c", []byte("3")); err != nil {
		t.Fatal(err)
	}
	_ = nc.Flush()
	// stop waited for the watch's goroutine: nothing can apply "c" now.
	if g := got(); g != "[a=1/true b=2/false]" {
		t.Errorf("after stop: %s", g)
	}
}
