package load

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestWriteTable: added latency is against the mock's row of the same mode,
// the ratio against the baseline's closed-loop row.
func TestWriteTable(t *testing.T) {
	mk := func(target, mode string, lat time.Duration, n int) *Result {
		rec := newRecorder()
		for range n {
			rec.record(lat, nil)
		}
		return rec.result(target, mode, time.Second)
	}
	var buf bytes.Buffer
	err := WriteTable(&buf, []*Result{
		mk(TargetMock, "fixed 10/s", time.Millisecond, 10),
		mk(TargetBridge, "fixed 10/s", 2*time.Millisecond, 10),
		mk(TargetBaseline, "closed x1", time.Millisecond, 100),
		mk(TargetBridge, "closed x1", 2*time.Millisecond, 80),
	})
	if err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if !regexp.MustCompile(`bridge\s+fixed 10/s\s+10\s+0\s+10\s+2\.000ms\s+2\.000ms\s+2\.000ms\s+1\.000ms\s+1\.000ms\s*\n`).MatchString(out) {
		t.Errorf("fixed row:\n%s", out)
	}
	if !regexp.MustCompile(`bridge\s+closed x1\s+80\s+0\s+80\s+2\.000ms\s+2\.000ms\s+2\.000ms\s+0\.80\s*\n`).MatchString(out) {
		t.Errorf("closed row:\n%s", out)
	}
	// With the processes' CPU: per answered request, and the bridge's
	// over the baseline's.
	base, bridge := mk(TargetBaseline, "closed x1", time.Millisecond, 100), mk(TargetBridge, "closed x1", 2*time.Millisecond, 80)
	base.CPU, bridge.CPU = 50*time.Millisecond, 60*time.Millisecond // 0.5 ms and 0.75 ms a request
	buf.Reset()
	if err := WriteTable(&buf, []*Result{base, bridge}); err != nil {
		t.Fatal(err)
	}
	out = buf.String()
	if !regexp.MustCompile(`baseline\s+closed x1\s+100\s+0\s+100\s+1\.000ms\s+1\.000ms\s+1\.000ms\s+0\.500ms\s*\n`).MatchString(out) ||
		!regexp.MustCompile(`bridge\s+closed x1\s+80\s+0\s+80\s+2\.000ms\s+2\.000ms\s+2\.000ms\s+0\.80\s+0\.750ms\s+1\.50\s*\n`).MatchString(out) {
		t.Errorf("closed rows with CPU:\n%s", out)
	}
}

// TestStatCPU: utime and stime of a /proc/<pid>/stat line, whatever the
// command name holds; ReadCPU reads this process's.
func TestStatCPU(t *testing.T) {
	line := "4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 2300 0 0 0 1234 56 0 0 20 0 9 0 1000 2000000 3000 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n"
	got, err := statCPU(line)
	if err != nil || got != 12900*time.Millisecond {
		t.Fatalf("statCPU: %s, %v; want 12.9s (1234 + 56 ticks)", got, err)
	}
	if _, err := statCPU("4242 S 1"); err == nil {
		t.Error("statCPU of a line without a command name: no error")
	}
	if _, err := ReadCPU(os.Getpid()); err != nil {
		t.Errorf("ReadCPU of this process: %v", err)
	}
}

// TestWriteMixTable: a row per phase, the added latency (during minus
// alone, signed) and the batch's progress and end.
func TestWriteMixTable(t *testing.T) {
	mk := func(queued time.Duration, lats ...time.Duration) *Result {
		rec := newRecorder()
		rec.header = newHistogram()
		for _, l := range lats {
			rec.record(l, nil)
			rec.recordHeader(queued)
		}
		rec.record(0, errors.New("status 503: busy"))
		return rec.result(TargetBridge, "fixed 2/s", 2*time.Second)
	}
	alone := mk(time.Millisecond, 200*time.Millisecond, 300*time.Millisecond)
	during := mk(2*time.Millisecond, 250*time.Millisecond, 280*time.Millisecond)
	var buf bytes.Buffer
	err := WriteMixTable(&buf, alone, during, BatchProgress{Lines: 2000, WindowDone: 1200, Window: 20 * time.Second, Throughout: true,
		SlotsMean: 14.25, SlotsMax: 16, Slots: 16, Status: "completed", Completed: 1990, Failed: 10, OutputLines: 1990, Elapsed: 40 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	want := `         interactive  requests  errors  req/s        p50        p95        p99  queued p50  queued p99
               alone         3       1      1  200.063ms  300.031ms  300.031ms     1.000ms     1.000ms
        during batch         3       1      1  250.111ms  280.063ms  280.063ms     2.000ms     2.000ms
  added by the batch                           +50.048ms  -19.968ms  -19.968ms    +1.000ms    +1.000ms
batch during the window: 1200 of 2000 lines done in 20s (60.0 lines/s); still running at its end: yes
worker slots busy during the window: mean 14.2, max 16 of 16
batch at its end: completed, 1990 completed, 10 failed of 2000; output file 1990 lines; 40s after submission (50.0 lines/s)
`
	if got := buf.String(); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
	buf.Reset()
	if err := WriteMixTable(&buf, alone, during, BatchProgress{Lines: 50, WindowDone: 50, Window: time.Second}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "still running at its end: no: it ended first") {
		t.Errorf("a batch that ended inside the window is not flagged:\n%s", buf.String())
	}
}

// TestFixedRateRecordsMsHeader: with Target.MsHeader, every successful
// answer's header value is recorded, in milliseconds.
func TestFixedRateRecordsMsHeader(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Queue-Ms", "2") // exact in the histogram (below 2048 µs)
	}))
	defer srv.Close()
	tg := Target{Name: "t", URL: srv.URL, Body: []byte("{}"), MsHeader: "X-Queue-Ms"}
	r := FixedRate(context.Background(), NewClient(4), tg, 100, 100*time.Millisecond, 0)
	if r.Requests != 10 || r.Errors != 0 || r.HeaderMs.TotalCount() != 10 {
		t.Fatalf("requests %d, errors %d, header values %d; want 10, 0, 10 (%s)", r.Requests, r.Errors, r.HeaderMs.TotalCount(), r.FirstError)
	}
	if got := r.HeaderQuantile(50); got != 2*time.Millisecond {
		t.Errorf("header p50 = %s, want 2ms", got)
	}
	tg.MsHeader = ""
	if r := FixedRate(context.Background(), NewClient(4), tg, 100, 50*time.Millisecond, 0); r.HeaderMs != nil || r.HeaderQuantile(50) != 0 {
		t.Errorf("header recorded without MsHeader")
	}
}
