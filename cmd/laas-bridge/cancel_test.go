package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"

	"github.com/laas-bridge/laas-bridge/laas/laasmock"
)

// serveWithMock runs `serve` in-process against an in-test LaaS mock with
// the given latency (credentials p/k, default preset h); extra flags
// override the defaults.
func serveWithMock(t *testing.T, latency time.Duration, extra ...string) (*laasmock.Mock, *instance) {
	t.Helper()
	clearEnv(t)
	mock, err := laasmock.New(laasmock.Config{ProjectCode: "p", APIKey: "k", Latency: latency})
	if err != nil {
		t.Fatal(err)
	}
	up := httptest.NewServer(mock)
	t.Cleanup(up.Close)
	t.Setenv("LAAS_PROJECT_CODE", "p")
	t.Setenv("LAAS_API_KEY", "k")
	t.Setenv("LAAS_PRESET_HASH", "h")
	t.Setenv("LAAS_BASE_URL", up.URL)
	args := []string{"serve", "--listen", "127.0.0.1:0", "--nats-listen", "", "--data-dir", t.TempDir(), "--config", "testdata/config.yaml"}
	in := startRun(t, append(args, extra...)...)
	return mock, in
}

// TestCallerGoneAbortsLaaSCall: a caller that gives up mid-call makes the
// worker abort its LaaS call (the mock sees its client go away: status 499)
// rather than run it to the end.
func TestCallerGoneAbortsLaaSCall(t *testing.T) {
	mock, in := serveWithMock(t, time.Minute)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := client(in, "sk").Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
			Model: "claude-3.5-sonnet", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("never mind")},
		})
		done <- err
	}()
	eventually(t, 30*time.Second, "the LaaS call to start", func() bool { return mock.Calls() > 0 })
	start := time.Now()
	cancel()
	<-done
	for {
		log := mock.Log()
		if len(log) == 1 && log[0].Status == laasmock.StatusClientClosed {
			break
		}
		if time.Since(start) > 20*time.Second {
			t.Fatalf("the LaaS call was not aborted: mock log %+v", log)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if mock.Calls() != 1 {
		t.Errorf("LaaS calls = %d, want 1 (an aborted call is not retried)", mock.Calls())
	}
	resp, err := http.Get(in.url + "/health")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("health after the cancellation: %v %v", resp, err)
	}
	resp.Body.Close()
}
