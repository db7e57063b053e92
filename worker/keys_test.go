package worker

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/laas-bridge/laas-bridge/keys"
	"github.com/laas-bridge/laas-bridge/schema"
)

func TestHoldForSlot(t *testing.T) {
	for _, tc := range []struct {
		name    string
		ahead   time.Duration // NotBefore after now; 0 for none
		next    bool
		settled string
	}{
		{"no slot reserved: runs", 0, true, "[]"},
		{"slot passed: runs", -time.Second, true, "[]"},
		{"slot near: held in place, then runs", 50 * time.Millisecond, true, "[]"},
		{"slot far: handed back until then", time.Minute, false, "[nak 1m0s]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newStepFixture(t)
			j, msg := stepJob(t, schema.SubjectInteractive, 1)
			if tc.ahead != 0 {
				j.env.NotBefore = time.Now().Add(tc.ahead)
			}
			var next nextRecorder
			f.p.holdForSlot(next.handle)(context.Background(), j)
			if (next.called() == 1) != tc.next {
				t.Fatalf("next called %d times, want %v", next.called(), tc.next)
			}
			if tc.next && time.Now().Before(j.env.NotBefore) {
				t.Errorf("ran before its slot %v", j.env.NotBefore)
			}
			// A nak's delay is the time left, a little under the minute.
			if got := msg.settled(); got != tc.settled && !(tc.settled == "[nak 1m0s]" && len(got) > 5 && got[:5] == "[nak ") {
				t.Errorf("settled %s, want %s", got, tc.settled)
			}
		})
	}
}

// fakeLedger records Settle calls.
type fakeLedger struct {
	mu    sync.Mutex
	calls []string
	spent []keys.Spent
}

func (l *fakeLedger) Settle(_ context.Context, token string, k *keys.Key, id string, s keys.Spent) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	alias := "<nil>"
	if k != nil {
		alias = k.KeyAlias
	}
	l.calls = append(l.calls, token+"/"+alias+"/"+id)
	l.spent = append(l.spent, s)
	return nil
}

type fakeResolver map[string]*keys.Key

func (r fakeResolver) ByToken(token string) (*keys.Key, bool) { k, ok := r[token]; return k, ok }

// A keyed request is settled once when it ends, with what its call used,
// before its answer goes out; the admin's requests are not.
func TestSettleKey(t *testing.T) {
	f := newStepFixture(t)
	ledger := &fakeLedger{}
	f.p.ledger, f.p.keys = ledger, fakeResolver{"tok": {Token: "tok", KeyAlias: "app"}}
	f.p.send = func(string, []byte) error {
		if len(ledger.calls) == 0 {
			t.Errorf("the answer went out before the key was settled")
		}
		return nil
	}
	j, msg := stepJob(t, schema.SubjectInteractive, 1)
	j.env.Owner = "tok"
	j.model.InputCostPerToken, j.model.OutputCostPerToken = 0.5, 2
	j.spend(&schema.Usage{PromptTokens: 4, CompletionTokens: 3})
	f.p.finish(j, schema.Reply{ID: j.env.ID, Status: http.StatusOK}, 0)
	f.p.settleKey(j) // again: counted once
	if msg.settled() != "[ack]" {
		t.Errorf("settled %s", msg.settled())
	}
	if len(ledger.calls) != 1 || ledger.calls[0] != "tok/app/r1" {
		t.Fatalf("settles = %v, want one for tok/app/r1", ledger.calls)
	}
	if s := ledger.spent[0]; !s.Called || s.InputTokens != 4 || s.OutputTokens != 3 || s.Cost != 8 {
		t.Errorf("spent = %+v, want a call of 4+3 tokens costing 4*0.5+3*2 = 8", s)
	}
	// Dropped without a call: the lease is released, nothing spent.
	j2, _ := stepJob(t, schema.SubjectInteractive, 1)
	j2.env.Owner, j2.replyTo = "gone", ""
	f.p.drop(j2)
	if len(ledger.calls) != 2 || ledger.calls[1] != "gone/<nil>/r1" || ledger.spent[1].Called {
		t.Errorf("a dropped request of a deleted key: settles %v, spent %+v", ledger.calls, ledger.spent)
	}
	// The admin's request: nothing to settle.
	j3, _ := stepJob(t, schema.SubjectInteractive, 1)
	f.p.finish(j3, schema.Reply{ID: j3.env.ID, Status: http.StatusOK}, 0)
	if len(ledger.calls) != 2 {
		t.Errorf("the admin's request was settled: %v", ledger.calls)
	}
}

