package multimodal

import (
	"context"
	"encoding/base64"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mt "github.com/laas-bridge/laas-bridge/admission/multimodal/multimodaltest"
	"github.com/laas-bridge/laas-bridge/schema"
)

// pdfRequest is a request holding one valid one-page PDF.
func pdfRequest() *schema.ChatCompletionRequest {
	return &schema.ChatCompletionRequest{Messages: []schema.Message{{Role: "user", Content: schema.Content{Parts: []schema.ContentPart{
		{Type: "file", File: &schema.FileRef{FileData: base64.StdEncoding.EncodeToString(mt.PDF(1, 0))}},
	}}}}}
}

// TestCheckerBoundsConcurrentReads: of 8 checks sharing a Checker of 2
// slots, 2 read their PDF at once and the others wait until one is done;
// every check then succeeds.
func TestCheckerBoundsConcurrentReads(t *testing.T) {
	const slots, callers = 2, 8
	c := NewChecker(slots)
	var inside, most atomic.Int32
	entered := make(chan struct{}, callers)
	proceed := make(chan struct{})
	c.holding = func() {
		n := inside.Add(1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		entered <- struct{}{}
		<-proceed
		inside.Add(-1)
	}
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rep, err := c.Check(context.Background(), pdfRequest())
			if err == nil && rep.Documents != 1 {
				err = errors.New("the PDF was not counted")
			}
			errs <- err
		}()
	}
	for i := range slots {
		select {
		case <-entered:
		case <-time.After(10 * time.Second):
			t.Fatalf("only %d of %d checks holding a slot after 10 s", i, slots)
		}
	}
	// A third may only enter if the bound is broken; give it the chance.
	select {
	case <-entered:
		t.Fatalf("a check entered while %d slots were held", slots)
	case <-time.After(200 * time.Millisecond):
	}
	close(proceed)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("Check = %v, want the PDF accepted", err)
		}
	}
	if m := most.Load(); m != slots {
		t.Errorf("at most %d checks read at once, want %d", m, slots)
	}
}

// TestCheckerWaitHonoursContext: a check waiting for a slot returns its
// context's error when the context ends, and a freed slot lets the next
// check through.
func TestCheckerWaitHonoursContext(t *testing.T) {
	c := NewChecker(1)
	c.slots <- struct{}{} // the only slot, held
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { _, err := c.Check(ctx, pdfRequest()); done <- err }()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Check while waiting = %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Check did not return within 10 s of its context's end")
	}
	<-c.slots
	if _, err := c.Check(context.Background(), pdfRequest()); err != nil {
		t.Fatalf("Check with a free slot = %v", err)
	}
	if len(c.slots) != 0 {
		t.Fatalf("%d slots still held after the checks", len(c.slots))
	}
}

// TestNewCheckerSlots: GOMAXPROCS slots by default; a nil Checker has no
// bound and still checks.
func TestNewCheckerSlots(t *testing.T) {
	if got, want := NewChecker(0).Slots(), cap(NewChecker(-1).slots); got != want || got < 1 {
		t.Fatalf("NewChecker(0).Slots() = %d, want GOMAXPROCS (%d)", got, want)
	}
	if got := NewChecker(3).Slots(); got != 3 {
		t.Fatalf("NewChecker(3).Slots() = %d", got)
	}
	var c *Checker
	if rep, err := c.Check(context.Background(), pdfRequest()); err != nil || rep.Documents != 1 || c.Slots() != 0 {
		t.Fatalf("nil Checker: %+v, %v, %d slots", rep, err, c.Slots())
	}
}
