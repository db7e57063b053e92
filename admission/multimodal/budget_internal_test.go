package multimodal

import (
	"context"
	"testing"
	"time"

	mt "github.com/laas-bridge/laas-bridge/admission/multimodal/multimodaltest"
)

// TestCountPagesDeadline: the page count stops at its deadline, inside
// pdfcpu, and says that the budget ran out (CodeDocumentTooComplex), while
// the same document within its deadline is counted.
func TestCountPagesDeadline(t *testing.T) {
	data := mt.PDFObjectStreams(200, 2<<10)
	if n, err := countPagesWithin(context.Background(), data, time.Minute); n != 1 || err != nil {
		t.Fatalf("countPagesWithin(a minute) = %d, %v; want 1 page", n, err)
	}
	n, err := countPagesWithin(context.Background(), data, time.Nanosecond)
	if n != 0 || !tooComplex(err) {
		t.Fatalf("countPagesWithin(1 ns) = %d, %v; want a budget refusal", n, err)
	}
}

// TestCheckTimeout: a second for a PDF of up to 4 MB, one more for each
// further 4 MB.
func TestCheckTimeout(t *testing.T) {
	for n, want := range map[int]time.Duration{0: time.Second, 4<<20 - 1: time.Second, 4 << 20: 2 * time.Second, MaxDocumentBytes: 9 * time.Second} {
		if got := checkTimeout(n); got != want {
			t.Errorf("checkTimeout(%d) = %v, want %v", n, got, want)
		}
	}
}
