package worker

// This file holds how a KVLimiter keeps its in-memory copy of the shared
// bucket current: queue.FollowBucket hands it every entry, which records
// each key's state and raises the local cooldown.

import (
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// kvState is a key's value as last seen: a time in unix nanoseconds, the
// cooldown's duration, and the key's revision (0: absent).
type kvState struct {
	at, dur int64
	rev     uint64
}

// apply records one watched entry (queue.FollowBucket's callback); force
// as in store: a new watch's current values are the bucket's state now,
// even if their revisions are lower than the ones known (a memory store
// that lost its data). Updates after them only ever move forward.
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
