package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/laas-bridge/laas-bridge/laas/laasmock"
	"github.com/laas-bridge/laas-bridge/schema"
)

// tcpProxy forwards TCP connections to target until cut, which closes every
// connection it carries and refuses new ones until restore.
type tcpProxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	down  bool
	conns map[net.Conn]struct{}
}

func startTCPProxy(t *testing.T, target string) *tcpProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	go p.serve()
	t.Cleanup(func() { ln.Close(); p.cut() })
	return p
}

func (p *tcpProxy) url() string { return "nats://" + p.ln.Addr().String() }

func (p *tcpProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		down := p.down
		p.mu.Unlock()
		if down {
			c.Close()
			continue
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[up] = struct{}{}, struct{}{}
		p.mu.Unlock()
		pipe := func(dst, src net.Conn) {
			_, _ = io.Copy(dst, src)
			dst.Close()
			src.Close()
		}
		go pipe(up, c)
		go pipe(c, up)
	}
}

// cut closes every connection through the proxy and refuses new ones.
func (p *tcpProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

func (p *tcpProxy) restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = false
}

// startGatewayAndWorker runs a gateway process on gatewayNATS and a worker
// process (one LaaS call at a time) on workerNATS, against the LaaS at
// laasURL; it returns the gateway's URL.
func startGatewayAndWorker(t *testing.T, gatewayNATS, workerNATS, laasURL string) (gateway, worker *proc, url string) {
	t.Helper()
	cfg, _ := filepath.Abs("testdata/config.yaml")
	env := baseEnv("BRIDGE_CONFIG="+cfg, "TEST_OWN_PRESET=own-hash", "BRIDGE_WORKER_CONCURRENCY=1",
		"LAAS_PROJECT_CODE=p", "LAAS_API_KEY=k", "LAAS_PRESET_HASH=h", "LAAS_BASE_URL="+laasURL)
	gateway, addr := startProc(t, "gateway", t.TempDir(), append(env, "NATS_URL="+gatewayNATS), gatewayReady, "gateway", "--listen", "127.0.0.1:0")
	worker, _ = startProc(t, "worker", t.TempDir(), append(env, "NATS_URL="+workerNATS), workerReady, "worker")
	return gateway, worker, "http://" + addr
}

