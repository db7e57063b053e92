package bridge

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/laas-bridge/laas-bridge/queue"
	"github.com/laas-bridge/laas-bridge/schema"
)

// scrape fetches url's /metrics as the admin of a gateway whose master
// key, if any, is sk-test, and parses it.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer sk-test")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET /metrics: %d %s", resp.StatusCode, b)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return mfs
}

// metricValue is the value of the series of name with exactly labels (name,
// value pairs): a counter's or gauge's value, a histogram's sample count.
// found is false when there is no such series.
func metricValue(mfs map[string]*dto.MetricFamily, name string, labels ...string) (v float64, found bool) {
	mf, ok := mfs[name]
	if !ok {
		return 0, false
	}
	want := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
next:
	for _, m := range mf.GetMetric() {
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
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		}
	}
	return 0, false
}

// series counts the series of name.
func series(mfs map[string]*dto.MetricFamily, name string) int {
	if mf, ok := mfs[name]; ok {
		return len(mf.GetMetric())
	}
	return 0
}

// TestMetricsCountRequests: after a completion, a streamed completion and
// errors of several kinds, /metrics (without the master key) shows each
// request once, under its model alias (unknown for a model not in the
// catalogue), status and stream flag, and times the queued ones.
func TestMetricsCountRequests(t *testing.T) {
	f := newFixture(t, Config{MasterKey: "sk-test", Metrics: prometheus.NewRegistry()})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f.fakeWorker(t, ctx, 1, func(env schema.Envelope) schema.Reply {
		var req schema.ChatCompletionRequest
		_ = json.Unmarshal(env.Request, &req)
		if req.Messages[0].Content.Text == "fail" {
			return schema.ErrorReply(env.ID, &schema.Error{Status: 503, Type: schema.TypeUpstream, Code: schema.CodeUpstreamError, Message: "LaaS is unavailable"})
		}
		return echoAnswer(env)
	})
	key := []string{"Authorization", "Bearer sk-test"}
	cases := []struct {
		name   string
		body   string
		header []string
		status int
	}{
		{"completion", chatBody("claude-3.5-sonnet", "hi"), key, 200},
		{"streamed completion", streamBody("claude-3.5-sonnet", "hi", ""), key, 200},
		{"worker error", chatBody("claude-3.5-sonnet", "fail"), key, 503},
		{"invalid request for a configured model", `{"model":"team/fast","messages":[]}`, key, 400},
		{"model not in the catalogue", chatBody("gpt-4o", "hi"), key, 404},
		{"not JSON", `{`, key, 400},
		{"no master key", chatBody("claude-3.5-sonnet", "hi"), nil, 401},
	}
	for _, tc := range cases {
		resp, body := f.do(t, "POST", "/v1/chat/completions", tc.body, tc.header...)
		if resp.StatusCode != tc.status {
			t.Fatalf("%s: status %d, want %d: %s", tc.name, resp.StatusCode, tc.status, body)
		}
	}

	mfs := scrape(t, f.srv.URL)
	const requests = "laas_bridge_gateway_requests_total"
	want := []struct {
		labels []string
		n      float64
	}{
		{[]string{"model", "claude-3.5-sonnet", "status", "200", "stream", "false"}, 1},
		{[]string{"model", "claude-3.5-sonnet", "status", "200", "stream", "true"}, 1},
		{[]string{"model", "claude-3.5-sonnet", "status", "503", "stream", "false"}, 1},
		{[]string{"model", "team/fast", "status", "400", "stream", "false"}, 1},
		{[]string{"model", ModelUnknown, "status", "404", "stream", "false"}, 1},
		{[]string{"model", ModelUnknown, "status", "400", "stream", "false"}, 1},
		{[]string{"model", ModelUnknown, "status", "401", "stream", "false"}, 1},
	}
	for _, w := range want {
		if got, ok := metricValue(mfs, requests, w.labels...); !ok || got != w.n {
			t.Errorf("%s%v = %v (found %v), want %v", requests, w.labels, got, ok, w.n)
		}
	}
	if n := series(mfs, requests); n != len(want) {
		t.Errorf("%s has %d series, want %d", requests, n, len(want))
	}
	// Only the three queued requests are timed.
	if got, _ := metricValue(mfs, "laas_bridge_gateway_request_duration_seconds", "model", "claude-3.5-sonnet"); got != 3 {
		t.Errorf("request_duration_seconds count = %v, want 3", got)
	}
	if n := series(mfs, "laas_bridge_gateway_request_duration_seconds"); n != 1 {
		t.Errorf("request_duration_seconds has %d series, want 1", n)
	}
	for name, want := range map[string]float64{
		"laas_bridge_gateway_in_flight":           0,
		"laas_bridge_gateway_cancellations_total": 0,
		"laas_bridge_gateway_queue_full_total":    0,
	} {
		if got, ok := metricValue(mfs, name); !ok || got != want {
			t.Errorf("%s = %v (found %v), want %v", name, got, ok, want)
		}
	}
	for _, consumer := range []string{schema.ConsumerWorkers, schema.ConsumerBatch} {
		if got, ok := metricValue(mfs, "laas_bridge_gateway_queue_depth", "consumer", consumer); !ok || got != 0 {
			t.Errorf("queue_depth{consumer=%q} = %v (found %v), want 0", consumer, got, ok)
		}
	}
}

