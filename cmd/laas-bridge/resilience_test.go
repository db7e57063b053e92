package main

import (
	"context"
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

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/laas-bridge/laas-bridge/schema"
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
	env     []string // the gateway's and workers' environment
}

func startStack(t *testing.T, natsURL string, workers int, mockLatency string, extraEnv ...string) *stack {
	t.Helper()
	cfg, _ := filepath.Abs("testdata/config.yaml")
	s := &stack{natsURL: natsURL}
	var mockURL string
	s.mock, mockURL = startProc(t, "mock-laas", t.TempDir(), baseEnv(), mockReady,
		"mock-laas", "--listen", "127.0.0.1:0", "--project", "p", "--api-key", "k", "--latency", mockLatency, "--access-log")
	env := baseEnv("BRIDGE_WORKER_CONCURRENCY=4", "NATS_URL="+natsURL, "BRIDGE_CONFIG="+cfg, "TEST_OWN_PRESET=own-hash", "BRIDGE_ACK_WAIT=2s",
		"LAAS_PROJECT_CODE=p", "LAAS_API_KEY=k", "LAAS_PRESET_HASH=h", "LAAS_BASE_URL="+mockURL)
	env = unsetEnv(append(env, extraEnv...))
	s.env = env
	var addr string
	s.gateway, addr = startProc(t, "gateway", t.TempDir(), env, gatewayReady, "gateway", "--listen", "127.0.0.1:0")
	s.url = "http://" + addr
	for i := range workers {
		w, _ := startProc(t, fmt.Sprintf("worker-%d", i), t.TempDir(), env, workerReady, "worker")
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
	took    time.Duration // from sending the request to reading the answer
}

func (s *stack) ask(text string) outcome { return s.post(text, "", 2*time.Minute) }

// post sends one chat request, with an Idempotency-Key when key is set.
func (s *stack) post(text, key string, timeout time.Duration) outcome {
	req, _ := http.NewRequest("POST", s.url+"/v1/chat/completions", strings.NewReader(chatBody("claude-3.5-sonnet", text)))
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	start := time.Now()
	resp, err := (&http.Client{Timeout: timeout}).Do(req)
	if err != nil {
		return outcome{err: err, took: time.Since(start)}
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
	o := outcome{status: resp.StatusCode, code: body.Error.Code, took: time.Since(start)}
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
	natsProc := startNATS(t, "nats", t.TempDir(), port)
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
	for _, p := range []*proc{s.workers[1], s.workers[2], s.gateway, s.mock, natsProc} {
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
	natsProc := startNATS(t, "nats", store, port)
	s := startStack(t, fmt.Sprintf("nats://127.0.0.1:%d", port), 3, "200ms")
	var restarted *proc
	out := s.load(t, 200, 32, 20, func() {
		natsProc.stop(t)
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
	t.Logf("answered %d, refused while NATS was down %d; gateway: %d reconnects", answered, refused,
		logLines(s.gateway.logs.String(), `msg="nats reconnected"`))
	if logLines(s.gateway.logs.String(), `msg="nats reconnected"`) == 0 {
		t.Error("the gateway never reconnected: NATS was not restarted mid-load")
	}
	if answered+refused != 200 || answered < 150 {
		t.Errorf("answered %d + refused %d of 200", answered, refused)
	}
	for _, p := range append(s.workers, s.gateway, s.mock, restarted) {
		p.stop(t)
	}
}

// TestProcessCancelIdempotencyQueueFull: with NATS, the mock, a gateway and
// three workers as separate processes (one LaaS call at a time each):
// a caller that gives up stops its LaaS call; two callers with one
// Idempotency-Key make one LaaS call; a full queue answers 429 at once.
func TestProcessCancelIdempotencyQueueFull(t *testing.T) {
	port := freePort(t)
	natsProc := startNATS(t, "nats", t.TempDir(), port)
	s := startStack(t, fmt.Sprintf("nats://127.0.0.1:%d", port), 3, "1500ms",
		"BRIDGE_WORKER_CONCURRENCY=1", "BRIDGE_QUEUE_MAX_MSGS=5")
	post := s.post
	mockLines := func(part string) int { return logLines(s.mock.logs.String(), part) }

	t.Run("a caller that gives up stops its LaaS call", func(t *testing.T) {
		if o := post("never mind", "", 500*time.Millisecond); o.err == nil {
			t.Fatalf("the call did not time out: %+v", o)
		}
		for start := time.Now(); mockLines(`"status":499`) != 1; time.Sleep(20 * time.Millisecond) {
			if time.Since(start) > 10*time.Second {
				t.Fatalf("the mock saw no aborted call:\n%s", s.mock.logs)
			}
		}
	})
	t.Run("one Idempotency-Key, one LaaS call", func(t *testing.T) {
		before := mockLines(`"status":200`)
		var wg sync.WaitGroup
		outs := make([]outcome, 2)
		for i := range outs {
			wg.Add(1)
			go func() { defer wg.Done(); outs[i] = post("pay once", "key-1", time.Minute) }()
		}
		wg.Wait()
		for i, o := range outs {
			if o.status != 200 || o.content != "mock[h]: pay once" {
				t.Errorf("caller %d: %+v", i, o)
			}
		}
		// The mock's access log reaches the test through a pipe, possibly
		// after the answers: wait for the call's line, then give a second
		// call's line as long to show up.
		calls := func() int { return mockLines(`"status":200`) - before }
		for start := time.Now(); calls() < 1 && time.Since(start) < 10*time.Second; time.Sleep(10 * time.Millisecond) {
		}
		for start := time.Now(); calls() == 1 && time.Since(start) < 500*time.Millisecond; time.Sleep(10 * time.Millisecond) {
		}
		if got := calls(); got != 1 {
			t.Errorf("LaaS calls for one key: %d, want 1", got)
		}
	})
	t.Run("a full queue answers 429 at once", func(t *testing.T) {
		var wg sync.WaitGroup
		for i := range 8 { // 3 running + 5 queued
			wg.Add(1)
			go func() { defer wg.Done(); post(fmt.Sprint("fill ", i), "", time.Minute) }()
		}
		// Wait until the stream holds its 5 (plus those being worked on).
		nc, err := nats.Connect(s.natsURL)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		js, _ := jetstream.New(nc)
		for start := time.Now(); ; time.Sleep(10 * time.Millisecond) {
			st, err := js.Stream(context.Background(), schema.StreamRequests)
			if err == nil && st.CachedInfo().State.Msgs >= 5 {
				break
			}
			if time.Since(start) > 10*time.Second {
				t.Fatalf("the queue did not fill: %v", err)
			}
		}
		start := time.Now()
		o := post("one too many", "", 10*time.Second)
		if o.status != 429 || o.code != "queue_full" {
			t.Errorf("full queue: %+v", o)
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("429 after %s, not at once", took)
		}
		wg.Wait()
	})
	for _, p := range append(s.workers, s.gateway, s.mock, natsProc) {
		p.stop(t)
	}
}
