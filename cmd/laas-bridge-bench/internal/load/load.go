package load

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Target is one endpoint under load: every request is a POST of Body.
type Target struct {
	Name   string
	URL    string
	Body   []byte
	Header http.Header
	// MsHeader, if set, names a header of the answers holding a duration
	// in whole milliseconds (say, the time the request queued inside the
	// target); fixed-rate runs record it in Result.HeaderMs.
	MsHeader string
	// PID, when set, is the process serving the target (started by the
	// bench, alone in it): a closed-loop run reads its CPU time.
	PID int
}

// Result summarises one load run.
type Result struct {
	Target, Mode string
	Requests     int64 // completed, successes and errors
	Errors       int64 // transport errors and answers other than 200
	FirstError   string
	Elapsed      time.Duration
	// CPU is the user and system CPU time Target.PID spent during the
	// measured run (0: unknown).
	CPU time.Duration
	// Latency holds the latencies of successful requests, in microseconds.
	Latency *hdrhistogram.Histogram
	// HeaderMs holds Target.MsHeader of successful answers that had it, in
	// microseconds; nil without MsHeader.
	HeaderMs *hdrhistogram.Histogram
}

// Throughput is successful requests per second.
func (r *Result) Throughput() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Requests-r.Errors) / r.Elapsed.Seconds()
}

// CPUPerRequest is CPU over the successful requests, 0 when either is
// unknown or none.
func (r *Result) CPUPerRequest() time.Duration {
	ok := r.Requests - r.Errors
	if r.CPU <= 0 || ok <= 0 {
		return 0
	}
	return r.CPU / time.Duration(ok)
}

// Quantile is the latency at q (0-100), 0 when nothing succeeded.
func (r *Result) Quantile(q float64) time.Duration { return quantile(r.Latency, q) }

// HeaderQuantile is Target.MsHeader's value at q (0-100), 0 when no answer
// had it.
func (r *Result) HeaderQuantile(q float64) time.Duration { return quantile(r.HeaderMs, q) }

func quantile(h *hdrhistogram.Histogram, q float64) time.Duration {
	if h == nil || h.TotalCount() == 0 {
		return 0
	}
	return time.Duration(h.ValueAtQuantile(q)) * time.Microsecond
}

// NewClient is an HTTP client for load: keep-alive connections, as many per
// host as callers, no overall timeout (the run's context bounds it).
func NewClient(maxConns int) *http.Client {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        maxConns,
		MaxIdleConnsPerHost: maxConns,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	return &http.Client{Transport: tr}
}

// recorder collects outcomes; safe for concurrent use.
type recorder struct {
	mu       sync.Mutex
	hist     *hdrhistogram.Histogram
	header   *hdrhistogram.Histogram // nil: not recorded
	requests atomic.Int64
	errors   atomic.Int64
	firstErr atomic.Pointer[string]
}

func newRecorder() *recorder { return &recorder{hist: newHistogram()} }

// newHistogram holds 1 µs to 10 min, to 3 significant digits.
func newHistogram() *hdrhistogram.Histogram {
	return hdrhistogram.New(1, int64(10*time.Minute/time.Microsecond), 3)
}

// recordHeader records a value of Target.MsHeader.
func (r *recorder) recordHeader(d time.Duration) {
	r.mu.Lock()
	_ = r.header.RecordValue(max(1, d.Microseconds()))
	r.mu.Unlock()
}

func (r *recorder) record(lat time.Duration, err error) {
	r.requests.Add(1)
	if err != nil {
		r.errors.Add(1)
		s := err.Error()
		r.firstErr.CompareAndSwap(nil, &s)
		return
	}
	r.mu.Lock()
	_ = r.hist.RecordValue(max(1, lat.Microseconds()))
	r.mu.Unlock()
}

func (r *recorder) result(target, mode string, elapsed time.Duration) *Result {
	res := &Result{Target: target, Mode: mode, Requests: r.requests.Load(), Errors: r.errors.Load(), Elapsed: elapsed, Latency: r.hist, HeaderMs: r.header}
	if s := r.firstErr.Load(); s != nil {
		res.FirstError = *s
	}
	return res
}

