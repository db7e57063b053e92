package laas

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/laas-bridge/laas-bridge/admission/multimodal"
	"github.com/laas-bridge/laas-bridge/admission/multimodal/multimodaltest"
	"github.com/laas-bridge/laas-bridge/laas/laasmock"
	"github.com/laas-bridge/laas-bridge/schema"
)

func TestToLaaS(t *testing.T) {
	base := schema.Model{Alias: "gpt-fast", PresetHash: "preset-1"}
	full := schema.Model{Alias: "claude", LaaSModel: "claude-3-5-sonnet", PresetHash: "preset-2", ServiceType: "ANTHROPIC"}
	tests := []struct {
		name  string
		model schema.Model
		req   string // the OpenAI request body
		want  string // the LaaS request body, exactly
	}{
		{
			name: "minimal: string content, params sent as {}, model and service_type omitted", model: base,
			req:  `{"model":"gpt-fast","messages":[{"role":"user","content":"hello"}]}`,
			want: `{"hash":"preset-1","params":{},"messages":[{"role":"user","content":[{"type":"text","text":"hello"}]}]}`,
		},
		{
			name: "model, service type and every copied field", model: full,
			req: `{"model":"claude","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi","name":"bob"}],` +
				`"temperature":0.2,"top_p":0.9,"max_tokens":100,"frequency_penalty":0.5,"presence_penalty":-0.5,` +
				`"response_format":{"type":"json_object"},"stop":["\n\n","END"],"seed":42,"user":"u-1"}`,
			want: `{"hash":"preset-2","params":{},"messages":[{"role":"system","content":[{"type":"text","text":"be brief"}]},` +
				`{"role":"user","content":[{"type":"text","text":"hi"}]}],"model":"claude-3-5-sonnet","service_type":"ANTHROPIC",` +
				`"temperature":0.2,"top_p":0.9,"max_tokens":100,"frequency_penalty":0.5,"presence_penalty":-0.5,` +
				`"response_format":{"type":"json_object"},"stop":["\n\n","END"],"seed":42,"user":"u-1"}`,
		},
		{
			name: "zero sampling values are sent, not dropped", model: base,
			req:  `{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":0,"max_tokens":0,"seed":0}`,
			want: `{"hash":"preset-1","params":{},"messages":[{"role":"user","content":[{"type":"text","text":"x"}]}],"temperature":0,"max_tokens":0,"seed":0}`,
		},
		{
			name: "max_completion_tokens becomes max_tokens", model: base,
			req:  `{"model":"m","messages":[{"role":"user","content":"x"}],"max_completion_tokens":64}`,
			want: `{"hash":"preset-1","params":{},"messages":[{"role":"user","content":[{"type":"text","text":"x"}]}],"max_tokens":64}`,
		},
		{
			name: "max_tokens wins over max_completion_tokens", model: base,
			req:  `{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":10,"max_completion_tokens":64}`,
			want: `{"hash":"preset-1","params":{},"messages":[{"role":"user","content":[{"type":"text","text":"x"}]}],"max_tokens":10}`,
		},
		{
			name: "stop as a string is kept as a string", model: base,
			req:  `{"model":"m","messages":[{"role":"user","content":"x"}],"stop":"END"}`,
			want: `{"hash":"preset-1","params":{},"messages":[{"role":"user","content":[{"type":"text","text":"x"}]}],"stop":"END"}`,
		},
		{
			name: "null response_format and stop are omitted", model: base,
			req:  `{"model":"m","messages":[{"role":"user","content":"x"}],"response_format":null,"stop":null}`,
			want: `{"hash":"preset-1","params":{},"messages":[{"role":"user","content":[{"type":"text","text":"x"}]}]}`,
		},
		{
			name: "params: strings as they are, numbers and booleans as JSON text, null as empty", model: base,
			req: `{"model":"m","messages":[{"role":"user","content":"x"}],"params":{"name":"Kim","n":3,"ratio":1.50,"big":1e3,"on":true,"gone":null,"quoted":"say \"hi\""}}`,
			want: `{"hash":"preset-1","params":{"big":"1e3","gone":"","n":"3","name":"Kim","on":"true","quoted":"say \"hi\"","ratio":"1.50"},` +
				`"messages":[{"role":"user","content":[{"type":"text","text":"x"}]}]}`,
		},
		{
			// A text part always carries "text", even when empty.
			name: "content without parts becomes one empty text part", model: base,
			req: `{"model":"m","messages":[{"role":"system","content":""},{"role":"assistant","content":null},` +
				`{"role":"assistant"},{"role":"user","content":[]}]}`,
			want: `{"hash":"preset-1","params":{},"messages":[{"role":"system","content":[{"type":"text","text":""}]},` +
				`{"role":"assistant","content":[{"type":"text","text":""}]},{"role":"assistant","content":[{"type":"text","text":""}]},{"role":"user","content":[{"type":"text","text":""}]}]}`,
		},
		{
			name: "image_url (also given as a bare string) and document parts keep their url and detail", model: base,
			req: `{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"what is this?"},` +
				`{"type":"image_url","image_url":{"url":"https://example.com/a.png","detail":"low"}},` +
				`{"type":"image_url","image_url":"data:image/png;base64,iVBORw0KGgo="},` +
				`{"type":"document","document_url":{"url":"data:application/pdf;base64,JVBERi0="}}]}]}`,
			want: `{"hash":"preset-1","params":{},"messages":[{"role":"user","content":[{"type":"text","text":"what is this?"},` +
				`{"type":"image_url","image_url":{"url":"https://example.com/a.png","detail":"low"}},` +
				`{"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgo="}},` +
				`{"type":"document","document_url":{"url":"data:application/pdf;base64,JVBERi0="}}]}]}`,
		},
		{
			name: "file and input_file parts become document parts; bare base64 gets the PDF data URL prefix", model: base,
			req: `{"model":"m","messages":[{"role":"user","content":[` +
				`{"type":"file","file":{"file_data":"data:application/pdf;base64,JVBERi0=","filename":"a.pdf"}},` +
				`{"type":"file","file":{"file_data":"JVBERi0=","filename":"b.pdf","file_id":"file-1"}},` +
				`{"type":"input_file","file_data":"JVBERi0=","filename":"c.pdf"},` +
				`{"type":"input_file","file_data":"DATA:application/pdf;BASE64,JVBERi0="}]}]}`,
			want: `{"hash":"preset-1","params":{},"messages":[{"role":"user","content":[` +
				`{"type":"document","document_url":{"url":"data:application/pdf;base64,JVBERi0="}},` +
				`{"type":"document","document_url":{"url":"data:application/pdf;base64,JVBERi0="}},` +
				`{"type":"document","document_url":{"url":"data:application/pdf;base64,JVBERi0="}},` +
				`{"type":"document","document_url":{"url":"DATA:application/pdf;BASE64,JVBERi0="}}]}]}`,
		},
		{
			name: "LaaS parts keep only their own fields", model: base,
			req: `{"model":"m","messages":[{"role":"user","content":[` +
				`{"type":"text","text":"t","image_url":{"url":"https://x"},"file_data":"AA=="},` +
				`{"type":"image_url","image_url":{"url":"https://x/a.png"},"text":"stray","document_url":{"url":"https://y"}},` +
				`{"type":"document","document_url":{"url":"data:application/pdf;base64,JVBERi0="},"file":{"file_data":"AA=="},"filename":"x"}]}]}`,
			want: `{"hash":"preset-1","params":{},"messages":[{"role":"user","content":[{"type":"text","text":"t"},` +
				`{"type":"image_url","image_url":{"url":"https://x/a.png"}},` +
				`{"type":"document","document_url":{"url":"data:application/pdf;base64,JVBERi0="}}]}]}`,
		},
		{
			name: "name, tool_call_id, preset_hash and stream fields are not forwarded", model: base,
			req:  `{"model":"m","preset_hash":"other","messages":[{"role":"user","content":"x","name":"n","tool_call_id":"t"}],"stream_options":{"include_usage":true}}`,
			want: `{"hash":"preset-1","params":{},"messages":[{"role":"user","content":[{"type":"text","text":"x"}]}]}`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, err := schema.DecodeChatRequest([]byte(tc.req))
			if err != nil {
				t.Fatalf("DecodeChatRequest: %v", err)
			}
			got, err := ToLaaS(req, tc.model)
			if err != nil {
				t.Fatalf("ToLaaS: %v", err)
			}
			b, err := json.Marshal(got)
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tc.want {
				t.Fatalf("LaaS body = %s\nwant        %s", b, tc.want)
			}
			if got.Params == nil {
				t.Fatal("Params is nil")
			}
		})
	}
}

