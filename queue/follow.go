package queue

// This file holds FollowBucket: a process's copy of a key-value bucket,
// kept current by one watch that is started again on every reconnect.

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// FollowBucket watches every key of kv and hands each entry to apply, in
// order, from one goroutine: first the bucket's current values (initial
// true: what the bucket holds now, whatever revisions were seen before, as
// after a memory store lost its data), then every update (initial false).
// A watch does not survive a NATS server restart quickly (its ordered
// consumer notices only after missed heartbeats), so a new one is started
// after every reconnect of kv's connection nc and whenever a watch ends;
// one that cannot be started is retried every second, each failure handed
// to warn.
//
// FollowBucket returns once the first watch's current values are applied,
// or ctx's error if ctx ends first. stop ends the watch and waits for its
// goroutine; apply is not called after stop returns.
func FollowBucket(ctx context.Context, kv jetstream.KeyValue, nc *nats.Conn, apply func(e jetstream.KeyValueEntry, initial bool), warn func(error)) (stop func(), err error) {
	watchCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	w, err := kv.WatchAll(watchCtx)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("watch bucket %s: %w", kv.Bucket(), err)
	}
	reconnected := nc.StatusChanged(nats.CONNECTED)
	done, ready := make(chan struct{}), make(chan struct{})
	f := follower{kv: kv, apply: apply, warn: warn, reconnected: reconnected, ready: ready}
	go func() {
		defer close(done)
		f.run(watchCtx, w)
	}()
	stop = func() {
		cancel()
		nc.RemoveStatusListener(reconnected)
		<-done
	}
	select {
	case <-ready:
		return stop, nil
	case <-ctx.Done():
		stop()
		return nil, fmt.Errorf("load bucket %s: %w", kv.Bucket(), ctx.Err())
	}
}

type follower struct {
	kv          jetstream.KeyValue
	apply       func(e jetstream.KeyValueEntry, initial bool)
	warn        func(error)
	reconnected <-chan nats.Status
	ready       chan struct{} // closed once the first watch's values are in; nil after
}

// run follows w, and a new watch after every reconnect or when w ends,
// until ctx ends.
func (f *follower) run(ctx context.Context, w jetstream.KeyWatcher) {
	for {
		again := f.follow(ctx, w)
		_ = w.Stop()
		if !again {
			return
		}
		for {
			var err error
			if w, err = f.kv.WatchAll(ctx); err == nil {
				break
			}
			if ctx.Err() != nil {
				return
			}
			f.warn(err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			case <-f.reconnected:
			}
		}
	}
}

// follow applies w's entries until ctx ends (false) or the watch should be
// started again (true).
func (f *follower) follow(ctx context.Context, w jetstream.KeyWatcher) bool {
	initial := true
	for {
		select {
		case <-ctx.Done():
			return false
		case <-f.reconnected:
			return true
		case e, ok := <-w.Updates():
			switch {
			case !ok:
				return ctx.Err() == nil
			case e == nil: // the current values are in
				initial = false
				if f.ready != nil {
					close(f.ready)
					f.ready = nil
				}
			default:
				f.apply(e, initial)
			}
		}
	}
}
