package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/laas-bridge/laas-bridge/queue"
	"github.com/laas-bridge/laas-bridge/schema"
)

// rlCall is one call in the mock's access log.
type rlCall struct {
	start  time.Time
	end    time.Time
	status int
}

// rlAccessLog reads the calls from a mock's --access-log output.
func rlAccessLog(t *testing.T, logs string) []rlCall {
	t.Helper()
	var calls []rlCall
	sc := bufio.NewScanner(strings.NewReader(logs))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var e struct {
			Time      time.Time `json:"time"`
			Status    int       `json:"status"`
			LatencyMs float64   `json:"latency_ms"`
		}
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("access log line %q: %v", line, err)
		}
		calls = append(calls, rlCall{start: e.Time, end: e.Time.Add(time.Duration(e.LatencyMs * float64(time.Millisecond))), status: e.Status})
	}
	slices.SortFunc(calls, func(a, b rlCall) int { return a.start.Compare(b.start) })
	return calls
}

// rlWindows returns the most and the fewest calls in any window [s, s+w):
// the most over every position, the fewest over the windows that lie
// inside [first call, last call], the span in which there was work waiting.
func rlWindows(starts []time.Time, w time.Duration) (most, fewest int) {
	count := func(from time.Time) int {
		n := 0
		for _, s := range starts {
			if !s.Before(from) && s.Before(from.Add(w)) {
				n++
			}
		}
		return n
	}
	first, last := starts[0], starts[len(starts)-1]
	fewest = len(starts)
	for _, s := range starts {
		// The count only changes where a window's edge passes a call:
		// windows that start at a call or just after one, or end at one.
		for _, from := range []time.Time{s, s.Add(time.Nanosecond), s.Add(-w), s.Add(-w + time.Nanosecond)} {
			n := count(from)
			most = max(most, n)
			if !from.Before(first) && !from.Add(w).After(last) {
				fewest = min(fewest, n)
			}
		}
	}
	return most, fewest
}

