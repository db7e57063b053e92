package multimodal

import (
	"context"
	"runtime"

	"github.com/laas-bridge/laas-bridge/schema"
)

// Checker runs Check with at most a fixed number of PDFs being decoded and
// read at once, however many callers share it, so that the heap of page
// counting is bounded by its slots times one check's peak (budget.go). A
// process builds one (the admission core does) and shares it; it is safe
// for concurrent use. A nil *Checker checks without a bound, as the
// function Check does.
type Checker struct {
	slots chan struct{}
	// holding, when set (by tests), runs while a slot is held.
	holding func()
}

// NewChecker returns a Checker with the given number of slots; slots <= 0
// means runtime.GOMAXPROCS(0): page counting is CPU work, and more at once
// would only share the same cores.
func NewChecker(slots int) *Checker {
	if slots <= 0 {
		slots = runtime.GOMAXPROCS(0)
	}
	return &Checker{slots: make(chan struct{}, slots)}
}

// Slots is how many PDFs c reads at once (0 for a nil Checker: no bound).
func (c *Checker) Slots() int {
	if c == nil {
		return 0
	}
	return cap(c.slots)
}

// Check is the function Check, with each PDF's decoding and page count
// holding one of c's slots. Waiting for a slot ends with ctx: Check then
// returns ctx.Err().
func (c *Checker) Check(ctx context.Context, req *schema.ChatCompletionRequest) (Report, error) {
	return check(ctx, req, c)
}

// acquire takes a slot, or returns ctx.Err() if ctx ends first; release
// gives it back. Both do nothing for a nil Checker.
func (c *Checker) acquire(ctx context.Context) error {
	if c == nil {
		return nil
	}
	select {
	case c.slots <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	if c.holding != nil {
		c.holding()
	}
	return nil
}

func (c *Checker) release() {
	if c != nil {
		<-c.slots
	}
}
