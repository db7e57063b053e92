package failover_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/laas-bridge/laas-bridge/queue"
	"github.com/laas-bridge/laas-bridge/queue/failover"
)

func start(t *testing.T) jetstream.JetStream {
	t.Helper()
	srv, err := queue.StartEmbedded(queue.EmbeddedConfig{StoreDir: t.TempDir(), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// A publish while no stream answers (as between two leaders) is retried
// until the stream is back, and stored once.
func TestPublishRetriesUntilTheStreamAnswers(t *testing.T) {
	js := start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	go func() {
		time.Sleep(time.Second)
		_, _ = js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s"}})
	}()
	msg := &nats.Msg{Subject: "s", Data: []byte("x"), Header: nats.Header{"Nats-Msg-Id": []string{"one"}}}
	ack, _, err := failover.Publish(ctx, js, msg)
	if err != nil {
		t.Fatalf("Publish: %v", err)
	}
	if ack.Stream != "S" || ack.Sequence != 1 || ack.Duplicate {
		t.Errorf("ack = %+v, want the first message of S", ack)
	}
}

// A refusal that is no failover (a full stream) returns at once.
func TestPublishDoesNotRetryARefusal(t *testing.T) {
	js := start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s"}, MaxMsgs: 1, Discard: jetstream.DiscardNew}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := failover.Publish(ctx, js, &nats.Msg{Subject: "s", Data: []byte("1")}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, maybeStored, err := failover.Publish(ctx, js, &nats.Msg{Subject: "s", Data: []byte("2")})
	var api *jetstream.APIError
	if !errors.As(err, &api) || maybeStored {
		t.Errorf("Publish to a full stream: err %v, maybeStored %v; want the server's refusal, false", err, maybeStored)
	}
	if took := time.Since(start); took > failover.Attempt {
		t.Errorf("the refusal took %s: it was retried", took)
	}
}

// Without any stream, Publish gives up when its context ends.
func TestPublishGivesUpWithTheContext(t *testing.T) {
	js := start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, _, err := failover.Publish(ctx, js, &nats.Msg{Subject: "nowhere", Data: []byte("x")})
	if err == nil {
		t.Fatal("Publish to no stream succeeded")
	}
	if ctx.Err() == nil {
		t.Errorf("Publish returned %v before its context ended", err)
	}
}