func TestToLaaSErrors(t *testing.T) {
	model := schema.Model{Alias: "m", PresetHash: "p"}
	tests := []struct {
		name        string
		req         *schema.ChatCompletionRequest
		model       schema.Model
		wantStatus  int
		wantParam   string
		wantMessage string
	}{
		{
			name: "object param", model: model,
			req: &schema.ChatCompletionRequest{Messages: []schema.Message{{Role: "user"}},
				Params: map[string]json.RawMessage{"ctx": json.RawMessage(`{"a":1}`)}},
			wantStatus: 400, wantParam: "params.ctx",
			wantMessage: "params.ctx must be a string, number or boolean; LaaS template variables cannot hold objects or arrays.",
		},
		{
			name: "array param", model: model,
			req:        &schema.ChatCompletionRequest{Params: map[string]json.RawMessage{"list": json.RawMessage(` [1]`)}},
			wantStatus: 400, wantParam: "params.list",
			wantMessage: "params.list must be a string, number or boolean; LaaS template variables cannot hold objects or arrays.",
		},
		{
			name: "model without a preset", model: schema.Model{Alias: "nopreset"},
			req:        &schema.ChatCompletionRequest{Messages: []schema.Message{{Role: "user"}}},
			wantStatus: 500, wantMessage: "The model 'nopreset' has no LaaS preset configured on this bridge.",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ToLaaS(tc.req, tc.model)
			if got != nil {
				t.Errorf("ToLaaS returned a request with an error")
			}
			var e *schema.Error
			if !errors.As(err, &e) {
				t.Fatalf("err = %v, want a *schema.Error", err)
			}
			if e.Status != tc.wantStatus || e.Param != tc.wantParam || e.Message != tc.wantMessage {
				t.Fatalf("err = %+v, want status %d param %q message %q", e, tc.wantStatus, tc.wantParam, tc.wantMessage)
			}
		})
	}
	t.Run("nil request", func(t *testing.T) {
		if got, err := ToLaaS(nil, model); got != nil || err == nil {
			t.Fatalf("ToLaaS(nil) = %v, %v", got, err)
		}
	})
}

