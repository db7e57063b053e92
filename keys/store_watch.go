package keys

// This file holds how a Store keeps its copy of the bucket current: one KV
// watch, started again on every reconnect (as worker.KVLimiter's).

import (
	"context"
	"encoding/json"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// watch applies w's entries, and a new watch's after every reconnect or
// when w ends, until ctx ends. It closes ready once the current keys are
// in.
func (s *Store) watch(ctx context.Context, w jetstream.KeyWatcher, ready chan struct{}, reconnected <-chan nats.Status) {
	defer close(s.watchDone)
	for {
		again := s.follow(ctx, w, &ready, reconnected)
		_ = w.Stop()
		if !again {
			return
		}
		for {
			var err error
			if w, err = s.kv.WatchAll(ctx); err == nil {
				break
			}
			if ctx.Err() != nil {
				return
			}
			s.log.Warn("keys: cannot watch the keys bucket; retrying", "error", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			case <-reconnected:
			}
		}
	}
}

// follow applies w's entries until ctx ends (false) or the watch should be
// started again (true). Deleted keys come as delete markers, which the
// bucket keeps (it never purges), so a new watch's current values include
// them.
func (s *Store) follow(ctx context.Context, w jetstream.KeyWatcher, ready *chan struct{}, reconnected <-chan nats.Status) bool {
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
				if *ready != nil {
					close(*ready)
					*ready = nil
				}
			default:
				s.apply(e)
			}
		}
	}
}

// apply records one watched entry.
func (s *Store) apply(e jetstream.KeyValueEntry) {
	if e.Operation() != jetstream.KeyValuePut {
		s.store(e.Key(), entry{rev: e.Revision()})
		return
	}
	var k Key
	if err := json.Unmarshal(e.Value(), &k); err != nil || k.Token != e.Key() {
		s.log.Warn("keys: ignoring a malformed entry", "token_prefix", e.Key()[:min(12, len(e.Key()))])
		return
	}
	s.store(e.Key(), entry{key: &k, rev: e.Revision()})
}