// Do sends one request and reads the whole answer; an answer other than 200
// is an error that quotes the start of its body.
func Do(ctx context.Context, c *http.Client, t Target) error {
	_, err := do(ctx, c, t)
	return err
}

// do is Do, returning the answer's header.
func do(ctx context.Context, c *http.Client, t Target) (http.Header, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.URL, bytes.NewReader(t.Body))
	if err != nil {
		return nil, err
	}
	for k, v := range t.Header {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %d: %.200s", resp.StatusCode, body)
	}
	return resp.Header, nil
}

// FixedRate sends rate requests per second for d (after an unrecorded
// warm-up of warmup at the same rate), each on its own goroutine, never
// waiting for earlier answers. A request's latency runs from the moment it
// was due to be sent, so a target that stalls is charged for every request
// it held up.
func FixedRate(ctx context.Context, c *http.Client, t Target, rate int, d, warmup time.Duration) *Result {
	if warmup > 0 {
		fixedRate(ctx, c, t, rate, warmup, newRecorder())
	}
	rec := newRecorder()
	if t.MsHeader != "" {
		rec.header = newHistogram()
	}
	elapsed := fixedRate(ctx, c, t, rate, d, rec)
	return rec.result(t.Name, fmt.Sprintf("fixed %d/s", rate), elapsed)
}

func fixedRate(ctx context.Context, c *http.Client, t Target, rate int, d time.Duration, rec *recorder) time.Duration {
	interval := time.Second / time.Duration(rate)
	start := time.Now()
	n := int(d / interval)
	var wg sync.WaitGroup
	for i := range n {
		due := start.Add(time.Duration(i) * interval)
		if wait := time.Until(due); wait > 0 {
			select {
			case <-time.After(wait):
			case <-ctx.Done():
			}
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			h, err := do(ctx, c, t)
			rec.record(time.Since(due), err)
			if rec.header != nil && err == nil {
				if v, err := strconv.ParseInt(h.Get(t.MsHeader), 10, 64); err == nil {
					rec.recordHeader(time.Duration(v) * time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
	return time.Since(start)
}

// ClosedLoop runs conc callers for d (after an unrecorded warm-up), each
// sending its next request as soon as it has the answer to the last.
func ClosedLoop(ctx context.Context, c *http.Client, t Target, conc int, d, warmup time.Duration) *Result {
	if warmup > 0 {
		closedLoop(ctx, c, t, conc, warmup, newRecorder())
	}
	rec := newRecorder()
	var cpu0 time.Duration
	if t.PID > 0 {
		cpu0, _ = ReadCPU(t.PID)
	}
	elapsed := closedLoop(ctx, c, t, conc, d, rec)
	r := rec.result(t.Name, fmt.Sprintf("closed x%d", conc), elapsed)
	if t.PID > 0 && cpu0 > 0 {
		if cpu1, err := ReadCPU(t.PID); err == nil {
			r.CPU = cpu1 - cpu0
		}
	}
	return r
}

func closedLoop(ctx context.Context, c *http.Client, t Target, conc int, d time.Duration, rec *recorder) time.Duration {
	start := time.Now()
	end := start.Add(d)
	var wg sync.WaitGroup
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil && time.Now().Before(end) {
				s := time.Now()
				err := Do(ctx, c, t)
				rec.record(time.Since(s), err)
			}
		}()
	}
	wg.Wait()
	return time.Since(start)
}

// Burst starts n callers at once, each sending one request, and waits for
// every answer or for ctx. While they run, during is called (if not nil)
// every 200ms, for instance to sample a process's memory.
func Burst(ctx context.Context, c *http.Client, t Target, n int, during func()) *Result {
	rec := newRecorder()
	start := time.Now()
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := time.Now()
			err := Do(ctx, c, t)
			rec.record(time.Since(s), err)
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-done:
			return rec.result(t.Name, fmt.Sprintf("burst %d", n), time.Since(start))
		case <-tick.C:
			if during != nil {
				during()
			}
		}
	}
}
