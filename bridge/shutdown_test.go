package bridge_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/laas-bridge/laas-bridge/bridge"
	"github.com/laas-bridge/laas-bridge/queue"
	"github.com/laas-bridge/laas-bridge/queue/queuetest"
	"github.com/laas-bridge/laas-bridge/schema"
)

// served is a gateway running Serve on a loopback port, with its handler
// also served on a second server that stays up, to watch readiness after
// the first has stopped accepting connections.
type served struct {
	q        *queuetest.Queue
	url      string // Serve's listener
	probe    string // the same handler, outside Serve
	stop     context.CancelFunc
	returned chan error // Serve's result
}

func serveGateway(t *testing.T, grace time.Duration) *served {
	t.Helper()
	q := queuetest.Start(t, queue.Config{Memory: true})
	catalog, err := schema.NewCatalog([]schema.Model{{Alias: "claude-3.5-sonnet", LaaSModel: "claude-3.5-sonnet", PresetHash: "p1"}})
	if err != nil {
		t.Fatal(err)
	}
	gw, err := bridge.New(bridge.Config{ShutdownGrace: grace}, q.Conn, q.JS, catalog, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = gw.Close() })
	probe := httptest.NewServer(gw.Handler())
	t.Cleanup(probe.Close)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	t.Cleanup(stop)
	s := &served{q: q, url: "http://" + ln.Addr().String(), probe: probe.URL, stop: stop, returned: make(chan error, 1)}
	go func() { s.returned <- gw.Serve(ctx, ln) }()
	return s
}

type result struct {
	status     int
	retryAfter string
	body       string
}

// post sends a chat request to Serve's listener; the answer arrives on the
// channel.
func (s *served) post(text string) <-chan result {
	ch := make(chan result, 1)
	body, _ := json.Marshal(map[string]any{"model": "claude-3.5-sonnet", "messages": []map[string]string{{"role": "user", "content": text}}})
	go func() {
		resp, err := (&http.Client{Timeout: 2 * time.Minute}).Post(s.url+"/v1/chat/completions", "application/json", strings.NewReader(string(body)))
		if err != nil {
			ch <- result{body: err.Error()}
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		ch <- result{resp.StatusCode, resp.Header.Get("Retry-After"), string(b)}
	}()
	return ch
}

// take pulls n queued jobs off the queue (unacknowledged, so no worker
// answers them), keyed by their text.
func (s *served) take(t *testing.T, n int) map[string]jetstream.Msg {
	t.Helper()
	jobs := map[string]jetstream.Msg{}
	for start := time.Now(); len(jobs) < n; {
		if time.Since(start) > 30*time.Second {
			t.Fatalf("%d of %d jobs queued within 30s", len(jobs), n)
		}
		batch, err := s.q.Consumer.Fetch(n-len(jobs), jetstream.FetchMaxWait(200*time.Millisecond))
		if err != nil {
			continue
		}
		for m := range batch.Messages() {
			var env schema.Envelope
			var req schema.ChatCompletionRequest
			if err := json.Unmarshal(m.Data(), &env); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(env.Request, &req); err != nil {
				t.Fatal(err)
			}
			jobs[req.Messages[0].Content.Text] = m
		}
	}
	return jobs
}

// answer publishes the worker's reply to a job taken with take.
func (s *served) answer(t *testing.T, m jetstream.Msg, text string) {
	t.Helper()
	var env schema.Envelope
	_ = json.Unmarshal(m.Data(), &env)
	data, _ := json.Marshal(schema.Reply{ID: env.ID, Status: 200, Attempts: 1, Completion: &schema.ChatCompletion{
		ID: "chatcmpl-" + env.ID, Object: "chat.completion", Created: 1, Model: env.Model,
		Choices: []schema.Choice{{Message: schema.AssistantMessage{Role: "assistant", Content: "answer: " + text}, FinishReason: "stop"}},
	}})
	if err := s.q.Conn.Publish(m.Headers().Get(schema.HeaderReplyTo), data); err != nil {
		t.Fatal(err)
	}
	_ = m.Ack()
}

// waitReady polls the probe's /readyz until it answers want.
func (s *served) waitReady(t *testing.T, want int) {
	t.Helper()
	for start := time.Now(); ; time.Sleep(10 * time.Millisecond) {
		last := ""
		resp, err := http.Get(s.probe + "/readyz")
		if err != nil {
			last = err.Error()
		} else {
			resp.Body.Close()
			if resp.StatusCode == want {
				return
			}
			last = resp.Status
		}
		if time.Since(start) > 30*time.Second {
			t.Fatalf("/readyz did not answer %d within 30s (last: %s)", want, last)
		}
	}
}

func receive[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(30 * time.Second):
		t.Fatalf("no %s within 30s", what)
		panic("unreachable")
	}
}

// TestServeShutdown: when Serve's context ends, readiness turns 503 and
// the listener stops taking connections; callers already waiting keep
// waiting, and those answered within the grace get their answer; Serve
// returns nil once the last is answered. A caller still waiting when the
// grace is over gets a 503 it can retry. Each step waits for the event
// it depends on; the only durations are the graces: one no step comes
// near, and one that passes with no answer at all.
func TestServeShutdown(t *testing.T) {
	t.Run("callers answered within the grace get their answers", func(t *testing.T) {
		s := serveGateway(t, time.Minute)
		s.waitReady(t, 200)
		first, second := s.post("first"), s.post("second")
		jobs := s.take(t, 2)

		s.stop()
		s.waitReady(t, 503)
		for start := time.Now(); ; time.Sleep(10 * time.Millisecond) {
			conn, err := net.Dial("tcp", strings.TrimPrefix(s.url, "http://"))
			if err != nil {
				break
			}
			conn.Close()
			if time.Since(start) > 30*time.Second {
				t.Fatal("the listener still takes connections 30s after shutdown began")
			}
		}

		s.answer(t, jobs["first"], "first")
		if r := receive(t, first, "answer for the first caller"); r.status != 200 || !strings.Contains(r.body, "answer: first") {
			t.Errorf("first caller, answered during the grace: %d %s", r.status, r.body)
		}
		select {
		case err := <-s.returned:
			t.Fatalf("Serve returned (%v) while a caller was still waiting, within the grace", err)
		default:
		}
		s.answer(t, jobs["second"], "second")
		if r := receive(t, second, "answer for the second caller"); r.status != 200 || !strings.Contains(r.body, "answer: second") {
			t.Errorf("second caller, answered during the grace: %d %s", r.status, r.body)
		}
		if err := receive(t, s.returned, "return from Serve"); err != nil {
			t.Errorf("Serve = %v, want nil", err)
		}
	})

	t.Run("a caller still waiting when the grace is over gets 503", func(t *testing.T) {
		s := serveGateway(t, 100*time.Millisecond)
		s.waitReady(t, 200)
		waiting := s.post("never answered")
		s.take(t, 1)

		s.stop()
		r := receive(t, waiting, "answer for the waiting caller")
		if r.status != 503 || r.retryAfter != "1" || !strings.Contains(r.body, `"code":"`+bridge.CodeShuttingDown+`"`) {
			t.Errorf("still waiting after the grace: %d, Retry-After %q, %s", r.status, r.retryAfter, r.body)
		}
		if err := receive(t, s.returned, "return from Serve"); err != nil {
			t.Errorf("Serve = %v, want nil", err)
		}
	})
}
