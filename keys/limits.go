package keys

// This file holds Limits: a key's rpm, tpm, parallel and budget limits,
// enforced with state every gateway and worker shares through one value
// per key in the LAAS_KEY_STATE bucket, changed only by compare-and-set.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/laas-bridge/laas-bridge/schema"
)

// Limits enforces virtual keys' limits across every gateway and worker.
// The admission core calls Admit before it queues a keyed request and
// Undo when the publish then fails; the worker calls Settle when the
// request ends. Create it with OpenLimits; safe for concurrent use.
//
// What is exact, and where:
//   - rpm: Admit gives each request a slot, a whole second; no span of 61
//     seconds (every second a 60 s window can touch) ever holds more than
//     rpm slots, so no 60 s window of slots holds more than rpm, whichever
//     gateway gave them. A request with wait gets the first second with
//     room before its deadline, and the worker starts its call no earlier.
//   - max_parallel_requests: a lease per request id from Admit until Settle
//     (or its deadline plus LeaseGrace, if nothing settles it).
//   - tpm and max_budget: counted from LaaS's usage when each request
//     settles; Admit refuses once the window's tokens or the period's
//     spend reach the limit, so the overshoot is at most what the requests
//     in flight at that moment spend.
type Limits struct {
	kv  jetstream.KeyValue
	log *slog.Logger
	now func() time.Time

	// turns holds one mutex per key token: within a process one change
	// of a key's state at a time, so compare-and-set conflicts come only
	// from other processes.
	turns sync.Map // token -> *sync.Mutex
}

// LeaseGrace is how long after its deadline a parallel lease lapses when
// nothing released it (a worker that died with the request).
const LeaseGrace = time.Minute

// MaxReserveAhead is how far ahead Admit reserves an rpm slot for a
// request that waits: further out it is refused with Retry-After (a batch
// line is then offered again later), which keeps a key's state small.
const MaxReserveAhead = 10 * time.Minute

// stateTimeout bounds one change of a key's state, its turn included.
const stateTimeout = 10 * time.Second

// maxCAS bounds the compare-and-set attempts of one change; each lost
// attempt means another process changed the key's state in between.
const maxCAS = 50

// OpenLimits opens the state bucket (queue.Ensure provisions it).
func OpenLimits(ctx context.Context, js jetstream.JetStream, log *slog.Logger) (*Limits, error) {
	kv, err := js.KeyValue(ctx, schema.BucketKeyState)
	if err != nil {
		return nil, fmt.Errorf("key state bucket %s: %w", schema.BucketKeyState, err)
	}
	return &Limits{kv: kv, log: log, now: time.Now}, nil
}

// Admission is what Admit took for a request.
type Admission struct {
	// NotBefore is the request's rpm slot when it was reserved ahead (wait):
	// the worker starts the call no earlier. Zero otherwise.
	NotBefore time.Time
	token, id string
	slot      int64 // the slot's second, 0 for none
	leased    bool
}

// Limited says whether a key has any limit that Admit enforces with state.
func (k *Key) Limited() bool {
	return k.RPMLimit != nil || k.TPMLimit != nil || k.MaxParallelRequests != nil || k.MaxBudget != nil
}

