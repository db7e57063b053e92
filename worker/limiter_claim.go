package worker

// This file holds how a KVLimiter claims call slots in the shared
// schedules (GCRA by compare-and-set on the bucket's keys): the turn, the
// reach check, the claim itself and its conflict handling.

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// claim takes g's turn in this process and claims a slot in each of g's
// schedules; it returns when the call may start. A batch call gives the
// turn up while it waits, whenever an interactive call wants it.
func (l *KVLimiter) claim(ctx context.Context, g *rateGate, lane Lane) (time.Time, error) {
	urgent, err := g.turn.take(ctx, lane)
	if err != nil {
		return time.Time{}, err
	}
	held := true
	defer func() {
		if held {
			g.turn.release()
		}
	}()
	backoff := 50 * time.Millisecond
	for {
		at, wait, changed, err := l.reserve(ctx, g, lane)
		switch {
		case err != nil:
			if ctx.Err() != nil {
				return time.Time{}, ctx.Err()
			}
			l.warnEvery(&l.kvWarned, "rate limiter: the shared bucket is unavailable; calls wait", "error", err)
			wait, changed = backoff, nil
			backoff = min(2*backoff, 2*time.Second)
		case !at.IsZero():
			return at, nil
		}
		if err := sleepOrWake(ctx, wait, changed, urgent); err != nil {
			return time.Time{}, err
		}
		select {
		case <-urgent: // nothing claimed yet: let the interactive call go first
			if urgent, err = g.turn.yield(ctx); err != nil {
				held = false
				return time.Time{}, err
			}
		default:
		}
	}
}

// reserve claims the call's slots if they start within its lane's reach
// (Horizon, or g.batchReach). It returns the start, or how long to wait
// (woken early by changed) before trying again; neither means try again
// now.
func (l *KVLimiter) reserve(ctx context.Context, g *rateGate, lane Lane) (at time.Time, wait time.Duration, changed <-chan struct{}, err error) {
	select {
	case l.claiming <- struct{}{}:
	case <-ctx.Done():
		return time.Time{}, 0, nil, ctx.Err()
	}
	defer func() { <-l.claiming }()
	// A bucket that does not answer must not hold the other claims up.
	ctx, cancel := context.WithTimeout(ctx, kvOpTimeout)
	defer cancel()
	now := l.now()
	earliest := max(now.UnixNano(), l.cooldown.Load())
	slots := make([]kvState, len(g.scopes))
	l.mu.Lock()
	changed = l.changed
	for i, s := range g.scopes {
		slots[i] = l.keys[s.key]
	}
	l.mu.Unlock()
	// Each schedule's slot starts at its own next free time; the call
	// starts when the last of them does.
	t := earliest
	for i, s := range g.scopes {
		t = max(t, l.sane(s, slots[i].at, now))
	}
	reach := now.Add(g.reach(lane, l.cfg.Horizon)).UnixNano()
	if t > reach {
		return time.Time{}, time.Duration(t - reach), changed, nil
	}
	for i, s := range g.scopes {
		cur := slots[i]
		for {
			start := max(earliest, l.sane(s, cur.at, now))
			if i > 0 && start > now.Add(2*l.cfg.Horizon).UnixNano() {
				return time.Time{}, 0, nil, nil // the earlier slots go unused
			}
			next := start + int64(s.interval)
			rev, err := l.cas(ctx, s.key, strconv.AppendInt(nil, next, 10), cur.rev)
			if err == nil {
				l.store(s.key, kvState{at: next, rev: rev}, false)
				t = max(t, start)
				break
			}
			if !isConflict(err) {
				return time.Time{}, 0, nil, err
			}
			if err := l.refresh(ctx, s.key); err != nil {
				return time.Time{}, 0, nil, err
			}
			if i == 0 {
				return time.Time{}, 0, nil, nil // nothing claimed yet: recheck the horizon
			}
			cur = l.state(s.key)
		}
	}
	return time.Unix(0, t), 0, nil, nil
}

// sane returns a schedule's next start as this process should take it: a
// time further ahead than any process could have claimed comes from a clock
// far ahead of this one, and is taken as now.
func (l *KVLimiter) sane(s rateScope, at int64, now time.Time) int64 {
	limit := now.Add(2*l.cfg.Horizon + s.interval + l.cfg.MaxClockSkew).UnixNano()
	if at <= limit {
		return at
	}
	l.warnEvery(&l.skewWarned, "rate limiter: a worker's clock is ahead of this one by more than the allowed skew; pacing across them is not exact until the clocks agree",
		"key", s.key, "ahead", time.Duration(at-now.UnixNano()-int64(2*l.cfg.Horizon+s.interval)).Round(time.Millisecond), "max_clock_skew", l.cfg.MaxClockSkew)
	return now.UnixNano()
}

// cas writes value to key if its revision is still rev (0: absent).
func (l *KVLimiter) cas(ctx context.Context, key string, value []byte, rev uint64) (uint64, error) {
	if rev == 0 {
		return l.kv.Create(ctx, key, value)
	}
	return l.kv.Update(ctx, key, value, rev)
}

func isConflict(err error) bool {
	return errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists)
}

// refresh reads key from the bucket after a lost compare-and-set; the watch
// may not have delivered the winner's write yet.
func (l *KVLimiter) refresh(ctx context.Context, key string) error {
	e, err := l.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		l.store(key, kvState{}, true)
		return nil
	}
	if err != nil {
		return err
	}
	st, ok := decodeState(e.Value())
	if !ok {
		st = kvState{} // overwritten by the next claim
	}
	st.rev = e.Revision()
	l.store(key, st, true)
	return nil
}
