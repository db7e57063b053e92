package schema_test

import (
	"encoding/json"
	"net/http"
	"reflect"
	"testing"

	"github.com/laas-bridge/laas-bridge/schema"
)

func invalidJSON(param, msg string) *schema.Error {
	return &schema.Error{Status: http.StatusBadRequest, Type: schema.TypeInvalidRequest, Code: schema.CodeInvalidJSON, Param: param, Message: msg}
}

func TestDecodeChatRequestErrors(t *testing.T) {
	tests := []struct {
		name string
		body string
		want *schema.Error
	}{
		{"empty body", "", invalidJSON("", "The request body is empty; expected a JSON object.")},
		{"whitespace only", " \r\n\t ", invalidJSON("", "The request body is empty; expected a JSON object.")},
		{
			"trailing comma", `{"model": "m",}`,
			invalidJSON("", "The request body is not valid JSON (at byte 15): invalid character '}' looking for beginning of object key string."),
		},
		{
			"truncated", `{"model":`,
			invalidJSON("", "The request body is not valid JSON (at byte 9): unexpected end of JSON input."),
		},
		{
			"garbage after the object", `{"model":"m"} x`,
			invalidJSON("", "The request body is not valid JSON (at byte 15): invalid character 'x' after top-level value."),
		},
		{
			"model is a number", `{"model": 1, "messages": []}`,
			invalidJSON("model", "Invalid type for 'model': expected a string, got JSON number."),
		},
		{
			"messages is a string", `{"model":"m","messages":"hi"}`,
			invalidJSON("messages", "Invalid type for 'messages': expected an array, got JSON string."),
		},
		{
			"stream is a string", `{"model":"m","stream":"yes"}`,
			invalidJSON("stream", "Invalid type for 'stream': expected a boolean, got JSON string."),
		},
		{
			"temperature is a string", `{"model":"m","temperature":"hot"}`,
			invalidJSON("temperature", "Invalid type for 'temperature': expected a number, got JSON string."),
		},
		{
			"max_tokens is a fraction", `{"model":"m","max_tokens":1.5}`,
			invalidJSON("max_tokens", "Invalid type for 'max_tokens': expected an integer, got JSON number 1.5."),
		},
		{
			// encoding/json names nested fields without the array index.
			"role is a number", `{"model":"m","messages":[{"role":1,"content":"hi"}]}`,
			invalidJSON("messages.role", "Invalid type for 'messages.role': expected a string, got JSON number."),
		},
		{
			"content is a number", `{"model":"m","messages":[{"role":"user","content":42}]}`,
			invalidJSON("", "The request body could not be parsed: content must be a string or an array of content parts."),
		},
		{
			"content is an object", `{"model":"m","messages":[{"role":"user","content":{"text":"hi"}}]}`,
			invalidJSON("", "The request body could not be parsed: content must be a string or an array of content parts."),
		},
		{
			"content is a bool", `{"model":"m","messages":[{"role":"user","content":true}]}`,
			invalidJSON("", "The request body could not be parsed: content must be a string or an array of content parts."),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, err := schema.DecodeChatRequest([]byte(tc.body))
			if req != nil {
				t.Errorf("request = %v, want nil", req)
			}
			wantError(t, err, tc.want)
		})
	}
}

