package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/laas-bridge/laas-bridge/laas/laasmock"
	"github.com/laas-bridge/laas-bridge/queue"
	"github.com/laas-bridge/laas-bridge/queue/queuetest"
	"github.com/laas-bridge/laas-bridge/schema"
)

var metricsListeningRe = regexp.MustCompile(`msg="metrics listening".* addr=(\S+)`)

// getMetrics fetches url without any key and returns the text.
func getMetrics(t *testing.T, url string) string {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The key of the bridges these tests start with one; ignored by a
	// bridge without a master key and by the keyless metrics listener.
	req.Header.Set("Authorization", "Bearer "+testMetricsKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	return string(b)
}

// waitForSeries polls url until its metrics hold every line of want
// (series and value, as the text format writes them).
func waitForSeries(t *testing.T, url string, want ...string) string {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		text := getMetrics(t, url)
		missing := ""
		for _, line := range want {
			if !strings.Contains(text, "\n"+line+"\n") {
				missing = line
				break
			}
		}
		if missing == "" {
			return text
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s lacks %q:\n%s", url, missing, text)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// testMetricsKey is the master key of the bridges whose metrics these
// tests read.
const testMetricsKey = "sk-master-secret"

// TestServeMetricsNeedTheMasterKey: `serve --demo` with a master key shows
// both sides' metrics, from one registry, on the gateway's /metrics, to
// the master key only (they name every virtual key's alias).
func TestServeMetricsNeedTheMasterKey(t *testing.T) {
	clearEnv(t)
	t.Setenv("BRIDGE_MASTER_KEY", testMetricsKey)
	in := startDemo(t)
	req, _ := http.NewRequest("POST", in.url+"/v1/chat/completions", strings.NewReader(`{"model":"claude-3.5-sonnet","messages":[{"role":"user","content":"hi"}]}`))
	req.Header.Set("Authorization", "Bearer sk-master-secret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("chat: status %d", resp.StatusCode)
	}
	text := waitForSeries(t, in.url+"/metrics",
		`laas_bridge_gateway_requests_total{model="claude-3.5-sonnet",status="200",stream="false"} 1`,
		`laas_bridge_gateway_in_flight 0`,
		`laas_bridge_worker_jobs_total{model="claude-3.5-sonnet",status="200"} 1`,
		`laas_bridge_worker_in_flight 0`,
		`laas_bridge_worker_replies_total{path="local"} 1`, // serve: the reply skips NATS
		`laas_bridge_worker_rate_limit_wait_seconds_count{lane="interactive"} 1`,
		`laas_bridge_worker_upstream_duration_seconds_count{model="claude-3.5-sonnet",status="200"} 1`,
		`laas_bridge_gateway_queue_depth{consumer="`+schema.ConsumerWorkers+`"} 0`,
	)
	if resp, err := http.Get(in.url + "/metrics"); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET /metrics without the key: %v %v, want 401", resp, err)
	} else {
		resp.Body.Close()
	}
	for _, family := range []string{"laas_bridge_worker_tokens_total", "go_goroutines", "process_cpu_seconds_total"} {
		if !strings.Contains(text, "\n# TYPE "+family+" ") {
			t.Errorf("no %s in /metrics", family)
		}
	}
	if strings.Contains(text, "sk-master-secret") || strings.Contains(text, demoAPIKey) || strings.Contains(text, demoProject) {
		t.Error("a secret appears in /metrics")
	}
	if strings.Contains(in.logs.String(), `msg="metrics listening"`) {
		t.Error("serve without --metrics-listen opened a metrics listener of its own")
	}
}

// TestWorkerMetricsListen: `worker --metrics-listen 127.0.0.1:0` logs the
// bound address and serves /metrics there; a job it runs shows in it.
func TestWorkerMetricsListen(t *testing.T) {
	clearEnv(t)
	q := queuetest.Start(t, queue.Config{})
	mock, err := laasmock.New(laasmock.Config{ProjectCode: "metrics-project", APIKey: "metrics-api-key"})
	if err != nil {
		t.Fatal(err)
	}
	up := httptest.NewServer(mock)
	t.Cleanup(up.Close)
	for k, v := range map[string]string{"LAAS_PROJECT_CODE": "metrics-project", "LAAS_API_KEY": "metrics-api-key", "LAAS_PRESET_HASH": "p", "LAAS_BASE_URL": up.URL} {
		t.Setenv(k, v)
	}

	ctx, cancel := context.WithCancel(context.Background())
	logs := &syncBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"worker", "--nats-url", q.Server.ClientURL(), "--config", "testdata/config.yaml", "--metrics-listen", "127.0.0.1:0"}, logs, logs)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("worker exited with %v\n%s", err, logs)
			}
		case <-time.After(30 * time.Second):
			t.Error("worker did not stop within 30s")
		}
	})
	var addr string
	for deadline := time.Now().Add(30 * time.Second); addr == ""; time.Sleep(20 * time.Millisecond) {
		if m := metricsListeningRe.FindStringSubmatch(logs.String()); m != nil {
			addr = m[1]
		}
		select {
		case err := <-done:
			done <- err
			t.Fatalf("worker exited: %v\n%s", err, logs)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no metrics listener within 30s:\n%s", logs)
		}
	}
	if strings.HasSuffix(addr, ":0") {
		t.Fatalf("logged address %s is not the bound one", addr)
	}

	now := time.Now()
	data, _ := json.Marshal(schema.Envelope{ID: "metrics-job", Model: "claude-3.5-sonnet", EnqueuedAt: now, Deadline: now.Add(time.Minute),
		Request: json.RawMessage(`{"model":"claude-3.5-sonnet","messages":[{"role":"user","content":"one two three"}]}`)})
	if _, err := q.JS.PublishMsg(ctx, &nats.Msg{Subject: schema.SubjectInteractive, Data: data}); err != nil {
		t.Fatal(err)
	}
	text := waitForSeries(t, "http://"+addr+"/metrics",
		`laas_bridge_worker_jobs_total{model="claude-3.5-sonnet",status="200"} 1`,
		`laas_bridge_worker_in_flight 0`,
	)
	if strings.Contains(text, "laas_bridge_gateway_") {
		t.Error("a worker process shows gateway metrics")
	}
	if strings.Contains(text, "metrics-api-key") || strings.Contains(text, "metrics-project") {
		t.Error("a LaaS credential appears in /metrics")
	}
	resp, err := http.Get("http://" + addr + "/chat/completions")
	if err == nil {
		resp.Body.Close()
	}
	if err != nil || resp.StatusCode != http.StatusNotFound {
		t.Errorf("the metrics listener serves more than /metrics: %v %v", resp, err)
	}
}
