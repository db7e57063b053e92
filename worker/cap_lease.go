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
	renewed time.Time // the last write the server accepted (this process's clock)
	gone    bool      // released, or lost
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
	c.held.Store(l, struct{}{})
	return l, nil
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
		if renew {
			c.held.Range(func(k, _ any) bool {
				c.renew(k.(*lease))
				return true
			})
		}
		c.eachScope(func(s *capScope) { c.advertiseTick(s, renew) })
	}
}

// renew rewrites l with a fresh TTL; a lease the server no longer has as
// written, or one not renewed for its TTL, is lost.
func (c *KVCap) renew(l *lease) {
	l.mu.Lock()
	if l.gone {
		l.mu.Unlock()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), min(kvOpTimeout, c.beat))
	rev := l.rev
	now := c.now()
	next, err := c.write(ctx, l.key, &rev, false)
	cancel()
	lost := false
	switch {
	case err == nil:
		l.rev, l.renewed = next, now
		c.seen(l.key, slotState{rev: next, live: true, seen: now})
	case isWrongLastSeq(err) || c.now().Sub(l.renewed) >= c.ttl:
		l.gone, lost = true, true
	default:
		c.warnEvery("concurrency cap: could not renew a slot's lease; retrying", "key", l.key, "error", err)
	}
	l.mu.Unlock()
	if lost {
		c.held.Delete(l)
		c.log.Warn("concurrency cap: a slot's lease was lost (not renewed within its TTL); its call is stopped", "key", l.key, "lease_ttl", c.ttl, "error", err)
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
