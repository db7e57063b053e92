package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"

	"github.com/laas-bridge/laas-bridge/laas/laasmock"
)

// The fault suite: one upstream fault per subtest of TestFaults, each made
// by a laasmock directive in the caller's message (see laasmock's doc),
// against `serve` in-process with one worker slot (--concurrency 1) and a
// model whose timeout is 2 s. Each asserts what the caller gets over the
// gateway's HTTP port, and then that the slot is free: the next request is
// answered. docs/faults.md holds the table.

// faultAnswer is what a caller got: the status, and the OpenAI error's
// type and code (empty on success) or the answer's content.
type faultAnswer struct {
	status      int
	typ, code   string
	message     string
	content     string
	body        string
	contentType string
}

// faultAsk sends text to model "fast" (streamed when stream is set), with
// X-Request-Timeout timeout when not empty.
func faultAsk(t *testing.T, in *instance, text string, stream bool, timeout string) faultAnswer {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"model": "fast", "stream": stream,
		"messages": []map[string]string{{"role": "user", "content": text}}})
	req, _ := http.NewRequest(http.MethodPost, in.url+"/v1/chat/completions", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if timeout != "" {
		req.Header.Set("X-Request-Timeout", timeout)
	}
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("%q: %v", text, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%q: reading the answer: %v", text, err)
	}
	a := faultAnswer{status: resp.StatusCode, body: string(data), contentType: resp.Header.Get("Content-Type")}
	var v struct {
		Error struct {
			Type, Code, Message string
		}
		Choices []struct {
			Message struct{ Content string }
		}
	}
	if !stream || resp.StatusCode != http.StatusOK {
		if err := json.Unmarshal(data, &v); err != nil {
			t.Fatalf("%q: answer %d %q is not JSON: %v", text, resp.StatusCode, data, err)
		}
		a.typ, a.code, a.message = v.Error.Type, v.Error.Code, v.Error.Message
		if len(v.Choices) > 0 {
			a.content = v.Choices[0].Message.Content
		}
	}
	return a
}

// wantError checks a caller's error answer.
func wantError(t *testing.T, got faultAnswer, status int, typ, code string) {
	t.Helper()
	if got.status != status || got.typ != typ || got.code != code {
		t.Fatalf("caller got %d %s/%s (%q), want %d %s/%s", got.status, got.typ, got.code, got.body, status, typ, code)
	}
}

// wantAnswer checks a caller's answer to text.
func wantAnswer(t *testing.T, got faultAnswer, text string) {
	t.Helper()
	if want := "mock[h]: " + text; got.status != http.StatusOK || got.content != want {
		t.Fatalf("caller got %d %q, want 200 with content %q", got.status, got.body, want)
	}
}

// slotFree asks a plain question with the default timeout (the model's
// 2 s): with one worker slot it is answered only if the fault left the slot
// free.
func slotFree(t *testing.T, in *instance, name string) {
	t.Helper()
	text := "is the slot free after " + name
	wantAnswer(t, faultAsk(t, in, text, false, ""), text)
}

// calls returns the mock's log entries for text, in arrival order.
func calls(mock *laasmock.Mock, text string) []laasmock.Entry {
	var out []laasmock.Entry
	for _, e := range mock.Log() {
		if e.LastUser == text {
			out = append(out, e)
		}
	}
	return out
}