// health reads the gateway's /health status and its NATS connection state.
func health(t *testing.T, url string) (status int, natsState string) {
	t.Helper()
	resp, err := http.Get(url + "/health")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var h struct {
		NATS string `json:"nats"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&h)
	return resp.StatusCode, h.NATS
}

// TestGatewayReadsBackRepliesAfterReconnect: a caller whose gateway lost
// its NATS connection while the worker answered still gets the answer. The
// worker, finding no gateway listening, keeps the reply in the replies
// stream (LAAS_REPLIES); the gateway reads it back when it reconnects.
// Only the gateway's connection is cut (it reaches NATS through a proxy);
// the worker stays connected.
func TestGatewayReadsBackRepliesAfterReconnect(t *testing.T) {
	port := freePort(t)
	natsProc := startNATS(t, "nats", t.TempDir(), port)
	natsURL := fmt.Sprintf("nats://127.0.0.1:%d", port)
	proxy := startTCPProxy(t, fmt.Sprintf("127.0.0.1:%d", port))
	mock, err := laasmock.New(laasmock.Config{ProjectCode: "p", APIKey: "k", Latency: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	g := &gate{mock: mock, hold: "hold", arrived: make(chan struct{}, 8), open: make(chan struct{})}
	up := httptest.NewServer(g)
	t.Cleanup(up.Close)
	gw, worker, url := startGatewayAndWorker(t, proxy.url(), natsURL, up.URL)
	s := &stack{url: url}
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)

	const text = "hold: answered while the gateway is away"
	answered := make(chan outcome, 1)
	go func() { answered <- s.post(text, "", 3*time.Minute) }()
	select {
	case <-g.arrived:
	case <-time.After(60 * time.Second):
		t.Fatal("the LaaS call did not start within 60s")
	}
	proxy.cut()
	eventually(t, 30*time.Second, "the gateway to see NATS gone", func() bool {
		_, state := health(t, url)
		return state != "CONNECTED"
	})
	close(g.open) // the worker gets its answer and finds no gateway listening
	eventually(t, 60*time.Second, "the worker's reply in "+schema.StreamReplies, func() bool {
		s, err := js.Stream(context.Background(), schema.StreamReplies)
		return err == nil && s.CachedInfo().State.Msgs == 1
	})
	select {
	case o := <-answered:
		t.Fatalf("the caller was answered while its gateway was disconnected: %+v", o)
	default:
	}
	proxy.restore()
	select {
	case o := <-answered:
		if o.status != 200 || o.content != "mock[h]: "+text {
			t.Errorf("after the reconnect the caller got %+v, want the answer", o)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the caller got no answer within 60s of the proxy letting the gateway reconnect")
	}
	if n := len(mock.Log()); n != 1 {
		t.Errorf("LaaS calls: %d, want 1", n)
	}
	for _, p := range []*proc{worker, gw, natsProc} {
		p.stop(t)
	}
}

// TestNATSDownAnswers503: while the gateway's NATS server is down, a chat
// request gets 503 with OpenAI's error body (server_error,
// queue_unavailable) and Retry-After, and /health says 503; once NATS is
// back (same store), the gateway and the worker reconnect and requests
// are answered again.
func TestNATSDownAnswers503(t *testing.T) {
	port := freePort(t)
	store := t.TempDir()
	natsProc := startNATS(t, "nats", store, port)
	natsURL := fmt.Sprintf("nats://127.0.0.1:%d", port)
	mock, err := laasmock.New(laasmock.Config{ProjectCode: "p", APIKey: "k"})
	if err != nil {
		t.Fatal(err)
	}
	up := httptest.NewServer(mock)
	t.Cleanup(up.Close)
	gw, worker, url := startGatewayAndWorker(t, natsURL, natsURL, up.URL)

	post := func(text string) (status int, retryAfter string, body []byte) {
		resp, err := (&http.Client{Timeout: 2 * time.Minute}).Post(url+"/v1/chat/completions", "application/json",
			strings.NewReader(chatBody("claude-3.5-sonnet", text)))
		if err != nil {
			t.Fatalf("%s: %v", text, err)
		}
		defer resp.Body.Close()
		body, _ = io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("Retry-After"), body
	}
	answer := func(body []byte) string {
		var cc struct {
			Choices []struct {
				Message struct{ Content string } `json:"message"`
			} `json:"choices"`
		}
		_ = json.Unmarshal(body, &cc)
		if len(cc.Choices) == 0 {
			return ""
		}
		return cc.Choices[0].Message.Content
	}
	if status, _, body := post("before"); status != 200 || answer(body) != "mock[h]: before" {
		t.Fatalf("before NATS went down: %d %s", status, body)
	}

	natsProc.stop(t)
	eventually(t, 30*time.Second, "the gateway to see NATS gone", func() bool {
		_, state := health(t, url)
		return state != "CONNECTED"
	})
	if status, state := health(t, url); status != 503 {
		t.Errorf("/health while NATS is down: %d (nats %s), want 503", status, state)
	}
	status, retryAfter, body := post("while NATS is down")
	var e struct {
		Error *struct {
			Message string  `json:"message"`
			Type    string  `json:"type"`
			Param   *string `json:"param"`
			Code    string  `json:"code"`
		} `json:"error"`
	}
	if err := json.Unmarshal(body, &e); err != nil || e.Error == nil {
		t.Fatalf("while NATS is down: status %d, not an OpenAI error body: %s", status, body)
	}
	if status != 503 || retryAfter != "1" || e.Error.Type != "server_error" || e.Error.Code != schema.CodeQueueUnavailable ||
		e.Error.Param != nil || e.Error.Message == "" {
		t.Errorf("while NATS is down: status %d, Retry-After %q, body %s; want 503, 1, server_error/%s", status, retryAfter, body, schema.CodeQueueUnavailable)
	}

	restarted := startNATS(t, "nats-restarted", store, port)
	eventually(t, 60*time.Second, "/health 200 after NATS came back", func() bool {
		status, _ := health(t, url)
		return status == 200
	})
	if status, _, body := post("after"); status != 200 || answer(body) != "mock[h]: after" {
		t.Errorf("after NATS came back: %d %s", status, body)
	}
	// The refused request never reaches LaaS: the gateway's connection
	// does not buffer publishes while it reconnects (queue.Unbuffered), so
	// nothing of the 503'd request is sent once NATS is back.
	var calls []string
	for _, e := range mock.Log() {
		calls = append(calls, e.LastUser)
	}
	if want := []string{"before", "after"}; !slices.Equal(calls, want) {
		t.Errorf("LaaS calls %q, want %q: a request answered 503 was run after all", calls, want)
	}
	for _, p := range []*proc{worker, gw, restarted} {
		p.stop(t)
	}
}
