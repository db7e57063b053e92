package main

import (
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// inFlightMax is the most calls in flight at once at any instant in
// [from, to): the count is highest at from or at a call's start.
func inFlightMax(calls []rlCall, from, to time.Time) int {
	at := func(t time.Time) int {
		n := 0
		for _, c := range calls {
			if !c.start.After(t) && c.end.After(t) {
				n++
			}
		}
		return n
	}
	most := at(from)
	for _, c := range calls {
		if !c.start.Before(from) && c.start.Before(to) {
			most = max(most, at(c.start))
		}
	}
	return most
}

// TestWorkerScaling: each worker process runs BRIDGE_WORKER_CONCURRENCY
// LaaS calls at once, so adding worker processes adds calls in flight:
// with 1, then 2, then 4 workers of 8 and a backlog of work, the mock (its
// own access log) has 8, 16 and 32 calls at once, and never more than the
// workers running at that time can hold. These are counts the pool
// guarantees; throughput follows from them (calls in flight over the
// mock's latency), and is not asserted: on a busy machine it measures the
// machine. Each phase lasts until its count is reached; the three run one
// after the other on the same NATS server, gateway and mock.
func TestWorkerScaling(t *testing.T) {
	const (
		concurrency = 8
		callers     = 64 // at least twice 4 x 8: when a wave of calls ends, the next is already queued
		latency     = time.Second
	)
	port := freePort(t)
	natsProc := startNATS(t, "nats", t.TempDir(), port)
	natsURL := fmt.Sprintf("nats://127.0.0.1:%d", port)
	cfg, _ := filepath.Abs("testdata/config.yaml")
	mock, mockURL := startProc(t, "mock-laas", t.TempDir(), baseEnv(), mockReady,
		"mock-laas", "--listen", "127.0.0.1:0", "--project", "p", "--api-key", "k", "--latency", latency.String(), "--access-log")
	env := baseEnv("NATS_URL="+natsURL, "BRIDGE_CONFIG="+cfg, "TEST_OWN_PRESET=own-hash", fmt.Sprint("BRIDGE_WORKER_CONCURRENCY=", concurrency),
		"LAAS_PROJECT_CODE=p", "LAAS_API_KEY=k", "LAAS_PRESET_HASH=h", "LAAS_BASE_URL="+mockURL)
	gw, addr := startProc(t, "gateway", t.TempDir(), env, gatewayReady, "gateway", "--listen", "127.0.0.1:0")
	s := &stack{natsURL: natsURL, mock: mock, gateway: gw, url: "http://" + addr}

	// The closed loop (each caller sends its next request when its answer
	// arrives) runs through all three phases.
	var (
		failed atomic.Int64
		stop   atomic.Bool
		wg     sync.WaitGroup
	)
	for c := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !stop.Load(); i++ {
				text := fmt.Sprintf("caller %d request %d", c, i)
				if o := s.ask(text); o.status != 200 || o.content != "mock[h]: "+text {
					if failed.Add(1) <= 5 {
						t.Errorf("%s: status %d %q, content %q, %v", text, o.status, o.code, o.content, o.err)
					}
				}
			}
		}()
	}

	type phase struct {
		workers int
		from    time.Time // when its first new worker was started
	}
	var (
		workers []*proc
		phases  []phase
	)
	for _, n := range []int{1, 2, 4} {
		from := time.Now()
		for len(workers) < n {
			w, _ := startProc(t, fmt.Sprintf("worker-%d", len(workers)), t.TempDir(), env, workerReady, "worker")
			workers = append(workers, w)
		}
		phases = append(phases, phase{n, from})
		want := n * concurrency
		for start := time.Now(); ; time.Sleep(100 * time.Millisecond) {
			if inFlightMax(rlAccessLog(t, mock.logs.String()), from, time.Now()) >= want {
				break
			}
			if time.Since(start) > time.Minute {
				stop.Store(true)
				wg.Wait() // no caller may report after the test ends
				t.Fatalf("%d worker(s) of %d with %d callers: the mock never had %d calls at once within a minute", n, concurrency, callers, want)
			}
		}
	}
	stop.Store(true)
	end := time.Now()
	wg.Wait()
	for _, w := range workers {
		w.stop(t)
	}
	gw.stop(t)
	mock.stop(t)

	calls := rlAccessLog(t, mock.logs.String())
	for i, p := range phases {
		to := end
		if i+1 < len(phases) {
			to = phases[i+1].from
		}
		most, limit := inFlightMax(calls, p.from, to), p.workers*concurrency
		done := 0
		for _, c := range calls {
			if !c.end.Before(p.from) && c.end.Before(to) {
				done++
			}
		}
		t.Logf("%d worker process(es) x %d: at most %d calls at once; %d calls ended in the %s the phase lasted",
			p.workers, concurrency, most, done, to.Sub(p.from).Round(time.Millisecond))
		if i+1 == len(phases) {
			most = inFlightMax(calls, p.from, time.Now()) // the calls that ran after end too
		}
		if most > limit {
			t.Errorf("%d calls at once while %d worker(s) of %d ran", most, p.workers, concurrency)
		}
	}
	if n := failed.Load(); n > 0 {
		t.Errorf("%d requests failed", n)
	}
	for i, w := range workers {
		if logLines(w.logs.String(), `msg="job done"`) == 0 {
			t.Errorf("worker-%d answered no job", i)
		}
	}
	natsProc.stop(t)
}
