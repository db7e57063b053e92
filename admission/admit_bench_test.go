package admission

import (
	"context"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/laas-bridge/laas-bridge/queue"
	"github.com/laas-bridge/laas-bridge/queue/queuetest"
	"github.com/laas-bridge/laas-bridge/schema"
)

// benchAdmit checks and admits b.N requests, each with its own id, into an
// in-memory queue on an embedded server, with cfg.
func benchAdmit(b *testing.B, cfg Config, ctx context.Context) {
	q := queuetest.Start(b, queue.Config{Memory: true, MaxMsgs: 1_000_000})
	catalog, err := schema.NewCatalog([]schema.Model{{Alias: "m", LaaSModel: "claude-4-sonnet", PresetHash: "p"}})
	if err != nil {
		b.Fatal(err)
	}
	c, err := Open(context.Background(), cfg, q.JS, catalog, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	body := []byte(chat)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		ck, err := c.Check(Request{ID: "r" + strconv.Itoa(i), Door: DoorChat, Body: body, Timeout: time.Minute, ReplyTo: "laas.reply.gw.r"})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.Admit(ctx, ck); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAdmitTracingOff is one request checked and published to its
// lane, tracing off (the default). Compare with BenchmarkAdmitTracingOn.
func BenchmarkAdmitTracingOff(b *testing.B) { benchAdmit(b, Config{}, context.Background()) }
