package queue_test

import (
	"testing"
	"time"

	"github.com/laas-bridge/laas-bridge/queue"
	"github.com/laas-bridge/laas-bridge/schema"
)

// TestEnsureJobs: Ensure provisions the results stream (laas.results.>,
// limits retention, one result per subject, ResultsTTL, default 24 h) and
// the jobs bucket with the same TTL; a changed TTL updates both.
func TestEnsureJobs(t *testing.T) {
	_, js := startServer(t)
	ctx := testContext(t)
	for _, tc := range []struct {
		ttl, want time.Duration
	}{{0, 24 * time.Hour}, {2 * time.Hour, 2 * time.Hour}} {
		if _, err := queue.Ensure(ctx, js, queue.Config{ResultsTTL: tc.ttl}); err != nil {
			t.Fatalf("Ensure: %v", err)
		}
		s, err := js.Stream(ctx, schema.StreamResults)
		if err != nil {
			t.Fatal(err)
		}
		c := s.CachedInfo().Config
		if c.MaxAge != tc.want || len(c.Subjects) != 1 || c.Subjects[0] != "laas.results.>" || c.MaxMsgsPerSubject != 1 ||
			c.Retention.String() != "Limits" || c.MaxBytes != queue.DefaultResultsMaxBytes {
			t.Errorf("results stream with ResultsTTL %s: %+v", tc.ttl, c)
		}
		kv, err := js.KeyValue(ctx, schema.BucketJobs)
		if err != nil {
			t.Fatal(err)
		}
		st, err := kv.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.TTL() != tc.want || st.History() != 1 {
			t.Errorf("jobs bucket TTL %s history %d, want %s 1", st.TTL(), st.History(), tc.want)
		}
	}
}

func TestJobsConfigValidate(t *testing.T) {
	c := validConfig()
	c.ResultsTTL, c.ResultsMaxBytes = 59*time.Second, 1
	want := "job results TTL must be at least 1m, got 59s\njob results max bytes must be at least 1 MiB, got 1"
	if err := c.Validate(); err == nil || err.Error() != want {
		t.Errorf("Validate() = %v, want %q", err, want)
	}
}

// TestResponsesOutliveTheirJobs: a stored response is kept as long as a
// job may wait plus as long as its result is kept, so a background
// response's record (written when it is queued) is there when its answer
// is.
func TestResponsesOutliveTheirJobs(t *testing.T) {
	for _, results := range []time.Duration{0, time.Minute, 72 * time.Hour} {
		c := queue.Config{ResultsTTL: results}
		want := c.ResultsConfig().MaxAge + schema.MaxRequestTimeout
		if got := c.ResponsesConfig().TTL; got != want {
			t.Errorf("results TTL %s: responses kept %s, want %s", results, got, want)
		}
	}
}
