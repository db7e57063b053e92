package worker

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"testing"

	"github.com/laas-bridge/laas-bridge/laas"
	"github.com/laas-bridge/laas-bridge/schema"
)

// stepCap is a ConcurrencyCap for step tests: every call is capped and
// gets its slot at once; it counts the slots held and given back.
type stepCap struct {
	mu       sync.Mutex
	held     int
	released int
}

func (c *stepCap) Applies(schema.Model) bool { return true }

func (c *stepCap) Acquire(context.Context, schema.Model, Lane, func()) (func(), error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.held++
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.held--
		c.released++
	}, nil
}

func (c *stepCap) counts() (held, released int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.held, c.released
}

// TestWaitForSlotGivesBackOnce: whatever way the job goes on from its
// slot, the slot is given back exactly once; a call LaaS answered gives
// it back before its reply is sent (the next call need not wait for the
// reply's round trip).
func TestWaitForSlotGivesBackOnce(t *testing.T) {
	for _, tc := range []struct {
		name    string
		upErr   error // the upstream's; nil: an answer
		waitErr error // the rate limiter's
		panics  bool
		acks    string
	}{
		{name: "answered: the slot is free before the reply", acks: "[ack]"},
		{name: "LaaS answered 400: free before the error reply", upErr: &laas.UpstreamError{Status: http.StatusBadRequest}, acks: "[ack]"},
		{name: "LaaS answered 500: retried, slot free", upErr: &laas.UpstreamError{Status: http.StatusInternalServerError}},
		{name: "the rate limit's wait ended: handed back, slot free", waitErr: errors.New("bucket gone"), acks: "[nak 0s]"},
		{name: "a later step panicked: slot free", panics: true, acks: "[]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newStepFixture(t)
			c := &stepCap{}
			f.p.caps = c
			f.p.limiter = &stepLimiter{err: tc.waitErr}
			f.p.up = &recorder{script: []error{tc.upErr}}
			heldAtSend := -1
			send := f.p.send
			f.p.send = func(subject string, data []byte) error {
				heldAtSend, _ = c.counts()
				return send(subject, data)
			}
			j, msg := stepJob(t, schema.SubjectInteractive, 1)
			final := f.p.callLaaS
			if tc.panics {
				final = func(context.Context, *job) { panic("boom") }
			}
			func() {
				defer func() {
					if r := recover(); (r != nil) != tc.panics {
						t.Errorf("recovered %v, want a panic %v", r, tc.panics)
					}
				}()
				f.p.waitForSlot(f.p.waitForRateLimit(final))(context.Background(), j)
			}()
			if held, released := c.counts(); held != 0 || released != 1 {
				t.Errorf("after the step: %d held, %d given back; want 0 and exactly 1", held, released)
			}
			if heldAtSend > 0 {
				t.Errorf("the reply was sent while the call still held its slot")
			}
			if acks := msg.settled(); tc.acks != "" && acks != tc.acks {
				t.Errorf("settled %s, want %s", acks, tc.acks)
			}
			if tc.upErr != nil && tc.acks == "" && msg.settled() == "[]" {
				t.Errorf("a retryable failure was not handed back")
			}
			j.endCall() // a second call gives nothing back twice
			if _, released := c.counts(); released != 1 {
				t.Errorf("endCall again gave back %d slots, want still 1", released)
			}
		})
	}
}
