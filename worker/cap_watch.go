package worker

// This file holds how a KVCap keeps its in-memory copy of the shared
// bucket current: queue.FollowBucket hands it every entry, which records
// each slot key's state and the other processes' wait keys.

import (
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// apply records one watched entry (queue.FollowBucket's callback); initial
// entries are what the bucket holds now, whatever revision was seen
// before.
func (c *KVCap) apply(e jetstream.KeyValueEntry, initial bool) {
	key := e.Key()
	live := e.Operation() == jetstream.KeyValuePut
	if prefix, proc, ok := strings.Cut(key, ".wait."); ok {
		if proc == c.cfg.Process {
			return
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		w := c.waits[prefix]
		switch {
		case live && w == nil:
			w = map[string]time.Time{}
			c.waits[prefix] = w
			fallthrough
		case live:
			w[key] = c.now()
		default:
			delete(w, key)
		}
		c.wake()
		return
	}
	if live && c.project != nil {
		c.checkProjectSize(key)
	}
	st := slotState{rev: e.Revision(), live: live, seen: c.now()}
	if initial {
		c.force(key, st)
	} else {
		c.seen(key, st)
	}
}

// seen records a slot key's state unless a newer revision is known.
func (c *KVCap) seen(key string, st slotState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cur, ok := c.slots[key]; ok && cur.rev > st.rev {
		return
	}
	c.slots[key] = st
	c.wake()
}

// force records a slot key's state as read from the bucket now.
func (c *KVCap) force(key string, st slotState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.slots[key] = st
	c.wake()
}

// wake tells the waiting callers that the copy changed; c.mu is held.
func (c *KVCap) wake() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// checkProjectSize warns, once, when key is a project slot this process's
// cap does not have: another process runs with a larger
// BRIDGE_LAAS_MAX_CONCURRENCY, and the calls in flight are bounded by the
// largest cap of any process, not by this one's.
func (c *KVCap) checkProjectSize(key string) {
	idx, ok := strings.CutPrefix(key, c.project.prefix+".slot.")
	if !ok {
		return
	}
	i, err := strconv.Atoi(idx)
	if err != nil || i < c.project.n || c.project.larger.Swap(true) {
		return
	}
	c.log.Warn("concurrency cap: another worker runs with a larger BRIDGE_LAAS_MAX_CONCURRENCY; the calls in flight are bounded by the largest cap of any worker, give every worker the same",
		"max_concurrency", c.project.n, "slot_seen", i)
}
