package admission

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/laas-bridge/laas-bridge/keys"
	"github.com/laas-bridge/laas-bridge/queue"
	"github.com/laas-bridge/laas-bridge/schema"
)

// fakeLimits records what the core asks of a key's limits.
type fakeLimits struct {
	mu     sync.Mutex
	admits []string // id, "+wait" when asked to wait
	undone []string
	refuse error
	ahead  time.Time // NotBefore it hands out
}

func (f *fakeLimits) Admit(_ context.Context, k *keys.Key, id string, _ time.Time, wait bool) (keys.Admission, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if wait {
		id += "+wait"
	}
	f.admits = append(f.admits, k.Token+"/"+id)
	return keys.Admission{NotBefore: f.ahead}, f.refuse
}

func (f *fakeLimits) Undo(_ context.Context, adm keys.Admission) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.undone = append(f.undone, adm.NotBefore.String())
}

// A keyed request passes its key's limits before it is queued: a refusal
// is the caller's answer and nothing is queued; an admitted one carries
// its owner and reserved slot; one not queued after all (a duplicate job)
// gives back what it took. The admin's requests skip the limits.
func TestAdmitKeyLimits(t *testing.T) {
	limits := &fakeLimits{}
	c, q := openCore(t, queue.Config{Memory: true}, Config{Limits: limits})
	key := keys.Caller{Key: &keys.Key{Token: "tok"}}

	limits.refuse = &schema.Error{Status: http.StatusTooManyRequests, Code: schema.CodeRateLimitExceeded, RetryAfter: 3}
	_, err := admit(t, c, Request{ID: "r1", Door: DoorChat, Body: []byte(chat), Caller: key})
	if e, ok := errors.AsType[*schema.Error](err); !ok || e.Status != http.StatusTooManyRequests || e.RetryAfter != 3 {
		t.Fatalf("refused request: %v", err)
	}
	if n := len(queued(t, q.JS, schema.SubjectInteractive)); n != 0 {
		t.Fatalf("%d queued after a refusal", n)
	}

	limits.refuse, limits.ahead = nil, time.Unix(1_900_000_000, 0)
	if _, err := admit(t, c, Request{ID: "r2", Door: DoorChat, Body: []byte(chat), Caller: key, QueueWait: true}); err != nil {
		t.Fatal(err)
	}
	msgs := queued(t, q.JS, schema.SubjectInteractive)
	if len(msgs) != 1 {
		t.Fatalf("%d queued, want 1", len(msgs))
	}
	if env := envelopeOf(t, msgs[0]); env.Owner != "tok" || !env.NotBefore.Equal(limits.ahead) {
		t.Errorf("envelope owner %q, not_before %v; want tok, %v", env.Owner, env.NotBefore, limits.ahead)
	}

	job := Request{ID: "j1", Door: DoorJobs, Body: []byte(chat), Caller: key, Job: &Job{Record: true}}
	for range 2 {
		if _, err := admit(t, c, job); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := admit(t, c, Request{ID: "r3", Door: DoorChat, Body: []byte(chat)}); err != nil {
		t.Fatal(err)
	}
	want := []string{"tok/r1", "tok/r2+wait", "tok/j1", "tok/j1"}
	if len(limits.admits) != len(want) || len(limits.undone) != 1 {
		t.Fatalf("admits %v, undone %v; want %v and one undo (the duplicate job)", limits.admits, limits.undone, want)
	}
	for i := range want {
		if limits.admits[i] != want[i] {
			t.Errorf("admit %d = %s, want %s", i, limits.admits[i], want[i])
		}
	}
}

type resolver map[string]*keys.Key

func (r resolver) ByToken(token string) (*keys.Key, bool) { k, ok := r[token]; return k, ok }

// The core judges a request by its key as it is now: a door that knows
// only the token gets the key's current limits; a deleted, blocked or
// expired key is refused (401) at every door.
func TestCheckCurrentKey(t *testing.T) {
	past := time.Now().Add(-time.Minute)
	limits := &fakeLimits{}
	c, _ := openCore(t, queue.Config{Memory: true}, Config{Limits: limits, Keys: resolver{
		"live":    {Token: "live", KeyAlias: "now"},
		"blocked": {Token: "blocked", Blocked: true},
		"expired": {Token: "expired", Expires: &past},
	}})
	for _, tc := range []struct{ token, refusal string }{
		{"live", ""},
		{"gone", "no longer exists"},
		{"blocked", "Key is blocked"},
		{"expired", "Expired Key"},
	} {
		t.Run(tc.token, func(t *testing.T) {
			ck, err := c.Check(Request{ID: "r-" + tc.token, Door: DoorBatch, Body: []byte(chat), Caller: keys.Caller{Key: &keys.Key{Token: tc.token}},
				Line: &BatchLine{BatchID: "b", Line: 0}})
			if tc.refusal == "" {
				if err != nil || ck.Caller.Key.KeyAlias != "now" {
					t.Fatalf("Check: %v, key %+v; want the key as it is now", err, ck.Caller.Key)
				}
				return
			}
			e, ok := errors.AsType[*schema.Error](err)
			if !ok || e.Status != http.StatusUnauthorized || !strings.Contains(e.Message, tc.refusal) {
				t.Fatalf("Check: %v; want a 401 that says the key %s", err, tc.refusal)
			}
		})
	}
}

// When the limits' state cannot be read or written, the request is
// refused 503 queue_unavailable (never a 500, never admitted unchecked).
func TestAdmitKeyLimitsUnavailable(t *testing.T) {
	limits := &fakeLimits{refuse: errors.New("nats: timeout")}
	c, q := openCore(t, queue.Config{Memory: true}, Config{Limits: limits})
	_, err := admit(t, c, Request{ID: "r1", Door: DoorChat, Body: []byte(chat), Caller: keys.Caller{Key: &keys.Key{Token: "tok"}}})
	e, ok := errors.AsType[*schema.Error](err)
	if !ok || e.Status != http.StatusServiceUnavailable || e.Code != schema.CodeQueueUnavailable || e.RetryAfter != 1 {
		t.Fatalf("err = %v; want 503 queue_unavailable with Retry-After 1", err)
	}
	if n := len(queued(t, q.JS, schema.SubjectInteractive)); n != 0 {
		t.Errorf("%d queued", n)
	}
}
