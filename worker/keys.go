package worker

// This file holds what the worker does for virtual keys: a request whose
// rpm slot the admission core reserved ahead waits for it (holdForSlot),
// and every request of a key is settled when it ends (settleKey): its
// parallel lease released, its tokens and cost counted.

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/laas-bridge/laas-bridge/keys"
	"github.com/laas-bridge/laas-bridge/schema"
)

// KeyLedger counts what a virtual key's requests spend and releases their
// parallel leases (keys.Limits). Settle is called once per delivery that
// ends a request, before its answer is sent.
type KeyLedger interface {
	Settle(ctx context.Context, token string, k *keys.Key, id string, s keys.Spent) error
}

// KeyResolver finds a virtual key by its token (the keys store); a key
// deleted since its request was queued is not found.
type KeyResolver interface {
	ByToken(token string) (*keys.Key, bool)
}

var _ KeyLedger = (*keys.Limits)(nil)

// WithKeyLedger settles virtual keys' requests in l, finding their keys
// with r (nil: usage is counted without the key's budget period).
func WithKeyLedger(l KeyLedger, r KeyResolver) Option {
	return func(p *Pool) { p.ledger, p.keys = l, r }
}

// slotHoldMax is the longest a worker holds a job in place for its key's
// rpm slot; a slot further ahead hands the job back to the queue until
// then (one delivery, counted as an attempt), except on its last two
// deliveries, which wait in place.
const slotHoldMax = 2 * time.Second

// holdForSlot starts a job no earlier than the rpm slot its key's limit
// reserved (Envelope.NotBefore).
func (p *Pool) holdForSlot(next handlerFunc) handlerFunc {
	return func(ctx context.Context, j *job) {
		wait := time.Until(j.env.NotBefore)
		// Handing back costs a delivery; the last ones wait in place
		// (keepInProgress keeps them), so none is lost to MaxDeliver.
		lastOnes := p.maxDeliver > 0 && j.attempt >= p.maxDeliver-1
		if wait > slotHoldMax && !lastOnes {
			j.log.Debug("job waits in the queue for its key's rpm slot", "not_before", j.env.NotBefore)
			_ = j.msg.NakWithDelay(wait)
			return
		}
		if wait > 0 {
			t := time.NewTimer(wait)
			defer t.Stop()
			select {
			case <-t.C:
			case <-ctx.Done():
				_ = j.msg.Nak() // shutdown: another worker takes it
				return
			}
		}
		next(ctx, j)
	}
}

// settleKey releases a keyed request's lease and counts what it spent,
// once per delivery, before its answer goes out: the caller's next request
// sees both.
func (p *Pool) settleKey(j *job) {
	if j.env.Owner == "" || p.ledger == nil || j.settled {
		return
	}
	j.settled = true
	var k *keys.Key
	if p.keys != nil {
		k, _ = p.keys.ByToken(j.env.Owner)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.ledger.Settle(ctx, j.env.Owner, k, j.env.ID, j.spent); err != nil {
		j.log.Warn("could not count a key's usage or release its lease", "error", err)
	}
	if p.keyMetrics != nil && j.spent.Called {
		alias := keys.Caller{Key: k}.Alias()
		if k == nil {
			alias = "deleted"
		}
		p.keyMetrics.requests.WithLabelValues(alias, j.env.Model).Inc()
		p.keyMetrics.tokens.WithLabelValues(alias, j.env.Model, "input").Add(float64(j.spent.InputTokens))
		p.keyMetrics.tokens.WithLabelValues(alias, j.env.Model, "output").Add(float64(j.spent.OutputTokens))
	}
}

// spend records what the job's LaaS call used, for settleKey.
func (j *job) spend(u *schema.Usage) {
	j.spent.Called = true
	if u != nil {
		j.spent.InputTokens, j.spent.OutputTokens = int64(u.PromptTokens), int64(u.CompletionTokens)
		j.spent.Cost = j.model.Cost(*u)
	}
}

// keyMetrics count LaaS calls and tokens per key alias (never the key).
type keyMetrics struct {
	requests *prometheus.CounterVec // key_alias, model
	tokens   *prometheus.CounterVec // key_alias, model, direction
}

func newKeyMetrics(reg prometheus.Registerer) (*keyMetrics, error) {
	if reg == nil {
		return nil, nil
	}
	m := &keyMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: metricsNamespace, Subsystem: metricsSubsystem, Name: "key_requests_total",
			Help: "LaaS calls made for virtual keys, by key alias (admin for the master key) and model alias."}, []string{"key_alias", "model"}),
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: metricsNamespace, Subsystem: metricsSubsystem, Name: "key_tokens_total",
			Help: "Tokens LaaS reported for virtual keys' calls, by key alias, model alias and direction (input or output)."}, []string{"key_alias", "model", "direction"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.tokens} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
