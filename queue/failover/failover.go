// Package failover publishes to JetStream across a stream leader election.
//
// On a NATS cluster, a stream whose leader's node dies has no leader for a
// few seconds (JetStream's election timeout is 4 to 9 s). A publish in that
// window gets no answer at all: jetstream.PublishMsg waits out its context
// and fails, although the next node would take the message a moment later.
// Publish sends the same message again, in short attempts, until it is
// stored or the caller's context ends. The message keeps its Nats-Msg-Id,
// so a retry after an attempt whose ack was lost is de-duplicated by the
// stream, never stored twice.
package failover

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Attempt bounds one publish attempt: a stream with a leader acks in
// milliseconds, so a silent attempt is one that went to a stream
// between leaders.
const Attempt = 2 * time.Second

// pause is the wait between two attempts.
const pause = 200 * time.Millisecond

// Publish publishes msg to js and waits for the stream's ack, retrying what
// a leader election or a reconnect makes fail (see Retry) until ctx ends.
// Any other error (a full stream, a refused message) returns at once.
//
// maybeStored reports that an earlier attempt got no answer, so the stream
// may hold the message from it: a Duplicate ack then means this very
// message, not another publisher's with the same Nats-Msg-Id.
func Publish(ctx context.Context, js jetstream.JetStream, msg *nats.Msg) (ack *jetstream.PubAck, maybeStored bool, err error) {
	maybeStored, err = Retry(ctx, Attempt, func(ctx context.Context) (err error) {
		ack, err = js.PublishMsg(ctx, msg)
		return err
	})
	if err != nil {
		return nil, maybeStored, err
	}
	return ack, maybeStored, nil
}

// Retry runs op, each attempt bounded by attempt, until it succeeds, fails
// with an error Retryable does not accept, or ctx ends; it pauses briefly
// between attempts. Every write to JetStream that must ride out a leader
// election goes through it: a publish, a key-value create, an object put.
// timedOut reports that an attempt got no answer in time, so it may have
// taken effect although it failed.
func Retry(ctx context.Context, attempt time.Duration, op func(ctx context.Context) error) (timedOut bool, err error) {
	for {
		actx, cancel := context.WithTimeout(ctx, attempt)
		err = op(actx)
		cancel()
		if err == nil || ctx.Err() != nil || !Retryable(err) {
			return timedOut, err
		}
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) {
			timedOut = true
		}
		select {
		case <-ctx.Done():
			return timedOut, err
		case <-time.After(pause):
		}
	}
}

// Retryable reports an error a leader election or a reconnect causes: no
// answer in time, no responders, JetStream temporarily unavailable, a
// connection that does not buffer while it reconnects.
func Retryable(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, nats.ErrReconnectBufExceeded) { // an unbuffered connection reconnecting
		return true
	}
	// Only "JetStream system temporarily unavailable": other 503s, such as
	// a full stream (store failed), are answers, not a failover.
	var api *jetstream.APIError
	return errors.As(err, &api) && api.ErrorCode == jsClusterNotAvailable
}

// jsClusterNotAvailable is the server's JSClusterNotAvailErr.
const jsClusterNotAvailable jetstream.ErrorCode = 10008
