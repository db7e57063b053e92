package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/openai/openai-go/v3"

	"github.com/laas-bridge/laas-bridge/queue"
)

// binary is the laas-bridge binary built once for the process tests;
// natsServer is nats-server, built from the module the bridge embeds.
var binary, natsServer string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "laas-bridge-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "laas-bridge")
	out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	natsServer = filepath.Join(dir, "nats-server")
	if out, err := exec.Command("go", "build", "-o", natsServer, "github.com/nats-io/nats-server/v2").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build nats-server: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is the built binary running as a child process.
type proc struct {
	name string
	cmd  *exec.Cmd
	logs *syncBuffer
	done chan error
}

// baseEnv is the environment of a child: PATH and HOME only, so nothing from
// the outer environment changes it.
func baseEnv(kv ...string) []string {
	// BRIDGE_AUTH=none: gateways run open unless the test sets a key.
	return append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "BRIDGE_AUTH=none"}, kv...)
}

// startProc runs the binary and waits until its output matches ready; it
// returns the first submatch. The process is killed at cleanup if still running.
func startProc(t *testing.T, name, dir string, env []string, ready *regexp.Regexp, args ...string) (*proc, string) {
	t.Helper()
	return startExe(t, binary, name, dir, env, ready, args...)
}

// startExe is startProc for any executable.
func startExe(t *testing.T, exe, name, dir string, env []string, ready *regexp.Regexp, args ...string) (*proc, string) {
	t.Helper()
	cmd := exec.Command(exe, args...)
	cmd.Dir, cmd.Env = dir, env
	p := &proc{name: name, cmd: cmd, logs: &syncBuffer{}, done: make(chan error, 1)}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	match := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		sent := false
		for sc.Scan() {
			line := sc.Text()
			p.logs.Write([]byte(line + "\n"))
			if m := ready.FindStringSubmatch(line); m != nil && !sent {
				sent = true
				match <- m[len(m)-1]
			}
		}
	}()
	go func() { p.done <- cmd.Wait(); pw.Close() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		if t.Failed() {
			t.Logf("--- %s output:\n%s", name, p.logs)
		}
	})
	select {
	case m := <-match:
		return p, m
	case err := <-p.done:
		t.Fatalf("%s exited before it was ready: %v\n%s", name, err, p.logs)
	case <-time.After(60 * time.Second):
		t.Fatalf("%s not ready within 60s:\n%s", name, p.logs)
	}
	return nil, ""
}

// stop sends SIGTERM and requires a clean exit.
func (p *proc) stop(t *testing.T) {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		if err != nil {
			t.Errorf("%s exited with %v after SIGTERM:\n%s", p.name, err, p.logs)
		}
	case <-time.After(30 * time.Second):
		t.Errorf("%s did not exit within 30s of SIGTERM", p.name)
	}
}

