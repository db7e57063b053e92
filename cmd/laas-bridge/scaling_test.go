package main

import (
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestWorkerScaling: with the mock at 200 ms per call and 8 LaaS calls at
// once per worker process, 64 callers in a closed loop (each sends its next
// request when its answer arrives) get at least 1.9x the throughput from 2
// worker processes and 3.6x from 4 that they get from 1 (ideal: 2x and 4x;
// the margins cover the counting window's edges and the extra CPU work on
// a shared machine). The three are measured in one run, one after the
// other, on the same NATS server, gateway and mock: workers are added
// between the phases.
func TestWorkerScaling(t *testing.T) {
	const (
		callers     = 64 // enough to keep 4 x 8 calls busy with a queue left over
		concurrency = 8
		warmUp      = time.Second
		window      = 6 * time.Second
	)
	port := freePort(t)
	natsProc := startNATS(t, "nats", t.TempDir(), port)
	natsURL := fmt.Sprintf("nats://127.0.0.1:%d", port)
	cfg, _ := filepath.Abs("testdata/config.yaml")
	mock, mockURL := startProc(t, "mock-laas", t.TempDir(), baseEnv(), mockReady,
		"mock-laas", "--listen", "127.0.0.1:0", "--project", "p", "--api-key", "k", "--latency", "200ms")
	env := baseEnv("NATS_URL="+natsURL, "BRIDGE_CONFIG="+cfg, "TEST_OWN_PRESET=own-hash", fmt.Sprint("BRIDGE_WORKER_CONCURRENCY=", concurrency),
		"LAAS_PROJECT_CODE=p", "LAAS_API_KEY=k", "LAAS_PRESET_HASH=h", "LAAS_BASE_URL="+mockURL)
	gw, addr := startProc(t, "gateway", t.TempDir(), env, gatewayReady, "gateway", "--listen", "127.0.0.1:0")
	s := &stack{natsURL: natsURL, mock: mock, gateway: gw, url: "http://" + addr}
	var workers []*proc
	addWorkers := func(n int) {
		for range n {
			w, _ := startProc(t, fmt.Sprintf("worker-%d", len(workers)), t.TempDir(), env, workerReady, "worker")
			workers = append(workers, w)
		}
	}

	// The closed loop runs through all three phases; each phase counts the
	// answers that arrive within its window.
	var (
		mu      sync.Mutex
		answers []time.Time
		failed  atomic.Int64
		stop    atomic.Bool
		wg      sync.WaitGroup
	)
	addWorkers(1)
	for c := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !stop.Load(); i++ {
				text := fmt.Sprintf("caller %d request %d", c, i)
				o := s.ask(text)
				if o.status != 200 || o.content != "mock[h]: "+text {
					if failed.Add(1) <= 5 {
						t.Errorf("%s: %+v", text, o)
					}
					continue
				}
				mu.Lock()
				answers = append(answers, time.Now())
				mu.Unlock()
			}
		}()
	}
	measure := func() float64 {
		time.Sleep(warmUp)
		start := time.Now()
		time.Sleep(window)
		end := time.Now()
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, a := range answers {
			if !a.Before(start) && a.Before(end) {
				n++
			}
		}
		rate := float64(n) / end.Sub(start).Seconds()
		t.Logf("%d worker process(es) x %d: %d answers in %s = %.1f req/s", len(workers), concurrency, n, end.Sub(start).Round(time.Millisecond), rate)
		return rate
	}
	one := measure()
	addWorkers(1)
	two := measure()
	addWorkers(2)
	four := measure()
	stop.Store(true)
	wg.Wait()

	r2, r4 := two/one, four/one
	t.Logf("throughput: 1 worker %.1f req/s, 2 workers %.1f req/s (%.2fx), 4 workers %.1f req/s (%.2fx); ideal %.0f, %.0f and %.0f req/s",
		one, two, r2, four, r4, concurrency/0.2, 2*concurrency/0.2, 4*concurrency/0.2)
	if r2 < 1.9 {
		t.Errorf("2 workers give %.2fx the throughput of 1, want at least 1.9x", r2)
	}
	if r4 < 3.6 {
		t.Errorf("4 workers give %.2fx the throughput of 1, want at least 3.6x", r4)
	}
	if n := failed.Load(); n > 0 {
		t.Errorf("%d requests failed", n)
	}
	for i, w := range workers {
		if logLines(w.logs.String(), `msg="job done"`) == 0 {
			t.Errorf("worker-%d answered no job", i)
		}
	}
	for _, p := range append(workers, gw, mock, natsProc) {
		p.stop(t)
	}
}