// TestToLaaSSharesNoMemory changes the result and checks the request is
// untouched.
func TestToLaaSSharesNoMemory(t *testing.T) {
	body := `{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://a/b.png"}}]}],` +
		`"temperature":0.5,"max_completion_tokens":5,"seed":1,"stop":["x"],"response_format":{"type":"text"}}`
	req, err := schema.DecodeChatRequest([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	before, _ := json.Marshal(req)
	out, err := ToLaaS(req, schema.Model{PresetHash: "p"})
	if err != nil {
		t.Fatal(err)
	}
	*out.Temperature = 9
	*out.MaxTokens = 9
	*out.Seed = 9
	out.Stop[0] = 'X'
	out.ResponseFormat[0] = 'X'
	out.Messages[0].Content[0].ImageURL.URL = "changed"
	out.Messages[0].Content[0].Type = "changed"
	if after, _ := json.Marshal(req); string(after) != string(before) {
		t.Fatalf("request changed:\n%s\nwas\n%s", after, before)
	}
}

// TestToLaaSPartsShareNoMemory changes every pointer of every translated
// part, of each kind, and checks the request is untouched.
func TestToLaaSPartsShareNoMemory(t *testing.T) {
	body := `{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"t"},` +
		`{"type":"image_url","image_url":{"url":"https://a/b.png","detail":"low"}},` +
		`{"type":"document","document_url":{"url":"data:application/pdf;base64,JVBERi0="}},` +
		`{"type":"file","file":{"file_data":"JVBERi0=","filename":"a.pdf"}},{"type":"input_file","file_data":"JVBERi0="},` +
		`{"type":"unknown","image_url":{"url":"u"},"document_url":{"url":"d"},"file":{"file_data":"f"}}]}]}`
	req, err := schema.DecodeChatRequest([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	before, _ := json.Marshal(req)
	out, err := ToLaaS(req, schema.Model{PresetHash: "p"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range out.Messages[0].Content {
		p := &out.Messages[0].Content[i]
		for _, ref := range []*schema.URLRef{p.ImageURL, p.DocumentURL} {
			if ref != nil {
				ref.URL, ref.Detail = "changed", "changed"
			}
		}
		if p.File != nil {
			p.File.FileData = "changed"
		}
	}
	if after, _ := json.Marshal(req); string(after) != string(before) {
		t.Fatalf("request changed:\n%s\nwas\n%s", after, before)
	}
}

// TestMultimodalReachesMock runs an OpenAI request with an image of each
// kind and a PDF of each part kind through decoding, Validate,
// multimodal.Check and ToLaaS to the LaaS mock, and checks from the mock's
// answer that LaaS received exactly the bytes the caller sent.
func TestMultimodalReachesMock(t *testing.T) {
	png, jpg := multimodaltest.PNG(4, 3, 0), multimodaltest.JPEG(3, 4)
	pdfs := [][]byte{multimodaltest.PDF(1, 0), multimodaltest.PDF(20, 0), multimodaltest.PDF(2, 0)}
	b64 := base64.StdEncoding.EncodeToString
	body, err := json.Marshal(map[string]any{
		"model": "m",
		"messages": []any{map[string]any{"role": "user", "content": []any{
			map[string]any{"type": "text", "text": "read"},
			map[string]any{"type": "image_url", "image_url": map[string]any{"url": multimodaltest.DataURL("image/png", png)}},
			map[string]any{"type": "image_url", "image_url": map[string]any{"url": multimodaltest.DataURL("image/jpeg", jpg), "detail": "high"}},
			map[string]any{"type": "image_url", "image_url": map[string]any{"url": "https://example.com/a.png"}},
			map[string]any{"type": "document", "document_url": map[string]any{"url": multimodaltest.DataURL("application/pdf", pdfs[0])}},
			map[string]any{"type": "file", "file": map[string]any{"file_data": b64(pdfs[1]), "filename": "twenty.pdf"}},
			map[string]any{"type": "input_file", "file_data": multimodaltest.DataURL("application/pdf", pdfs[2]), "filename": "two.pdf"},
		}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	req, err := schema.DecodeChatRequest(body)
	if err != nil {
		t.Fatal(err)
	}
	if err := req.Validate(); err != nil {
		t.Fatal(err)
	}
	rep, err := multimodal.Check(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Images != 3 || rep.Documents != 3 || len(rep.Warnings) != 0 {
		t.Fatalf("Report = %+v", rep)
	}
	laasReq, err := ToLaaS(req, schema.Model{PresetHash: "h"})
	if err != nil {
		t.Fatal(err)
	}
	laasBody, err := json.Marshal(laasReq)
	if err != nil {
		t.Fatal(err)
	}

	mock, err := laasmock.New(laasmock.Config{})
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	hreq := httptest.NewRequest(http.MethodPost, schema.LaaSChatPath, bytes.NewReader(laasBody))
	hreq.Header.Set(schema.LaaSHeaderProject, "p")
	hreq.Header.Set(schema.LaaSHeaderAPIKey, "k")
	mock.ServeHTTP(rec, hreq)
	var answer schema.LaaSResponse
	if err := json.Unmarshal(rec.Body.Bytes(), &answer); err != nil || rec.Code != http.StatusOK || len(answer.Choices) != 1 {
		t.Fatalf("mock answered %d %s (%v)", rec.Code, rec.Body, err)
	}
	want := "mock[h]: read [image sha256:" + multimodaltest.Digest(png) + "] [image sha256:" + multimodaltest.Digest(jpg) + "]" +
		" [image https://example.com/a.png]" +
		" [document sha256:" + multimodaltest.Digest(pdfs[0]) + "] [document sha256:" + multimodaltest.Digest(pdfs[1]) + "]" +
		" [document sha256:" + multimodaltest.Digest(pdfs[2]) + "]"
	if got := answer.Choices[0].Message.Content.Text; got != want {
		t.Fatalf("mock saw  %s\nwant      %s", got, want)
	}
}

func TestFromLaaS(t *testing.T) {
	now := time.Unix(1_750_000_000, 0)
	tests := []struct {
		name string
		resp string // the LaaS answer
		want string // the chat.completion, exactly
	}{
		{
			name: "documented shape",
			resp: `{"id":"laas-1","object":"chat.completion","created":1730000000,"model":"gpt-4o-2024-08-06",` +
				`"choices":[{"index":0,"message":{"role":"assistant","content":"Hello!"},"finish_reason":"stop"}],` +
				`"usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12}}`,
			want: `{"id":"chatcmpl-1","object":"chat.completion","created":1730000000,"model":"my-alias",` +
				`"choices":[{"index":0,"message":{"role":"assistant","content":"Hello!","refusal":null},"finish_reason":"stop","logprobs":null}],` +
				`"usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12},"system_fingerprint":null}`,
		},
		{
			name: "content as text parts joined with nothing",
			resp: `{"created":1730000000,"choices":[{"message":{"role":"assistant","content":[{"type":"text","text":"Hel"},{"type":"text","text":"lo "},{"type":"text","text":"world"}]},"finish_reason":"stop"}]}`,
			want: `{"id":"chatcmpl-1","object":"chat.completion","created":1730000000,"model":"my-alias",` +
				`"choices":[{"index":0,"message":{"role":"assistant","content":"Hello world","refusal":null},"finish_reason":"stop","logprobs":null}],"system_fingerprint":null}`,
		},
		{
			name: "created in milliseconds",
			resp: `{"created":1730000000123,"choices":[{"message":{"content":"x"}}]}`,
			want: `{"id":"chatcmpl-1","object":"chat.completion","created":1730000000,"model":"my-alias",` +
				`"choices":[{"index":0,"message":{"role":"assistant","content":"x","refusal":null},"finish_reason":"stop","logprobs":null}],"system_fingerprint":null}`,
		},
		{
			name: "created at the threshold stays seconds",
			resp: `{"created":100000000000,"choices":[{"message":{"content":"x"}}]}`,
			want: `{"id":"chatcmpl-1","object":"chat.completion","created":100000000000,"model":"my-alias",` +
				`"choices":[{"index":0,"message":{"role":"assistant","content":"x","refusal":null},"finish_reason":"stop","logprobs":null}],"system_fingerprint":null}`,
		},
		{
			name: "created just above the threshold is milliseconds",
			resp: `{"created":100000000001,"choices":[{"message":{"content":"x"}}]}`,
			want: `{"id":"chatcmpl-1","object":"chat.completion","created":100000000,"model":"my-alias",` +
				`"choices":[{"index":0,"message":{"role":"assistant","content":"x","refusal":null},"finish_reason":"stop","logprobs":null}],"system_fingerprint":null}`,
		},
		{
			name: "created missing becomes now",
			resp: `{"choices":[{"message":{"content":"x"}}]}`,
			want: `{"id":"chatcmpl-1","object":"chat.completion","created":1750000000,"model":"my-alias",` +
				`"choices":[{"index":0,"message":{"role":"assistant","content":"x","refusal":null},"finish_reason":"stop","logprobs":null}],"system_fingerprint":null}`,
		},
		{
			name: "created negative becomes now",
			resp: `{"created":-5,"choices":[{"message":{"content":"x"}}]}`,
			want: `{"id":"chatcmpl-1","object":"chat.completion","created":1750000000,"model":"my-alias",` +
				`"choices":[{"index":0,"message":{"role":"assistant","content":"x","refusal":null},"finish_reason":"stop","logprobs":null}],"system_fingerprint":null}`,
		},
		{
			name: "object chat.completion.chunk, anthropic usage, extra keys",
			resp: `{"id":"x","object":"chat.completion.chunk","created":1730000000000,"model":"claude","session_id":"s-1",` +
				`"choices":[{"index":0,"message":{"role":"assistant","content":[{"type":"text","text":"hi"}],"tool_calls":[]},"finish_reason":"end_turn"}],` +
				`"usage":{"input_tokens":12,"output_tokens":4}}`,
			want: `{"id":"chatcmpl-1","object":"chat.completion","created":1730000000,"model":"my-alias",` +
				`"choices":[{"index":0,"message":{"role":"assistant","content":"hi","refusal":null},"finish_reason":"end_turn","logprobs":null}],` +
				`"usage":{"prompt_tokens":12,"completion_tokens":4,"total_tokens":16},"system_fingerprint":null}`,
		},
		{
			name: "OpenAI usage wins over anthropic usage beside it; total kept as sent",
			resp: `{"created":1,"choices":[{"message":{"content":"x"}}],` +
				`"usage":{"prompt_tokens":5,"completion_tokens":6,"total_tokens":20,"input_tokens":50,"output_tokens":60}}`,
			want: `{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"my-alias",` +
				`"choices":[{"index":0,"message":{"role":"assistant","content":"x","refusal":null},"finish_reason":"stop","logprobs":null}],` +
				`"usage":{"prompt_tokens":5,"completion_tokens":6,"total_tokens":20},"system_fingerprint":null}`,
		},
		{
			name: "mixed usage fields, total as the sum",
			resp: `{"created":1,"choices":[{"message":{"content":"x"}}],"usage":{"prompt_tokens":7,"output_tokens":2}}`,
			want: `{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"my-alias",` +
				`"choices":[{"index":0,"message":{"role":"assistant","content":"x","refusal":null},"finish_reason":"stop","logprobs":null}],` +
				`"usage":{"prompt_tokens":7,"completion_tokens":2,"total_tokens":9},"system_fingerprint":null}`,
		},
		{
			name: "empty usage object gives zeros",
			resp: `{"created":1,"choices":[{"message":{"content":"x"}}],"usage":{}}`,
			want: `{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"my-alias",` +
				`"choices":[{"index":0,"message":{"role":"assistant","content":"x","refusal":null},"finish_reason":"stop","logprobs":null}],` +
				`"usage":{"prompt_tokens":0,"completion_tokens":0,"total_tokens":0},"system_fingerprint":null}`,
		},
		{
			name: "null usage is omitted",
			resp: `{"created":1,"choices":[{"message":{"content":"x"}}],"usage":null}`,
			want: `{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"my-alias",` +
				`"choices":[{"index":0,"message":{"role":"assistant","content":"x","refusal":null},"finish_reason":"stop","logprobs":null}],"system_fingerprint":null}`,
		},
		{
			name: "several choices indexed by position, role and finish reason kept when set",
			resp: `{"created":1,"choices":[{"index":0,"message":{"role":"assistant","content":"a"},"finish_reason":"length"},` +
				`{"index":0,"message":{"content":null}},{"index":7,"message":{"role":"model","content":[]},"finish_reason":""}]}`,
			want: `{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"my-alias","choices":[` +
				`{"index":0,"message":{"role":"assistant","content":"a","refusal":null},"finish_reason":"length","logprobs":null},` +
				`{"index":1,"message":{"role":"assistant","content":"","refusal":null},"finish_reason":"stop","logprobs":null},` +
				`{"index":2,"message":{"role":"model","content":"","refusal":null},"finish_reason":"stop","logprobs":null}],"system_fingerprint":null}`,
		},
		{
			name: "non-text parts contribute their text only",
			resp: `{"created":1,"choices":[{"message":{"content":[{"type":"text","text":"see "},{"type":"image_url","image_url":{"url":"https://x"}},{"type":"text","text":"above"}]}}]}`,
			want: `{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"my-alias",` +
				`"choices":[{"index":0,"message":{"role":"assistant","content":"see above","refusal":null},"finish_reason":"stop","logprobs":null}],"system_fingerprint":null}`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var resp schema.LaaSResponse
			if err := json.Unmarshal([]byte(tc.resp), &resp); err != nil {
				t.Fatalf("test answer: %v", err)
			}
			got, err := FromLaaS(&resp, "chatcmpl-1", "my-alias", now)
			if err != nil {
				t.Fatalf("FromLaaS: %v", err)
			}
			b, err := json.Marshal(got)
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tc.want {
				t.Fatalf("completion = %s\nwant         %s", b, tc.want)
			}
		})
	}
}

func TestFromLaaSErrors(t *testing.T) {
	tests := []struct {
		name    string
		resp    *schema.LaaSResponse
		wantMsg string
	}{
		{name: "nil answer", resp: nil, wantMsg: "there is no LaaS answer"},
		{name: "no choices", resp: &schema.LaaSResponse{ID: "x", Created: 1}, wantMsg: "the LaaS answer has no choices"},
		{name: "empty choices", resp: &schema.LaaSResponse{Choices: []schema.LaaSChoice{}}, wantMsg: "the LaaS answer has no choices"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := FromLaaS(tc.resp, "id", "alias", time.Now())
			if got != nil || err == nil {
				t.Fatalf("FromLaaS = %v, %v; want an error", got, err)
			}
			if err.Error() != tc.wantMsg {
				t.Errorf("error = %q, want %q", err, tc.wantMsg)
			}
			if !errors.Is(err, ErrInvalidAnswer) {
				t.Errorf("error does not match ErrInvalidAnswer")
			}
			if e := schema.AsError(err); e.Status != http.StatusInternalServerError {
				t.Errorf("AsError status = %d", e.Status) // a plain error: the caller picks the status
			}
		})
	}
}
