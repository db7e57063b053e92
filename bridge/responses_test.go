package bridge

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"

	mt "github.com/laas-bridge/laas-bridge/admission/multimodal/multimodaltest"
	"github.com/laas-bridge/laas-bridge/schema"
)

// responsesWorker answers every job with text and finish reason, usage
// 3 in / 5 out, and records the chat requests it was sent.
func responsesWorker(t *testing.T, f *fixture, text, finish string) (sent func() []string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	var mu sync.Mutex
	var got []string
	f.fakeWorker(t, ctx, 1, func(env schema.Envelope) schema.Reply {
		mu.Lock()
		got = append(got, string(env.Request))
		mu.Unlock()
		return schema.Reply{ID: env.ID, Status: 200, Attempts: 1, QueueMs: 7, UpstreamMs: 11, Completion: &schema.ChatCompletion{
			ID: "chatcmpl-" + env.ID, Object: "chat.completion", Created: 1700000000, Model: env.Model,
			Usage:   &schema.Usage{PromptTokens: 3, CompletionTokens: 5, TotalTokens: 8},
			Choices: []schema.Choice{{Message: schema.AssistantMessage{Role: "assistant", Content: text}, FinishReason: finish}},
		}}
	})
	return func() []string { mu.Lock(); defer mu.Unlock(); return append([]string(nil), got...) }
}

// createdAt checks that body's created_at is from before on (and not
// in the future) and returns body with it 0.
func createdAt(t *testing.T, body []byte, before int64) []byte {
	t.Helper()
	m := regexp.MustCompile(`"created_at":(\d+)`).FindSubmatch(body)
	if m == nil {
		t.Fatalf("no created_at in %s", body)
	}
	if at, _ := strconv.ParseInt(string(m[1]), 10, 64); at < before || at > time.Now().Unix() {
		t.Errorf("created_at %d, want from %d to now", at, before)
	}
	return bytes.Replace(body, m[0], []byte(`"created_at":0`), 1)
}

// TestResponsesRoundTrip: a Responses request runs as the chat request it
// translates to (instructions first, max_output_tokens as max_tokens),
// and its answer is the response object, exactly, with the chat path's
// timing headers.
func TestResponsesRoundTrip(t *testing.T) {
	f := newFixture(t, Config{})
	sent := responsesWorker(t, f, "hello", "stop")
	before := time.Now().Unix()
	resp, body := f.do(t, "POST", "/v1/responses",
		`{"model":"claude-3.5-sonnet","input":"hi","instructions":"be brief","max_output_tokens":50,"metadata":{"k":"v"},"store":false}`)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	body = createdAt(t, body, before) // when the request came, not when LaaS answered
	id := resp.Header.Get(HeaderRequestID)
	want := `{"id":"resp_` + id + `","object":"response","created_at":0,"status":"completed","background":false,"error":null,` +
		`"incomplete_details":null,"instructions":"be brief","max_output_tokens":50,"model":"claude-3.5-sonnet",` +
		`"output":[{"type":"message","id":"msg_` + id + `","status":"completed","role":"assistant","content":[{"type":"output_text","text":"hello","annotations":[]}]}],` +
		`"parallel_tool_calls":false,"previous_response_id":null,"service_tier":"default","store":false,"temperature":null,"text":{"format":{"type":"text"}},` +
		`"tool_choice":"none","tools":[],"top_p":null,"truncation":"disabled",` +
		`"usage":{"input_tokens":3,"input_tokens_details":{"cached_tokens":0},"output_tokens":5,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":8},` +
		`"metadata":{"k":"v"}}`
	if got := strings.TrimSpace(string(body)); got != want {
		t.Errorf("body\n%s\nwant\n%s", got, want)
	}
	if a, q, u := resp.Header.Get(HeaderAttempts), resp.Header.Get(HeaderQueueMs), resp.Header.Get(HeaderUpstreamMs); a != "1" || q != "7" || u != "11" {
		t.Errorf("timing headers attempts=%s queue=%s upstream=%s, want 1 7 11", a, q, u)
	}
	wantChat := `{"model":"claude-3.5-sonnet","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}],"max_tokens":50}`
	if s := sent(); len(s) != 1 || s[0] != wantChat {
		t.Errorf("the worker was sent %q, want [%s]", s, wantChat)
	}
	// The route without /v1, as chat completions has it.
	if resp, body := f.do(t, "POST", "/responses", `{"model":"claude-3.5-sonnet","input":"hi"}`); resp.StatusCode != 200 {
		t.Errorf("POST /responses: status %d: %s", resp.StatusCode, body)
	}
}