// Every way a keyed delivery ends without finish still releases its
// key's lease: a panic (terminated), a kept idempotent answer (before the
// answer goes out).
func TestSettleKeyOnEveryEnd(t *testing.T) {
	t.Run("panic", func(t *testing.T) {
		f := newStepFixture(t)
		ledger := &fakeLedger{}
		f.p.ledger = ledger
		j, msg := stepJob(t, schema.SubjectInteractive, 1)
		j.env.Owner = "tok"
		f.p.recoverPoison(func(context.Context, *job) { panic("boom") })(context.Background(), j)
		if msg.settled() != "[term]" || len(ledger.calls) != 1 {
			t.Errorf("settled %s, key settles %v; want a term and one settle", msg.settled(), ledger.calls)
		}
	})
	t.Run("kept answer", func(t *testing.T) {
		f := newStepFixture(t)
		ledger := &fakeLedger{}
		f.p.ledger = ledger
		f.answers.values["k1"] = []byte(`{"id":"first","status":200}`)
		f.p.send = func(string, []byte) error {
			if len(ledger.calls) != 1 {
				t.Errorf("the kept answer went out before the key was settled")
			}
			return nil
		}
		j, _ := stepJob(t, schema.SubjectInteractive, 1)
		j.env.Owner, j.env.IdempotencyKey = "tok", "k1"
		var next nextRecorder
		f.p.answerFromStore(next.handle)(context.Background(), j)
		if len(ledger.calls) != 1 || ledger.spent[0].Called {
			t.Errorf("key settles %v, spent %+v; want one, with no call", ledger.calls, ledger.spent)
		}
	})
}

// On its last two deliveries a job waits for a far slot in place instead
// of being handed back: a hand-back there would end in MaxDeliver.
func TestHoldForSlotLastDeliveries(t *testing.T) {
	f := newStepFixture(t) // MaxDeliver 3
	j, msg := stepJob(t, schema.SubjectInteractive, 2)
	j.env.NotBefore = time.Now().Add(slotHoldMax + 300*time.Millisecond)
	var next nextRecorder
	f.p.holdForSlot(next.handle)(context.Background(), j)
	if next.called() != 1 || msg.settled() != "[]" || time.Now().Before(j.env.NotBefore) {
		t.Errorf("next %d, settled %s; want it run in place at its slot", next.called(), msg.settled())
	}
}

// A keyed call is counted in Prometheus by its key's alias and model,
// never by the key: requests and input/output tokens.
func TestKeyMetrics(t *testing.T) {
	f := newStepFixture(t)
	reg := prometheus.NewRegistry()
	km, err := newKeyMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	f.p.ledger, f.p.keyMetrics = &fakeLedger{}, km
	f.p.keys = fakeResolver{"tok": {Token: "tok", KeyAlias: "app"}}
	j, _ := stepJob(t, schema.SubjectInteractive, 1)
	j.env.Owner = "tok"
	j.spend(&schema.Usage{PromptTokens: 4, CompletionTokens: 3})
	f.p.finish(j, schema.Reply{ID: j.env.ID, Status: http.StatusOK}, 0)
	mfs := gather(t, reg)
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"laas_bridge_worker_key_requests_total", []string{"key_alias", "app", "model", "m"}, 1},
		{"laas_bridge_worker_key_tokens_total", []string{"key_alias", "app", "model", "m", "direction", "input"}, 4},
		{"laas_bridge_worker_key_tokens_total", []string{"key_alias", "app", "model", "m", "direction", "output"}, 3},
	} {
		if got := metricValue(mfs, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
}
