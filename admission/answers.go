package admission

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/laas-bridge/laas-bridge/queue/failover"
	"github.com/laas-bridge/laas-bridge/schema"
)

// AnswerKey is the key in schema.BucketAnswers under which the answer of a
// request with the caller's idempotency key is kept: namespace, a dot, then
// the SHA-256 of the namespace, the owner (keys.Caller.Owner, "" for the
// admin), the key and the body. The same key sent with another body is
// another request, so it never gets an answer meant for different input;
// the namespace keeps one door's keys from another's, and stays readable
// as a prefix so a namespace's answers can be listed ("batch.<id>.*"); the
// owner keeps one virtual key's answers from another's.
func AnswerKey(namespace, owner, key string, body []byte) string {
	h := sha256.New()
	h.Write([]byte(namespace))
	h.Write([]byte{0})
	if owner != "" { // the admin's keys hash as they did before owners
		h.Write([]byte("owner " + strconv.Itoa(len(owner)) + " " + owner))
		h.Write([]byte{0})
	}
	h.Write([]byte(key))
	h.Write([]byte{0})
	h.Write(body)
	return namespace + "." + hex.EncodeToString(h.Sum(nil))
}

// BatchAnswerKey is where the answer of line i of a batch is kept:
// "batch.<batch id>.<i>", so a batch lists its answers by prefix. The key
// is the core's own, never a caller's, so it is namespaced and not hashed.
func BatchAnswerKey(batchID string, line int) string {
	return "batch." + batchID + "." + strconv.Itoa(line)
}

// namespaceOf is the namespace of a door's idempotency keys. HTTP and the
// NATS endpoint share one: a caller may retry over either.
func namespaceOf(d Door) string {
	switch d {
	case DoorChat, DoorMicro:
		return "caller"
	default:
		return string(d)
	}
}

// StoredAnswer returns the finished reply kept under key, if any.
func (c *Core) StoredAnswer(ctx context.Context, key string) ([]byte, bool, error) {
	var e jetstream.KeyValueEntry
	err := c.retry(ctx, c.cfg.PublishTimeout, failover.Attempt, func(ctx context.Context) (err error) {
		e, err = c.answers.Get(ctx, key)
		return err
	})
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return nil, false, nil
	case err != nil:
		return nil, false, storeUnavailable(fmt.Errorf("read answer %s: %w", key, err))
	}
	return e.Value(), true, nil
}

// WatchAnswer delivers key's reply once a worker keeps it: for a retry
// whose first request is still being worked on. stop ends the watch.
func (c *Core) WatchAnswer(ctx context.Context, key string) (answer <-chan []byte, stop func(), err error) {
	w, err := c.answers.Watch(context.WithoutCancel(ctx), key)
	if err != nil {
		return nil, nil, storeUnavailable(fmt.Errorf("watch answer %s: %w", key, err))
	}
	ch := make(chan []byte, 1)
	go func() {
		for e := range w.Updates() { // closed by Stop
			if e != nil && e.Operation() == jetstream.KeyValuePut {
				ch <- e.Value()
				return
			}
		}
	}()
	return ch, func() { _ = w.Stop() }, nil
}

func storeUnavailable(cause error) *schema.Error {
	return &schema.Error{
		Status: http.StatusServiceUnavailable, Type: schema.TypeServer, Code: schema.CodeQueueUnavailable,
		Message: "The store of idempotent answers is unavailable; try again shortly.", RetryAfter: 1, Cause: cause,
	}
}