// TestResponsesIncomplete: a completion cut by its token limit is an
// incomplete response, reason max_output_tokens.
func TestResponsesIncomplete(t *testing.T) {
	f := newFixture(t, Config{})
	responsesWorker(t, f, "hel", "length")
	resp, body := f.do(t, "POST", "/v1/responses", `{"model":"claude-3.5-sonnet","input":"hi","max_output_tokens":16}`)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	var r struct {
		Status            string          `json:"status"`
		IncompleteDetails json.RawMessage `json:"incomplete_details"`
		Output            []struct {
			Status string `json:"status"`
		} `json:"output"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		t.Fatal(err)
	}
	if r.Status != "incomplete" || string(r.IncompleteDetails) != `{"reason":"max_output_tokens"}` || len(r.Output) != 1 || r.Output[0].Status != "incomplete" {
		t.Errorf("status %q, incomplete_details %s, output %+v", r.Status, r.IncompleteDetails, r.Output)
	}
}

// TestResponsesWorkerError: a worker's 429 reaches the caller as it does
// on chat completions: status, Retry-After, attempts, OpenAI's error body.
func TestResponsesWorkerError(t *testing.T) {
	f := newFixture(t, Config{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f.fakeWorker(t, ctx, 1, func(env schema.Envelope) schema.Reply {
		r := schema.ErrorReply(env.ID, &schema.Error{Status: 429, Type: schema.TypeRateLimit, Code: schema.CodeRateLimitExceeded, Message: "LaaS is rate limiting", RetryAfter: 7})
		r.Attempts = 5
		return r
	})
	resp, body := f.do(t, "POST", "/v1/responses", `{"model":"claude-3.5-sonnet","input":"hi"}`)
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "7" || resp.Header.Get(HeaderAttempts) != "5" || resp.Header.Get(HeaderRequestID) == "" {
		t.Fatalf("status %d, Retry-After %q, attempts %q: %s", resp.StatusCode, resp.Header.Get("Retry-After"), resp.Header.Get(HeaderAttempts), body)
	}
	want := `{"error":{"message":"LaaS is rate limiting","type":"rate_limit_error","param":null,"code":"rate_limit_exceeded"}}`
	if got := strings.TrimSpace(string(body)); got != want {
		t.Errorf("body = %s\nwant   %s", got, want)
	}
}

// TestResponsesRefused: a field LaaS cannot honour is a 400 naming it,
// before anything is queued; the route is behind the key check.
func TestResponsesRefused(t *testing.T) {
	f := newFixture(t, Config{MasterKey: "sk-master"})
	auth := []string{"Authorization", "Bearer sk-master"}
	tests := []struct{ name, body, want string }{
		{"tools", `{"model":"claude-3.5-sonnet","input":"hi","tools":[{"type":"web_search"}]}`,
			`{"error":{"message":"LaaS does not support tool or function calling; remove 'tools'.","type":"invalid_request_error","param":"tools","code":"unsupported_parameter"}}`},
		{"background without store", `{"model":"claude-3.5-sonnet","input":"hi","background":true,"store":false}`,
			`{"error":{"message":"A background response is kept until it is fetched: 'store' must be true (or absent) with 'background': true.","type":"invalid_request_error","param":"store","code":"invalid_value"}}`},
		{"unknown previous_response_id", `{"model":"claude-3.5-sonnet","input":"hi","previous_response_id":"resp_nope"}`,
			`{"error":{"message":"Previous response with id \"resp_nope\" not found: it was never stored (\"store\": false), was deleted, or is older than the bridge keeps responses.","type":"invalid_request_error","param":"previous_response_id","code":"previous_response_not_found"}}`},
		{"priority tier", `{"model":"claude-3.5-sonnet","input":"hi","service_tier":"priority"}`,
			`{"error":{"message":"'service_tier' must be \"auto\", \"default\", \"flex\" (the batch lane: slower, waits instead of failing under a rate limit) or absent; LaaS has no priority tier.","type":"invalid_request_error","param":"service_tier","code":"unsupported_parameter"}}`},
		{"unknown model", `{"model":"nope","input":"hi"}`,
			`{"error":{"message":"The model 'nope' does not exist or you do not have access to it.","type":"invalid_request_error","param":"model","code":"model_not_found"}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := f.do(t, "POST", "/v1/responses", tt.body, auth...)
			status := 400
			if tt.name == "unknown model" {
				status = 404
			}
			if got := strings.TrimSpace(string(body)); resp.StatusCode != status || got != tt.want {
				t.Errorf("status %d, body\n%s\nwant %d\n%s", resp.StatusCode, got, status, tt.want)
			}
		})
	}
	if resp, body := f.do(t, "POST", "/v1/responses", `{"model":"claude-3.5-sonnet","input":"hi"}`); resp.StatusCode != 401 {
		t.Errorf("without a key: status %d: %s", resp.StatusCode, body)
	}
	if ci, err := f.q.Consumer.Info(context.Background()); err != nil || ci.NumPending != 0 {
		t.Errorf("queued jobs: %+v (%v), want none", ci, err)
	}
}

