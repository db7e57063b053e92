package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// clearEnv unsets every setting the bridge reads, so the outer environment
// cannot change a test.
func clearEnv(t *testing.T) {
	t.Helper()
	for _, k := range []string{"LAAS_PROJECT_CODE", "LAAS_API_KEY", "LAAS_PRESET_HASH", "LAAS_BASE_URL", "BRIDGE_LISTEN",
		"BRIDGE_CONFIG", "BRIDGE_DATA_DIR", "BRIDGE_MASTER_KEY", "NATS_URL", "BRIDGE_NATS_LISTEN", "BRIDGE_WORKER_CONCURRENCY",
		"BRIDGE_LOG_LEVEL", "BRIDGE_LOG_FORMAT", "BRIDGE_ACCESS_LOG", "BRIDGE_METRICS_LISTEN", "BRIDGE_MICRO_SUBJECT", "MOCK_LAAS_LISTEN", "MOCK_LAAS_LATENCY", "MOCK_LAAS_RATE_429", "MOCK_LAAS_RATE_500",
		"BRIDGE_STREAM_REPLICAS", "BRIDGE_QUEUE_MAX_MSGS", "BRIDGE_QUEUE_MAX_BYTES", "BRIDGE_ACK_WAIT", "BRIDGE_LAAS_MAX_CONCURRENCY",
		"NATS_CREDS", "NATS_NKEY_SEED", "NATS_CA", "NATS_CERT", "NATS_KEY"} {
		t.Setenv(k, "") // restored at cleanup
		os.Unsetenv(k)
	}
	t.Setenv("TEST_OWN_PRESET", "own-hash")
	// Tests run the API open unless they set a key (or unset this to test
	// that serve and gateway refuse to).
	t.Setenv("BRIDGE_AUTH", "none")
}

var listeningRe = regexp.MustCompile(`msg="gateway listening".* addr=(\S+)`)

// instance is laas-bridge running in-process through run.
type instance struct {
	url  string
	logs *syncBuffer
	done chan error
	stop context.CancelFunc

	once    sync.Once
	exitErr error
}

// shutdown stops the instance and waits for run to return; it requires a
// clean exit. Safe to call more than once.
func (in *instance) shutdown(t *testing.T) {
	t.Helper()
	in.once.Do(func() {
		in.stop()
		select {
		case in.exitErr = <-in.done:
		case <-time.After(30 * time.Second):
			in.exitErr = errors.New("laas-bridge did not stop within 30s")
		}
		if in.exitErr != nil {
			t.Errorf("laas-bridge exited with %v", in.exitErr)
		}
	})
}

// startRun runs `laas-bridge args...` in-process and waits for its gateway
// to listen. It is stopped, and must exit cleanly, at cleanup.
func startRun(t *testing.T, args ...string) *instance {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	in := &instance{logs: &syncBuffer{}, done: make(chan error, 1), stop: cancel}
	go func() { in.done <- run(ctx, args, in.logs, in.logs) }()
	deadline := time.Now().Add(30 * time.Second)
	for in.url == "" {
		if m := listeningRe.FindStringSubmatch(in.logs.String()); m != nil {
			in.url = "http://" + m[1]
			break
		}
		select {
		case err := <-in.done:
			t.Fatalf("laas-bridge %s exited: %v\n%s", strings.Join(args, " "), err, in.logs)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("gateway did not listen within 30s:\n%s", in.logs)
		}
	}
	t.Cleanup(func() { in.shutdown(t) })
	return in
}

func startDemo(t *testing.T, extra ...string) *instance {
	t.Helper()
	args := append([]string{"serve", "--demo", "--listen", "127.0.0.1:0", "--nats-listen", "", "--data-dir", t.TempDir(),
		"--config", "testdata/config.yaml", "--concurrency", "32"}, extra...)
	return startRun(t, args...)
}

func client(in *instance, key string) *openai.Client {
	c := openai.NewClient(option.WithBaseURL(in.url+"/v1/"), option.WithAPIKey(key), option.WithMaxRetries(0))
	return &c
}