// rlPost sends one chat request to the gateway and returns the status.
func rlPost(ctx context.Context, c *http.Client, url, text string) (int, error) {
	body := fmt.Sprintf(`{"model":"claude-3.5-sonnet","messages":[{"role":"user","content":%q}]}`, text)
	req, err := http.NewRequestWithContext(ctx, "POST", url+"/v1/chat/completions", strings.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// rlStack is a mock LaaS, a gateway and three workers, each a process of
// the built binary, against one NATS server embedded in the test.
type rlStack struct {
	natsURL string
	mock    *proc
	gateway *proc
	gwURL   string
	workers []*proc
}

func startRLStack(t *testing.T, natsURL string, mockArgs []string, env ...string) *rlStack {
	t.Helper()
	cfg, _ := filepath.Abs("testdata/config.yaml")
	s := &rlStack{natsURL: natsURL}
	var mockURL string
	s.mock, mockURL = startProc(t, "mock-laas", t.TempDir(), baseEnv(), mockReady,
		append([]string{"mock-laas", "--listen", "127.0.0.1:0", "--access-log"}, mockArgs...)...)
	common := append([]string{"NATS_URL=" + natsURL, "BRIDGE_CONFIG=" + cfg, "TEST_OWN_PRESET=own-hash"}, env...)
	var addr string
	s.gateway, addr = startProc(t, "gateway", t.TempDir(), baseEnv(common...), gatewayReady, "gateway", "--listen", "127.0.0.1:0")
	s.gwURL = "http://" + addr
	workerEnv := baseEnv(append(common, "LAAS_PROJECT_CODE=p", "LAAS_API_KEY=k", "LAAS_PRESET_HASH=h", "LAAS_BASE_URL="+mockURL)...)
	for i := range 3 {
		w, _ := startProc(t, fmt.Sprintf("worker-%d", i), t.TempDir(), workerEnv, workerReady, "worker", "--concurrency", "16")
		s.workers = append(s.workers, w)
	}
	return s
}

func (s *rlStack) stop(t *testing.T) {
	for _, w := range s.workers {
		w.stop(t)
	}
	s.gateway.stop(t)
	s.mock.stop(t)
}

// TestRateLimitAcrossWorkerProcesses: BRIDGE_LAAS_RPM holds for the sum of
// three worker processes. With more callers than the limit lets through,
// the mock's own access log shows, over every window of 20 s, no more than
// the limit plus 5%, and, while work was waiting, at least 90% of it.
func TestRateLimitAcrossWorkerProcesses(t *testing.T) {
	const (
		rpm     = 600 // 10/s for the whole project
		window  = 20 * time.Second
		load    = 24 * time.Second // callers keep sending this long
		callers = 40               // each waits for its answer: ~4 s of backlog
	)
	srv, err := queue.StartEmbedded(queue.EmbeddedConfig{StoreDir: t.TempDir(), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	s := startRLStack(t, srv.ClientURL(), []string{"--latency", "50ms"}, fmt.Sprintf("BRIDGE_LAAS_RPM=%d", rpm))

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: callers}, Timeout: time.Minute}
	ctx, cancel := context.WithTimeout(context.Background(), load+30*time.Second)
	defer cancel()
	stopAt := time.Now().Add(load)
	var wg sync.WaitGroup
	var sent, ok atomic.Int64
	errs := make(chan error, callers)
	for c := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Now().Before(stopAt); i++ {
				sent.Add(1)
				status, err := rlPost(ctx, client, s.gwURL, fmt.Sprintf("caller %d request %d", c, i))
				if err != nil || status != http.StatusOK {
					errs <- fmt.Errorf("caller %d request %d: status %d, %v", c, i, status, err)
					return
				}
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	s.stop(t)

	calls := rlAccessLog(t, s.mock.logs.String())
	if int64(len(calls)) != ok.Load() {
		t.Errorf("the mock logged %d calls for %d answered requests", len(calls), ok.Load())
	}
	if len(calls) == 0 {
		t.Fatal("no calls reached the mock")
	}
	starts := make([]time.Time, len(calls))
	for i, c := range calls {
		starts[i] = c.start
	}
	span := starts[len(starts)-1].Sub(starts[0])
	if span < window {
		t.Fatalf("the calls spanned %s, less than one %s window", span, window)
	}
	limit := float64(rpm) * window.Minutes()
	most, fewest := rlWindows(starts, window)
	t.Logf("%d requests, %d LaaS calls over %s (%.2f/s, limit %.2f/s); per %s window: most %d, fewest %d (limit %.0f, +5%% = %.0f, 90%% = %.0f)",
		sent.Load(), len(calls), span.Round(time.Millisecond), float64(len(calls)-1)/span.Seconds(), float64(rpm)/60,
		window, most, fewest, limit, limit*1.05, limit*0.9)
	if float64(most) > limit*1.05 {
		t.Errorf("%d calls in a %s window: more than the limit %.0f plus 5%%", most, window, limit)
	}
	if float64(fewest) < limit*0.9 {
		t.Errorf("only %d calls in a %s window with work waiting: less than 90%% of the limit %.0f", fewest, window, limit)
	}
	// The limit held for the sum: every worker process took a share.
	for _, w := range s.workers {
		n := logLines(w.logs.String(), `msg="job done"`, "status=200")
		if n < len(calls)/10 {
			t.Errorf("%s ran %d of %d calls: the three workers did not share the work", w.name, n, len(calls))
		}
		t.Logf("%s ran %d calls", w.name, n)
	}
}

// TestRateLimitMaxConcurrency: BRIDGE_LAAS_MAX_CONCURRENCY becomes the
// workers' consumer's MaxAckPending, also when the consumer already exists
// with the default, and the server holds the three worker processes (16
// calls each) to it: the mock never has more calls in flight at once, and
// does have that many.
func TestRateLimitMaxConcurrency(t *testing.T) {
	const maxConcurrency, requests = 3, 30
	srv, err := queue.StartEmbedded(queue.EmbeddedConfig{StoreDir: t.TempDir(), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	// A consumer from an earlier start, with the default.
	nc, err := queue.Connect(srv.ClientURL(), "test", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cons, err := queue.Ensure(ctx, js, queue.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if got := cons.CachedInfo().Config.MaxAckPending; got != queue.DefaultMaxAckPending {
		t.Fatalf("MaxAckPending %d before, want the default %d", got, queue.DefaultMaxAckPending)
	}

	s := startRLStack(t, srv.ClientURL(), []string{"--latency", "300ms"}, fmt.Sprintf("BRIDGE_LAAS_MAX_CONCURRENCY=%d", maxConcurrency))
	info, err := js.Consumer(ctx, schema.StreamRequests, schema.ConsumerWorkers)
	if err != nil {
		t.Fatal(err)
	}
	if got := info.CachedInfo().Config.MaxAckPending; got != maxConcurrency {
		t.Errorf("MaxAckPending %d after start, want %d", got, maxConcurrency)
	}

	var wg sync.WaitGroup
	for i := range requests {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if status, err := rlPost(ctx, http.DefaultClient, s.gwURL, fmt.Sprintf("request %d", i)); err != nil || status != http.StatusOK {
				t.Errorf("request %d: status %d, %v", i, status, err)
			}
		}()
	}
	wg.Wait()
	s.stop(t)

	calls := rlAccessLog(t, s.mock.logs.String())
	if len(calls) != requests {
		t.Errorf("the mock logged %d calls, want %d", len(calls), requests)
	}
	// The most calls in flight at once: sweep over starts and ends.
	type edge struct {
		at    time.Time
		delta int
	}
	var edges []edge
	for _, c := range calls {
		edges = append(edges, edge{c.start, 1}, edge{c.end, -1})
	}
	slices.SortFunc(edges, func(a, b edge) int {
		if c := a.at.Compare(b.at); c != 0 {
			return c
		}
		return a.delta - b.delta // an end before a start at the same instant
	})
	inFlight, most := 0, 0
	for _, e := range edges {
		inFlight += e.delta
		most = max(most, inFlight)
	}
	t.Logf("%d calls, at most %d in flight at once (limit %d, worker slots %d)", len(calls), most, maxConcurrency, 3*16)
	if most > maxConcurrency {
		t.Errorf("%d calls in flight at once, limit %d", most, maxConcurrency)
	}
	if most < maxConcurrency {
		t.Errorf("at most %d calls in flight at once: the limit %d was not used", most, maxConcurrency)
	}
}
