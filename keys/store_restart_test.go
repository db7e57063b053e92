package keys_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/laas-bridge/laas-bridge/keys"
	"github.com/laas-bridge/laas-bridge/queue"
)

// TestStoreSurvivesNATSRestart: after the NATS server restarts (file
// store), a key generated through one store reaches the other promptly:
// the watch is started again on reconnect, not left to notice missed
// heartbeats (about 18 s, measured for the rate limiter's watch).
func TestStoreSurvivesNATSRestart(t *testing.T) {
	dir := t.TempDir()
	srv, err := queue.StartEmbedded(queue.EmbeddedConfig{StoreDir: dir, Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	addr := srv.Addr().String()
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var conns []*nats.Conn
	var stores []*keys.Store
	for i := range 2 {
		nc, err := queue.Connect(srv.ClientURL(), "test", discard())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			if _, err := queue.Ensure(ctx, js, queue.Config{}, queue.WithLogger(discard())); err != nil {
				t.Fatal(err)
			}
		}
		s, err := keys.Open(ctx, js, discard())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Close)
		conns, stores = append(conns, nc), append(stores, s)
	}
	before, _, err := stores[0].Generate(ctx, "", keys.Params{})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the other store never saw the first key", func() bool { _, ok := stores[1].Lookup(before); return ok })

	srv.Shutdown()
	srv.WaitForShutdown()
	if srv, err = queue.StartEmbedded(queue.EmbeddedConfig{StoreDir: dir, Listen: addr}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the connections did not come back", func() bool {
		return conns[0].Status() == nats.CONNECTED && conns[1].Status() == nats.CONNECTED
	})
	var after string
	eventually(t, "no key could be generated after the restart", func() bool {
		after, _, err = stores[0].Generate(ctx, "", keys.Params{})
		return err == nil
	})
	made := time.Now()
	const bound = 8 * time.Second
	for {
		if _, ok := stores[1].Lookup(after); ok {
			break
		}
		if time.Since(made) > bound {
			t.Fatalf("the other store did not see a key within %s of it, after a NATS restart", bound)
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("key seen by the other store %s after it was generated", time.Since(made).Round(time.Millisecond))
	if _, ok := stores[1].Lookup(before); !ok {
		t.Error("the key from before the restart is gone")
	}
}