func TestFaults(t *testing.T) {
	mock, in := serveWithMock(t, 0, "--config", "testdata/faults-config.yaml", "--concurrency", "1")

	// Faults the model's timeout ends: the call gives up at 2 s; the
	// request's 3 s leave no room for a retry (one needs 1 s before the
	// deadline), so the worker answers before the gateway's deadline.
	for _, tc := range []struct{ name, fault string }{
		{"never answers", "laasmock:fault=hang"},
		{"stalls after the headers", "laasmock:fault=stall"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			text := "hello " + tc.fault
			wantError(t, faultAsk(t, in, text, false, "3"), http.StatusGatewayTimeout, "timeout_error", "upstream_timeout")
			if n := len(calls(mock, text)); n != 1 {
				t.Errorf("LaaS saw %d calls, want 1", n)
			}
			slotFree(t, in, tc.name)
		})
	}

	// Answers cut by the connection: retried while the deadline allows,
	// then a 502; never a 200.
	for _, tc := range []struct{ name, fault string }{
		{"resets mid-body", "laasmock:fault=reset"},
		{"truncated body", "laasmock:fault=truncate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			text := "hello " + tc.fault
			got := faultAsk(t, in, text, false, "")
			wantError(t, got, http.StatusBadGateway, "upstream_error", "upstream_error")
			if want := "The bridge could not get an answer from LaaS (connection error)."; got.message != want {
				t.Errorf("message %q, want %q", got.message, want)
			}
			if n := len(calls(mock, text)); n < 2 {
				t.Errorf("LaaS saw %d calls, want a retry (at least 2)", n)
			}
			slotFree(t, in, tc.name)
		})
	}

	t.Run("non-JSON body", func(t *testing.T) {
		text := "hello laasmock:fault=nonjson"
		got := faultAsk(t, in, text, false, "")
		wantError(t, got, http.StatusBadGateway, "upstream_error", "upstream_error")
		if !strings.Contains(got.message, "not a chat completion") || !strings.Contains(got.message, "502 Bad Gateway") {
			t.Errorf("message %q does not say the answer is not a chat completion, quoting it", got.message)
		}
		if n := len(calls(mock, text)); n != 1 {
			t.Errorf("LaaS saw %d calls, want 1 (an invalid answer is not retried)", n)
		}
		slotFree(t, in, "non-JSON body")
	})

	t.Run("500 twice then 200", func(t *testing.T) {
		text := "hello laasmock:status=500x2"
		wantAnswer(t, faultAsk(t, in, text, false, "10"), text)
		log := calls(mock, text)
		if len(log) != 3 || log[0].Status != 500 || log[1].Status != 500 || log[2].Status != 200 {
			t.Errorf("LaaS saw %+v, want 500, 500, 200", log)
		}
		slotFree(t, in, "500 twice")
	})

	t.Run("429 with Retry-After", func(t *testing.T) {
		text := "hello laasmock:status=429x1 laasmock:retry-after=2"
		wantAnswer(t, faultAsk(t, in, text, false, "10"), text)
		log := calls(mock, text)
		if len(log) != 2 || log[0].Status != 429 || log[1].Status != 200 {
			t.Fatalf("LaaS saw %+v, want 429 then 200", log)
		}
		if gap := log[1].Time.Sub(log[0].Time); gap < 2*time.Second {
			t.Errorf("the retry came %v after the 429, before its Retry-After of 2s", gap)
		}
		slotFree(t, in, "429")
	})

	for _, status := range []string{"401", "403"} {
		t.Run(status, func(t *testing.T) {
			text := "hello laasmock:status=" + status
			got := faultAsk(t, in, text, false, "10")
			wantError(t, got, http.StatusBadGateway, "upstream_error", "upstream_auth_error")
			if !strings.Contains(got.message, "HTTP "+status) {
				t.Errorf("message %q does not name HTTP %s", got.message, status)
			}
			if n := len(calls(mock, text)); n != 1 {
				t.Errorf("LaaS saw %d calls, want 1 (no retry)", n)
			}
			slotFree(t, in, status)
		})
	}

	t.Run("slow trickle within the deadline", func(t *testing.T) {
		text := "hello laasmock:trickle=1s"
		wantAnswer(t, faultAsk(t, in, text, false, ""), text)
		if n := len(calls(mock, text)); n != 1 {
			t.Errorf("LaaS saw %d calls, want 1", n)
		}
		slotFree(t, in, "trickle")
	})

	// Streamed requests: LaaS does not stream, so the gateway streams the
	// worker's whole answer; a cut answer is an error, never chunks and
	// [DONE]. These fail within 2 s, before the first keep-alive (10 s),
	// so the caller gets a plain HTTP error.
	for _, tc := range []struct {
		name, fault, timeout string
		status               int
		typ, code            string
		minCalls, maxCalls   int // LaaS calls seen
	}{
		{"streamed, truncated body", "laasmock:fault=truncate", "", 502, "upstream_error", "upstream_error", 2, 5},
		{"streamed, resets mid-body", "laasmock:fault=reset", "", 502, "upstream_error", "upstream_error", 2, 5},
		{"streamed, non-JSON body", "laasmock:fault=nonjson", "", 502, "upstream_error", "upstream_error", 1, 1},
		{"streamed, stalls after the headers", "laasmock:fault=stall", "3", 504, "timeout_error", "upstream_timeout", 1, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			text := "streamed " + tc.fault
			got := faultAsk(t, in, text, true, tc.timeout)
			wantError(t, got, tc.status, tc.typ, tc.code)
			if n := len(calls(mock, text)); n < tc.minCalls || n > tc.maxCalls {
				t.Errorf("LaaS saw %d calls, want %d to %d", n, tc.minCalls, tc.maxCalls)
			}
			if strings.Contains(got.body, "data:") || strings.HasPrefix(got.contentType, "text/event-stream") {
				t.Errorf("a cut answer was streamed: %s %q", got.contentType, got.body)
			}
			slotFree(t, in, tc.name)
		})
	}

	t.Run("streamed, slow trickle within the deadline", func(t *testing.T) {
		text := "streamed laasmock:trickle=1s"
		got := faultAsk(t, in, text, true, "")
		if got.status != http.StatusOK || !strings.Contains(got.body, `"finish_reason":"stop"`) || !strings.HasSuffix(got.body, "data: [DONE]\n\n") {
			t.Fatalf("caller got %d %q, want a whole stream ending in [DONE]", got.status, got.body)
		}
		var content strings.Builder
		for _, line := range strings.Split(got.body, "\n") {
			data, ok := strings.CutPrefix(line, "data: ")
			if !ok || data == "[DONE]" {
				continue
			}
			var chunk struct {
				Choices []struct {
					Delta struct{ Content string }
				}
			}
			if err := json.Unmarshal([]byte(data), &chunk); err != nil || len(chunk.Choices) != 1 {
				t.Fatalf("event %q is not a chunk: %v", data, err)
			}
			content.WriteString(chunk.Choices[0].Delta.Content)
		}
		if want := "mock[h]: " + text; content.String() != want {
			t.Errorf("the stream's content is %q, want %q", content.String(), want)
		}
		if n := len(calls(mock, text)); n != 1 {
			t.Errorf("LaaS saw %d calls, want 1", n)
		}
		slotFree(t, in, "streamed trickle")
	})
}

