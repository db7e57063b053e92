package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/laas-bridge/laas-bridge/laas/laasmock"
	"github.com/laas-bridge/laas-bridge/schema"
)

// eventually polls cond every 10 ms until it holds, and fails the test,
// naming what it waited for, if it does not within limit.
func eventually(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	for start := time.Now(); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Since(start) > limit {
			t.Fatalf("waited %s for %s", limit, what)
		}
	}
}

// gate sits in front of the LaaS mock and holds every call whose body
// contains hold until open is closed or the worker gives the call up; then
// the mock answers it (and logs 499 for a call given up). arrived gets the
// held call's arrival.
type gate struct {
	mock    *laasmock.Mock
	hold    string
	arrived chan struct{}
	open    chan struct{}
}

func (g *gate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(body))
	if bytes.Contains(body, []byte(g.hold)) {
		g.arrived <- struct{}{}
		select {
		case <-g.open:
		case <-r.Context().Done():
		}
	}
	g.mock.ServeHTTP(w, r)
}

// serveGated runs `serve` in-process with one LaaS call at a time, against
// a mock behind a gate that holds calls containing hold, and with the
// embedded NATS server listening so the test can watch the queue.
func serveGated(t *testing.T, hold string) (*gate, *instance, jetstream.JetStream, *nats.Conn) {
	t.Helper()
	clearEnv(t)
	// A little latency, so the mock notices a call given up at the gate.
	mock, err := laasmock.New(laasmock.Config{ProjectCode: "p", APIKey: "k", Latency: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	g := &gate{mock: mock, hold: hold, arrived: make(chan struct{}, 8), open: make(chan struct{})}
	up := httptest.NewServer(g)
	t.Cleanup(up.Close)
	t.Cleanup(func() {
		select {
		case <-g.open:
		default:
			close(g.open)
		}
	})
	t.Setenv("LAAS_PROJECT_CODE", "p")
	t.Setenv("LAAS_API_KEY", "k")
	t.Setenv("LAAS_PRESET_HASH", "h")
	t.Setenv("LAAS_BASE_URL", up.URL)
	in := startRun(t, "serve", "--listen", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0", "--data-dir", t.TempDir(),
		"--config", "testdata/config.yaml", "--concurrency", "1")
	nc := connectLogged(t, in.logs.String())
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return g, in, js, nc
}

// hangUp sends a chat request with ctx, and an Idempotency-Key when key
// is set; the returned channel is closed when the client has given up or
// been answered.
func hangUp(ctx context.Context, url, text, key string) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		req, _ := http.NewRequestWithContext(ctx, "POST", url+"/v1/chat/completions", strings.NewReader(chatBody("claude-3.5-sonnet", text)))
		req.Header.Set("Content-Type", "application/json")
		if key != "" {
			req.Header.Set("Idempotency-Key", key)
		}
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	return done
}

// waitingCallers reads /health's count of callers the gateway holds.
func waitingCallers(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url + "/health")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var h struct {
		WaitingCallers *int `json:"waiting_callers"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil || h.WaitingCallers == nil {
		t.Fatalf("/health without waiting_callers: %v", err)
	}
	return *h.WaitingCallers
}

// queuedIDs maps each text in the requests stream to its request id.
func queuedIDs(t *testing.T, js jetstream.JetStream) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, schema.StreamRequests)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]string{}
	for seq := s.CachedInfo().State.FirstSeq; seq <= s.CachedInfo().State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			continue // acked and gone
		}
		var env schema.Envelope
		var req schema.ChatCompletionRequest
		if json.Unmarshal(m.Data, &env) != nil || json.Unmarshal(env.Request, &req) != nil || len(req.Messages) == 0 {
			t.Fatalf("stream message %d is not a chat request envelope: %s", seq, m.Data)
		}
		ids[req.Messages[len(req.Messages)-1].Content.Text] = env.ID
	}
	return ids
}

// TestCallerHangUp: "a caller who hangs up cancels the job, except with an
// Idempotency-Key". With one LaaS call at a time:
//   - caller A sends an Idempotency-Key and hangs up while its LaaS call is
//     under way: the gateway publishes no cancellation for it, the call runs
//     to the end (the mock answers 200, not 499), and a retry with the same
//     key gets that answer from the store (Idempotent-Replayed) with no
//     second LaaS call;
//   - caller B, without a key, hangs up while its job waits in the queue:
//     the gateway cancels it and the worker skips it, so it never reaches
//     LaaS.
//
// TestCallerGoneAbortsLaaSCall covers a keyless caller hanging up mid-call.
// Nothing here waits for time to pass: each step waits for the event the
// next depends on (the held call at the gate, the queued job, the
// cancellation on NATS), and the worker takes queued jobs in order.
func TestCallerHangUp(t *testing.T) {
	const keyed, queued, after = "keyed, hold", "queued, hangs up", "after them"
	g, in, js, nc := serveGated(t, "hold")
	cancelled, err := nc.SubscribeSync(schema.SubjectCancel + ".*")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	// A: keyed; hangs up while its LaaS call is held at the gate.
	ctxA, hangUpA := context.WithCancel(context.Background())
	doneA := hangUp(ctxA, in.url, keyed, "order-7")
	select {
	case <-g.arrived:
	case <-time.After(30 * time.Second):
		t.Fatal("A's LaaS call did not start within 30s")
	}
	// B: no key; queued behind A, whose call holds the only worker slot.
	ctxB, hangUpB := context.WithCancel(context.Background())
	doneB := hangUp(ctxB, in.url, queued, "")
	eventually(t, 30*time.Second, "B's job in the queue", func() bool {
		_, ok := queuedIDs(t, js)[queued]
		return ok
	})
	ids := queuedIDs(t, js)

	hangUpA()
	<-doneA
	eventually(t, 30*time.Second, "the gateway to let A go", func() bool { return waitingCallers(t, in.url) == 1 })
	hangUpB()
	<-doneB
	// One gateway connection publishes the cancellations, so they arrive
	// in order: the first one is B's unless A's came before it.
	m, err := cancelled.NextMsg(30 * time.Second)
	if err != nil {
		t.Fatalf("no cancellation for B, a keyless caller who hung up: %v", err)
	}
	if got, want := strings.TrimPrefix(m.Subject, schema.SubjectCancel+"."), ids[queued]; got != want {
		if got == ids[keyed] {
			t.Fatalf("the gateway cancelled A's job although A sent an Idempotency-Key")
		}
		t.Fatalf("cancellation for %q, want B's %q (queued ids %v)", got, want, ids)
	}

	// A's call goes on to the end once the gate opens; then the worker
	// takes B (skipped) and, after it, C.
	close(g.open)
	answer := func(text, key string) (int, string, string) {
		req, _ := http.NewRequest("POST", in.url+"/v1/chat/completions", strings.NewReader(chatBody("claude-3.5-sonnet", text)))
		req.Header.Set("Content-Type", "application/json")
		if key != "" {
			req.Header.Set("Idempotency-Key", key)
		}
		resp, err := (&http.Client{Timeout: time.Minute}).Do(req)
		if err != nil {
			t.Fatalf("%s: %v", text, err)
		}
		defer resp.Body.Close()
		var cc struct {
			Choices []struct {
				Message struct{ Content string } `json:"message"`
			} `json:"choices"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&cc)
		content := ""
		if len(cc.Choices) > 0 {
			content = cc.Choices[0].Message.Content
		}
		return resp.StatusCode, content, resp.Header.Get("Idempotent-Replayed")
	}
	if status, content, _ := answer(after, ""); status != 200 || content != "mock[h]: "+after {
		t.Fatalf("C: status %d, %q", status, content)
	}
	// A's answer is stored once the worker has it; a retry before that
	// waits for it, a retry after reads it from the store.
	eventually(t, 30*time.Second, "a retry of A answered from the store", func() bool {
		status, content, replayed := answer(keyed, "order-7")
		if status != 200 || content != "mock[h]: "+keyed {
			t.Fatalf("retry of A: status %d, %q", status, content)
		}
		return replayed == "true"
	})

	var calls []string
	for _, e := range g.mock.Log() {
		calls = append(calls, e.LastUser+" "+http.StatusText(e.Status))
	}
	if want := []string{keyed + " OK", after + " OK"}; !slices.Equal(calls, want) {
		t.Errorf("LaaS calls %q, want %q: A's call run to the end once (not cut, not repeated), B's never made", calls, want)
	}
}