// Admit checks request id of key k against the key's budget, tpm,
// max_parallel_requests and rpm, in that order, and takes a parallel
// lease and an rpm slot for it. With wait an rpm slot may be reserved
// ahead, up to deadline; without, the slot is now or the request is
// refused. A refusal is a *schema.Error: 400 budget_exceeded, or 429 with
// RetryAfter.
func (l *Limits) Admit(ctx context.Context, k *Key, id string, deadline time.Time, wait bool) (Admission, error) {
	adm := Admission{token: k.Token, id: id}
	if !k.Limited() {
		return adm, nil
	}
	err := l.update(ctx, k.Token, func(st *state) error {
		now := l.now()
		adm.slot, adm.leased, adm.NotBefore = 0, false, time.Time{}
		st.prune(now)
		st.roll(periodStart(k.CreatedAt, k.budgetEvery(), now))
		if err := k.checkUsage(st, now); err != nil {
			return err
		}
		if k.MaxParallelRequests != nil {
			_, held := st.Leases[id] // the same request again (a job id): one lease
			if !held && int64(len(st.Leases)) >= *k.MaxParallelRequests {
				return tooMany(fmt.Sprintf("This key's max_parallel_requests (%d) are in flight; retry when one finishes.", *k.MaxParallelRequests), 1)
			}
			if st.Leases == nil {
				st.Leases = map[string]int64{}
			}
			st.Leases[id] = max(st.Leases[id], deadline.Add(LeaseGrace).UnixMilli())
			adm.leased = !held
		}
		if k.RPMLimit != nil {
			rpm, sec := *k.RPMLimit, now.Unix()
			until := sec
			if wait { // the call must still start before the deadline
				until = min(deadline.Unix()-1, sec+int64(MaxReserveAhead/time.Second))
			}
			at, ok := st.firstSlot(sec, until, rpm)
			if !ok { // a wait found no slot up to until: none frees before then
				return tooMany(fmt.Sprintf("This key's rpm_limit (%d requests per minute) is reached; retry after Retry-After seconds, or send X-Laas-Bridge-Queue: wait to wait in the queue.", rpm),
					int(st.nextFree(max(sec, until), rpm)-sec))
			}
			if st.Slots == nil {
				st.Slots = map[int64]int64{}
			}
			st.Slots[at]++
			adm.slot = at
			if at > sec {
				adm.NotBefore = time.Unix(at, 0)
			}
		}
		return nil
	})
	return adm, err
}

// checkUsage refuses a key whose period's spend reached its budget or
// whose window's tokens reached its tpm.
func (k *Key) checkUsage(st *state, now time.Time) error {
	if k.MaxBudget != nil && st.Spend >= *k.MaxBudget {
		return &schema.Error{Status: http.StatusBadRequest, Type: CodeBudgetExceeded, Code: CodeBudgetExceeded,
			Message: fmt.Sprintf("Budget has been exceeded! Current cost: %g, Max budget: %g", st.Spend, *k.MaxBudget)}
	}
	if k.TPMLimit != nil {
		sec := now.Unix()
		if st.tokensInWindow(sec) >= *k.TPMLimit {
			return tooMany(fmt.Sprintf("This key's tpm_limit (%d tokens per minute) is reached; retry after Retry-After seconds.", *k.TPMLimit),
				int(st.tokensFreeAt(sec)-sec))
		}
	}
	return nil
}

// CodeBudgetExceeded is the error type and code of a key whose budget is
// spent, as LiteLLM answers it.
const CodeBudgetExceeded = "budget_exceeded"

func tooMany(msg string, retryAfter int) *schema.Error {
	return &schema.Error{Status: http.StatusTooManyRequests, Type: schema.TypeRateLimit, Code: schema.CodeRateLimitExceeded,
		Message: msg, RetryAfter: max(1, retryAfter)}
}

// Undo gives back what Admit took, for a request that was then not
// queued.
func (l *Limits) Undo(ctx context.Context, adm Admission) {
	if adm.slot == 0 && !adm.leased {
		return
	}
	err := l.update(ctx, adm.token, func(st *state) error {
		if adm.slot != 0 && st.Slots[adm.slot] > 0 {
			st.Slots[adm.slot]--
		}
		if adm.leased { // a lease held before (the same job id again) stays its own
			delete(st.Leases, adm.id)
		}
		return nil
	})
	if err != nil {
		l.log.Warn("could not give back a key's limits for a request that was not queued", "request_id", adm.id, "error", err)
	}
}

// Spent is what one request used.
type Spent struct {
	// Called says LaaS was called (the request counts in the period's
	// requests); a request that ended without a call only releases its
	// lease.
	Called                    bool
	InputTokens, OutputTokens int64
	Cost                      float64
}

// Settle ends request id of the key with token: its parallel lease is
// released and what it spent counted in the key's period and token
// window. k is the key as known now (nil when it was deleted meanwhile:
// the usage is still counted, in the period it was last counted in).
func (l *Limits) Settle(ctx context.Context, token string, k *Key, id string, s Spent) error {
	return l.update(ctx, token, func(st *state) error {
		now := l.now()
		st.prune(now)
		if k != nil {
			st.roll(periodStart(k.CreatedAt, k.budgetEvery(), now))
		}
		delete(st.Leases, id)
		if !s.Called {
			return nil
		}
		st.Requests++
		st.InputTokens += s.InputTokens
		st.OutputTokens += s.OutputTokens
		st.Spend += s.Cost
		if n := s.InputTokens + s.OutputTokens; n > 0 {
			if st.Tokens == nil {
				st.Tokens = map[int64]int64{}
			}
			st.Tokens[now.Unix()] += n
		}
		return nil
	})
}

