package worker

// This file holds how a KVLimiter keeps its in-memory copy of the shared
// bucket current: one KV watch, started again on every reconnect, that
// records each key's state and raises the local cooldown.

import (
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// kvState is a key's value as last seen: a time in unix nanoseconds, the
// cooldown's duration, and the key's revision (0: absent).
type kvState struct {
	at, dur int64
	rev     uint64
}

// watch keeps l.keys and l.cooldown up to date from w, and from a new watch
// after every reconnect or when w ends, until ctx ends. It closes ready once
// the bucket's current values are in.
func (l *KVLimiter) watch(ctx context.Context, w jetstream.KeyWatcher, ready chan struct{}, reconnected <-chan nats.Status) {
	defer close(l.watchDone)
	for {
		again := l.follow(ctx, w, &ready, reconnected)
		_ = w.Stop()
		if !again {
			return
		}
		for {
			var err error
			if w, err = l.kv.WatchAll(ctx); err == nil {
				break
			}
			if ctx.Err() != nil {
				return
			}
			l.warnEvery(&l.kvWarned, "rate limiter: cannot watch the shared bucket; retrying", "error", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			case <-reconnected:
			}
		}
	}
}

// follow applies w's updates until ctx ends (false) or the watch should be
// started again (true).
func (l *KVLimiter) follow(ctx context.Context, w jetstream.KeyWatcher, ready *chan struct{}, reconnected <-chan nats.Status) bool {
	// The current values a new watch starts with are the bucket's state
	// now, even if their revisions are lower than the ones known (a memory
	// store that lost its data). Updates after them only ever move forward.
	initial := true
	for {
		select {
		case <-ctx.Done():
			return false
		case <-reconnected:
			return true
		case e, ok := <-w.Updates():
			switch {
			case !ok:
				return ctx.Err() == nil
			case e == nil: // the current values are in
				initial = false
				if *ready != nil {
					close(*ready)
					*ready = nil
				}
			default:
				l.apply(e, initial)
			}
		}
	}
}

// apply records one watched entry; force as in store.
func (l *KVLimiter) apply(e jetstream.KeyValueEntry, force bool) {
	st := kvState{rev: e.Revision()}
	if e.Operation() == jetstream.KeyValuePut {
		var ok bool
		if st, ok = decodeState(e.Value()); !ok {
			l.log.Warn("rate limiter: ignoring a malformed value", "key", e.Key())
			return
		}
		st.rev = e.Revision()
	}
	l.store(e.Key(), st, force)
}

// store records a key's state, unless a newer revision is known already;
// force records it anyway (what the bucket holds now, read by a Get or a new
// watch).
func (l *KVLimiter) store(key string, st kvState, force bool) {
	l.mu.Lock()
	if cur, ok := l.keys[key]; ok && !force && cur.rev >= st.rev {
		l.mu.Unlock()
		return
	}
	l.keys[key] = st
	close(l.changed)
	l.changed = make(chan struct{})
	l.mu.Unlock()
	if key == limitKeyCooldown && st.at > 0 {
		// Seen from a clock far ahead, a cooldown would last too long.
		until := min(st.at, l.now().Add(time.Duration(st.dur)+l.cfg.MaxClockSkew).UnixNano())
		l.raiseCooldown(until)
	}
}

func (l *KVLimiter) raiseCooldown(until int64) {
	for {
		cur := l.cooldown.Load()
		if cur >= until || l.cooldown.CompareAndSwap(cur, until) {
			return
		}
	}
}

// decodeState reads "<unix ns>" or "<unix ns>,<duration ns>".
func decodeState(v []byte) (kvState, bool) {
	at, dur, hasDur := strings.Cut(string(v), ",")
	var st kvState
	var err error
	if st.at, err = strconv.ParseInt(at, 10, 64); err != nil {
		return st, false
	}
	if hasDur {
		if st.dur, err = strconv.ParseInt(dur, 10, 64); err != nil {
			return st, false
		}
	}
	return st, true
}

func (l *KVLimiter) state(key string) kvState {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.keys[key]
}
