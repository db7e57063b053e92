package worker

// This file holds how the pool hears that a caller went away: the cancel
// broadcast every pool subscribes to, the calls it aborts and the ids it
// remembers so a job not yet started is skipped.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/laas-bridge/laas-bridge/schema"
)

// errCallerGone is the cause of a call cancelled because its caller left.
var errCallerGone = errors.New("the caller went away")

// cancels tracks the jobs this pool is running and the request ids whose
// callers went away. Gateways broadcast a cancel on core NATS
// (schema.SubjectCancel.<id>); every pool hears it. A running call is
// aborted; a job not yet started is skipped when it is pulled. Ids are
// remembered for rememberFor, which bounds the memory used. Safe for
// concurrent use.
type cancels struct {
	sub         *nats.Subscription
	rememberFor time.Duration

	mu        sync.Mutex
	running   map[string]context.CancelCauseFunc
	cancelled map[string]time.Time // id -> when to forget it
	lastPrune time.Time
}

func newCancels(nc *nats.Conn, rememberFor time.Duration) (*cancels, error) {
	c := &cancels{rememberFor: rememberFor, running: map[string]context.CancelCauseFunc{}, cancelled: map[string]time.Time{}}
	prefix := schema.SubjectCancel + "."
	sub, err := nc.Subscribe(prefix+"*", func(m *nats.Msg) {
		if id, ok := strings.CutPrefix(m.Subject, prefix); ok {
			c.cancel(id, time.Now())
		}
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe to cancellations: %w", err)
	}
	if err := nc.Flush(); err != nil {
		_ = sub.Unsubscribe()
		return nil, err
	}
	c.sub = sub
	return c, nil
}

func (c *cancels) cancel(id string, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if stop, ok := c.running[id]; ok {
		stop(errCallerGone)
	}
	c.cancelled[id] = now.Add(c.rememberFor)
	if now.Sub(c.lastPrune) > c.rememberFor/10 {
		for k, until := range c.cancelled {
			if now.After(until) {
				delete(c.cancelled, k)
			}
		}
		c.lastPrune = now
	}
}

// isCancelled reports whether id's caller went away.
func (c *cancels) isCancelled(id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, gone := c.cancelled[id]
	return gone
}

// start registers a running job; false means its caller already went away.
func (c *cancels) start(id string, stop context.CancelCauseFunc) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, gone := c.cancelled[id]; gone {
		return false
	}
	c.running[id] = stop
	return true
}

// done forgets a running job.
func (c *cancels) done(id string) {
	c.mu.Lock()
	delete(c.running, id)
	c.mu.Unlock()
}

func (c *cancels) close() { _ = c.sub.Unsubscribe() }
