package bridge

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/laas-bridge/laas-bridge/schema"
)

// TestAnswerPassesThroughAsEncoded: a non-streaming caller gets the
// completion exactly as the worker encoded it (the gateway does not decode
// and re-encode it), fields it does not know included, with the timing
// headers from the reply.
func TestAnswerPassesThroughAsEncoded(t *testing.T) {
	f := newFixture(t, Config{})
	const completion = `{"id":"chatcmpl-x","object":"chat.completion","created":1,"model":"claude-3.5-sonnet",` +
		`"choices":[{"index":0,"message":{"role":"assistant","content":"<b>&amp; 안녕"},"finish_reason":"stop"}],` +
		`"system_fingerprint":null,"service_tier":"default"}`
	nc := f.q.Connect(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		for ctx.Err() == nil {
			batch, err := f.q.Consumer.Fetch(1, jetstream.FetchMaxWait(100*time.Millisecond))
			if err != nil {
				continue
			}
			for m := range batch.Messages() {
				var env schema.Envelope
				_ = json.Unmarshal(m.Data(), &env)
				reply := `{"id":"` + env.ID + `","status":200,"completion":` + completion + `,"attempts":2,"queue_ms":3,"upstream_ms":4}`
				_ = nc.Publish(m.Headers().Get(schema.HeaderReplyTo), []byte(reply))
				_ = m.Ack()
			}
		}
	}()
	resp, body := f.do(t, "POST", "/v1/chat/completions", chatBody("claude-3.5-sonnet", "hi"))
	if resp.StatusCode != 200 || string(body) != completion {
		t.Fatalf("status %d, body\n%s\nwant\n%s", resp.StatusCode, body, completion)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
	if a, q, u := resp.Header.Get(HeaderAttempts), resp.Header.Get(HeaderQueueMs), resp.Header.Get(HeaderUpstreamMs); a != "2" || q != "3" || u != "4" {
		t.Errorf("timing headers attempts=%s queue=%s upstream=%s, want 2 3 4", a, q, u)
	}
}
