package worker

// This file holds a KVCap's leases: claiming a slot (a write with a TTL,
// compare-and-set on the revision last seen), rewriting the leases it
// holds and its wait keys (the keeper), and giving a slot back.

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// lease is one slot this process holds.
type lease struct {
	key  string
	lost func()

	mu      sync.Mutex // held while the lease is written
	rev     uint64
	renewed time.Time   // when the last write the server accepted was sent (this process's clock)
	gone    bool        // released, or lost
	expiry  *time.Timer // calls expire once the lease is not renewed for lostAfter
}

// claim writes key, expected at revision rev (0: absent), with the lease's
// TTL; it returns the lease, held and renewed from now on.
func (c *KVCap) claim(ctx context.Context, key string, rev uint64, lost func()) (*lease, error) {
	now := c.now()
	next, err := c.write(ctx, key, &rev, false)
	if err != nil {
		return nil, err
	}
	c.seen(key, slotState{rev: next, live: true, seen: now})
	l := &lease{key: key, lost: lost, rev: next, renewed: now}
	l.mu.Lock()
	l.expiry = time.AfterFunc(c.lostAfter()-c.now().Sub(now), func() { c.expire(l) })
	l.mu.Unlock()
	c.held.Store(l, struct{}{})
	return l, nil
}

// lostAfter is how long after a lease's last accepted write was sent this
// process takes it as lost, if no renewal was accepted since: half a beat
// before the server may remove it (its TTL runs from when the server got
// the write, which is later), so the call stops before another process
// can take the slot.
func (c *KVCap) lostAfter() time.Duration { return c.ttl - c.beat/2 }

// expire takes l as lost if it has not been renewed for lostAfter (l's
// timer), whatever the keeper is doing: a renewal that hangs on a
// connection cut off from NATS, or a keeper that falls behind, does not
// delay it.
func (c *KVCap) expire(l *lease) {
	l.mu.Lock()
	if l.gone || c.now().Sub(l.renewed) < c.lostAfter() {
		l.mu.Unlock()
		return
	}
	l.gone = true
	l.mu.Unlock()
	c.held.Delete(l)
	c.log.Warn("concurrency cap: a slot's lease was lost (not renewed within its TTL); its call is stopped", "key", l.key, "lease_ttl", c.ttl)
	l.lost()
}

// release gives l's slot back: a delete marker, expected at l's revision
// (a lease lost meanwhile is someone else's now). If NATS does not take
// it, the lease expires by its TTL.
func (c *KVCap) release(l *lease) {
	c.held.Delete(l)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.gone {
		return
	}
	l.gone = true
	l.expiry.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), kvOpTimeout)
	defer cancel()
	rev := l.rev
	next, err := c.write(ctx, l.key, &rev, true)
	if err == nil {
		c.seen(l.key, slotState{rev: next, seen: c.now()})
	} else if !isWrongLastSeq(err) {
		c.warnEvery("concurrency cap: could not give a slot back; it frees when its lease expires", "key", l.key, "lease_ttl", c.ttl, "error", err)
	}
}

// write publishes key's next value: a lease (this process's id, with the
// lease TTL) or a delete marker. rev, when set, is the revision the key
// must be at (0: absent).
func (c *KVCap) write(ctx context.Context, key string, rev *uint64, del bool) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, kvOpTimeout)
	defer cancel()
	m := &nats.Msg{Subject: c.subj + key}
	opts := make([]jetstream.PublishOpt, 0, 2)
	if del {
		m.Header = nats.Header{"KV-Operation": []string{"DEL"}}
	} else {
		m.Data = c.self
		opts = append(opts, jetstream.WithMsgTTL(c.ttl))
	}
	if rev != nil {
		opts = append(opts, jetstream.WithExpectLastSequencePerSubject(*rev))
	}
	ack, err := c.js.PublishMsg(ctx, m, opts...)
	if err != nil {
		return 0, err
	}
	return ack.Sequence, nil
}

// reread reads key from the bucket after a lost compare-and-set: the
// watch may not have delivered the winner's write yet, or the marker the
// cache knows has expired.
func (c *KVCap) reread(ctx context.Context, key string) error {
	ctx, cancel := context.WithTimeout(ctx, kvOpTimeout)
	defer cancel()
	s, err := c.kvStream(ctx)
	if err != nil {
		return err
	}
	m, err := s.GetLastMsgForSubject(ctx, c.subj+key)
	now := c.now()
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		c.force(key, slotState{seen: now})
		return nil
	case err != nil:
		return err
	}
	live := m.Header.Get("KV-Operation") == "" && m.Header.Get(jetstream.MarkerReasonHeader) == ""
	c.force(key, slotState{rev: m.Sequence, live: live, seen: now})
	return nil
}