func TestDecodeChatRequest(t *testing.T) {
	user := func(c schema.Content) []schema.Message { return []schema.Message{{Role: "user", Content: c}} }
	tests := []struct {
		name string
		body string
		want *schema.ChatCompletionRequest
	}{
		{
			name: "content as string",
			body: `{"model":"m","messages":[{"role":"user","content":"hello"}]}`,
			want: &schema.ChatCompletionRequest{Model: "m", Messages: user(schema.Content{Text: "hello"})},
		},
		{
			name: "content as parts",
			body: `{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"look"},{"type":"image_url","image_url":{"url":"https://x.test/a.png","detail":"high"}}]}]}`,
			want: &schema.ChatCompletionRequest{Model: "m", Messages: user(schema.Content{Parts: []schema.ContentPart{
				{Type: "text", Text: "look"},
				{Type: "image_url", ImageURL: &schema.URLRef{URL: "https://x.test/a.png", Detail: "high"}},
			}})},
		},
		{
			name: "image_url as a bare string",
			body: `{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":"data:image/png;base64,AAAA"}]}]}`,
			want: &schema.ChatCompletionRequest{Model: "m", Messages: user(schema.Content{Parts: []schema.ContentPart{
				{Type: "image_url", ImageURL: &schema.URLRef{URL: "data:image/png;base64,AAAA"}},
			}})},
		},
		{
			name: "document part",
			body: `{"model":"m","messages":[{"role":"user","content":[{"type":"document","document_url":{"url":"data:application/pdf;base64,JVBE"}}]}]}`,
			want: &schema.ChatCompletionRequest{Model: "m", Messages: user(schema.Content{Parts: []schema.ContentPart{
				{Type: "document", DocumentURL: &schema.URLRef{URL: "data:application/pdf;base64,JVBE"}},
			}})},
		},
		{
			name: "content null",
			body: `{"model":"m","messages":[{"role":"assistant","content":null}]}`,
			want: &schema.ChatCompletionRequest{Model: "m", Messages: []schema.Message{{Role: "assistant"}}},
		},
		{
			name: "content absent",
			body: `{"model":"m","messages":[{"role":"user"}]}`,
			want: &schema.ChatCompletionRequest{Model: "m", Messages: []schema.Message{{Role: "user"}}},
		},
		{
			name: "content an empty array stays parts",
			body: `{"model":"m","messages":[{"role":"user","content":[]}]}`,
			want: &schema.ChatCompletionRequest{Model: "m", Messages: user(schema.Content{Parts: []schema.ContentPart{}})},
		},
		{
			name: "unknown fields are ignored",
			body: `{"model":"m","messages":[{"role":"user","content":"hi","x_note":{"id":"x"}}],"x_unknown":{"a":[1,2]},"x-flag":true,"x_n":null}`,
			want: &schema.ChatCompletionRequest{Model: "m", Messages: user(schema.Content{Text: "hi"})},
		},
		{
			name: "params kept raw",
			body: `{"model":"m","params":{"name":"Kim","price":1.50,"ok":true,"none":null,"obj":{"a" : 1}},"preset_hash":"abc"}`,
			want: &schema.ChatCompletionRequest{Model: "m", PresetHash: "abc", Params: map[string]json.RawMessage{
				"name": json.RawMessage(`"Kim"`), "price": json.RawMessage(`1.50`), "ok": json.RawMessage(`true`),
				"none": json.RawMessage(`null`), "obj": json.RawMessage(`{"a" : 1}`),
			}},
		},
		{
			name: "sampling fields and JSON null for refused fields",
			body: `{"model":"m","temperature":0.2,"top_p":1,"max_tokens":100,"seed":7,"user":"u1","n":1,"tools":null,"tool_choice":null,"stop":["\n"]}`,
			want: &schema.ChatCompletionRequest{
				Model: "m", Temperature: ptr(0.2), TopP: ptr(1.0), MaxTokens: ptr(100), Seed: ptr(int64(7)), User: "u1", N: ptr(1),
				Tools: json.RawMessage(`null`), ToolChoice: json.RawMessage(`null`), Stop: json.RawMessage(`["\n"]`),
			},
		},
		{
			name: "JSON null body decodes to an empty request",
			body: `null`,
			want: &schema.ChatCompletionRequest{},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := schema.DecodeChatRequest([]byte(tc.body))
			if err != nil {
				t.Fatalf("DecodeChatRequest: %v", err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("DecodeChatRequest =\n\t%#v\nwant\n\t%#v", got, tc.want)
			}
		})
	}
}

