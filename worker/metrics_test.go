package worker

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/laas-bridge/laas-bridge/laas"
	"github.com/laas-bridge/laas-bridge/queue"
	"github.com/laas-bridge/laas-bridge/queue/queuetest"
	"github.com/laas-bridge/laas-bridge/schema"
)

// gather reads reg's metrics.
func gather(t *testing.T, reg prometheus.Gatherer) map[string]*dto.MetricFamily {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]*dto.MetricFamily, len(mfs))
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out
}

// metricValue is the value of the series of name with exactly labels (name,
// value pairs): a counter's or gauge's value, a histogram's sample count.
func metricValue(mfs map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	want := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
next:
	for _, m := range mfs[name].GetMetric() {
		if len(m.GetLabel()) != len(want) {
			continue
		}
		for _, l := range m.GetLabel() {
			if w, ok := want[l.GetName()]; !ok || w != l.GetValue() {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue()
		case m.Gauge != nil:
			return m.GetGauge().GetValue()
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount())
		}
	}
	return 0
}

// total sums every series of a counter.
func total(mfs map[string]*dto.MetricFamily, name string) float64 {
	n := 0.0
	for _, m := range mfs[name].GetMetric() {
		n += m.GetCounter().GetValue()
	}
	return n
}

// scriptedByText answers by the last message's text: the failures listed
// for it, one per call, then a completion with 10 tokens in and 4 out.
type scriptedByText struct {
	mu       sync.Mutex
	failures map[string][]error
	calls    map[string]int
}

func (s *scriptedByText) Complete(_ context.Context, req *schema.LaaSRequest) (*schema.LaaSResponse, error) {
	text := req.Messages[len(req.Messages)-1].Content[0].Text
	s.mu.Lock()
	n := s.calls[text]
	s.calls[text]++
	s.mu.Unlock()
	if f := s.failures[text]; n < len(f) {
		return nil, f[n]
	}
	in, out := 10, 4
	resp := &schema.LaaSResponse{ID: "up", Object: "chat.completion", Created: 1_700_000_000_000, Choices: []schema.LaaSChoice{{}},
		Usage: &schema.LaaSUsage{PromptTokens: &in, CompletionTokens: &out}}
	resp.Choices[0].Message.Content = schema.Content{Text: "answer to " + text}
	return resp, nil
}

// freeLimiter lets every call start at once.
type freeLimiter struct{}

func (freeLimiter) Wait(ctx context.Context, _ schema.Model, _ Lane) error { return ctx.Err() }
func (freeLimiter) Throttled(context.Context, time.Duration)               {}

func jobBody(text string) string {
	return `{"model":"m","messages":[{"role":"user","content":"` + text + `"}]}`
}

