package bench

import (
	"bytes"
	"regexp"
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
}
