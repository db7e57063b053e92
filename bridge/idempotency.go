package bridge

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/laas-bridge/laas-bridge/schema"
)

// Idempotency headers: a request with an Idempotency-Key is run at most once
// per key (within the queue's de-duplication window, and within the
// answers bucket's TTL once finished); a retry gets the first call's answer,
// marked with Idempotent-Replayed: true when it comes from the store.
const (
	HeaderIdempotencyKey     = "Idempotency-Key"
	HeaderIdempotentReplayed = "Idempotent-Replayed"
	maxIdempotencyKeyLen     = 255
)

// idempotencyKey returns the store key for the request's Idempotency-Key
// header, or "" without one. The key hashes the header with the body: the
// same key sent with another request is another request, so it never gets
// an answer meant for different input.
func idempotencyKey(h http.Header, body []byte) (string, error) {
	v := h.Get(HeaderIdempotencyKey)
	if v == "" {
		return "", nil
	}
	if len(v) > maxIdempotencyKeyLen {
		return "", schema.Invalid("", schema.CodeInvalidValue, "The %s header is %d bytes; at most %d are allowed.", HeaderIdempotencyKey, len(v), maxIdempotencyKeyLen)
	}
	hash := sha256.New()
	hash.Write([]byte(v))
	hash.Write([]byte{0})
	hash.Write(body)
	return hex.EncodeToString(hash.Sum(nil)), nil
}

// storedAnswer returns the finished reply kept for key, if any.
func (g *Gateway) storedAnswer(ctx context.Context, key string) ([]byte, bool, error) {
	e, err := g.answers.Get(ctx, key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return nil, false, nil
	case err != nil:
		return nil, false, g.storeUnavailable(fmt.Errorf("read answer %s: %w", key, err))
	}
	return e.Value(), true, nil
}

// watchAnswer delivers key's reply once a worker stores it: for a retry
// whose first request is still being worked on. stop ends the watch.
func (g *Gateway) watchAnswer(ctx context.Context, key string) (answer <-chan []byte, stop func(), err error) {
	w, err := g.answers.Watch(context.WithoutCancel(ctx), key)
	if err != nil {
		return nil, nil, g.storeUnavailable(fmt.Errorf("watch answer %s: %w", key, err))
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

func (g *Gateway) storeUnavailable(cause error) *schema.Error {
	return &schema.Error{
		Status: http.StatusServiceUnavailable, Type: schema.TypeServer, Code: schema.CodeQueueUnavailable,
		Message: "The store of idempotent answers is unavailable; try again shortly.", RetryAfter: 1, Cause: cause,
	}
}