// TestResponsesOpenAIGo: the official client sends a Responses request
// (a message with an image part) and decodes the answer.
func TestResponsesOpenAIGo(t *testing.T) {
	f := newFixture(t, Config{})
	sent := responsesWorker(t, f, "a red dot", "stop")
	img, doc := mt.DataURL("image/png", mt.PNG(8, 8, 0)), mt.DataURL("application/pdf", mt.PDF(1, 0))
	client := openai.NewClient(option.WithBaseURL(f.srv.URL+"/v1/"), option.WithAPIKey("sk-any"), option.WithMaxRetries(0))
	resp, err := client.Responses.New(context.Background(), responses.ResponseNewParams{
		Model:        "claude-3.5-sonnet",
		Instructions: openai.String("describe"),
		Input: responses.ResponseNewParamsInputUnion{OfInputItemList: responses.ResponseInputParam{
			responses.ResponseInputItemParamOfMessage(responses.ResponseInputMessageContentListParam{
				responses.ResponseInputContentParamOfInputText("what is this?"),
				{OfInputImage: &responses.ResponseInputImageParam{ImageURL: openai.String(img), Detail: responses.ResponseInputImageDetailLow}},
				{OfInputFile: &responses.ResponseInputFileParam{FileData: openai.String(doc), Filename: openai.String("a.pdf")}},
			}, responses.EasyInputMessageRoleUser),
		}},
		MaxOutputTokens: openai.Int(100),
	})
	if apiErr, ok := errors.AsType[*openai.Error](err); ok {
		t.Fatalf("%v: %s", err, apiErr.RawJSON())
	}
	if err != nil {
		t.Fatal(err)
	}
	if resp.OutputText() != "a red dot" || resp.Status != responses.ResponseStatusCompleted || resp.Model != "claude-3.5-sonnet" {
		t.Errorf("output %q, status %q, model %q", resp.OutputText(), resp.Status, resp.Model)
	}
	if u := resp.Usage; u.InputTokens != 3 || u.OutputTokens != 5 || u.TotalTokens != 8 {
		t.Errorf("usage %+v", u)
	}
	if s := sent(); len(s) != 1 || !strings.Contains(s[0], `{"type":"image_url","image_url":{"url":"`+img+`","detail":"low"}}`) ||
		!strings.Contains(s[0], `{"type":"file","file":{"file_data":"`+doc+`","filename":"a.pdf"}}`) ||
		!strings.Contains(s[0], `{"role":"system","content":"describe"}`) {
		t.Errorf("the worker was sent %q", s)
	}
}
