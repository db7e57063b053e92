package bridge

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"mime/multipart"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/laas-bridge/laas-bridge/batch"
	"github.com/laas-bridge/laas-bridge/schema"
)

// TestBodyBudgetAccounting: reserve takes exactly what fits and nothing
// more; a claim releases what it grew, once; concurrent claims end at zero.
func TestBodyBudgetAccounting(t *testing.T) {
	b := &bodyBudget{max: 100}
	if !b.reserve(60) || !b.reserve(40) {
		t.Fatal("reserve refused bytes that fit")
	}
	if b.reserve(1) {
		t.Fatal("reserve took a byte over the cap")
	}
	if got := b.inUse(); got != 100 {
		t.Fatalf("inUse = %d, want 100", got)
	}
	b.release(60)
	b.release(40)
	c := &bodyClaim{budget: b}
	if !c.grow(70) || !c.grow(30) || c.grow(1) {
		t.Fatal("claim grew wrongly")
	}
	c.release()
	c.release() // idempotent
	if got := b.inUse(); got != 0 {
		t.Fatalf("inUse after release = %d, want 0", got)
	}

	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			for range 200 {
				c := &bodyClaim{budget: b}
				if c.grow(7) {
					c.grow(11)
				}
				c.release()
			}
		})
	}
	wg.Wait()
	if got := b.inUse(); got != 0 {
		t.Fatalf("inUse after concurrent claims = %d, want 0", got)
	}
}

func TestInflightBudget(t *testing.T) {
	for _, tc := range []struct {
		name           string
		limit, maxBody int64
		want           int64
	}{
		{"no limit", math.MaxInt64, 64 << 20, DefaultMaxInflightBytes},
		{"a quarter of the limit", 1 << 30, 64 << 20, 256 << 20},
		{"never below the largest body", 128 << 20, 64 << 20, 64 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := InflightBudget(tc.limit, tc.maxBody); got != tc.want {
				t.Errorf("InflightBudget(%d, %d) = %d, want %d", tc.limit, tc.maxBody, got, tc.want)
			}
		})
	}
	cfg := Config{MaxBodyBytes: 8 << 20, MaxInflightBytes: 4 << 20}
	cfg.setDefaults()
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "max in-flight body bytes") {
		t.Errorf("Validate with a budget under the max body = %v", err)
	}
}

// rawRequest starts a POST on a plain TCP connection with the given
// headers (Content-Length among them, or Transfer-Encoding) and the first
// part of its body; the caller writes the rest or stalls.
func rawRequest(t *testing.T, f *fixture, path string, headers map[string]string, first []byte) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(f.srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	var sb strings.Builder
	fmt.Fprintf(&sb, "POST %s HTTP/1.1\r\nHost: bridge\r\nContent-Type: application/json\r\n", path)
	for k, v := range headers {
		fmt.Fprintf(&sb, "%s: %s\r\n", k, v)
	}
	sb.WriteString("\r\n")
	if _, err := conn.Write(append([]byte(sb.String()), first...)); err != nil {
		t.Fatal(err)
	}
	return conn
}

// readResponse reads one answer from conn within limit.
func readResponse(t *testing.T, conn net.Conn, limit time.Duration) (*http.Response, []byte) {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(limit))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer within %s: %v", limit, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("answer body: %v", err)
	}
	return resp, body
}

