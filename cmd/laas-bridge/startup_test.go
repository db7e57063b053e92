package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"

	"github.com/laas-bridge/laas-bridge/laas/laasmock"
)

// TestStartupErrors: commands that cannot work stop at once with a message
// that says what to do, and never print a secret.
func TestStartupErrors(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("model_list:\n  - model_name: a\n    litellm_params:\n      model: openai/gpt-4\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		env  []string // key, value pairs
		args []string
		want []string // substrings of the error
	}{
		{"serve without credentials", nil, []string{"serve", "--config", "testdata/config.yaml"},
			[]string{"missing LaaS settings: LAAS_PROJECT_CODE, LAAS_API_KEY, LAAS_PRESET_HASH (models without their own preset_hash: claude-3.5-sonnet)", "--demo"}},
		{"worker with only a key", []string{"LAAS_API_KEY", "key-SECRET", "NATS_URL", "nats://127.0.0.1:1"}, []string{"worker", "--config", "testdata/config.yaml"},
			[]string{"missing LaaS settings: LAAS_PROJECT_CODE, LAAS_PRESET_HASH"}},
		{"gateway without NATS_URL", nil, []string{"gateway"}, []string{"NATS_URL is not set"}},
		{"worker without NATS_URL", []string{"LAAS_PROJECT_CODE", "p", "LAAS_API_KEY", "k", "LAAS_PRESET_HASH", "h"}, []string{"worker"}, []string{"NATS_URL is not set"}},
		{"unreachable NATS", []string{"NATS_URL", "nats://user:pw-SECRET@127.0.0.1:1"}, []string{"gateway", "--config", "testdata/config.yaml"},
			[]string{"connect to NATS at nats://[redacted]@127.0.0.1:1"}},
		{"malformed config", nil, []string{"gateway", "--config", bad, "--nats-url", "nats://127.0.0.1:1"},
			[]string{"bad.yaml:4:", `must start with "laas/"`}},
		{"missing config named explicitly", nil, []string{"gateway", "--config", "nope.yaml", "--nats-url", "nats://127.0.0.1:1"}, []string{"nope.yaml"}},
		{"bad log level", nil, []string{"gateway", "--log-level", "loud"}, []string{"BRIDGE_LOG_LEVEL"}},
		{"bad concurrency", []string{"BRIDGE_WORKER_CONCURRENCY", "0"}, []string{"serve", "--demo", "--config", "testdata/config.yaml", "--nats-listen", "", "--listen", "127.0.0.1:0"},
			[]string{"BRIDGE_WORKER_CONCURRENCY must be at least 1, got 0"}},
		{"zero replicas", []string{"BRIDGE_STREAM_REPLICAS", "0"}, []string{"gateway", "--nats-url", "nats://127.0.0.1:1"},
			[]string{"BRIDGE_STREAM_REPLICAS must be 1 to 5 (3 on a 3-node NATS cluster), got 0"}},
		{"six replicas", []string{"BRIDGE_STREAM_REPLICAS", "6"}, []string{"worker", "--nats-url", "nats://127.0.0.1:1"},
			[]string{"BRIDGE_STREAM_REPLICAS must be 1 to 5 (3 on a 3-node NATS cluster), got 6"}},
		{"replicas not a number", []string{"BRIDGE_STREAM_REPLICAS", "three"}, []string{"gateway", "--nats-url", "nats://127.0.0.1:1"},
			[]string{"BRIDGE_STREAM_REPLICAS"}},
		{"three replicas on the embedded server", []string{"BRIDGE_STREAM_REPLICAS", "3"},
			[]string{"serve", "--demo", "--config", "testdata/config.yaml", "--nats-listen", "", "--listen", "127.0.0.1:0"},
			[]string{"BRIDGE_STREAM_REPLICAS=3 needs a NATS cluster of at least 3 servers, but `laas-bridge serve` without NATS_URL embeds a single server, which holds one replica: set NATS_URL to the cluster's servers (comma-separated), or leave BRIDGE_STREAM_REPLICAS unset or 1"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			clearEnv(t)
			for i := 0; i+1 < len(tc.env); i += 2 {
				t.Setenv(tc.env[i], tc.env[i+1])
			}
			args := tc.args
			if args[0] == "serve" {
				args = append(args, "--data-dir", t.TempDir())
			}
			var out bytes.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			err := run(ctx, args, &out, &out)
			if err == nil {
				t.Fatal("run succeeded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			for _, secret := range []string{"key-SECRET", "pw-SECRET"} {
				if strings.Contains(err.Error()+out.String(), secret) {
					t.Errorf("a secret was printed: %s / %s", err, out.String())
				}
			}
		})
	}
}

func TestUsageAndVersion(t *testing.T) {
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"version"}, &out, &errOut); err != nil || !strings.HasPrefix(out.String(), "laas-bridge ") {
		t.Errorf("version: %v %q", err, out.String())
	}
	for _, args := range [][]string{nil, {"frobnicate"}, {"serve", "--no-such-flag"}, {"gateway", "extra-arg"}} {
		errOut.Reset()
		if err := run(context.Background(), args, &out, &errOut); !errors.Is(err, errUsage) || errOut.Len() == 0 {
			t.Errorf("run %v = %v, stderr %q; want usage", args, err, errOut.String())
		}
	}
}

