// Package queuetest starts a throwaway embedded NATS server with the
// bridge's stream and consumer, for tests of the gateway and the workers.
package queuetest

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/laas-bridge/laas-bridge/queue"
)

// Queue is a running test server with the request stream provisioned.
type Queue struct {
	Server   *server.Server
	Conn     *nats.Conn
	JS       jetstream.JetStream
	Consumer jetstream.Consumer
}

// Start runs an embedded NATS server with a file store in a temp dir,
// listening on a free loopback port, and provisions the stream with cfg.
// Everything is stopped by t.Cleanup.
func Start(t testing.TB, cfg queue.Config) *Queue {
	t.Helper()
	srv, err := queue.StartEmbedded(queue.EmbeddedConfig{StoreDir: t.TempDir(), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatalf("start embedded NATS: %v", err)
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	nc, err := queue.Connect(srv.ClientURL(), "test", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cons, err := queue.Ensure(ctx, js, cfg, queue.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatalf("provision stream: %v", err)
	}
	return &Queue{Server: srv, Conn: nc, JS: js, Consumer: cons}
}

// Connect opens another connection to q's server, closed by t.Cleanup.
func (q *Queue) Connect(t testing.TB) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(q.Server.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}
