package queue_test

import (
	"testing"
	"time"

	"github.com/laas-bridge/laas-bridge/queue"
	"github.com/laas-bridge/laas-bridge/schema"
)

// The answers outlive the longest batch: a bucket created with the
// defaults keeps them 48 h (the 24 h completion window and as long again
// for a late or retried finalization); one an older version created with
// 24 h is raised to 48 h at startup (Ensure with nothing set); a longer
// TTL is kept, and a TTL set explicitly applies as it is.
func TestEnsureRaisesAnswersTTL(t *testing.T) {
	if queue.DefaultAnswersTTL < 48*time.Hour {
		t.Fatalf("DefaultAnswersTTL %s; want at least the 24 h batch window and as long again", queue.DefaultAnswersTTL)
	}
	_, js := startServer(t)
	ctx := testContext(t)
	age := func() time.Duration { return streamConfig(t, ctx, js, "KV_"+schema.BucketAnswers).MaxAge }

	if _, err := queue.Ensure(ctx, js, queue.Config{}); err != nil {
		t.Fatal(err)
	}
	if got := age(); got != 48*time.Hour {
		t.Errorf("a new answers bucket keeps answers %s; want 48h", got)
	}
	// A bucket as the version before this one made it.
	if _, err := queue.Ensure(ctx, js, queue.Config{AnswersTTL: 24 * time.Hour}); err != nil {
		t.Fatal(err)
	}
	if got := age(); got != 24*time.Hour {
		t.Fatalf("an explicit 24h TTL gave %s; the test needs 24h", got)
	}
	logs, withLog := captureLog()
	if _, err := queue.Ensure(ctx, js, queue.Config{}, withLog); err != nil {
		t.Fatal(err)
	}
	if got := age(); got != 48*time.Hour {
		t.Errorf("startup left an answers bucket of %s; want it raised to 48h", got)
	}
	if l := logs.lines("updated key-value bucket", "name="+schema.BucketAnswers, "max_age_at_least 24h0m0s -> 48h0m0s"); len(l) != 1 {
		t.Errorf("the raise was not logged once: %q", logs.lines())
	}
	// Longer is kept.
	if _, err := queue.Ensure(ctx, js, queue.Config{AnswersTTL: 96 * time.Hour}); err != nil {
		t.Fatal(err)
	}
	if _, err := queue.Ensure(ctx, js, queue.Config{}); err != nil {
		t.Fatal(err)
	}
	if got := age(); got != 96*time.Hour {
		t.Errorf("startup changed a 96h answers TTL to %s; want it kept", got)
	}
}