// TestMockCommand runs `mock-laas` in-process and checks it is the mock.
func TestMockCommand(t *testing.T) {
	clearEnv(t)
	logs := &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"mock-laas", "--listen", "127.0.0.1:0"}, logs, logs) }()
	var url string
	for range 500 {
		if m := mockReady.FindStringSubmatch(logs.String()); m != nil {
			url = m[1]
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if url == "" {
		t.Fatalf("mock did not start: %s", logs)
	}
	resp, err := http.Post(url+"/api/preset/v2/chat/completions", "application/json", strings.NewReader(`{"hash":"h","messages":[{"role":"user","content":"x"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Errorf("without credentials: %d, want 401", resp.StatusCode)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("mock-laas exited with %v", err)
	}
}

// TestWrongLaaSCredentialsStaySecret: LaaS refusing the bridge's
// credentials is a 502 upstream_auth_error for the caller, and neither the
// answer nor the log holds the credentials.
func TestWrongLaaSCredentialsStaySecret(t *testing.T) {
	const project, apiKey = "proj-SECRET-1234", "key-SECRET-5678"
	clearEnv(t)
	mock, err := laasmock.New(laasmock.Config{ProjectCode: "the-right-one", APIKey: "the-right-key"})
	if err != nil {
		t.Fatal(err)
	}
	var hits atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1); mock.ServeHTTP(w, r) }))
	defer up.Close()
	t.Setenv("LAAS_PROJECT_CODE", project)
	t.Setenv("LAAS_API_KEY", apiKey)
	t.Setenv("LAAS_PRESET_HASH", "h")
	t.Setenv("LAAS_BASE_URL", up.URL)
	in := startRun(t, "serve", "--listen", "127.0.0.1:0", "--nats-listen", "", "--data-dir", t.TempDir(),
		"--config", "testdata/config.yaml", "--log-level", "debug")

	_, err = client(in, "sk").Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
		Model: "claude-3.5-sonnet", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
	})
	wantAPIError(t, err, 502, "upstream_error", "upstream_auth_error", "")
	if strings.Contains(err.Error(), project) || strings.Contains(err.Error(), apiKey) {
		t.Errorf("the answer holds a credential: %v", err)
	}
	if hits.Load() != 1 {
		t.Errorf("LaaS was called %d times; a refused credential is not retried", hits.Load())
	}
	in.shutdown(t)
	if logs := in.logs.String(); strings.Contains(logs, project) || strings.Contains(logs, apiKey) {
		t.Errorf("the log holds a credential:\n%s", logs)
	}
}

// TestSettingsPrecedence: .env is read when present, real environment
// variables win over it, and flags win over both.
func TestSettingsPrecedence(t *testing.T) {
	clearEnv(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, ".env"), []byte("BRIDGE_LOG_LEVEL=from-dotenv\nNATS_URL=nats://127.0.0.1:1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	errOf := func(args ...string) string {
		err := run(context.Background(), args, io.Discard, io.Discard)
		if err == nil {
			t.Fatalf("run %v succeeded", args)
		}
		return err.Error()
	}
	if e := errOf("gateway"); !strings.Contains(e, `"from-dotenv"`) {
		t.Errorf(".env not read: %s", e)
	}
	t.Setenv("BRIDGE_LOG_LEVEL", "from-env")
	if e := errOf("gateway"); !strings.Contains(e, `"from-env"`) {
		t.Errorf("the real environment does not win over .env: %s", e)
	}
	if e := errOf("gateway", "--log-level", "from-flag"); !strings.Contains(e, `"from-flag"`) {
		t.Errorf("the flag does not win: %s", e)
	}
}

// TestHelpDoesNotPrintSecrets: -h and a mistyped flag print the flags'
// defaults; values from the environment that may hold passwords are not
// among them.
func TestHelpDoesNotPrintSecrets(t *testing.T) {
	clearEnv(t)
	t.Setenv("NATS_URL", "nats://bridge:nats-SECRET@127.0.0.1:1")
	t.Setenv("LAAS_BASE_URL", "https://user:laas-SECRET@laas.example")
	t.Setenv("BRIDGE_MASTER_KEY", "master-SECRET")
	for _, args := range [][]string{{"worker", "-h"}, {"worker", "--typo"}, {"serve", "-h"}, {"gateway", "--typo"}} {
		var out bytes.Buffer
		err := run(context.Background(), args, &out, &out)
		if !errors.Is(err, errUsage) {
			t.Errorf("%v: %v", args, err)
		}
		if strings.Contains(out.String(), "SECRET") || !strings.Contains(out.String(), "-nats-url") {
			t.Errorf("%v printed:\n%s", args, out.String())
		}
	}
}