// Usage is k's usage in its current budget period.
func (l *Limits) Usage(ctx context.Context, k *Key) (Usage, error) {
	st, _, err := l.get(ctx, k.Token)
	if err != nil {
		return Usage{}, err
	}
	now := l.now()
	st.prune(now)
	st.roll(periodStart(k.CreatedAt, k.budgetEvery(), now))
	u := Usage{Spend: st.Spend, InputTokens: st.InputTokens, OutputTokens: st.OutputTokens, Requests: st.Requests,
		InFlight: int64(len(st.Leases)), TokensThisMinute: st.tokensInWindow(now.Unix())}
	if st.Period > 0 {
		u.WindowStart = time.UnixMilli(st.Period).UTC()
	}
	if start, end, ok := period(k.CreatedAt, k.budgetEvery(), now); ok {
		start, end = start.UTC(), end.UTC()
		u.WindowStart, u.BudgetResetAt = start, &end
	}
	return u, nil
}

// Forget drops the state of a deleted key.
func (l *Limits) Forget(ctx context.Context, token string) error {
	err := l.kv.Purge(ctx, token)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	return err
}

// get reads a key's state and its revision (0: none yet).
func (l *Limits) get(ctx context.Context, token string) (state, uint64, error) {
	var st state
	e, err := l.kv.Get(ctx, token)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return st, 0, nil
	case err != nil:
		return st, 0, fmt.Errorf("read key state: %w", err)
	}
	if err := json.Unmarshal(e.Value(), &st); err != nil {
		// Unreadable state is replaced by the next write rather than
		// locking the key out for good.
		l.log.Error("a key's limit state is unreadable; starting it afresh", "error", err)
		return state{}, e.Revision(), nil
	}
	return st, e.Revision(), nil
}

// update applies change to a key's state with compare-and-set, reading
// it again after another process's write. A change that returns an error
// writes nothing and returns it.
func (l *Limits) update(ctx context.Context, token string, change func(*state) error) error {
	// A write whose caller went away may still land: run it to its outcome,
	// so what Admit took is known and can be given back.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), stateTimeout)
	defer cancel()
	turn, _ := l.turns.LoadOrStore(token, &sync.Mutex{})
	turn.(*sync.Mutex).Lock()
	defer turn.(*sync.Mutex).Unlock()
	for attempt := range maxCAS {
		if attempt > 0 {
			// Another process wrote in between: let it finish its turn.
			select {
			case <-time.After(time.Duration(rand.Int64N(int64(attempt)*int64(time.Millisecond)) + 1)):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		st, rev, err := l.get(ctx, token)
		if err != nil {
			return err
		}
		if err := change(&st); err != nil {
			return err
		}
		data, err := json.Marshal(&st)
		if err != nil {
			return err
		}
		if rev == 0 {
			_, err = l.kv.Create(ctx, token, data)
		} else {
			_, err = l.kv.Update(ctx, token, data, rev)
		}
		if err == nil {
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) && !errors.Is(err, jetstream.ErrKeyExists) {
			return fmt.Errorf("write key state: %w", err)
		}
	}
	return fmt.Errorf("write key state: %d conflicting writes in a row", maxCAS)
}

// budgetEvery is how often the key's budget resets; zero for never (or
// an unreadable budget_duration, which DecodeRequest refuses).
func (k *Key) budgetEvery() Duration {
	if k.BudgetDuration == "" {
		return Duration{}
	}
	d, err := ParseDuration(k.BudgetDuration)
	if err != nil {
		return Duration{}
	}
	return d
}

// Resolver finds a key by its token, as it is now (Store.ByToken).
type Resolver interface {
	ByToken(token string) (*Key, bool)
}

// UsageReader reads a key's usage by its token, for /key/info: the key as
// r knows it, its usage from l.
func UsageReader(l *Limits, r Resolver) interface {
	Usage(ctx context.Context, token string) (Usage, error)
} {
	return usageReader{l, r}
}

type usageReader struct {
	l *Limits
	r Resolver
}

func (u usageReader) Usage(ctx context.Context, token string) (Usage, error) {
	k, ok := u.r.ByToken(token)
	if !ok {
		return Usage{}, ErrNotFound
	}
	return u.l.Usage(ctx, k)
}