func TestDemoWithOpenAIClient(t *testing.T) {
	clearEnv(t)
	in := startDemo(t)
	c := client(in, "sk-anything")
	ctx := context.Background()

	t.Run("chat completion", func(t *testing.T) {
		cc, err := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
			Model:    "claude-3.5-sonnet",
			Messages: []openai.ChatCompletionMessageParamUnion{openai.SystemMessage("be brief"), openai.UserMessage("안녕하세요!")},
		})
		if err != nil {
			t.Fatal(err)
		}
		if got, want := cc.Choices[0].Message.Content, "mock[demo-preset]: 안녕하세요!"; got != want {
			t.Errorf("content = %q, want %q", got, want)
		}
		if cc.Model != "claude-3.5-sonnet" || cc.Object != "chat.completion" || !strings.HasPrefix(cc.ID, "chatcmpl-") ||
			cc.Choices[0].FinishReason != "stop" || cc.Usage.TotalTokens != cc.Usage.PromptTokens+cc.Usage.CompletionTokens || cc.Usage.CompletionTokens == 0 {
			t.Errorf("completion = %+v", cc)
		}
	})
	t.Run("model with its own preset", func(t *testing.T) {
		cc, err := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
			Model: "own-preset", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
		})
		if err != nil {
			t.Fatal(err)
		}
		if got := cc.Choices[0].Message.Content; got != "mock[own-hash]: hi" {
			t.Errorf("content = %q", got)
		}
	})
	t.Run("model list", func(t *testing.T) {
		page, err := c.Models.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, m := range page.Data {
			ids = append(ids, m.ID)
		}
		if strings.Join(ids, ",") != "claude-3.5-sonnet,own-preset" {
			t.Errorf("models = %v", ids)
		}
		m, err := c.Models.Get(ctx, "own-preset")
		if err != nil || m.ID != "own-preset" || m.OwnedBy != "laas" {
			t.Errorf("get = %+v, %v", m, err)
		}
	})
	t.Run("unknown model", func(t *testing.T) {
		_, err := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
			Model: "gpt-4o", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
		})
		wantAPIError(t, err, 404, "invalid_request_error", "model_not_found", "model")
	})
	t.Run("bad role", func(t *testing.T) {
		_, err := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
			Model: "claude-3.5-sonnet", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi"), openai.ToolMessage("42", "call_1")},
		})
		wantAPIError(t, err, 400, "invalid_request_error", "invalid_value", "messages[1].role")
	})
	t.Run("params", func(t *testing.T) {
		params := openai.ChatCompletionNewParams{Model: "claude-3.5-sonnet", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}}
		if _, err := c.Chat.Completions.New(ctx, params, option.WithJSONSet("params", map[string]any{"name": "Kim", "n": 3})); err != nil {
			t.Errorf("string and number params: %v", err)
		}
		_, err := c.Chat.Completions.New(ctx, params, option.WithJSONSet("params", map[string]any{"obj": map[string]any{"a": 1}}))
		wantAPIError(t, err, 400, "invalid_request_error", "invalid_value", "params.obj")
	})
}

// TestConcurrentCallersThroughTheStack: 200 callers with distinct texts,
// through gateway, queue, workers and mock, each get their own answer.
func TestConcurrentCallersThroughTheStack(t *testing.T) {
	clearEnv(t)
	in := startDemo(t)
	c := client(in, "sk-anything")
	const n = 200
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			text := fmt.Sprintf("question number %d", i)
			cc, err := c.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
				Model: "claude-3.5-sonnet", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(text)},
			})
			if err != nil {
				errs <- fmt.Errorf("caller %d: %w", i, err)
				return
			}
			if got, want := cc.Choices[0].Message.Content, "mock[demo-preset]: "+text; got != want {
				errs <- fmt.Errorf("caller %d got %q, want %q", i, got, want)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestMasterKey(t *testing.T) {
	clearEnv(t)
	t.Setenv("BRIDGE_MASTER_KEY", "sk-master-secret")
	in := startDemo(t)
	params := openai.ChatCompletionNewParams{Model: "claude-3.5-sonnet", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}}

	_, err := client(in, "sk-wrong").Chat.Completions.New(context.Background(), params)
	wantAPIError(t, err, 401, "invalid_request_error", "invalid_api_key", "")
	if _, err := client(in, "sk-wrong").Models.List(context.Background()); err == nil {
		t.Error("model list without the key succeeded")
	}
	if _, err := client(in, "sk-master-secret").Chat.Completions.New(context.Background(), params); err != nil {
		t.Errorf("with the key: %v", err)
	}
	resp, err := http.Get(in.url + "/health")
	if err != nil || resp.StatusCode != 200 {
		t.Errorf("health without a key: %v %v", resp, err)
	}
	if strings.Contains(in.logs.String(), "sk-master-secret") {
		t.Error("the master key appears in the log")
	}
}

func wantAPIError(t *testing.T, err error, status int, typ, code, param string) {
	t.Helper()
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) {
		t.Fatalf("want an *openai.Error, got %v", err)
	}
	if apiErr.StatusCode != status || apiErr.Type != typ || apiErr.Code != code || apiErr.Param != param {
		t.Errorf("error = %d type=%q code=%q param=%q message=%q; want %d %q %q %q",
			apiErr.StatusCode, apiErr.Type, apiErr.Code, apiErr.Param, apiErr.Message, status, typ, code, param)
	}
}

// logLines counts the log lines that contain every one of parts.
func logLines(logs string, parts ...string) int {
	n := 0
	sc := bufio.NewScanner(strings.NewReader(logs))
	for sc.Scan() {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(sc.Text(), p)
		}
		if ok {
			n++
		}
	}
	return n
}