// waitInUse waits until the gateway's body budget holds want bytes.
func waitInUse(t *testing.T, gw *Gateway, want int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for gw.budget.inUse() != want {
		if time.Now().After(deadline) {
			t.Fatalf("body budget holds %d bytes, want %d", gw.budget.inUse(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// paddedChat is a chat request padded with spaces to exactly n bytes.
func paddedChat(t *testing.T, model string, n int) []byte {
	t.Helper()
	b := []byte(chatBody(model, "padded"))
	if len(b) > n {
		t.Fatalf("padded body of %d bytes is too small", n)
	}
	return append(b, []byte(strings.Repeat(" ", n-len(b)))...)
}

func wantOverloaded(t *testing.T, resp *http.Response, body []byte) {
	t.Helper()
	var e struct{ Error schema.ErrorDetail }
	_ = json.Unmarshal(body, &e)
	if resp.StatusCode != http.StatusServiceUnavailable || e.Error.Code == nil || *e.Error.Code != CodeServerOverloaded || e.Error.Type != schema.TypeServer ||
		resp.Header.Get("Retry-After") != "1" {
		t.Fatalf("want 503 %s with Retry-After: 1, got %d (Retry-After %q) %s", CodeServerOverloaded, resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
}

// TestBodyBudget: bodies in flight hold their length against
// MaxInflightBytes; one more that does not fit gets 503 server_overloaded
// with Retry-After before it is read, and once a body is queued its bytes
// are free again. Every way out of a request gives back what it held.
func TestBodyBudget(t *testing.T) {
	const mib = 1 << 20
	f := newFixture(t, Config{MaxBodyBytes: mib, MaxInflightBytes: 2 * mib, BodyReadTimeout: time.Minute})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f.fakeWorker(t, ctx, 4, echoAnswer)
	full := paddedChat(t, "claude-3.5-sonnet", mib)
	cl := map[string]string{"Content-Length": fmt.Sprint(mib)}

	// Two bodies of 1 MiB, each half sent: the budget is full.
	a := rawRequest(t, f, "/v1/chat/completions", cl, full[:mib/2])
	b := rawRequest(t, f, "/v1/chat/completions", cl, full[:mib/2])
	waitInUse(t, f.gw, 2*mib)
	for _, path := range []string{"/v1/chat/completions", "/v1/queue/jobs"} {
		resp, body := f.do(t, "POST", path, string(full))
		wantOverloaded(t, resp, body)
	}
	// A small body does not fit either, but nothing is taken for trying.
	resp, body := f.do(t, "POST", "/v1/chat/completions", chatBody("claude-3.5-sonnet", "small"))
	wantOverloaded(t, resp, body)
	if got := f.gw.budget.inUse(); got != 2*mib {
		t.Fatalf("refusals changed the budget: %d", got)
	}
	// The first body arrives, is queued and answered: its MiB is free.
	if _, err := a.Write(full[mib/2:]); err != nil {
		t.Fatal(err)
	}
	if resp, body := readResponse(t, a, 30*time.Second); resp.StatusCode != 200 || !strings.Contains(string(body), "echo: padded") {
		t.Fatalf("completed body: %d %s", resp.StatusCode, body)
	}
	waitInUse(t, f.gw, mib)
	if resp, body := f.do(t, "POST", "/v1/chat/completions", chatBody("claude-3.5-sonnet", "fits again")); resp.StatusCode != 200 {
		t.Fatalf("after a release: %d %s", resp.StatusCode, body)
	}
	// The second caller hangs up mid-body: its MiB is free.
	_ = b.Close()
	waitInUse(t, f.gw, 0)

	// Every other way out leaves the budget at zero.
	for _, tc := range []struct {
		name, path, body string
		chunked          bool
		status           int
	}{
		{"answered", "/v1/chat/completions", chatBody("claude-3.5-sonnet", "hi"), false, 200},
		{"job queued", "/v1/queue/jobs", chatBody("claude-3.5-sonnet", "hi"), false, 202},
		{"not JSON", "/v1/chat/completions", "{not json", false, 400},
		{"unknown model", "/v1/chat/completions", chatBody("nope", "hi"), false, 404},
		{"chunked, answered", "/v1/chat/completions", chatBody("claude-3.5-sonnet", "hi"), true, 200},
		{"chunked, over the max body", "/v1/chat/completions", string(full) + strings.Repeat(" ", 10), true, 413},
		{"declared over the max body", "/v1/chat/completions", string(full) + " ", false, 413},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r io.Reader = strings.NewReader(tc.body)
			if tc.chunked {
				r = io.MultiReader(r) // no length known: sent chunked
			}
			req, _ := http.NewRequest("POST", f.srv.URL+tc.path, r)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, body)
			}
			if got := f.gw.budget.inUse(); got != 0 {
				t.Fatalf("budget holds %d bytes after the answer", got)
			}
		})
	}
}

// TestBodyReadTimeout: a caller that sends half a body and stalls gets
// 408 request_timeout once BodyReadTimeout has passed, not a hang, and its
// bytes are free again; a caller whose answer takes longer than the body
// timeout still gets it (the deadline ends with the body).
func TestBodyReadTimeout(t *testing.T) {
	const timeout = 500 * time.Millisecond
	f := newFixture(t, Config{BodyReadTimeout: timeout})
	body := paddedChat(t, "claude-3.5-sonnet", 64<<10)
	for _, path := range []string{"/v1/chat/completions", "/v1/queue/jobs"} {
		t.Run(path, func(t *testing.T) {
			conn := rawRequest(t, f, path, map[string]string{"Content-Length": fmt.Sprint(len(body))}, body[:len(body)/2])
			start := time.Now()
			resp, got := readResponse(t, conn, 10*time.Second) // the bound: far above the timeout, far below a hang
			var e struct{ Error schema.ErrorDetail }
			_ = json.Unmarshal(got, &e)
			if resp.StatusCode != http.StatusRequestTimeout || e.Error.Code == nil || *e.Error.Code != CodeRequestTimeout || e.Error.Type != schema.TypeInvalidRequest {
				t.Fatalf("stalled body: %d %s", resp.StatusCode, got)
			}
			if waited := time.Since(start); waited < timeout/2 {
				t.Errorf("408 after %s, before the %s timeout", waited, timeout)
			}
			waitInUse(t, f.gw, 0)
		})
	}
	t.Run("slow answer", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() {
			time.Sleep(3 * timeout)
			f.fakeWorker(t, ctx, 1, echoAnswer)
		}()
		resp, got := f.do(t, "POST", "/v1/chat/completions", chatBody("claude-3.5-sonnet", "slow"))
		if resp.StatusCode != 200 || !strings.Contains(string(got), "echo: slow") {
			t.Fatalf("answer after the body timeout: %d %s", resp.StatusCode, got)
		}
	})
}

// TestBodyNotSizedFromContentLength: a body that declares 48 MiB and
// sends 1 KiB costs the gateway about what was sent, not what was
// declared.
func TestBodyNotSizedFromContentLength(t *testing.T) {
	const declared = 48 << 20
	f := newFixture(t, Config{MaxBodyBytes: 64 << 20, MaxInflightBytes: 64 << 20})
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	conn := rawRequest(t, f, "/v1/chat/completions", map[string]string{"Content-Length": fmt.Sprint(declared)}, make([]byte, 1024))
	waitInUse(t, f.gw, declared)
	time.Sleep(100 * time.Millisecond) // let the handler read what was sent
	runtime.ReadMemStats(&after)
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 8<<20 {
		t.Errorf("a 1 KiB start of a %d-byte body allocated %d bytes", declared, grew)
	}
	_ = conn.Close()
	waitInUse(t, f.gw, 0)
}

// TestReadAllGrowsWithTheBody: the buffer doubles with what arrives,
// ends at the declared length exactly, and a chunked body's claim holds
// the buffer's size; a chunked body over the limit is refused.
func TestReadAllGrowsWithTheBody(t *testing.T) {
	data := strings.Repeat("x", 3<<20+5)
	b := &bodyBudget{max: 64 << 20}
	c := &bodyClaim{budget: b}
	got, err := readAll(strings.NewReader(data), int64(len(data)), 64<<20, c)
	if err != nil || string(got) != data || cap(got) != len(data) {
		t.Fatalf("declared: len %d cap %d err %v", len(got), cap(got), err)
	}
	if b.inUse() != 0 {
		t.Fatalf("a declared body grew the claim: %d", b.inUse())
	}
	got, err = readAll(io.MultiReader(strings.NewReader(data)), -1, 64<<20, c)
	if err != nil || string(got) != data || b.inUse() != int64(cap(got)) {
		t.Fatalf("chunked: len %d cap %d claimed %d err %v", len(got), cap(got), b.inUse(), err)
	}
	c.release()
	small := &bodyBudget{max: 1 << 20}
	if _, err := readAll(strings.NewReader(data), -1, 64<<20, &bodyClaim{budget: small}); !errors.Is(err, errBudget) {
		t.Fatalf("chunked over the budget: %v", err)
	}
	if _, err := readAll(http.MaxBytesReader(nil, io.NopCloser(strings.NewReader(data)), 1<<20), -1, 1<<20, &bodyClaim{budget: b}); !errors.As(err, new(*http.MaxBytesError)) {
		t.Fatalf("chunked over the limit: %v", err)
	}
	// A chunked body whose length is a buffer's size claims that size,
	// not the next one; one of exactly the limit, with a budget of
	// exactly the limit (InflightBudget's floor), is taken.
	for _, n := range []int{firstChunk, 1 << 20, 3 << 20} {
		const limit = 3 << 20
		exact := &bodyBudget{max: limit}
		c := &bodyClaim{budget: exact}
		got, err := readAll(http.MaxBytesReader(nil, io.NopCloser(strings.NewReader(data[:n])), limit), -1, limit, c)
		if err != nil || len(got) != n || exact.inUse() != int64(n) {
			t.Errorf("chunked body of %d bytes, limit and budget %d: len %d, claimed %d, err %v; want it read, claiming %d", n, limit, len(got), exact.inUse(), err, n)
		}
		c.release()
	}
}

// TestBodyReleasedWhileWaiting: a caller waiting for its answer holds
// none of the body budget: its body is in the queue.
func TestBodyReleasedWhileWaiting(t *testing.T) {
	f := newFixture(t, Config{})
	body := paddedChat(t, "claude-3.5-sonnet", 512<<10)
	answered := make(chan int, 1)
	callCtx, hangUp := context.WithCancel(context.Background())
	t.Cleanup(hangUp) // before the fixture's cleanup, which waits for open requests
	go func() {
		req, _ := http.NewRequestWithContext(callCtx, "POST", f.srv.URL+"/v1/chat/completions", strings.NewReader(string(body)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			answered <- 0
			return
		}
		resp.Body.Close()
		answered <- resp.StatusCode
	}()
	for start := time.Now(); ; time.Sleep(10 * time.Millisecond) {
		info, err := f.q.Consumer.Info(context.Background())
		if err == nil && info.NumPending == 1 {
			break
		}
		if time.Since(start) > 20*time.Second {
			t.Fatal("the request was not queued")
		}
	}
	// Queued (the stream has it) a moment before the gateway hears its
	// ack and lets the body go; no worker runs, so the caller is still
	// waiting all along.
	for start := time.Now(); f.gw.budget.inUse() != 0; time.Sleep(10 * time.Millisecond) {
		if time.Since(start) > 10*time.Second {
			t.Fatalf("a caller waiting for its answer holds %d bytes of the body budget", f.gw.budget.inUse())
		}
	}
	select {
	case status := <-answered:
		t.Fatalf("answered %d with no worker running", status)
	default:
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f.fakeWorker(t, ctx, 1, echoAnswer)
	if status := <-answered; status != 200 {
		t.Fatalf("answer: %d", status)
	}
}

// TestBodyBudgetMetrics: the bytes held show in
// laas_bridge_gateway_body_bytes_in_flight, and a refusal counts in
// laas_bridge_gateway_overloaded_total{limit="body_bytes"}.
func TestBodyBudgetMetrics(t *testing.T) {
	const mib = 1 << 20
	f := newFixture(t, Config{MasterKey: "sk-test", Metrics: prometheus.NewRegistry(), MaxBodyBytes: mib, MaxInflightBytes: mib})
	auth := "Bearer sk-test"
	conn := rawRequest(t, f, "/v1/chat/completions", map[string]string{"Content-Length": fmt.Sprint(mib), "Authorization": auth}, []byte("{"))
	waitInUse(t, f.gw, mib)
	resp, body := f.do(t, "POST", "/v1/chat/completions", chatBody("claude-3.5-sonnet", "no room"), "Authorization", auth)
	wantOverloaded(t, resp, body)
	mfs := scrape(t, f.srv.URL)
	if v, ok := metricValue(mfs, "laas_bridge_gateway_body_bytes_in_flight"); !ok || v != mib {
		t.Errorf("body_bytes_in_flight = %v (found %v), want %d", v, ok, mib)
	}
	if v, ok := metricValue(mfs, "laas_bridge_gateway_overloaded_total", "limit", "body_bytes"); !ok || v != 1 {
		t.Errorf("overloaded_total{limit=body_bytes} = %v (found %v), want 1", v, ok)
	}
	_ = conn.Close()
	waitInUse(t, f.gw, 0)
}

// TestUploadIdleTimeout: POST /v1/files (up to 200 MiB, which may take
// long) is cut when its body stops arriving for BodyReadTimeout (408),
// never for its total time: an upload that keeps sending, for longer than
// the timeout in all, is stored.
func TestUploadIdleTimeout(t *testing.T) {
	const timeout = time.Second
	f := newFixture(t, Config{BodyReadTimeout: timeout})
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	_ = mw.WriteField("purpose", "batch")
	fw, _ := mw.CreateFormFile("file", "in.jsonl")
	for i := range 8 {
		fmt.Fprintf(fw, `{"custom_id":"c%d","method":"POST","url":"/v1/chat/completions","body":%s}`+"\n", i, chatBody("claude-3.5-sonnet", "hi"))
	}
	_ = mw.Close()
	form := buf.Bytes()
	send := func(t *testing.T) net.Conn {
		conn, err := net.Dial("tcp", strings.TrimPrefix(f.srv.URL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close() })
		head := fmt.Sprintf("POST /v1/files HTTP/1.1\r\nHost: bridge\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n", mw.FormDataContentType(), len(form))
		if _, err := conn.Write([]byte(head)); err != nil {
			t.Fatal(err)
		}
		return conn
	}
	t.Run("stalled", func(t *testing.T) {
		conn := send(t)
		if _, err := conn.Write(form[:len(form)/2]); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		resp, got := readResponse(t, conn, 10*time.Second) // far above the timeout, far below a hang
		var e struct{ Error schema.ErrorDetail }
		_ = json.Unmarshal(got, &e)
		if resp.StatusCode != http.StatusRequestTimeout || e.Error.Code == nil || *e.Error.Code != CodeRequestTimeout {
			t.Fatalf("stalled upload: %d %s; want 408 %s", resp.StatusCode, got, CodeRequestTimeout)
		}
		if waited := time.Since(start); waited < timeout/2 {
			t.Errorf("408 after %s, before the %s timeout", waited, timeout)
		}
	})
	t.Run("slow but steady", func(t *testing.T) {
		conn := send(t)
		const pieces = 8 // a piece every timeout/5: 1.6 timeouts in all
		step := (len(form) + pieces - 1) / pieces
		for i := 0; i < len(form); i += step {
			if _, err := conn.Write(form[i:min(i+step, len(form))]); err != nil {
				t.Fatal(err)
			}
			time.Sleep(timeout / 5)
		}
		resp, got := readResponse(t, conn, 10*time.Second)
		var fo schema.FileObject
		if resp.StatusCode != 200 || json.Unmarshal(got, &fo) != nil || !batch.ValidFileID(fo.ID) {
			t.Fatalf("steady upload over %s in all: %d %s; want it stored", pieces*timeout/5, resp.StatusCode, got)
		}
	})
}