// TestMetricsWaitingCallersAndCancellations: callers waiting show in
// in_flight and their jobs in queue_depth; callers that leave, before an
// answer or in the middle of a streamed one, count as cancellations (status
// 499); a full queue counts as queue_full.
func TestMetricsWaitingCallersAndCancellations(t *testing.T) {
	f := newFixtureQueue(t, Config{Metrics: prometheus.NewRegistry(), KeepAlive: 20 * time.Millisecond}, queue.Config{Memory: true, MaxMsgs: 2})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	started := make(chan struct{}, 2)
	for _, body := range []string{chatBody("claude-3.5-sonnet", "wait"), streamBody("claude-3.5-sonnet", "wait", "")} {
		wg.Add(1)
		go func() { // no worker: it waits until cancelled
			defer wg.Done()
			req, _ := http.NewRequestWithContext(ctx, "POST", f.srv.URL+"/v1/chat/completions", strings.NewReader(body))
			resp, err := http.DefaultClient.Do(req)
			started <- struct{}{} // the stream's headers came, or the plain call ended
			if err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	<-started // the streamed answer is under way
	for range 500 {
		if info, err := f.q.Consumer.Info(ctx); err == nil && info.NumPending == 2 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if resp, body := f.do(t, "POST", "/v1/chat/completions", chatBody("claude-3.5-sonnet", "one too many")); resp.StatusCode != 429 {
		t.Fatalf("full queue: status %d: %s", resp.StatusCode, body)
	}

	mfs := scrape(t, f.srv.URL)
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"laas_bridge_gateway_in_flight", nil, 2},
		{"laas_bridge_gateway_queue_depth", []string{"consumer", schema.ConsumerWorkers}, 2},
		{"laas_bridge_gateway_queue_full_total", nil, 1},
		{"laas_bridge_gateway_cancellations_total", nil, 0},
		{"laas_bridge_gateway_requests_total", []string{"model", "claude-3.5-sonnet", "status", "429", "stream", "false"}, 1},
	} {
		if got, ok := metricValue(mfs, c.name, c.labels...); !ok || got != c.want {
			t.Errorf("%s%v = %v (found %v), want %v", c.name, c.labels, got, ok, c.want)
		}
	}

	cancel() // both waiting callers leave
	wg.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for {
		mfs = scrape(t, f.srv.URL)
		gone, _ := metricValue(mfs, "laas_bridge_gateway_cancellations_total")
		waiting, _ := metricValue(mfs, "laas_bridge_gateway_in_flight")
		plain, _ := metricValue(mfs, "laas_bridge_gateway_requests_total", "model", "claude-3.5-sonnet", "status", "499", "stream", "false")
		streamed, _ := metricValue(mfs, "laas_bridge_gateway_requests_total", "model", "claude-3.5-sonnet", "status", "499", "stream", "true")
		timed, _ := metricValue(mfs, "laas_bridge_gateway_request_duration_seconds", "model", "claude-3.5-sonnet")
		if gone == 2 && waiting == 0 && plain == 1 && streamed == 1 && timed == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the callers left: cancellations %v, in_flight %v, 499s plain %v streamed %v, timed %v; want 2 0 1 1 2",
				gone, waiting, plain, streamed, timed)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestNoMetricsRoute: without a registry there is no /metrics.
func TestNoMetricsRoute(t *testing.T) {
	f := newFixture(t, Config{})
	if resp, _ := f.do(t, "GET", "/metrics", ""); resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /metrics without metrics: %d, want 404", resp.StatusCode)
	}
}

// TestMetricsNeedTheMasterKey: with a master key, the gateway's /metrics
// (every key's alias and usage) is the admin's: no key and a virtual key
// are refused, the master key reads it.
func TestMetricsNeedTheMasterKey(t *testing.T) {
	f := newFixture(t, Config{MasterKey: "sk-master", Keys: fakeKeys{secretA: {Token: tokenA}}, Metrics: prometheus.NewRegistry()})
	for _, tc := range []struct {
		name   string
		header []string
		status int
	}{
		{"no key", nil, http.StatusUnauthorized},
		{"a virtual key", auth(secretA), http.StatusUnauthorized},
		{"the master key", auth("sk-master"), http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if resp, body := f.do(t, "GET", "/metrics", "", tc.header...); resp.StatusCode != tc.status {
				t.Errorf("GET /metrics: %d %s, want %d", resp.StatusCode, body, tc.status)
			}
		})
	}
}
