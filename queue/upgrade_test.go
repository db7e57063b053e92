package queue_test

import (
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/laas-bridge/laas-bridge/queue"
	"github.com/laas-bridge/laas-bridge/schema"
)

// TestEnsureMovesTheLanes: a queue made before the admission door (lanes on
// laas.requests.interactive and .batch, the workers' consumers filtering
// them) is moved in place: the stream takes the lane subjects too, the
// workers' consumers filter the lanes, and the admission door's consumer
// takes what was left on the old subjects, so nothing queued is lost.
func TestEnsureMovesTheLanes(t *testing.T) {
	_, js := startServer(t)
	ctx := testContext(t)
	old := jetstream.StreamConfig{Name: schema.StreamRequests, Subjects: []string{"laas.requests.interactive", "laas.requests.batch"},
		Retention: jetstream.WorkQueuePolicy, Discard: jetstream.DiscardNew}
	if _, err := js.CreateStream(ctx, old); err != nil {
		t.Fatal(err)
	}
	for name, subject := range map[string]string{schema.ConsumerWorkers: "laas.requests.interactive", schema.ConsumerBatch: "laas.requests.batch"} {
		if _, err := js.CreateConsumer(ctx, schema.StreamRequests, jetstream.ConsumerConfig{Durable: name, FilterSubject: subject, AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := js.Publish(ctx, "laas.requests.batch", []byte(`{"id":"left-over"}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := queue.Ensure(ctx, js, queue.Config{}); err != nil {
		t.Fatalf("Ensure over the old layout: %v", err)
	}
	for name, want := range map[string]string{
		schema.ConsumerWorkers:   schema.SubjectInteractive,
		schema.ConsumerBatch:     schema.SubjectBatch,
		schema.ConsumerAdmission: "laas.requests.*",
	} {
		c, err := js.Consumer(ctx, schema.StreamRequests, name)
		if err != nil {
			t.Fatalf("consumer %s: %v", name, err)
		}
		if got := c.CachedInfo().Config.FilterSubject; got != want {
			t.Errorf("consumer %s filters %q, want %q", name, got, want)
		}
	}
	adm, err := js.Consumer(ctx, schema.StreamRequests, schema.ConsumerAdmission)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := adm.Next()
	if err != nil || string(msg.Data()) != `{"id":"left-over"}` {
		t.Fatalf("the admission door's first message: %v; want the one left on laas.requests.batch", err)
	}
}
