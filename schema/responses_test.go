package schema_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/laas-bridge/laas-bridge/schema"
)

// responsesChat decodes a Responses body and translates it, as the
// bridge does; it returns the chat request's JSON.
func responsesChat(body string) (string, error) {
	r, err := schema.DecodeResponsesRequest([]byte(body))
	if err != nil {
		return "", err
	}
	chat, err := r.ChatRequest(nil)
	if err != nil {
		return "", err
	}
	if err := chat.Validate(); err != nil {
		return "", err
	}
	b, err := json.Marshal(chat)
	return string(b), err
}

// TestResponsesToChat: what a Responses request becomes on the chat path.
func TestResponsesToChat(t *testing.T) {
	tests := []struct{ name, body, want string }{
		{"string input", `{"model":"m","input":"hi"}`,
			`{"model":"m","messages":[{"role":"user","content":"hi"}]}`},
		{"instructions first, max_output_tokens, sampling, extensions",
			`{"model":"m","input":"hi","instructions":"be brief","max_output_tokens":50,"temperature":0.2,"top_p":0.9,` +
				`"metadata":{"k":"v"},"params":{"a":1},"preset_hash":"p9","store":false,"stream":false,"background":false,` +
				`"reasoning":{"effort":null},"include":[],"text":{"format":{"type":"text"}},"truncation":"disabled","service_tier":"auto",` +
				`"tools":null,"previous_response_id":null}`,
			`{"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}],"temperature":0.2,"top_p":0.9,"max_tokens":50,"params":{"a":1},"preset_hash":"p9"}`},
		{"message list with image and file parts, developer and assistant history",
			`{"model":"m","input":[{"role":"developer","content":"d"},` +
				`{"type":"message","role":"user","content":[{"type":"input_text","text":"look"},` +
				`{"type":"input_image","image_url":"data:image/png;base64,iVBO","detail":"low"},` +
				`{"type":"input_file","filename":"a.pdf","file_data":"data:application/pdf;base64,JVBE"}]},` +
				`{"role":"assistant","content":[{"type":"output_text","text":"seen","annotations":[]}]},` +
				`{"role":"user","content":"and?"}]}`,
			`{"model":"m","messages":[{"role":"system","content":"d"},` +
				`{"role":"user","content":[{"type":"text","text":"look"},{"type":"image_url","image_url":{"url":"data:image/png;base64,iVBO","detail":"low"}},` +
				`{"type":"file","file":{"file_data":"data:application/pdf;base64,JVBE","filename":"a.pdf"}}]},` +
				`{"role":"assistant","content":[{"type":"text","text":"seen"}]},{"role":"user","content":"and?"}]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := responsesChat(tt.body)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("chat request\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

// TestResponsesRefused: each field LaaS cannot honour is refused by name,
// as is a field the bridge does not know; bad JSON and missing fields get
// the chat path's words.
func TestResponsesRefused(t *testing.T) {
	const in = `"model":"m","input":"hi"`
	tests := []struct {
		name, body string
		want       *schema.Error
	}{
		{"tools", `{` + in + `,"tools":[{"type":"function","name":"f"}]}`, unsupported("tools", "LaaS does not support tool or function calling; remove 'tools'.")},
		{"tool_choice", `{` + in + `,"tool_choice":"auto"}`, unsupported("tool_choice", "LaaS does not support tool or function calling; remove 'tool_choice'.")},
		{"parallel_tool_calls", `{` + in + `,"parallel_tool_calls":true}`, unsupported("parallel_tool_calls", "LaaS does not support tool or function calling; remove 'parallel_tool_calls'.")},
		{"reasoning", `{` + in + `,"reasoning":{"effort":"high"}}`, unsupported("reasoning", "LaaS does not expose reasoning controls; remove 'reasoning' or send it as null.")},
		{"include", `{` + in + `,"include":["reasoning.encrypted_content"]}`, unsupported("include", "The bridge includes no extra output data; 'include' must be empty or absent.")},
		{"text.format", `{` + in + `,"text":{"format":{"type":"json_object"}}}`, unsupported("text.format", `LaaS answers plain text only; 'text.format' must be {"type": "text"} or absent.`)},
		{"text.verbosity", `{` + in + `,"text":{"format":{"type":"text"},"verbosity":"low"}}`, unsupported("text.verbosity", "The bridge does not support 'text.verbosity'; remove it.")},
		{"prompt", `{` + in + `,"prompt":{"id":"pmpt_1"}}`, unsupported("prompt", "The bridge does not support stored prompts; remove 'prompt' and send the text in 'input'.")},
		{"conversation", `{` + in + `,"conversation":"conv_1"}`, unsupported("conversation", "The bridge does not support conversations; remove 'conversation' and send the whole conversation in 'input'.")},
		{"truncation", `{` + in + `,"truncation":"auto"}`, unsupported("truncation", `The bridge does not truncate input; 'truncation' must be "disabled" or absent.`)},
		{"service_tier priority", `{` + in + `,"service_tier":"priority"}`, unsupported("service_tier",
			`'service_tier' must be "auto", "default", "flex" (the batch lane: slower, waits instead of failing under a rate limit) or absent; LaaS has no priority tier.`)},
		{"background without store", `{` + in + `,"background":true,"store":false}`,
			invalidValue("store", "A background response is kept until it is fetched: 'store' must be true (or absent) with 'background': true.")},
		{"stream of the wrong type", `{` + in + `,"stream":"yes"}`, &schema.Error{Status: 400, Type: schema.TypeInvalidRequest, Code: schema.CodeInvalidJSON,
			Param: "stream", Message: "Invalid type for 'stream': expected a boolean, got JSON string."}},
		{"unknown field", `{` + in + `,"max_tool_calls":3}`, unsupported("max_tool_calls",
			"The bridge does not support the Responses API parameter 'max_tool_calls'; remove it (docs/api.md lists the fields it accepts).")},
		{"function_call_output item", `{"model":"m","input":[{"type":"function_call_output","call_id":"c","output":"x"}]}`,
			unsupported("input[0].type", "input[0] is a 'function_call_output' item; the bridge accepts only message items (LaaS has no tools or stored items).")},
		{"input_file by file_id", `{"model":"m","input":[{"role":"user","content":[{"type":"input_file","file_id":"file-1"}]}]}`,
			unsupported("input[0].content[0].file_id", "input[0].content[0] refers to an uploaded file by file_id; LaaS does not support file ids: send the PDF inline as file_data (base64).")},
		{"missing model", `{"input":"hi"}`, invalidValue("model", "The 'model' field is required.")},
		{"empty input", `{"model":"m","input":""}`, invalidValue("input", "The 'input' field is required and must hold text or at least one message.")},
		{"no input", `{"model":"m"}`, invalidValue("input", "The 'input' field is required and must hold text or at least one message.")},
		{"tool role", `{"model":"m","input":[{"role":"tool","content":"x"}]}`,
			invalidValue("input[0].role", "input[0] has role 'tool'; the bridge accepts user, system, developer and assistant messages.")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := responsesChat(tt.body)
			wantError(t, err, tt.want)
		})
	}
}

// TestResponsesBadJSON: the same 400 as a chat request with the same fault.
func TestResponsesBadJSON(t *testing.T) {
	for _, body := range []string{``, `{"model":`, `[1]`, `{"model":1,"input":"hi"}`} {
		_, chatErr := schema.DecodeChatRequest([]byte(body))
		_, err := schema.DecodeResponsesRequest([]byte(body))
		if chatErr == nil {
			t.Fatalf("%q: the chat path takes it", body)
		}
		wantError(t, err, chatErr.(*schema.Error))
	}
}

// TestNewResponse: a chat completion as a response object; a completion
// cut by max_tokens is incomplete.
func TestNewResponse(t *testing.T) {
	r, err := schema.DecodeResponsesRequest([]byte(`{"model":"m","input":"hi","instructions":"i","max_output_tokens":5,"temperature":0.5,"metadata":{"k":"v"}}`))
	if err != nil {
		t.Fatal(err)
	}
	cc := &schema.ChatCompletion{Created: 42, Model: "laas-model", Usage: &schema.Usage{PromptTokens: 3, CompletionTokens: 5, TotalTokens: 8},
		Choices: []schema.Choice{{Message: schema.AssistantMessage{Role: "assistant", Content: "hello"}, FinishReason: "length"}}}
	got := marshal(t, schema.NewResponse("abc", r, cc))
	want := `{"id":"resp_abc","object":"response","created_at":42,"status":"incomplete","background":false,"error":null,` +
		`"incomplete_details":{"reason":"max_output_tokens"},"instructions":"i","max_output_tokens":5,"model":"m",` +
		`"output":[{"type":"message","id":"msg_abc","status":"incomplete","role":"assistant","content":[{"type":"output_text","text":"hello","annotations":[]}]}],` +
		`"parallel_tool_calls":false,"previous_response_id":null,"service_tier":"default","store":true,"temperature":0.5,"text":{"format":{"type":"text"}},` +
		`"tool_choice":"none","tools":[],"top_p":null,"truncation":"disabled",` +
		`"usage":{"input_tokens":3,"input_tokens_details":{"cached_tokens":0},"output_tokens":5,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":8},` +
		`"metadata":{"k":"v"}}`
	if got != want {
		t.Errorf("response\n%s\nwant\n%s", got, want)
	}
	cc.Choices[0].FinishReason = "stop"
	if got := marshal(t, schema.NewResponse("abc", r, cc)); !strings.Contains(got, `"status":"completed"`) || !strings.Contains(got, `"incomplete_details":null`) {
		t.Errorf("finish_reason stop: %s", got)
	}
}

// TestResponsesHistoryAndTier: an earlier turn's conversation goes after
// the instructions and before this input; Conversation is the messages
// without the instructions; only "flex" reaches the chat request.
func TestResponsesHistoryAndTier(t *testing.T) {
	r, err := schema.DecodeResponsesRequest([]byte(`{"model":"m","input":"and?","instructions":"be brief","service_tier":"flex"}`))
	if err != nil {
		t.Fatal(err)
	}
	history := []schema.Message{{Role: "user", Content: schema.Content{Text: "hi"}}, {Role: "assistant", Content: schema.Content{Text: "hello"}}}
	chat, err := r.ChatRequest(history)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"},{"role":"assistant","content":"hello"},` +
		`{"role":"user","content":"and?"}],"service_tier":"flex"}`
	if got := marshal(t, chat); got != want {
		t.Errorf("chat request\n%s\nwant\n%s", got, want)
	}
	if got, want := marshal(t, r.Conversation(chat)), `[{"role":"user","content":"hi"},{"role":"assistant","content":"hello"},{"role":"user","content":"and?"}]`; got != want {
		t.Errorf("conversation %s, want %s", got, want)
	}
	if resp := schema.ResponseShell("x", r, 1, schema.ResponseQueued); resp.ServiceTier != "flex" || !resp.Store || resp.Background {
		t.Errorf("shell tier %q store %v background %v, want flex true false", resp.ServiceTier, resp.Store, resp.Background)
	}
	for _, tier := range []string{"auto", "default"} {
		r, _ := schema.DecodeResponsesRequest([]byte(`{"model":"m","input":"x","service_tier":"` + tier + `"}`))
		if chat, _ := r.ChatRequest(nil); chat.ServiceTier != "" {
			t.Errorf("%s: chat service_tier %q, want none", tier, chat.ServiceTier)
		}
	}
}

// TestChatServiceTier: chat requests take auto, default and flex, and
// refuse another tier by name.
func TestChatServiceTier(t *testing.T) {
	for _, tier := range []string{"auto", "default", "flex"} {
		if err := decodeValidate(t, `{"model":"m","messages":[{"role":"user","content":"x"}],"service_tier":"`+tier+`"}`); err != nil {
			t.Errorf("%s: %v", tier, err)
		}
	}
	err := decodeValidate(t, `{"model":"m","messages":[{"role":"user","content":"x"}],"service_tier":"priority"}`)
	wantError(t, err, unsupported("service_tier",
		`'service_tier' must be "auto", "default", "flex" (the batch lane: slower, waits instead of failing under a rate limit) or absent; LaaS has no priority tier.`))
}

func decodeValidate(t *testing.T, body string) error {
	t.Helper()
	req, err := schema.DecodeChatRequest([]byte(body))
	if err != nil {
		return err
	}
	return req.Validate()
}

// TestResponseEvents: the event sequence of a streamed response, in
// OpenAI's order, numbered from 0, for each way a response ends.
func TestResponseEvents(t *testing.T) {
	r, _ := schema.DecodeResponsesRequest([]byte(`{"model":"m","input":"hi"}`))
	cc := &schema.ChatCompletion{Created: 42, Choices: []schema.Choice{{Message: schema.AssistantMessage{Content: "hello big world"}, FinishReason: "stop"}}}
	words := func(s string) int { // one word and its space a piece
		if i := strings.IndexByte(s, ' '); i >= 0 {
			return i + 1
		}
		return len(s)
	}
	types := func(evs []schema.ResponseEvent) string {
		var b strings.Builder
		for i, e := range evs {
			if e.SequenceNumber != i {
				t.Errorf("event %d (%s) numbered %d", i, e.Type, e.SequenceNumber)
			}
			b.WriteString(e.Type + " ")
		}
		return strings.TrimSpace(b.String())
	}
	start := schema.ResponseShell("a", r, 42, schema.ResponseInProgress)
	end := schema.NewResponse("a", r, cc)
	evs := schema.ResponseEvents(start, end, words)
	if got, want := types(evs), "response.created response.in_progress response.output_item.added response.content_part.added "+
		"response.output_text.delta response.output_text.delta response.output_text.delta response.output_text.done "+
		"response.content_part.done response.output_item.done response.completed"; got != want {
		t.Errorf("completed:\n%s\nwant\n%s", got, want)
	}
	var text strings.Builder
	for _, e := range evs {
		if e.Delta != nil {
			text.WriteString(*e.Delta)
		}
	}
	if text.String() != "hello big world" || *evs[7].Text != "hello big world" || evs[10].Response != end {
		t.Errorf("deltas %q, done %q", text.String(), *evs[7].Text)
	}
	if got, want := marshal(t, evs[4]), `{"type":"response.output_text.delta","sequence_number":4,"output_index":0,"item_id":"msg_a","content_index":0,"delta":"hello ","logprobs":[]}`; got != want {
		t.Errorf("delta event\n%s\nwant\n%s", got, want)
	}
	if got, want := marshal(t, evs[2].Item), `{"type":"message","id":"msg_a","status":"in_progress","role":"assistant","content":[]}`; got != want {
		t.Errorf("item added %s, want %s", got, want)
	}
	if head := schema.ResponseEvents(start, nil, words); types(head) != "response.created response.in_progress" || head[1].Response.Status != "in_progress" {
		t.Errorf("head: %s", types(head))
	}

	r.Background = true
	bg := schema.ResponseShell("a", r, 42, schema.ResponseQueued)
	failed := schema.ResponseShell("a", r, 42, "").Fail(&schema.Error{Code: "upstream_error", Message: "LaaS failed"})
	if got, want := types(schema.ResponseEvents(bg, failed, words)), "response.created response.queued response.in_progress response.failed"; got != want {
		t.Errorf("background failed: %s, want %s", got, want)
	}
	// A background response is in progress only once it has ended: its
	// head stops at queued, and the numbers after it do not move.
	if got, want := types(schema.ResponseEvents(bg, nil, words)), "response.created response.queued"; got != want {
		t.Errorf("background head: %s, want %s", got, want)
	}
	if failed.Status != "failed" || failed.Error == nil || failed.Error.Code != "upstream_error" {
		t.Errorf("failed response %s", marshal(t, failed))
	}
	cancelled := schema.ResponseShell("a", r, 42, "").Fail(schema.JobCancelledError())
	evs = schema.ResponseEvents(bg, cancelled, words)
	if got, want := marshal(t, evs[len(evs)-1]), `{"type":"error","sequence_number":3,"code":"response_cancelled","message":"The response was cancelled before it finished.","param":null}`; got != want || cancelled.Status != "cancelled" {
		t.Errorf("cancelled: last event %s, want %s; status %s", got, want, cancelled.Status)
	}
}
