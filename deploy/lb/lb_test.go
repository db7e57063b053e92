package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// backend is a gateway stand-in that answers "<name>: <body>" and counts
// its requests.
type backend struct {
	name string
	srv  *httptest.Server
	n    atomic.Int64
}

func newBackend(t *testing.T, name string) *backend {
	b := &backend{name: name}
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.n.Add(1)
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s: %s", name, body)
	}))
	t.Cleanup(b.srv.Close)
	return b
}

func (b *backend) addr() string { return b.srv.Listener.Addr().String() }

// refusingAddr is an address where nothing listens.
func refusingAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// testLB is the balancer over a list of addresses the test sets.
type testLB struct {
	b     *balancer
	url   string
	mu    sync.Mutex
	addrs []string
	fail  error
}

func newTestLB(t *testing.T, addrs ...string) *testLB {
	l := &testLB{addrs: addrs}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	transport := &http.Transport{DialContext: (&net.Dialer{Timeout: 3 * time.Second}).DialContext}
	t.Cleanup(transport.CloseIdleConnections)
	l.b = newBalancer(func(context.Context) ([]string, error) {
		l.mu.Lock()
		defer l.mu.Unlock()
		return slices.Clone(l.addrs), l.fail
	}, transport, time.Minute, log)
	l.set(nil, addrs...)
	srv := httptest.NewServer(proxy(l.b, log))
	t.Cleanup(srv.Close)
	l.url = srv.URL
	return l
}

// set changes the addresses (or makes resolving fail) and refreshes.
func (l *testLB) set(fail error, addrs ...string) error {
	l.mu.Lock()
	l.addrs, l.fail = addrs, fail
	l.mu.Unlock()
	return l.b.refresh(context.Background())
}

type answer struct {
	status int
	body   string
	header http.Header
}

func post(t *testing.T, url, body string) answer {
	t.Helper()
	resp, err := http.Post(url+"/v1/chat/completions", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, string(b), resp.Header}
}

// errorCode is the "code" of an OpenAI error body.
func errorCode(t *testing.T, body string) string {
	t.Helper()
	var e struct {
		Error struct {
			Type string  `json:"type"`
			Code *string `json:"code"`
		} `json:"error"`
	}
	if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error.Code == nil || e.Error.Type != "server_error" {
		t.Fatalf("not an OpenAI server_error body: %q (%v)", body, err)
	}
	return *e.Error.Code
}

func TestRoundRobin(t *testing.T) {
	a, b := newBackend(t, "a"), newBackend(t, "b")
	l := newTestLB(t, a.addr(), b.addr())
	var got []string
	for i := range 6 {
		ans := post(t, l.url, fmt.Sprint(i))
		got = append(got, ans.body)
	}
	want := []string{"a: 0", "b: 1", "a: 2", "b: 3", "a: 4", "b: 5"}
	if !slices.Equal(got, want) {
		t.Errorf("answers %q, want %q", got, want)
	}
}

// A POST whose connection was refused was not sent: it goes to the next
// address, body and all.
func TestRefusedPOSTGoesToTheNext(t *testing.T) {
	a := newBackend(t, "a")
	l := newTestLB(t, refusingAddr(t), a.addr())
	for i := range 4 {
		body := fmt.Sprintf(`{"messages":[{"role":"user","content":"hello %d"}]}`, i)
		if ans := post(t, l.url, body); ans.status != 200 || ans.body != "a: "+body {
			t.Errorf("request %d: %d %q", i, ans.status, ans.body)
		}
	}
	if a.n.Load() != 4 {
		t.Errorf("a got %d requests, want 4", a.n.Load())
	}
}

// Once the request was sent, a broken connection is an error for the
// caller: the gateway may have accepted the request, so it is not sent
// again.
func TestNoRetryAfterSent(t *testing.T) {
	var got atomic.Int64
	breaker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.Add(1)
		_, _ = io.ReadAll(r.Body)
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
	}))
	t.Cleanup(breaker.Close)
	other := newBackend(t, "other")
	for _, method := range []string{http.MethodPost, http.MethodGet} {
		t.Run(method, func(t *testing.T) {
			got.Store(0)
			// Round robin would send the next request to the other:
			// start each case on the breaker.
			l := newTestLB(t, breaker.Listener.Addr().String(), other.addr())
			var body io.Reader
			if method == http.MethodPost {
				body = strings.NewReader(`{"messages":[]}`)
			}
			req, err := http.NewRequest(method, l.url+"/v1/chat/completions", body)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadGateway || errorCode(t, string(b)) != CodeGatewayError {
				t.Errorf("answer %d %q, want 502 %s", resp.StatusCode, b, CodeGatewayError)
			}
			if got.Load() != 1 || other.n.Load() != 0 {
				t.Errorf("the broken gateway got %d requests, the other %d; want 1 and 0", got.Load(), other.n.Load())
			}
		})
	}
}

