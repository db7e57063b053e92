package keys

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/laas-bridge/laas-bridge/queue"
	"github.com/laas-bridge/laas-bridge/schema"
)

// limitsOn starts an embedded NATS with the queue's buckets and returns n
// Limits, each on its own connection (as separate gateways would be),
// sharing the clock *now.
func limitsOn(t testing.TB, n int, now *time.Time) []*Limits {
	t.Helper()
	srv, err := queue.StartEmbedded(queue.EmbeddedConfig{StoreDir: t.TempDir(), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatalf("StartEmbedded: %v", err)
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return *now }
	var out []*Limits
	for i := range n {
		nc, err := nats.Connect(srv.ClientURL())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		if i == 0 {
			if _, err := queue.Ensure(ctx, js, queue.Config{}, queue.WithLogger(slog.New(slog.DiscardHandler))); err != nil {
				t.Fatalf("Ensure: %v", err)
			}
		}
		l, err := OpenLimits(ctx, js, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatalf("OpenLimits: %v", err)
		}
		l.now = clock
		out = append(out, l)
	}
	return out
}

func ptr[T any](v T) *T { return &v }

// refusal asserts err is a *schema.Error with status and code, and returns it.
func refusal(t *testing.T, err error, status int, code string) *schema.Error {
	t.Helper()
	var e *schema.Error
	if !errors.As(err, &e) || e.Status != status || e.Code != code {
		t.Fatalf("err = %v, want %d %s", err, status, code)
	}
	return e
}

func TestLimitsRPM(t *testing.T) {
	now := time.Unix(1_800_000_000, 500e6)
	l := limitsOn(t, 1, &now)[0]
	ctx := t.Context()
	k := &Key{Token: Hash("a"), RPMLimit: ptr[int64](3)}
	deadline := now.Add(10 * time.Minute)
	for i := range 3 {
		if _, err := l.Admit(ctx, k, "r"+itoa(i), deadline, false); err != nil {
			t.Fatalf("call %d: %v", i+1, err)
		}
	}
	e := refusal(t, func() error { _, err := l.Admit(ctx, k, "r3", deadline, false); return err }(), http.StatusTooManyRequests, schema.CodeRateLimitExceeded)
	if e.RetryAfter != 61 {
		t.Errorf("Retry-After = %d, want 61 (the three slots leave the 61 s span one second after the minute)", e.RetryAfter)
	}
	// With wait, the fourth call gets the first second with room: 61 s on.
	adm, err := l.Admit(ctx, k, "r4", deadline, true)
	if err != nil {
		t.Fatalf("wait: %v", err)
	}
	if want := time.Unix(now.Unix()+61, 0); !adm.NotBefore.Equal(want) {
		t.Errorf("NotBefore = %v, want %v", adm.NotBefore, want)
	}
	// A wait that cannot start before its deadline is refused.
	refusal(t, func() error { _, err := l.Admit(ctx, k, "r5", now.Add(30*time.Second), true); return err }(), http.StatusTooManyRequests, schema.CodeRateLimitExceeded)
	// Undo gives the slot back.
	l.Undo(ctx, adm)
	if adm2, err := l.Admit(ctx, k, "r6", deadline, true); err != nil || !adm2.NotBefore.Equal(adm.NotBefore) {
		t.Errorf("after Undo: NotBefore %v, err %v; want the same slot %v", adm2.NotBefore, err, adm.NotBefore)
	}
}

// Many gateways admitting at once never give more slots than the limit
// in any window: every call in every 61-second span is counted.
func TestLimitsRPMExactAcrossProcesses(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	ls := limitsOn(t, 3, &now)
	k := &Key{Token: Hash("b"), RPMLimit: ptr[int64](20)}
	var mu sync.Mutex
	admitted := 0
	var wg sync.WaitGroup
	for i := range 60 {
		wg.Go(func() {
			_, err := ls[i%3].Admit(t.Context(), k, "r"+itoa(i), now.Add(time.Minute), false)
			switch {
			case err == nil:
				mu.Lock()
				admitted++
				mu.Unlock()
			default:
				refusal(t, err, http.StatusTooManyRequests, schema.CodeRateLimitExceeded)
			}
		})
	}
	wg.Wait()
	if admitted != 20 {
		t.Errorf("admitted %d of 60 concurrent calls from 3 processes, want exactly the rpm_limit, 20", admitted)
	}
}

func TestLimitsParallel(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	l := limitsOn(t, 1, &now)[0]
	ctx := t.Context()
	k := &Key{Token: Hash("c"), MaxParallelRequests: ptr[int64](2)}
	deadline := now.Add(time.Minute)
	for _, id := range []string{"a", "b", "b"} { // the same id again holds one lease
		if _, err := l.Admit(ctx, k, id, deadline, false); err != nil {
			t.Fatalf("%s: %v", id, err)
		}
	}
	refusal(t, func() error { _, err := l.Admit(ctx, k, "c", deadline, false); return err }(), http.StatusTooManyRequests, schema.CodeRateLimitExceeded)
	if err := l.Settle(ctx, k.Token, k, "a", Spent{}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Admit(ctx, k, "c", deadline, false); err != nil {
		t.Fatalf("after a lease was released: %v", err)
	}
	// A lease nothing released lapses LeaseGrace after its deadline.
	now = deadline.Add(LeaseGrace)
	if _, err := l.Admit(ctx, k, "d", now.Add(time.Minute), false); err != nil {
		t.Fatalf("after the leases lapsed: %v", err)
	}
	if _, err := l.Admit(ctx, k, "e", now.Add(time.Minute), false); err != nil {
		t.Fatalf("second after the leases lapsed: %v", err)
	}
}

func TestLimitsBudgetAndTPM(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	l := limitsOn(t, 1, &now)[0]
	ctx := t.Context()
	created := now
	k := &Key{Token: Hash("d"), MaxBudget: ptr(0.5), BudgetDuration: "1h", TPMLimit: ptr[int64](1000), CreatedAt: created}
	deadline := now.Add(time.Minute)
	if _, err := l.Admit(ctx, k, "a", deadline, false); err != nil {
		t.Fatal(err)
	}
	if err := l.Settle(ctx, k.Token, k, "a", Spent{Called: true, InputTokens: 10, OutputTokens: 20, Cost: 0.25}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Admit(ctx, k, "b", deadline, false); err != nil {
		t.Fatalf("a quarter spent of half: %v", err)
	}
	if err := l.Settle(ctx, k.Token, k, "b", Spent{Called: true, InputTokens: 500, OutputTokens: 470, Cost: 0.25}); err != nil {
		t.Fatal(err)
	}
	e := refusal(t, func() error { _, err := l.Admit(ctx, k, "c", deadline, false); return err }(), http.StatusBadRequest, CodeBudgetExceeded)
	if e.Type != CodeBudgetExceeded || e.Message != "Budget has been exceeded! Current cost: 0.5, Max budget: 0.5" {
		t.Errorf("budget refusal = %+v", e)
	}
	u, err := l.Usage(ctx, k)
	if err != nil {
		t.Fatal(err)
	}
	if u.Spend != 0.5 || u.InputTokens != 510 || u.OutputTokens != 490 || u.Requests != 2 || u.TokensThisMinute != 1000 {
		t.Errorf("usage = %+v", u)
	}
	if want := created.Add(time.Hour).UTC(); u.BudgetResetAt == nil || !u.BudgetResetAt.Equal(want) {
		t.Errorf("budget resets at %v, want %v", u.BudgetResetAt, want)
	}
	// Without a budget the tokens refuse: 1000 in the window.
	k.MaxBudget = nil
	e = refusal(t, func() error { _, err := l.Admit(ctx, k, "c", deadline, false); return err }(), http.StatusTooManyRequests, schema.CodeRateLimitExceeded)
	if e.RetryAfter != 61 {
		t.Errorf("tpm Retry-After = %d, want 61", e.RetryAfter)
	}
	// The next period starts afresh.
	k.MaxBudget = ptr(0.5)
	now = created.Add(time.Hour)
	if _, err := l.Admit(ctx, k, "d", now.Add(time.Minute), false); err != nil {
		t.Fatalf("in the next budget period: %v", err)
	}
	if u, _ := l.Usage(ctx, k); u.Spend != 0 || u.Requests != 0 || !u.WindowStart.Equal(now.UTC()) {
		t.Errorf("next period's usage = %+v", u)
	}
}

func itoa(i int) string { return string(rune('0'+i/10)) + string(rune('0'+i%10)) }

// Undo gives back only what its Admit took: a duplicate of a request
// still in flight (the same job id again) leaves that request's lease.
func TestLimitsUndoKeepsAHeldLease(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	l := limitsOn(t, 1, &now)[0]
	ctx := t.Context()
	k := &Key{Token: Hash("u"), MaxParallelRequests: ptr[int64](1), RPMLimit: ptr[int64](100)}
	if _, err := l.Admit(ctx, k, "job", now.Add(time.Hour), false); err != nil {
		t.Fatal(err)
	}
	dup, err := l.Admit(ctx, k, "job", now.Add(time.Hour), false)
	if err != nil {
		t.Fatal(err)
	}
	l.Undo(ctx, dup) // the duplicate was not queued
	refusal(t, func() error { _, err := l.Admit(ctx, k, "other", now.Add(time.Hour), false); return err }(), http.StatusTooManyRequests, schema.CodeRateLimitExceeded)
}

// Calendar-month budget periods count months where the key was made,
// whatever the zone of the clock reading them.
func TestPeriodMonthsAcrossZones(t *testing.T) {
	created := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	month, _ := ParseDuration("1mo")
	for _, zone := range []*time.Location{time.UTC, time.FixedZone("UTC-5", -5*3600), time.FixedZone("UTC+9", 9*3600)} {
		now := time.Date(2025, 2, 1, 2, 0, 0, 0, time.UTC).In(zone)
		start, end, ok := period(created, month, now)
		if !ok || !start.Equal(time.Date(2025, 2, 1, 0, 0, 0, 0, time.UTC)) || !end.Equal(time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)) {
			t.Errorf("%s: period %v to %v, want February", zone, start, end)
		}
	}
}

func TestParseDurationBounds(t *testing.T) {
	for _, in := range []string{"110000d", "999999999mo", "5300w"} {
		if d, err := ParseDuration(in); err == nil {
			t.Errorf("ParseDuration(%q) = %v, want refused (over 100 years)", in, d)
		}
	}
	if _, err := ParseDuration("1200mo"); err != nil {
		t.Errorf("100 years refused: %v", err)
	}
}

// Forget drops a deleted key's state: a key made again with the same
// secret starts with nothing spent.
func TestLimitsForget(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	l := limitsOn(t, 1, &now)[0]
	ctx := t.Context()
	k := &Key{Token: Hash("f"), MaxBudget: ptr(1.0)}
	if err := l.Settle(ctx, k.Token, k, "a", Spent{Called: true, Cost: 1}); err != nil {
		t.Fatal(err)
	}
	refusal(t, func() error { _, err := l.Admit(ctx, k, "b", now.Add(time.Minute), false); return err }(), http.StatusBadRequest, CodeBudgetExceeded)
	if err := l.Forget(ctx, k.Token); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Admit(ctx, k, "c", now.Add(time.Minute), false); err != nil {
		t.Errorf("after Forget: %v", err)
	}
	if err := l.Forget(ctx, Hash("never-used")); err != nil {
		t.Errorf("Forget of a key with no state: %v", err)
	}
}