func TestChatCompletionRequestString(t *testing.T) {
	req, err := schema.DecodeChatRequest([]byte(`{"model":"gpt-4o","messages":[{"role":"system","content":"be terse"},{"role":"user","content":"my password is hunter2"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := req.String(), `chat(model="gpt-4o" messages=2)`; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

func TestParamString(t *testing.T) {
	tests := []struct {
		name  string
		value string
		want  string
	}{
		{"string", `"Seoul"`, "Seoul"},
		{"escaped string", `"say \"hi\"\n\u00e9\t\\"`, "say \"hi\"\n\u00e9\t\\"},
		{"empty string", `""`, ""},
		{"int", `42`, "42"},
		{"negative int", `-7`, "-7"},
		{"float kept verbatim", `1.50`, "1.50"},
		{"exponent kept verbatim", `1e3`, "1e3"},
		{"true", `true`, "true"},
		{"false", `false`, "false"},
		{"null", `null`, ""},
		{"empty raw value", ``, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := schema.ParamString("city", json.RawMessage(tc.value))
			if err != nil {
				t.Fatalf("ParamString(%s): %v", tc.value, err)
			}
			if got != tc.want {
				t.Errorf("ParamString(%s) = %q, want %q", tc.value, got, tc.want)
			}
		})
	}
}

func TestParamStringRefused(t *testing.T) {
	for _, tc := range []struct{ name, value string }{
		{"object", `{"a":1}`},
		{"empty object", `{}`},
		{"array", `["a","b"]`},
		{"empty array", `[]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := schema.ParamString("city", json.RawMessage(tc.value))
			if got != "" {
				t.Errorf("value = %q, want empty", got)
			}
			wantError(t, err, &schema.Error{Status: http.StatusBadRequest, Type: schema.TypeInvalidRequest, Code: schema.CodeInvalidValue, Param: "params.city",
				Message: "params.city must be a string, number or boolean; LaaS template variables cannot hold objects or arrays."})
		})
	}
}

func TestContentRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		in   string
		out  string // "" means the same as in
	}{
		{"string stays a string", `"hello"`, ""},
		{"escaped string", `"a \"quote\" and \u003ctag\u003e"`, ""},
		{"empty string", `""`, ""},
		{"text parts stay parts", `[{"type":"text","text":"one"},{"type":"text","text":"two"}]`, ""},
		{"empty text part keeps text", `[{"type":"text","text":""}]`, ""},
		{"text part without text gains it", `[{"type":"text"}]`, `[{"type":"text","text":""}]`},
		{"image part has no text key", `[{"type":"image_url","image_url":{"url":"https://x.test/a.png","detail":"low"}}]`, ""},
		{"bare image url becomes an object", `[{"type":"image_url","image_url":"https://x.test/a.png"}]`, `[{"type":"image_url","image_url":{"url":"https://x.test/a.png"}}]`},
		{"document part", `[{"type":"document","document_url":{"url":"data:application/pdf;base64,JVBE"}}]`, ""},
		{"file part", `[{"type":"file","file":{"file_data":"data:application/pdf;base64,JVBE","filename":"a.pdf"}}]`, ""},
		{"input_file part", `[{"type":"input_file","file_data":"JVBE","filename":"b.pdf"}]`, ""},
		{"empty array stays an array", `[]`, ""},
		{"null becomes an empty string", `null`, `""`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want := tc.out
			if want == "" {
				want = tc.in
			}
			var c schema.Content
			if err := json.Unmarshal([]byte(tc.in), &c); err != nil {
				t.Fatalf("Unmarshal(%s): %v", tc.in, err)
			}
			if got := marshal(t, c); got != want {
				t.Errorf("Marshal(Unmarshal(%s)) = %s, want %s", tc.in, got, want)
			}
			// Inside a message, through the value receiver.
			wantMsg := `{"role":"user","content":` + want + `}`
			var m schema.Message
			if err := json.Unmarshal([]byte(`{"role":"user","content":`+tc.in+`}`), &m); err != nil {
				t.Fatal(err)
			}
			if got := marshal(t, m); got != wantMsg {
				t.Errorf("message round trip = %s, want %s", got, wantMsg)
			}
		})
	}
}