// TestPoolMetrics runs known jobs one after another and checks every count:
// answers by status, retries by reason, dead letters, tokens, LaaS calls by
// status, queue waits and rate-limiter waits.
func TestPoolMetrics(t *testing.T) {
	e500 := &laas.UpstreamError{Status: 500, Body: "boom"}
	up := &scriptedByText{calls: map[string]int{}, failures: map[string][]error{
		"flaky":   {e500},
		"limited": {&laas.UpstreamError{Status: 429}},
		"refused": {&laas.UpstreamError{Status: 400, Body: `{"message":"bad preset var"}`}},
		"down":    {e500, e500, e500}, // MaxDeliver is 3
	}}
	reg := prometheus.NewRegistry()
	f := startPool(t, up, Config{}, WithMetrics(reg), WithLimiter(freeLimiter{}))
	jobs := []struct {
		id, model, text string
		status          int
	}{
		{"ok", "m", "ok", 200},
		{"flaky", "m", "flaky", 200},
		{"limited", "m", "limited", 200},
		{"refused", "m", "refused", 400},
		{"down", "m", "down", 502},
		{"stranger", "not-configured", "ok", 404},
	}
	for _, j := range jobs {
		f.publish(t, j.id, j.model, time.Minute, jobBody(j.text))
		if r := f.reply(t); r.ID != j.id || r.Status != j.status {
			t.Fatalf("%s: reply %s %d, want %d (%+v)", j.id, r.ID, r.Status, j.status, r.Error)
		}
	}
	// The reply is published before the job is counted: wait for the last.
	var mfs map[string]*dto.MetricFamily
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		mfs = gather(t, reg)
		if total(mfs, "laas_bridge_worker_jobs_total") == float64(len(jobs)) && metricValue(mfs, "laas_bridge_worker_in_flight") == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("jobs_total = %v, in_flight = %v; want %d and 0", total(mfs, "laas_bridge_worker_jobs_total"),
				metricValue(mfs, "laas_bridge_worker_in_flight"), len(jobs))
		}
	}
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"laas_bridge_worker_jobs_total", []string{"model", "m", "status", "200"}, 3},
		{"laas_bridge_worker_jobs_total", []string{"model", "m", "status", "400"}, 1},
		{"laas_bridge_worker_jobs_total", []string{"model", "m", "status", "502"}, 1},
		{"laas_bridge_worker_jobs_total", []string{"model", ModelUnknown, "status", "404"}, 1},
		{"laas_bridge_worker_retries_total", []string{"model", "m", "reason", retryUpstreamError}, 3}, // flaky once, down twice
		{"laas_bridge_worker_retries_total", []string{"model", "m", "reason", retryRateLimited}, 1},
		{"laas_bridge_worker_dead_letters_total", []string{"reason", deadAttemptsExhausted}, 1},
		{"laas_bridge_worker_tokens_total", []string{"model", "m", "direction", "in"}, 30},
		{"laas_bridge_worker_tokens_total", []string{"model", "m", "direction", "out"}, 12},
		{"laas_bridge_worker_upstream_duration_seconds", []string{"model", "m", "status", "200"}, 3},
		{"laas_bridge_worker_upstream_duration_seconds", []string{"model", "m", "status", "500"}, 4},
		{"laas_bridge_worker_upstream_duration_seconds", []string{"model", "m", "status", "429"}, 1},
		{"laas_bridge_worker_upstream_duration_seconds", []string{"model", "m", "status", "400"}, 1},
		{"laas_bridge_worker_queue_wait_seconds", []string{"model", "m"}, 5}, // first deliveries only
		{"laas_bridge_worker_queue_wait_seconds", []string{"model", ModelUnknown}, 1},
		{"laas_bridge_worker_rate_limit_wait_seconds", []string{"lane", "interactive"}, 9}, // one per LaaS call
		{"laas_bridge_worker_cancellations_total", nil, 0},
	} {
		if got := metricValue(mfs, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	for name, want := range map[string]float64{"laas_bridge_worker_jobs_total": 6, "laas_bridge_worker_retries_total": 4} {
		if got := total(mfs, name); got != want {
			t.Errorf("sum of %s = %v, want %v", name, got, want)
		}
	}
}

// TestPoolMetricsCancellations: a job whose caller left during its LaaS
// call and one whose caller left before it started are counted apart, and
// neither counts as an answered job.
func TestPoolMetricsCancellations(t *testing.T) {
	up := &recorder{delay: time.Minute}
	reg := prometheus.NewRegistry()
	f := startPool(t, up, Config{}, WithMetrics(reg))
	f.publish(t, "r1", "m", 2*time.Minute, hello)
	calledAtLeast(t, up, 1)
	if err := f.q.Conn.Publish(schema.SubjectCancel+".r1", nil); err != nil {
		t.Fatal(err)
	}
	f.drained(t)
	f.cancelled(t, "r2")
	f.publish(t, "r2", "m", time.Minute, hello)
	f.drained(t)
	var mfs map[string]*dto.MetricFamily
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		mfs = gather(t, reg)
		if metricValue(mfs, "laas_bridge_worker_in_flight") == 0 && total(mfs, "laas_bridge_worker_cancellations_total") == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cancellations_total = %v, in_flight = %v; want 2 and 0", total(mfs, "laas_bridge_worker_cancellations_total"),
				metricValue(mfs, "laas_bridge_worker_in_flight"))
		}
	}
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"laas_bridge_worker_cancellations_total", []string{"when", cancelledDuringCall}, 1},
		{"laas_bridge_worker_cancellations_total", []string{"when", cancelledBeforeStart}, 1},
		{"laas_bridge_worker_upstream_duration_seconds", []string{"model", "m", "status", "cancelled"}, 1},
		{"laas_bridge_worker_jobs_total", nil, 0},
	} {
		if got := metricValue(mfs, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
}

// TestPoolMetricsRegistration: a registry takes one pool's metrics; a
// second pool on it is refused, not silently merged.
func TestPoolMetricsRegistration(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := newPoolMetrics(reg, liveCatalog(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := newPoolMetrics(reg, liveCatalog(t)); err == nil {
		t.Error("a second pool's metrics were registered in the same registry")
	}
	if m, err := newPoolMetrics(nil, liveCatalog(t)); m != nil || err != nil {
		t.Errorf("nil registry: %v, %v; want no metrics", m, err)
	}
}

// TestDeadLetterMetrics: a job that reaches MaxDeliver with no worker
// finishing it is counted by the watcher, in the counter a pool on the same
// registry shares.
func TestDeadLetterMetrics(t *testing.T) {
	q := queuetest.Start(t, queue.Config{Memory: true, MaxDeliver: 2})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	reg := prometheus.NewRegistry()
	m, err := newPoolMetrics(reg, liveCatalog(t))
	if err != nil {
		t.Fatal(err)
	}
	d, err := NewDeadLetters(ctx, q.JS, slog.New(slog.DiscardHandler), DeadLettersWithMetrics(reg))
	if err != nil {
		t.Fatal(err)
	}
	cc := queue.Config{Memory: true, MaxDeliver: 2}.ConsumerConfig()
	cc.AckWait = 200 * time.Millisecond // quick redeliveries
	cons, err := q.JS.CreateOrUpdateConsumer(ctx, schema.StreamRequests, cc)
	if err != nil {
		t.Fatal(err)
	}
	stop, err := d.WatchMaxDeliveries(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	data, _ := json.Marshal(schema.Envelope{ID: "stuck", Model: "m", EnqueuedAt: time.Now(), Deadline: time.Now().Add(time.Hour), Request: json.RawMessage(jobBody("hi"))})
	if _, err := q.JS.Publish(ctx, schema.SubjectInteractive, data); err != nil {
		t.Fatal(err)
	}
	consumed, err := cons.Consume(func(jetstream.Msg) {}) // takes the job and never acks
	if err != nil {
		t.Fatal(err)
	}
	defer consumed.Stop()
	m.deadLettered() // what a pool counts when a job runs out of attempts
	for {
		mfs := gather(t, reg)
		rescued := metricValue(mfs, "laas_bridge_worker_dead_letters_total", "reason", deadMaxDeliveries)
		exhausted := metricValue(mfs, "laas_bridge_worker_dead_letters_total", "reason", deadAttemptsExhausted)
		if rescued == 1 && exhausted == 1 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("dead_letters_total: max_deliveries_reached %v, attempts_exhausted %v; want 1 and 1", rescued, exhausted)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