// kvStream is the bucket's stream, looked up on first use.
func (c *KVCap) kvStream(ctx context.Context) (jetstream.Stream, error) {
	if s := c.stream.Load(); s != nil {
		return *s, nil
	}
	s, err := c.js.Stream(ctx, "KV_"+c.cfg.Bucket)
	if err != nil {
		return nil, err
	}
	c.stream.Store(&s)
	return s, nil
}

// keep rewrites every held lease and this process's wait keys every beat,
// and withdraws a wait key as soon as its scope's interactive callers are
// gone, until Close.
func (c *KVCap) keep() {
	defer close(c.done)
	t := time.NewTicker(c.beat)
	defer t.Stop()
	for {
		renew := false
		select {
		case <-c.stop:
			c.withdrawAll()
			return
		case <-t.C:
			renew = true
		case <-c.kick:
		}
		// Every lease at once: one after the other, n leases would need
		// n round trips each beat, and a slow link would lose them.
		var renewals sync.WaitGroup
		if renew {
			c.held.Range(func(k, _ any) bool {
				renewals.Go(func() { c.renew(k.(*lease)) })
				return true
			})
		}
		c.eachScope(func(s *capScope) { c.advertiseTick(s, renew) })
		renewals.Wait()
	}
}

// renew rewrites l with a fresh TTL. A lease the server no longer has as
// written is lost at once; one that cannot be rewritten is retried next
// beat, and lost when its timer fires (expire).
func (c *KVCap) renew(l *lease) {
	l.mu.Lock()
	if l.gone {
		l.mu.Unlock()
		return
	}
	now := c.now()
	// The write must not outlast the lease: expire waits for it.
	left := l.renewed.Add(c.lostAfter()).Sub(now)
	if left <= 0 {
		l.mu.Unlock()
		return // expire takes it
	}
	ctx, cancel := context.WithTimeout(context.Background(), min(kvOpTimeout, c.beat, left))
	rev := l.rev
	next, err := c.write(ctx, l.key, &rev, false)
	cancel()
	lost := false
	switch {
	case err == nil:
		l.rev, l.renewed = next, now
		l.expiry.Reset(c.lostAfter() - c.now().Sub(now))
		c.seen(l.key, slotState{rev: next, live: true, seen: now})
	case isWrongLastSeq(err):
		l.gone, lost = true, true
		l.expiry.Stop()
	default:
		c.warnEvery("concurrency cap: could not renew a slot's lease; retrying", "key", l.key, "error", err)
	}
	l.mu.Unlock()
	if lost {
		c.held.Delete(l)
		c.log.Warn("concurrency cap: a slot's lease was lost (another process holds it now); its call is stopped", "key", l.key, "lease_ttl", c.ttl, "error", err)
		l.lost()
	}
}

// advertise writes this process's wait key of s, unless it is there: an
// interactive caller of this process waits for a slot.
func (c *KVCap) advertise(ctx context.Context, s *capScope) {
	s.advMu.Lock()
	defer s.advMu.Unlock()
	if s.advertised || s.interactive.Load() == 0 {
		return
	}
	if _, err := c.write(ctx, c.waitKey(s), nil, false); err != nil {
		c.warnEvery("concurrency cap: could not tell other workers that interactive calls wait", "error", err)
		return
	}
	s.advertised = true
}

// advertiseTick withdraws s's wait key once no interactive caller waits,
// and rewrites it (renew) while one does.
func (c *KVCap) advertiseTick(s *capScope, renew bool) {
	s.advMu.Lock()
	defer s.advMu.Unlock()
	if !s.advertised {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), kvOpTimeout)
	defer cancel()
	switch {
	case s.interactive.Load() == 0:
		if _, err := c.write(ctx, c.waitKey(s), nil, true); err == nil {
			s.advertised = false
		}
	case renew:
		_, _ = c.write(ctx, c.waitKey(s), nil, false)
	}
}

// withdrawAll removes this process's wait keys (Close).
func (c *KVCap) withdrawAll() {
	c.eachScope(func(s *capScope) {
		s.interactive.Store(0)
		c.advertiseTick(s, false)
	})
}

func (c *KVCap) eachScope(f func(*capScope)) {
	if c.project != nil {
		f(c.project)
	}
	c.models.Range(func(_, v any) bool {
		f(v.(*capScope))
		return true
	})
}

func (c *KVCap) waitKey(s *capScope) string { return s.prefix + ".wait." + c.cfg.Process }

// isWrongLastSeq reports a lost compare-and-set: the key is not at the
// revision expected (10071; 10164 on replicated streams).
func isWrongLastSeq(err error) bool {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	return apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant
}
