package bridge

import (
	"fmt"
	"strings"
	"sync"

	"github.com/nats-io/nats.go"
)

// correlator matches replies to waiting callers. It holds one core NATS
// subscription per gateway instance, on <prefix>.*, and a map from request id
// to the caller's channel. A caller registers with expect before it
// publishes, so a fast reply is never missed. Safe for concurrent use.
type correlator struct {
	prefix string
	sub    *nats.Subscription

	mu      sync.Mutex
	waiting map[string]chan []byte
}

func newCorrelator(nc *nats.Conn, prefix string) (*correlator, error) {
	c := &correlator{prefix: prefix + ".", waiting: make(map[string]chan []byte)}
	sub, err := nc.Subscribe(prefix+".*", c.deliver)
	if err != nil {
		return nil, fmt.Errorf("subscribe to replies on %s.*: %w", prefix, err)
	}
	// Thousands of callers may be answered at once; never drop a reply as a
	// slow consumer.
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		_ = sub.Unsubscribe()
		return nil, err
	}
	c.sub = sub
	// Make sure the server has the subscription before any request is sent:
	// a reply published by another connection must find it.
	if err := nc.Flush(); err != nil {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("subscribe to replies: %w", err)
	}
	return c, nil
}

// subject is the reply subject for request id.
func (c *correlator) subject(id string) string { return c.prefix + id }

// expect registers id and returns the channel its reply will arrive on.
func (c *correlator) expect(id string) <-chan []byte {
	ch := make(chan []byte, 1)
	c.mu.Lock()
	c.waiting[id] = ch
	c.mu.Unlock()
	return ch
}

// forget removes id; a reply that arrives later is dropped.
func (c *correlator) forget(id string) {
	c.mu.Lock()
	delete(c.waiting, id)
	c.mu.Unlock()
}

// pending is the number of callers waiting.
func (c *correlator) pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.waiting)
}

// waitingIDs lists the request ids still waiting for a reply.
func (c *correlator) waitingIDs() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	ids := make([]string, 0, len(c.waiting))
	for id := range c.waiting {
		ids = append(ids, id)
	}
	return ids
}

func (c *correlator) deliver(m *nats.Msg) {
	id, ok := strings.CutPrefix(m.Subject, c.prefix)
	if !ok {
		return
	}
	c.deliverID(id, m.Data)
}

// deliverID hands data to the caller waiting for id, once.
func (c *correlator) deliverID(id string, data []byte) {
	c.mu.Lock()
	ch, found := c.waiting[id]
	delete(c.waiting, id) // one answer per request: a duplicate is dropped
	c.mu.Unlock()
	if found {
		ch <- data // buffered, and only ever sent once
	}
}

func (c *correlator) close() error { return c.sub.Unsubscribe() }
