package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var natsReady = regexp.MustCompile(`Server is ready()`)

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startNATS runs nats-server with JetStream and a file store in store.
func startNATS(t *testing.T, name, store string, port int) *proc {
	t.Helper()
	p, _ := startExe(t, natsServer, name, t.TempDir(), baseEnv(), natsReady,
		"-js", "-sd", store, "-a", "127.0.0.1", "-p", strconv.Itoa(port))
	return p
}

// stack is NATS, the mock, a gateway and workers, each its own process.
type stack struct {
	natsURL string
	mock    *proc
	gateway *proc
	url     string
	workers []*proc
}

func startStack(t *testing.T, natsURL string, workers int, mockLatency string) *stack {
	t.Helper()
	cfg, _ := filepath.Abs("testdata/config.yaml")
	s := &stack{natsURL: natsURL}
	var mockURL string
	s.mock, mockURL = startProc(t, "mock-laas", t.TempDir(), baseEnv(), mockReady,
		"mock-laas", "--listen", "127.0.0.1:0", "--project", "p", "--api-key", "k", "--latency", mockLatency, "--access-log")
	env := baseEnv("NATS_URL="+natsURL, "BRIDGE_CONFIG="+cfg, "TEST_OWN_PRESET=own-hash", "BRIDGE_ACK_WAIT=2s",
		"LAAS_PROJECT_CODE=p", "LAAS_API_KEY=k", "LAAS_PRESET_HASH=h", "LAAS_BASE_URL="+mockURL)
	var addr string
	s.gateway, addr = startProc(t, "gateway", t.TempDir(), env, gatewayReady, "gateway", "--listen", "127.0.0.1:0")
	s.url = "http://" + addr
	for i := range workers {
		w, _ := startProc(t, fmt.Sprintf("worker-%d", i), t.TempDir(), env, workerReady, "worker", "--concurrency", "4")
		s.workers = append(s.workers, w)
	}
	return s
}

// outcome is one caller's result.
type outcome struct {
	status  int
	code    string
	content string
	err     error
}

func (s *stack) ask(text string) outcome {
	c := &http.Client{Timeout: 2 * time.Minute}
	resp, err := c.Post(s.url+"/v1/chat/completions", "application/json", strings.NewReader(chatBody("claude-3.5-sonnet", text)))
	if err != nil {
		return outcome{err: err}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var body struct {
		Choices []struct {
			Message struct{ Content string } `json:"message"`
		} `json:"choices"`
		Error struct{ Code string } `json:"error"`
	}
	_ = json.Unmarshal(b, &body)
	o := outcome{status: resp.StatusCode, code: body.Error.Code}
	if len(body.Choices) > 0 {
		o.content = body.Choices[0].Message.Content
	}
	return o
}

// load sends n requests with distinct texts, conc at a time, and calls
// midway once the mock has served `after` calls (after < conc).
func (s *stack) load(t *testing.T, n, conc, after int, midway func()) []outcome {
	t.Helper()
	out := make([]outcome, n)
	next := make(chan int)
	var wg sync.WaitGroup
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				out[i] = s.ask(fmt.Sprintf("caller %d", i))
			}
		}()
	}
	var once sync.Once
	for i := range n {
		if i >= conc {
			once.Do(func() {
				for start := time.Now(); logLines(s.mock.logs.String(), `"status":200`) < after; time.Sleep(10 * time.Millisecond) {
					if time.Since(start) > time.Minute {
						t.Errorf("the mock served fewer than %d calls in a minute", after)
						break
					}
				}
				midway()
			})
		}
		next <- i
	}
	close(next)
	wg.Wait()
	return out
}

// TestWorkerSIGKILLMidLoad: a worker killed with SIGKILL in the middle of
// LaaS calls loses nothing: its jobs are redelivered to the other workers
// and all 200 callers get their own answer.
func TestWorkerSIGKILLMidLoad(t *testing.T) {
	port := freePort(t)
	nats := startNATS(t, "nats", t.TempDir(), port)
	s := startStack(t, fmt.Sprintf("nats://127.0.0.1:%d", port), 3, "1s")
	out := s.load(t, 200, 48, 24, func() {
		// Calls run in waves of 1 s that end together: kill in the middle
		// of a wave, not between two.
		time.Sleep(500 * time.Millisecond)
		t.Logf("SIGKILL worker-0 at %s", time.Now().UTC().Format("15:04:05.000"))
		_ = s.workers[0].cmd.Process.Signal(syscall.SIGKILL)
	})
	answered := 0
	for i, o := range out {
		if o.status == 200 && o.content == fmt.Sprintf("mock[h]: caller %d", i) {
			answered++
		} else {
			t.Errorf("caller %d: %+v", i, o)
		}
	}
	if answered != 200 {
		t.Errorf("%d of 200 callers got their own answer", answered)
	}
	if err := <-s.workers[0].done; err == nil || !strings.Contains(err.Error(), "killed") {
		t.Errorf("worker-0 was not killed: %v", err)
	}
	// The killed worker's calls in flight were run again by the others.
	calls := logLines(s.mock.logs.String(), `"status"`)
	t.Logf("LaaS calls in all: %d for 200 requests", calls)
	if calls <= 200 {
		t.Error("no LaaS call was run again: the test did not kill a worker mid-call")
	}
	for _, p := range []*proc{s.workers[1], s.workers[2], s.gateway, s.mock, nats} {
		p.stop(t)
	}
}

// TestNATSRestartMidLoad: the NATS server (file store) restarted in the
// middle of the load loses nothing it accepted: every caller either gets
// its own answer, or, while NATS is down, a 503 queue_unavailable that says
// the request was not accepted. No caller waits in vain.
func TestNATSRestartMidLoad(t *testing.T) {
	port := freePort(t)
	store := t.TempDir()
	nats := startNATS(t, "nats", store, port)
	s := startStack(t, fmt.Sprintf("nats://127.0.0.1:%d", port), 3, "200ms")
	var restarted *proc
	out := s.load(t, 200, 32, 20, func() {
		nats.stop(t)
		restarted = startNATS(t, "nats-restarted", store, port)
	})
	answered, refused := 0, 0
	for i, o := range out {
		switch {
		case o.status == 200 && o.content == fmt.Sprintf("mock[h]: caller %d", i):
			answered++
		case o.status == 503 && o.code == "queue_unavailable":
			refused++
		default:
			t.Errorf("caller %d: %+v", i, o)
		}
	}
	t.Logf("answered %d, refused while NATS was down %d", answered, refused)
	if answered+refused != 200 || answered < 150 {
		t.Errorf("answered %d + refused %d of 200", answered, refused)
	}
	for _, p := range append(s.workers, s.gateway, s.mock, restarted) {
		p.stop(t)
	}
}
