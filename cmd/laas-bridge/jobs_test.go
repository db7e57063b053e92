package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/laas-bridge/laas-bridge/laas/laasmock"
	"github.com/laas-bridge/laas-bridge/queue"
)

// apiJob is what the jobs API answers.
type apiJob struct {
	ID         string `json:"id"`
	Status     string `json:"status"`
	StatusCode int    `json:"status_code"`
	Result     *struct {
		Choices []struct {
			Message struct{ Content string } `json:"message"`
		} `json:"choices"`
	} `json:"result"`
	Error *struct{ Code string } `json:"error"`
}

func (j apiJob) content() string {
	if j.Result == nil || len(j.Result.Choices) == 0 {
		return ""
	}
	return j.Result.Choices[0].Message.Content
}

func jobCall(t *testing.T, method, url, body string) (int, apiJob) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: 2 * time.Minute}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var j apiJob
	if err := json.Unmarshal(b, &j); err != nil {
		t.Fatalf("%s %s: %d %s", method, url, resp.StatusCode, b)
	}
	return resp.StatusCode, j
}

// TestJobsSurviveRestartOfEverything: jobs submitted while no worker runs
// (one of them cancelled) outlive a stop of the gateway and of NATS; once
// everything runs again the queued job completes and GET returns its
// result, and the cancelled one never reaches LaaS.
func TestJobsSurviveRestartOfEverything(t *testing.T) {
	clearEnv(t)
	dataDir := t.TempDir()

	// 1. NATS (file store where `serve` keeps it) and a gateway; no worker.
	srv, err := queue.StartEmbedded(queue.EmbeddedConfig{StoreDir: filepath.Join(dataDir, "nats"), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("NATS_URL", srv.ClientURL())
	gw := startRun(t, "gateway", "--listen", "127.0.0.1:0", "--config", "testdata/config.yaml")
	status, kept := jobCall(t, "POST", gw.url+"/v1/queue/jobs", chatBody("claude-3.5-sonnet", "survives a restart"))
	if status != 202 || kept.Status != "queued" {
		t.Fatalf("submit: %d %+v", status, kept)
	}
	_, dropped := jobCall(t, "POST", gw.url+"/v1/queue/jobs", chatBody("claude-3.5-sonnet", "cancelled while queued"))
	if status, j := jobCall(t, "DELETE", gw.url+"/v1/queue/jobs/"+dropped.ID, ""); status != 200 || j.Status != "cancelled" {
		t.Fatalf("cancel: %d %+v", status, j)
	}

	// 2. Stop everything.
	gw.shutdown(t)
	srv.Shutdown()
	srv.WaitForShutdown()

	// 3. Start again: `serve` on the same data dir, now with workers and LaaS.
	mock, err := laasmock.New(laasmock.Config{ProjectCode: "p", APIKey: "k"})
	if err != nil {
		t.Fatal(err)
	}
	up := httptest.NewServer(mock)
	t.Cleanup(up.Close)
	os.Unsetenv("NATS_URL")
	t.Setenv("LAAS_PROJECT_CODE", "p")
	t.Setenv("LAAS_API_KEY", "k")
	t.Setenv("LAAS_PRESET_HASH", "h")
	t.Setenv("LAAS_BASE_URL", up.URL)
	in := startRun(t, "serve", "--listen", "127.0.0.1:0", "--nats-listen", "", "--data-dir", dataDir, "--config", "testdata/config.yaml")

	status, done := jobCall(t, "GET", in.url+"/v1/queue/jobs/"+kept.ID+"?wait=60s", "")
	if status != 200 || done.Status != "succeeded" || done.StatusCode != 200 || done.content() != "mock[h]: survives a restart" {
		t.Fatalf("the job after the restart: %d %+v", status, done)
	}
	status, gone := jobCall(t, "GET", in.url+"/v1/queue/jobs/"+dropped.ID+"?wait=60s", "")
	if status != 200 || gone.Status != "cancelled" || gone.Error == nil || gone.Error.Code != "job_cancelled" {
		t.Fatalf("the cancelled job after the restart: %d %+v", status, gone)
	}
	if mock.Calls() != 1 {
		t.Errorf("LaaS calls = %d, want 1 (the cancelled job never runs)", mock.Calls())
	}
}

// TestJobCancelAbortsLaaSCall: DELETE of a running job aborts its LaaS
// call through the laas.cancel broadcast; the job ends cancelled.
func TestJobCancelAbortsLaaSCall(t *testing.T) {
	mock, in := serveWithMock(t, time.Minute)
	_, j := jobCall(t, "POST", in.url+"/v1/queue/jobs", chatBody("claude-3.5-sonnet", "long"))
	for deadline := time.Now().Add(30 * time.Second); mock.Calls() == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the job never reached LaaS")
		}
	}
	if status, got := jobCall(t, "GET", in.url+"/v1/queue/jobs/"+j.ID, ""); status != 200 || got.Status != "running" {
		t.Errorf("GET while the call runs: %d %+v", status, got)
	}
	if status, got := jobCall(t, "DELETE", in.url+"/v1/queue/jobs/"+j.ID, ""); status != 200 || got.Status != "cancelled" {
		t.Fatalf("DELETE: %d %+v", status, got)
	}
	status, got := jobCall(t, "GET", in.url+"/v1/queue/jobs/"+j.ID+"?wait=30s", "")
	if status != 200 || got.Status != "cancelled" || got.StatusCode != 499 {
		t.Errorf("GET after DELETE: %d %+v", status, got)
	}
	for start := time.Now(); ; time.Sleep(10 * time.Millisecond) {
		log := mock.Log()
		if len(log) == 1 && log[0].Status == laasmock.StatusClientClosed {
			break
		}
		if time.Since(start) > 20*time.Second {
			t.Fatalf("the LaaS call was not aborted: mock log %+v", log)
		}
	}
	if mock.Calls() != 1 {
		t.Errorf("LaaS calls = %d, want 1", mock.Calls())
	}
}
