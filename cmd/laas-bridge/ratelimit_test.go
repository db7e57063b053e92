package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
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
// three worker processes. The limiter is one schedule in a shared bucket:
// its first slot is no earlier than the first claim, and every slot starts
// at least 60s/rpm after the one before, whichever process claimed it; a
// call starts no earlier than its slot (later on a busy machine). So in the
// mock's own access log, sorted by start, call k (from 0) starts no earlier
// than k intervals after the first request was sent: an exact bound that a
// slow machine cannot break, and that three processes each keeping the
// limit on their own would exceed at once. With more callers than the limit
// lets through, the calls use at least half the schedule's slots (a loose
// floor: a busy machine delays calls, but a limiter that wasted slots or
// applied the limit twice would fall below it), and every worker process
// runs calls.
func TestRateLimitAcrossWorkerProcesses(t *testing.T) {
	const (
		rpm      = 600 // 10/s for the whole project
		interval = time.Minute / rpm
		load     = 12 * time.Second // callers keep sending this long
		callers  = 40               // each waits for its answer: ~4 s of backlog
	)
	srv := listeningNATS(t)
	s := startRLStack(t, srv.ClientURL(), []string{"--latency", "50ms"}, fmt.Sprintf("BRIDGE_LAAS_RPM=%d", rpm))

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: callers}, Timeout: time.Minute}
	ctx, cancel := context.WithTimeout(context.Background(), load+30*time.Second)
	defer cancel()
	// Before the first request: no slot in the fresh bucket is earlier.
	first := time.Now()
	stopAt := first.Add(load)
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
	ahead := 0
	for k, c := range calls {
		if earliest := first.Add(time.Duration(k) * interval); c.start.Before(earliest) {
			if ahead++; ahead <= 5 {
				t.Errorf("call %d started %s after the first request, before its earliest slot at %s: more than %d rpm",
					k, c.start.Sub(first), earliest.Sub(first), rpm)
			}
		}
	}
	if ahead > 0 {
		t.Errorf("%d of %d calls started ahead of the %d rpm schedule", ahead, len(calls), rpm)
	}
	span := calls[len(calls)-1].start.Sub(calls[0].start)
	slots := int(load / interval)
	t.Logf("%d requests, %d LaaS calls over %s (%.2f/s, limit %.2f/s); the schedule had %d slots while callers were sending",
		sent.Load(), len(calls), span.Round(time.Millisecond), float64(len(calls)-1)/span.Seconds(), float64(rpm)/60, slots)
	if len(calls) < slots/2 {
		t.Errorf("%d calls: less than half the %d slots of the %s the callers kept work waiting", len(calls), slots, load)
	}
	// The limit held for the sum: every worker process took calls from the
	// one schedule.
	for _, w := range s.workers {
		n := logLines(w.logs.String(), `msg="job done"`, "status=200")
		if n == 0 {
			t.Errorf("%s ran none of %d calls: the limit was not shared by three processes", w.name, len(calls))
		}
		t.Logf("%s ran %d calls", w.name, n)
	}
}