func TestContentKind(t *testing.T) {
	var s, p schema.Content
	if err := json.Unmarshal([]byte(`"hi"`), &s); err != nil {
		t.Fatal(err)
	}
	if s.Parts != nil || s.Text != "hi" {
		t.Errorf("string content = %#v, want Text only", s)
	}
	if err := json.Unmarshal([]byte(`[{"type":"text","text":"hi"}]`), &p); err != nil {
		t.Fatal(err)
	}
	if want := []schema.ContentPart{{Type: "text", Text: "hi"}}; p.Text != "" || !reflect.DeepEqual(p.Parts, want) {
		t.Errorf("parts content = %#v, want Parts %#v", p, want)
	}
	// Decoding into a used value resets it.
	if err := json.Unmarshal([]byte(`"again"`), &p); err != nil {
		t.Fatal(err)
	}
	if p.Parts != nil || p.Text != "again" {
		t.Errorf("reused content = %#v, want Text only", p)
	}
}

func TestContentUnmarshalRefused(t *testing.T) {
	for _, tc := range []struct{ name, in string }{
		{"number", `42`},
		{"bool", `false`},
		{"object", `{"type":"text","text":"hi"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c schema.Content
			err := json.Unmarshal([]byte(tc.in), &c)
			if err == nil || err.Error() != "content must be a string or an array of content parts" {
				t.Errorf("Unmarshal(%s) error = %v, want the content error", tc.in, err)
			}
		})
	}
}

func TestContentPartMarshal(t *testing.T) {
	tests := []struct {
		name string
		part schema.ContentPart
		want string
	}{
		{"empty text", schema.ContentPart{Type: "text"}, `{"type":"text","text":""}`},
		{"text", schema.ContentPart{Type: "text", Text: "hi"}, `{"type":"text","text":"hi"}`},
		{"text drops stray urls", schema.ContentPart{Type: "text", Text: "hi", ImageURL: &schema.URLRef{URL: "u"}}, `{"type":"text","text":"hi"}`},
		{"image", schema.ContentPart{Type: "image_url", ImageURL: &schema.URLRef{URL: "https://x.test/a.jpg"}}, `{"type":"image_url","image_url":{"url":"https://x.test/a.jpg"}}`},
		{"image with detail", schema.ContentPart{Type: "image_url", ImageURL: &schema.URLRef{URL: "u", Detail: "auto"}}, `{"type":"image_url","image_url":{"url":"u","detail":"auto"}}`},
		{"document", schema.ContentPart{Type: "document", DocumentURL: &schema.URLRef{URL: "data:application/pdf;base64,AA"}}, `{"type":"document","document_url":{"url":"data:application/pdf;base64,AA"}}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := marshal(t, tc.part); got != tc.want {
				t.Errorf("Marshal = %s, want %s", got, tc.want)
			}
		})
	}
	t.Run("LaaS message with an empty text part", func(t *testing.T) {
		m := schema.LaaSMessage{Role: "user", Content: []schema.ContentPart{{Type: "text"}}}
		if got, want := marshal(t, m), `{"role":"user","content":[{"type":"text","text":""}]}`; got != want {
			t.Errorf("Marshal = %s, want %s", got, want)
		}
	})
}

func TestURLRefUnmarshal(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want schema.URLRef
	}{
		{"object", `{"url":"https://x.test/a.png"}`, schema.URLRef{URL: "https://x.test/a.png"}},
		{"object with detail", `{"url":"u","detail":"high"}`, schema.URLRef{URL: "u", Detail: "high"}},
		{"bare string", `"https://x.test/a.png"`, schema.URLRef{URL: "https://x.test/a.png"}},
		{"bare string with spaces around", ` "u" `, schema.URLRef{URL: "u"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got schema.URLRef
			if err := json.Unmarshal([]byte(tc.in), &got); err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("Unmarshal(%s) = %+v, want %+v", tc.in, got, tc.want)
			}
		})
	}
}

func TestURLRefBareStringResets(t *testing.T) {
	got := schema.URLRef{URL: "old", Detail: "high"}
	if err := json.Unmarshal([]byte(`"new"`), &got); err != nil {
		t.Fatal(err)
	}
	if want := (schema.URLRef{URL: "new"}); got != want {
		t.Errorf("Unmarshal into a used URLRef = %+v, want %+v", got, want)
	}
}