// listeningNATS starts a NATS server with JetStream (file store in a
// temporary directory) on a free local port, for processes to connect
// to; it is shut down at cleanup.
func listeningNATS(t *testing.T) *server.Server {
	t.Helper()
	srv, err := queue.StartEmbedded(queue.EmbeddedConfig{StoreDir: t.TempDir(), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	return srv
}

var (
	gatewayReady = regexp.MustCompile(`msg="gateway listening".* addr=(\S+)`)
	workerReady  = regexp.MustCompile(`msg="worker pool started"()`)
	mockReady    = regexp.MustCompile(`mock-laas listening on (http://\S+)`)
)

// TestGatewayAndTwoWorkerProcesses runs the built binary as a mock LaaS (in
// the variant answer shapes seen in the wild, which the workers normalise), a
// gateway and two workers against one NATS server, and checks that both
// workers share the work, every caller gets its own answer, and the LaaS
// credentials appear in no process's output.
func TestGatewayAndTwoWorkerProcesses(t *testing.T) {
	const project, apiKey = "proj-SECRET-4711", "key-SECRET-0815"
	srv := listeningNATS(t)
	natsURL := srv.ClientURL()
	cfg, _ := filepath.Abs("testdata/config.yaml")

	mock, mockURL := startProc(t, "mock-laas", t.TempDir(), baseEnv(), mockReady,
		"mock-laas", "--listen", "127.0.0.1:0", "--project", project, "--api-key", apiKey, "--latency", "30ms", "--access-log", "--wild")
	gw, addr := startProc(t, "gateway", t.TempDir(), baseEnv("NATS_URL="+natsURL, "BRIDGE_CONFIG="+cfg, "TEST_OWN_PRESET=own-hash"),
		gatewayReady, "gateway", "--listen", "127.0.0.1:0")
	workerEnv := baseEnv("NATS_URL="+natsURL, "BRIDGE_CONFIG="+cfg, "TEST_OWN_PRESET=own-hash", "LAAS_PROJECT_CODE="+project,
		"LAAS_API_KEY="+apiKey, "LAAS_PRESET_HASH=default-hash", "LAAS_BASE_URL="+mockURL, "BRIDGE_LOG_LEVEL=debug")
	var workers []*proc
	for i := range 2 {
		w, _ := startProc(t, fmt.Sprintf("worker-%d", i), t.TempDir(), workerEnv, workerReady, "worker", "--concurrency", "4")
		workers = append(workers, w)
	}

	c := client(&instance{url: "http://" + addr}, "sk-any")
	const n = 60
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			model, preset := "claude-3.5-sonnet", "default-hash"
			if i%3 == 0 {
				model, preset = "own-preset", "own-hash"
			}
			text := fmt.Sprintf("process caller %d", i)
			cc, err := c.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
				Model: model, Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(text)},
			})
			if err != nil {
				errs <- fmt.Errorf("caller %d: %w", i, err)
				return
			}
			if got, want := cc.Choices[0].Message.Content, fmt.Sprintf("mock[%s]: %s", preset, text); got != want || cc.Model != model {
				errs <- fmt.Errorf("caller %d got %q from %q, want %q from %q", i, got, cc.Model, want, model)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	for _, w := range workers {
		w.stop(t)
	}
	gw.stop(t)
	mock.stop(t)

	total := 0
	for _, w := range workers {
		done := logLines(w.logs.String(), `msg="job done"`, "status=200")
		if done == 0 {
			t.Errorf("%s answered no job: the work was not shared", w.name)
		}
		total += done
	}
	if total != n {
		t.Errorf("workers answered %d jobs, want %d", total, n)
	}
	if calls := logLines(mock.logs.String(), `"status":200`); calls != n {
		t.Errorf("the mock served %d calls, want %d (one per request)", calls, n)
	}
	for _, p := range append(workers, gw, mock) {
		for _, secret := range []string{project, apiKey} {
			if strings.Contains(p.logs.String(), secret) {
				t.Errorf("%s's output contains a LaaS credential", p.name)
			}
		}
	}
}

// TestServeDemoProcess runs the README's demo command in the repository root
// and sends the README's curl example.
func TestServeDemoProcess(t *testing.T) {
	root, _ := filepath.Abs("../..")
	p, addr := startProc(t, "serve --demo", root, baseEnv(), gatewayReady,
		"serve", "--demo", "--listen", "127.0.0.1:0", "--nats-listen", "", "--data-dir", t.TempDir())
	body := `{
    "model": "claude-3.5-sonnet",
    "messages": [{"role": "user", "content": "안녕하세요!"}]
}`
	req, _ := http.NewRequest("POST", "http://"+addr+"/chat/completions", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer sk-1234")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"content":"mock[demo-preset]: 안녕하세요!"`) ||
		!strings.Contains(string(b), `"model":"claude-3.5-sonnet"`) || !strings.Contains(string(b), `"object":"chat.completion"`) {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	p.stop(t)
	logs := p.logs.String()
	if logLines(logs, "level=WARN", "DEMO MODE", "mock") != 1 {
		t.Errorf("the demo does not say loudly that answers are mocked:\n%s", logs)
	}
	if logLines(logs, "config keys laas-bridge does not use were ignored", "keys=litellm_settings.custom_provider_map,litellm_settings.set_verbose") != 1 {
		t.Errorf("ignored config keys not logged once:\n%s", logs)
	}
}
