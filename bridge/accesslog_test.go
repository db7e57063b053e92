package bridge

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/laas-bridge/laas-bridge/keys"
	"github.com/laas-bridge/laas-bridge/queue"
	"github.com/laas-bridge/laas-bridge/queue/queuetest"
	"github.com/laas-bridge/laas-bridge/schema"
)

// A valid W3C traceparent and its trace-id.
const (
	testTraceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	testTraceID     = "4bf92f3577b34da6a3ce929d0e0e4736"
)

// accessLines is every access line in logs, decoded.
func accessLines(t *testing.T, logs *syncBuffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for line := range strings.Lines(logs.String()) {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("access line %q is not JSON: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

// accessLineOf waits for the access line of request id and requires
// exactly one.
func accessLineOf(t *testing.T, logs *syncBuffer, id string) map[string]any {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		var found []map[string]any
		for _, l := range accessLines(t, logs) {
			if l["request_id"] == id {
				found = append(found, l)
			}
		}
		switch {
		case len(found) > 1:
			t.Fatalf("%d access lines for request %s, want 1: %v", len(found), id, found)
		case len(found) == 1:
			time.Sleep(50 * time.Millisecond) // a second line would come now
			if n := strings.Count(logs.String(), `"request_id":"`+id+`"`); n != 1 {
				t.Fatalf("%d access lines for request %s, want 1", n, id)
			}
			return found[0]
		case time.Now().After(deadline):
			t.Fatalf("no access line for request %s in:\n%s", id, logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// checkLine compares a line's fields with want (JSON numbers as float64)
// and requires every field of the line to be in want, but time and
// duration_ms, which it only requires.
func checkLine(t *testing.T, line, want map[string]any) {
	t.Helper()
	for _, k := range []string{"time", "duration_ms"} {
		if _, ok := line[k]; !ok {
			t.Errorf("access line has no %s: %v", k, line)
		}
	}
	if line["level"] != "INFO" || line["msg"] != "access" {
		t.Errorf("access line level %v msg %v", line["level"], line["msg"])
	}
	for k, v := range want {
		if line[k] != v {
			t.Errorf("access line %s = %#v, want %#v", k, line[k], v)
		}
	}
	for k := range line {
		if _, ok := want[k]; !ok && k != "time" && k != "duration_ms" && k != "level" && k != "msg" {
			t.Errorf("access line has %s = %#v, not expected", k, line[k])
		}
	}
}

// accessFixture is a gateway with the master key, virtual keys and an
// access log, and a worker that answers with the prompt's text and
// testUsage.
type accessFixture struct {
	*fixture
	logs *syncBuffer
}

func newAccessFixture(t *testing.T) *accessFixture {
	t.Helper()
	q := queuetest.Start(t, queue.Config{Memory: true})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	store, err := keys.Open(ctx, q.JS, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(store.Close)
	logs := &syncBuffer{}
	gw, err := New(Config{MasterKey: master, Keys: store, AccessLog: NewAccessLog(logs)}, q.Conn, q.JS, testCatalog(t), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = gw.Close() })
	srv := httptest.NewServer(gw.Handler())
	t.Cleanup(srv.Close)
	f := &accessFixture{fixture: &fixture{q: q, gw: gw, srv: srv}, logs: logs}
	wctx, stop := context.WithCancel(context.Background())
	t.Cleanup(stop)
	usage := testUsage
	f.fakeWorker(t, wctx, 1, textAnswer(0, &usage))
	return f
}

// TestAccessLogHTTP: one access line per HTTP request, with what the
// request and its answer say: key alias, model, lane, status and error
// code, the worker's timing, the usage, the bytes each way; never the
// prompt, the answer or a key.
func TestAccessLogHTTP(t *testing.T) {
	f := newAccessFixture(t)
	kf := &keysFixture{fixture: f.fixture}
	secret, token := kf.generate(t, `{"key_alias": "team-a"}`)
	const prompt = "the secret prompt text 7f3a"

	t.Run("200", func(t *testing.T) {
		body := chatBody("claude-3.5-sonnet", prompt)
		resp, out := f.do(t, "POST", "/v1/chat/completions?x=1", body, "Authorization", "Bearer "+secret, HeaderTraceparent, testTraceparent)
		if resp.StatusCode != 200 {
			t.Fatalf("status %d: %s", resp.StatusCode, out)
		}
		id := resp.Header.Get(HeaderRequestID)
		checkLine(t, accessLineOf(t, f.logs, id), map[string]any{
			"request_id": id, "trace_id": testTraceID, "key": "team-a", "model": "claude-3.5-sonnet", "lane": "interactive",
			"door": "http", "method": "POST", "path": "/v1/chat/completions", "status": 200.0,
			"queue_ms": 7.0, "upstream_ms": 11.0, "attempts": 1.0, "prompt_tokens": 12.0, "completion_tokens": 34.0,
			"bytes_in": float64(len(body)), "bytes_out": float64(len(out)), "stream": false,
		})
		for h, want := range map[string]string{HeaderQueueMs: "7", HeaderUpstreamMs: "11", HeaderAttempts: "1"} {
			if got := resp.Header.Get(h); got != want {
				t.Errorf("%s = %q, want %q", h, got, want)
			}
		}
	})
	t.Run("stream", func(t *testing.T) {
		body := streamBody("claude-3.5-sonnet", prompt, "")
		resp, out := f.do(t, "POST", "/chat/completions", body, "Authorization", "Bearer "+master)
		if resp.StatusCode != 200 || !strings.HasSuffix(string(out), sseDone) {
			t.Fatalf("status %d: %s", resp.StatusCode, out)
		}
		id := resp.Header.Get(HeaderRequestID)
		checkLine(t, accessLineOf(t, f.logs, id), map[string]any{
			"request_id": id, "model": "claude-3.5-sonnet", "lane": "interactive",
			"door": "http", "method": "POST", "path": "/chat/completions", "status": 200.0,
			"queue_ms": 7.0, "upstream_ms": 11.0, "attempts": 1.0, "prompt_tokens": 12.0, "completion_tokens": 34.0,
			"bytes_in": float64(len(body)), "bytes_out": float64(len(out)), "stream": true,
		})
	})
	t.Run("400", func(t *testing.T) {
		body := `{"model": "claude-3.5-sonnet", "messages": [], "user": "` + prompt + `"}`
		resp, out := f.do(t, "POST", "/v1/chat/completions", body, "Authorization", "Bearer "+secret)
		var e schema.ErrorBody
		if err := json.Unmarshal(out, &e); err != nil || resp.StatusCode != 400 || e.Error.Code == nil {
			t.Fatalf("status %d: %s", resp.StatusCode, out)
		}
		id := resp.Header.Get(HeaderRequestID)
		checkLine(t, accessLineOf(t, f.logs, id), map[string]any{
			"request_id": id, "key": "team-a", "model": "claude-3.5-sonnet", "lane": "interactive",
			"door": "http", "method": "POST", "path": "/v1/chat/completions", "status": 400.0, "error_code": *e.Error.Code,
			"bytes_in": float64(len(body)), "bytes_out": float64(len(out)), "stream": false,
		})
	})
	t.Run("401", func(t *testing.T) {
		body := chatBody("claude-3.5-sonnet", prompt)
		resp, out := f.do(t, "POST", "/v1/chat/completions", body, "Authorization", "Bearer sk-not-a-key-9c1d")
		if resp.StatusCode != 401 {
			t.Fatalf("status %d: %s", resp.StatusCode, out)
		}
		id := resp.Header.Get(HeaderRequestID)
		checkLine(t, accessLineOf(t, f.logs, id), map[string]any{
			"request_id": id, "door": "http", "method": "POST", "path": "/v1/chat/completions",
			"status": 401.0, "error_code": schema.CodeInvalidAPIKey,
			"bytes_in": 0.0, "bytes_out": float64(len(out)), "stream": false,
		})
	})
	t.Run("job", func(t *testing.T) {
		body := chatBody("claude-3.5-sonnet", prompt)
		resp, out := f.do(t, "POST", "/v1/queue/jobs", body, "Authorization", "Bearer "+secret)
		if resp.StatusCode != 202 {
			t.Fatalf("status %d: %s", resp.StatusCode, out)
		}
		id := resp.Header.Get(HeaderRequestID)
		checkLine(t, accessLineOf(t, f.logs, id), map[string]any{
			"request_id": id, "key": "team-a", "model": "claude-3.5-sonnet", "lane": "batch",
			"door": "http", "method": "POST", "path": "/v1/queue/jobs", "status": 202.0,
			"bytes_in": float64(len(body)), "bytes_out": float64(len(out)), "stream": false,
		})
	})
	t.Run("health probes are not logged", func(t *testing.T) {
		before := len(accessLines(t, f.logs))
		for _, p := range []string{"/health", "/healthz", "/readyz"} {
			f.do(t, "GET", p, "")
		}
		if n := len(accessLines(t, f.logs)); n != before {
			t.Errorf("health probes wrote %d access lines", n-before)
		}
	})
	logs := f.logs.String()
	for what, s := range map[string]string{"prompt": prompt, "master key": master, "virtual key": secret, "key's hash": token, "a wrong key": "sk-not-a-key-9c1d"} {
		if strings.Contains(logs, s) {
			t.Errorf("the access log holds the %s:\n%s", what, logs)
		}
	}
}

// TestAccessLogNATS: one access line per request on the NATS endpoint,
// door nats, answered and refused; never the prompt or the key.
func TestAccessLogNATS(t *testing.T) {
	f := newAccessFixture(t)
	kf := &keysFixture{fixture: f.fixture}
	secret, _ := kf.generate(t, `{"key_alias": "team-n"}`)
	nc := f.q.Connect(t)
	startServe(t, f.gw)
	waitForService(t, nc, 1)
	const prompt = "the secret prompt over nats 41bd"

	t.Run("200", func(t *testing.T) {
		body := chatBody("claude-3.5-sonnet", prompt)
		rep := ask(t, nc, body, "Authorization", "Bearer "+secret, HeaderTraceparent, testTraceparent)
		id := rep.Header.Get(HeaderRequestID)
		checkLine(t, accessLineOf(t, f.logs, id), map[string]any{
			"request_id": id, "trace_id": testTraceID, "key": "team-n", "model": "claude-3.5-sonnet", "lane": "interactive",
			"door": "nats", "path": DefaultMicroSubject, "status": 200.0,
			"queue_ms": 7.0, "upstream_ms": 11.0, "attempts": 1.0, "prompt_tokens": 12.0, "completion_tokens": 34.0,
			"bytes_in": float64(len(body)), "bytes_out": float64(len(rep.Data)), "stream": false,
		})
	})
	t.Run("400", func(t *testing.T) {
		body := `{"model": "claude-3.5-sonnet", "messages": [], "user": "` + prompt + `"}`
		rep := ask(t, nc, body)
		var e schema.ErrorBody
		if err := json.Unmarshal(rep.Data, &e); err != nil || e.Error.Code == nil {
			t.Fatalf("answer %s", rep.Data)
		}
		id := rep.Header.Get(HeaderRequestID)
		checkLine(t, accessLineOf(t, f.logs, id), map[string]any{
			"request_id": id, "model": "claude-3.5-sonnet", "lane": "interactive",
			"door": "nats", "path": DefaultMicroSubject, "status": 400.0, "error_code": *e.Error.Code,
			"bytes_in": float64(len(body)), "bytes_out": float64(len(rep.Data)), "stream": false,
		})
	})
	logs := f.logs.String()
	for what, s := range map[string]string{"prompt": prompt, "virtual key": secret} {
		if strings.Contains(logs, s) {
			t.Errorf("the access log holds the %s:\n%s", what, logs)
		}
	}
}

// TestAccessLogOff: without an access log the middleware is not in the
// chain at all.
func TestAccessLogOff(t *testing.T) {
	g := &Gateway{}
	h := func(echo.Context) error { return nil }
	if reflect.ValueOf(g.accessLog(h)).Pointer() != reflect.ValueOf(h).Pointer() {
		t.Error("with no access log, accessLog wraps the handler")
	}
	if a := (&microEndpoint{g: g}).startAccess(nil); a != nil {
		t.Error("with no access log, the NATS door starts an access line")
	}
}

func TestTraceID(t *testing.T) {
	for _, tc := range []struct {
		name, header, want string
	}{
		{"valid", testTraceparent, testTraceID},
		{"absent", "", ""},
		{"uppercase", strings.ToUpper(testTraceparent), ""},
		{"zero trace id", "00-00000000000000000000000000000000-00f067aa0ba902b7-01", ""},
		{"zero parent id", "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", ""},
		{"version ff", "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", ""},
		{"version 00 with more", testTraceparent + "-xyz", ""},
		{"later version with more", "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xyz", testTraceID},
		{"short", "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01", ""},
		{"not hex", "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := traceID(tc.header); got != tc.want {
				t.Errorf("traceID(%q) = %q, want %q", tc.header, got, tc.want)
			}
		})
	}
}