func TestNoGateway(t *testing.T) {
	l := newTestLB(t, refusingAddr(t), refusingAddr(t))
	for _, addrs := range [][]string{{refusingAddr(t), refusingAddr(t)}, nil} {
		if err := l.set(nil, addrs...); err != nil {
			t.Fatal(err)
		}
		ans := post(t, l.url, `{}`)
		if ans.status != http.StatusServiceUnavailable || errorCode(t, ans.body) != CodeNoGateway || ans.header.Get("Retry-After") != "1" {
			t.Errorf("%d addresses: answer %d %q %v, want 503 %s with Retry-After: 1", len(addrs), ans.status, ans.body, ans.header, CodeNoGateway)
		}
	}
}

// The addresses come from the resolver each refresh; a failed refresh keeps
// the last ones.
func TestResolveAgain(t *testing.T) {
	a, b := newBackend(t, "a"), newBackend(t, "b")
	l := newTestLB(t, a.addr())
	if ans := post(t, l.url, "1"); ans.body != "a: 1" {
		t.Errorf("answer %q", ans.body)
	}
	if err := l.set(nil, b.addr()); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if ans := post(t, l.url, fmt.Sprint(i)); ans.body != fmt.Sprintf("b: %d", i) {
			t.Errorf("after the change: answer %q", ans.body)
		}
	}
	if err := l.set(fmt.Errorf("no such host")); err == nil {
		t.Fatal("refresh did not report the resolver's error")
	}
	if ans := post(t, l.url, "x"); ans.body != "b: x" {
		t.Errorf("after a failed refresh: answer %q, want b's", ans.body)
	}
}

// A streamed answer reaches the caller event by event: the second event is
// sent only after the first arrived through the balancer.
func TestStreamNotBuffered(t *testing.T) {
	release := make(chan struct{})
	sse := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: one\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		fmt.Fprint(w, "data: two\n\ndata: [DONE]\n\n")
	}))
	t.Cleanup(sse.Close)
	l := newTestLB(t, sse.Listener.Addr().String())
	resp, err := http.Post(l.url+"/v1/chat/completions", "application/json", strings.NewReader(`{"stream":true}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if sc.Text() != "" {
				lines <- sc.Text()
			}
		}
	}()
	// A guard against a hang, not a timing: a buffering proxy never
	// passes the first event on.
	select {
	case l := <-lines:
		if l != "data: one" {
			t.Fatalf("first line %q", l)
		}
	case <-time.After(30 * time.Second):
		close(release)
		t.Fatal("the first event did not come through before the stream ended: the balancer buffers")
	}
	close(release)
	var rest []string
	for l := range lines {
		rest = append(rest, l)
	}
	if !slices.Equal(rest, []string{"data: two", "data: [DONE]"}) {
		t.Errorf("rest of the stream %q", rest)
	}
}

func TestDNSResolver(t *testing.T) {
	resolve, err := dnsResolver("localhost:4000")
	if err != nil {
		t.Fatal(err)
	}
	addrs, err := resolve(context.Background())
	if err != nil || !slices.Contains(addrs, "127.0.0.1:4000") || !slices.IsSorted(addrs) {
		t.Errorf("localhost:4000 resolves to %v (%v), want 127.0.0.1:4000 among them, sorted", addrs, err)
	}
	if _, err := dnsResolver("gateway"); err == nil {
		t.Error("an upstream without a port was accepted")
	}
}

func TestParseFlags(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	for _, tc := range []struct {
		name    string
		args    []string
		env     map[string]string
		want    config
		wantErr string
	}{
		{name: "defaults", want: config{":4000", "gateway:4000", time.Second, 3 * time.Second}},
		{name: "environment", env: map[string]string{"LB_LISTEN": ":8080", "LB_UPSTREAM": "gw:4000", "LB_RESOLVE_EVERY": "5s", "LB_DIAL_TIMEOUT": "1s"},
			want: config{":8080", "gw:4000", 5 * time.Second, time.Second}},
		{name: "flags win", args: []string{"--listen", ":9", "--upstream", "x:1", "--resolve-every", "2s", "--dial-timeout", "4s"}, env: map[string]string{"LB_LISTEN": ":8080"},
			want: config{":9", "x:1", 2 * time.Second, 4 * time.Second}},
		{name: "no port", args: []string{"--upstream", "gateway"}, wantErr: "--upstream"},
		{name: "zero interval", args: []string{"--resolve-every", "0s"}, wantErr: "--resolve-every must be positive"},
		{name: "bad env duration", env: map[string]string{"LB_DIAL_TIMEOUT": "soon"}, wantErr: "LB_DIAL_TIMEOUT"},
		{name: "stray argument", args: []string{"serve"}, wantErr: "unexpected arguments"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseFlags(tc.args, env(tc.env), io.Discard)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

// run serves on --listen and proxies to --upstream.
func TestRun(t *testing.T) {
	a := newBackend(t, "a")
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--listen", "127.0.0.1:0", "--upstream", a.addr()}, func(string) string { return "" }, io.Discard, ready)
	}()
	var addr string
	select {
	case addr = <-ready:
	case err := <-done:
		t.Fatalf("run: %v", err)
	}
	if ans := post(t, "http://"+addr, "hi"); ans.status != 200 || ans.body != "a: hi" {
		t.Errorf("answer %d %q", ans.status, ans.body)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("run after cancel: %v", err)
	}
}
