package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/laas-bridge/laas-bridge/laas/laasmock"
	"github.com/laas-bridge/laas-bridge/queue"
	"github.com/laas-bridge/laas-bridge/worker"
)

// TestMaxConcurrencyAcrossLanesAndProcesses: two worker processes, a mock
// LaaS answering in 1 s, 10 interactive and 10 batch-lane requests sent
// at once. Under BRIDGE_LAAS_MAX_CONCURRENCY=4 (and, separately, a model's
// max_parallel_requests: 2) the mock's own log never has more calls in
// flight than the cap, and does reach it; all 20 are answered; and every
// interactive call starts (at the mock) before the last batch call does.
// With the cap as each lane's MaxAckPending, as before, two lanes would
// put up to twice the cap in flight.
func TestMaxConcurrencyAcrossLanesAndProcesses(t *testing.T) {
	tests := []struct {
		name  string
		model string
		env   []string
		cap   int
	}{
		{name: "BRIDGE_LAAS_MAX_CONCURRENCY", model: "claude-3.5-sonnet", env: []string{"BRIDGE_LAAS_MAX_CONCURRENCY=4"}, cap: 4},
		{name: "max_parallel_requests", model: "capped", cap: 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			const perLane = 10
			srv := listeningNATS(t)
			// The mock runs in the test: its log names each call's lane
			// and counts the calls in flight when it arrived.
			mock, err := laasmock.New(laasmock.Config{Latency: time.Second})
			if err != nil {
				t.Fatal(err)
			}
			upstream := httptest.NewServer(mock)
			t.Cleanup(upstream.Close)
			cfg, _ := filepath.Abs("testdata/cap-config.yaml")
			common := append([]string{"NATS_URL=" + srv.ClientURL(), "BRIDGE_CONFIG=" + cfg}, tc.env...)
			gw, addr := startProc(t, "gateway", t.TempDir(), baseEnv(common...), gatewayReady, "gateway", "--listen", "127.0.0.1:0")
			workerEnv := baseEnv(append(common, "LAAS_PROJECT_CODE=p", "LAAS_API_KEY=k", "LAAS_PRESET_HASH=h", "LAAS_BASE_URL="+upstream.URL)...)
			var workers []*proc
			for i := range 2 {
				w, _ := startProc(t, fmt.Sprintf("worker-%d", i), t.TempDir(), workerEnv, workerReady, "worker")
				workers = append(workers, w)
			}

			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			var wg sync.WaitGroup
			for _, lane := range []string{"interactive", "batch"} {
				for i := range perLane {
					wg.Go(func() {
						text := fmt.Sprintf("%s %d", lane, i)
						body := fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":%q}]}`, tc.model, text)
						req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/v1/chat/completions", strings.NewReader(body))
						req.Header.Set("Content-Type", "application/json")
						req.Header.Set("X-Laas-Bridge-Lane", lane)
						resp, err := http.DefaultClient.Do(req)
						if err != nil {
							t.Errorf("%s: %v", text, err)
							return
						}
						b, _ := io.ReadAll(resp.Body)
						resp.Body.Close()
						if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), "mock[h]: "+text) {
							t.Errorf("%s: status %d, %s", text, resp.StatusCode, b)
						}
					})
				}
			}
			wg.Wait()
			for _, p := range append(workers, gw) {
				p.stop(t)
			}

			log := mock.Log()
			if len(log) != 2*perLane {
				t.Errorf("the mock logged %d calls, want %d", len(log), 2*perLane)
			}
			most := 0
			var lastInteractive, lastBatch time.Time
			for _, e := range log {
				most = max(most, e.InFlight)
				switch {
				case strings.HasPrefix(e.LastUser, "interactive"):
					lastInteractive = later(lastInteractive, e.Time)
				case strings.HasPrefix(e.LastUser, "batch"):
					lastBatch = later(lastBatch, e.Time)
				}
			}
			t.Logf("%d calls; at most %d in flight at once (mock: %d), cap %d; last interactive call started %s before the last batch call",
				len(log), most, mock.MaxInFlight(), tc.cap, lastBatch.Sub(lastInteractive).Round(time.Millisecond))
			if most > tc.cap || mock.MaxInFlight() > tc.cap {
				t.Errorf("the mock had %d calls in flight at once, cap %d", max(most, mock.MaxInFlight()), tc.cap)
			}
			if most < tc.cap {
				t.Errorf("at most %d calls in flight at once: the cap %d was not used", most, tc.cap)
			}
			if !lastInteractive.Before(lastBatch) {
				t.Errorf("the last interactive call started at %s, not before the last batch call at %s",
					lastInteractive.Format("15:04:05.000"), lastBatch.Format("15:04:05.000"))
			}
		})
	}
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// TestMaxConcurrencyWorkerKilledHoldingSlots: a worker process holding all
// 4 slots of BRIDGE_LAAS_MAX_CONCURRENCY=4 (4 calls in flight at a mock
// that answers in a minute) is killed with SIGKILL. Its leases expire by
// the server's TTL (3 s of the default 5 s AckWait), so 4 new requests on
// the other worker reach the mock, all within AckWait of the kill: the
// cap's full capacity is back, none leaked.
func TestMaxConcurrencyWorkerKilledHoldingSlots(t *testing.T) {
	const slots = 4
	ackWait := queue.DefaultAckWait
	srv := listeningNATS(t)
	mock, err := laasmock.New(laasmock.Config{Latency: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	upstream := httptest.NewServer(mock)
	t.Cleanup(upstream.Close)
	cfg, _ := filepath.Abs("testdata/cap-config.yaml")
	common := []string{"NATS_URL=" + srv.ClientURL(), "BRIDGE_CONFIG=" + cfg, fmt.Sprintf("BRIDGE_LAAS_MAX_CONCURRENCY=%d", slots)}
	gw, addr := startProc(t, "gateway", t.TempDir(), baseEnv(common...), gatewayReady, "gateway", "--listen", "127.0.0.1:0")
	workerEnv := baseEnv(append(common, "LAAS_PROJECT_CODE=p", "LAAS_API_KEY=k", "LAAS_PRESET_HASH=h", "LAAS_BASE_URL="+upstream.URL)...)
	// worker-0 takes no more jobs than the slots it will hold: the new
	// requests go to worker-1 and wait there.
	doomed, _ := startProc(t, "worker-0", t.TempDir(), workerEnv, workerReady, "worker", "--concurrency", strconv.Itoa(slots))

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	send := func(text string) {
		body := fmt.Sprintf(`{"model":"claude-3.5-sonnet","messages":[{"role":"user","content":%q}]}`, text)
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/v1/chat/completions", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if resp, err := http.DefaultClient.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	arrived := func(prefix string) (n int, last time.Time) {
		for _, e := range mock.Log() {
			if strings.HasPrefix(e.LastUser, prefix) {
				n++
				last = later(last, e.Time)
			}
		}
		return n, last
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for !cond() {
			if ctx.Err() != nil {
				t.Fatalf("waited 2 minutes for %s", what)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	for i := range slots {
		go send(fmt.Sprintf("held %d", i))
	}
	waitFor("worker-0 to hold every slot", func() bool { n, _ := arrived("held"); return n == slots })
	survivor, _ := startProc(t, "worker-1", t.TempDir(), workerEnv, workerReady, "worker")
	for i := range slots {
		go send(fmt.Sprintf("after %d", i))
	}
	// The survivor has the new requests waiting for slots before the kill.
	time.Sleep(time.Second)
	if n, _ := arrived("after"); n != 0 {
		t.Fatalf("%d new calls reached the mock while worker-0 held every slot", n)
	}
	killed := time.Now()
	if err := doomed.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor("the new requests to reach the mock", func() bool { n, _ := arrived("after"); return n == slots })
	_, last := arrived("after")
	back := last.Sub(killed)
	t.Logf("all %d slots back %s after the SIGKILL (lease TTL %s, AckWait %s)", slots, back.Round(time.Millisecond), worker.LeaseTTL(ackWait), ackWait)
	if back > ackWait {
		t.Errorf("the slots came back %s after the holder was killed, want within AckWait %s", back.Round(time.Millisecond), ackWait)
	}
	cancel() // the callers go away; their jobs are dropped
	survivor.stop(t)
	gw.stop(t)
}
