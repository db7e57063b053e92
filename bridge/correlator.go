package bridge

import (
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/nats-io/nats.go"

	"github.com/laas-bridge/laas-bridge/schema"
)

// correlator matches replies to waiting callers. It holds two core NATS
// subscriptions per gateway instance, whatever the number of callers: one
// on <SubjectReplies>.<instance>.*, where replies published through
// StreamReplies arrive, and one on <SubjectDirectReplies>.<instance>.*,
// the workers' fast path, which it answers with an empty message once the
// reply is handed over. A map goes from request id to the caller's
// channel. A caller registers with expect before it publishes, so a fast
// reply is never missed. Safe for concurrent use.
type correlator struct {
	prefix string // <SubjectReplies>.<instance>.
	direct string // <SubjectDirectReplies>.<instance>.
	subs   []*nats.Subscription

	mu      sync.Mutex
	waiting map[string]chan []byte
}

func newCorrelator(nc *nats.Conn, instance string) (*correlator, error) {
	c := &correlator{
		prefix:  schema.SubjectReplies + "." + instance + ".",
		direct:  schema.SubjectDirectReplies + "." + instance + ".",
		waiting: make(map[string]chan []byte),
	}
	for _, prefix := range []string{c.prefix, c.direct} {
		sub, err := nc.Subscribe(prefix+"*", c.deliver)
		if err != nil {
			_ = c.close()
			return nil, fmt.Errorf("subscribe to replies on %s*: %w", prefix, err)
		}
		c.subs = append(c.subs, sub)
		// Thousands of callers may be answered at once; never drop a
		// reply as a slow consumer.
		if err := sub.SetPendingLimits(-1, -1); err != nil {
			_ = c.close()
			return nil, err
		}
	}
	// Make sure the server has the subscriptions before any request is
	// sent: a reply published by another connection must find them.
	if err := nc.Flush(); err != nil {
		_ = c.close()
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
	if id, ok := strings.CutPrefix(m.Subject, c.direct); ok {
		c.deliverID(id, m.Data)
		// The reply is its caller's now, or nobody waits for it: the worker
		// need not store it. Only the fast path is answered; a message on
		// the stream's subject carries the stream's ack inbox instead.
		if m.Reply != "" {
			_ = m.Respond(nil)
		}
		return
	}
	if id, ok := strings.CutPrefix(m.Subject, c.prefix); ok {
		c.deliverID(id, m.Data)
	}
}

// deliverLocal takes a reply on a direct subject from a worker in this
// process, as deliver takes it from NATS; false when the subject is not
// this gateway's.
func (c *correlator) deliverLocal(direct string, data []byte) bool {
	id, ok := strings.CutPrefix(direct, c.direct)
	if !ok {
		return false
	}
	c.deliverID(id, data)
	return true
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

func (c *correlator) close() error {
	var errs []error
	for _, sub := range c.subs {
		errs = append(errs, sub.Unsubscribe())
	}
	return errors.Join(errs...)
}
