package main

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestIdempotencyKeyOneUpstreamCall: requests that share an Idempotency-Key
// (at once, and after the first finished) cause one LaaS call and all get
// the first call's answer.
func TestIdempotencyKeyOneUpstreamCall(t *testing.T) {
	mock, in := serveWithMock(t, 300*time.Millisecond)

	type answer struct {
		status   int
		replayed string
		id       string
		content  string
	}
	call := func(key, text string) answer {
		body := chatBody("claude-3.5-sonnet", text)
		req, _ := http.NewRequest("POST", in.url+"/v1/chat/completions", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Error(err)
			return answer{}
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var cc struct {
			ID      string `json:"id"`
			Choices []struct {
				Message struct{ Content string } `json:"message"`
			} `json:"choices"`
		}
		_ = json.Unmarshal(b, &cc)
		a := answer{status: resp.StatusCode, replayed: resp.Header.Get("Idempotent-Replayed"), id: cc.ID}
		if len(cc.Choices) > 0 {
			a.content = cc.Choices[0].Message.Content
		}
		return a
	}

	var wg sync.WaitGroup
	answers := make([]answer, 3)
	for i := range answers {
		wg.Add(1)
		go func() { defer wg.Done(); answers[i] = call("order-42", "first text") }()
	}
	wg.Wait()
	later := call("order-42", "first text")
	for i, a := range append(answers, later) {
		if a.status != 200 || a.content != "mock[h]: first text" || a.id != answers[0].id {
			t.Errorf("answer %d = %+v; want the first call's answer (id %s)", i, a, answers[0].id)
		}
	}
	if later.replayed != "true" {
		t.Errorf("a retry after the first finished is not marked Idempotent-Replayed: %+v", later)
	}
	if mock.Calls() != 1 {
		t.Errorf("LaaS calls = %d, want 1 for one Idempotency-Key", mock.Calls())
	}
	if a := call("order-43", "other key"); a.status != 200 || a.content != "mock[h]: other key" || mock.Calls() != 2 {
		t.Errorf("another key: %+v, LaaS calls %d", a, mock.Calls())
	}
	// The same key with another body is another request, never the first's answer.
	if a := call("order-42", "a different text"); a.status != 200 || a.content != "mock[h]: a different text" || a.replayed != "" || mock.Calls() != 3 {
		t.Errorf("same key, other body: %+v, LaaS calls %d", a, mock.Calls())
	}
}

func chatBody(model, text string) string {
	b, _ := json.Marshal(map[string]any{"model": model, "messages": []map[string]string{{"role": "user", "content": text}}})
	return string(b)
}