// TestFaultBatchLineHang: a batch line whose LaaS call never answers is
// bounded by the model's timeout (2 s), not by the batch's 24 h window: each
// attempt ends there, the line is retried up to the 5th delivery and then
// ends in the error file as 504 upstream_timeout; the batch completes, and
// the line beside it is answered on the one worker slot.
func TestFaultBatchLineHang(t *testing.T) {
	mock, in := serveWithMock(t, 0, "--config", "testdata/faults-config.yaml", "--concurrency", "1")
	c := client(in, "sk")
	hang := "batch line laasmock:fault=hang"
	b := uploadBatch(t, c, []string{batchLine("hang", "fast", hang), batchLine("ok", "fast", "batch line fine")}, nil)
	// Five attempts of 2 s and four backoffs of at most 0.5+1+2+4 s come to
	// 17.5 s; a call held for the batch's window would never end.
	b = waitBatch(t, c, b.ID, 2*time.Minute, openai.BatchStatusCompleted, openai.BatchStatusFailed)
	if b.Status != openai.BatchStatusCompleted || b.RequestCounts.Completed != 1 || b.RequestCounts.Failed != 1 {
		t.Fatalf("batch %s, counts %+v; want completed with 1 answered and 1 failed", b.Status, b.RequestCounts)
	}
	out := fileLines(t, c, b.OutputFileID)
	if len(out) != 1 || *out[0].CustomID != "ok" || out[0].content() != "mock[h]: batch line fine" {
		t.Errorf("output file %+v, want the line ok answered", out)
	}
	errs := fileLines(t, c, b.ErrorFileID)
	if len(errs) != 1 || *errs[0].CustomID != "hang" || errs[0].Response == nil || errs[0].Response.StatusCode != http.StatusGatewayTimeout {
		t.Fatalf("error file %+v, want the line hang answered 504", errs)
	}
	var body struct{ Error struct{ Type, Code string } }
	if err := json.Unmarshal(errs[0].Response.Body, &body); err != nil || body.Error.Type != "timeout_error" || body.Error.Code != "upstream_timeout" {
		t.Errorf("the hang line's body %s (%v), want timeout_error/upstream_timeout", errs[0].Response.Body, err)
	}
	log := calls(mock, hang)
	if len(log) != 5 {
		t.Errorf("LaaS saw %d calls of the hung line, want 5 (one per delivery)", len(log))
	}
	for i, e := range log {
		if e.Status != laasmock.StatusClientClosed {
			t.Errorf("call %d ended with status %d, want %d: the worker gave it up", i+1, e.Status, laasmock.StatusClientClosed)
		}
	}
}
