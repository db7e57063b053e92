package schema_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/laas-bridge/laas-bridge/schema"
)

// wireChunk mirrors ChatCompletionChunk with plain struct tags, so that
// encoding/json can say what AppendJSON must write.
type wireChunk struct {
	ID                string               `json:"id"`
	Object            string               `json:"object"`
	Created           int64                `json:"created"`
	Model             string               `json:"model"`
	SystemFingerprint *string              `json:"system_fingerprint"`
	Choices           []schema.ChunkChoice `json:"choices"`
}

type wireChunkWithUsage struct {
	wireChunk
	Usage *schema.Usage `json:"usage"`
}

func encodeStdChunk(t *testing.T, v any) string {
	t.Helper()
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		t.Fatal(err)
	}
	return strings.TrimSuffix(b.String(), "\n")
}

func strPtr(s string) *string { return &s }

// TestChunkAppendJSONMatchesEncodingJSON: AppendJSON writes byte for byte
// what encoding/json writes, for every kind of string content, and the
// usage key follows include_usage.
func TestChunkAppendJSONMatchesEncodingJSON(t *testing.T) {
	var ascii strings.Builder
	for b := range 0x80 {
		ascii.WriteByte(byte(b))
	}
	contents := map[string]string{
		"empty":           "",
		"plain":           "Hello, world! ",
		"every ASCII":     ascii.String(),
		"korean":          "안녕하세요, 반갑습니다.\n",
		"emoji":           "👋🏽 🇰🇷 👨‍👩‍👧‍👦",
		"html":            "<b>a & b</b>",
		"line separators": "a\u2028b\u2029c",
		"invalid UTF-8":   "a\xffb\xe2\x82c\xed\xa0\x80",
		"quotes":          `"quoted" \ back\slash`,
	}
	for name, content := range contents {
		t.Run(name, func(t *testing.T) {
			choice := schema.ChunkChoice{Index: 0, Delta: schema.ChunkDelta{Content: strPtr(content)}}
			c := schema.ChatCompletionChunk{ID: "chatcmpl-" + content, Object: schema.ObjectChunk, Created: 1730000000,
				Model: "team/" + content, Choices: []schema.ChunkChoice{choice}}
			w := wireChunk{c.ID, c.Object, c.Created, c.Model, nil, c.Choices}
			if got, want := string(c.AppendJSON(nil)), encodeStdChunk(t, w); got != want {
				t.Errorf("AppendJSON\n got %s\nwant %s", got, want)
			}
			c.IncludeUsage = true
			if got, want := string(c.AppendJSON(nil)), encodeStdChunk(t, wireChunkWithUsage{wireChunk: w}); got != want {
				t.Errorf("AppendJSON with include_usage\n got %s\nwant %s", got, want)
			}
		})
	}
}

func TestChunkShapes(t *testing.T) {
	empty, stop, fp := "", "stop", "fp_1"
	usage := &schema.Usage{PromptTokens: 3, CompletionTokens: 4, TotalTokens: 7}
	head := `{"id":"c1","object":"chat.completion.chunk","created":5,"model":"m","system_fingerprint":null,"choices":`
	cases := []struct {
		name  string
		chunk schema.ChatCompletionChunk
		want  string
	}{
		{"role delta", schema.ChatCompletionChunk{Choices: []schema.ChunkChoice{{Delta: schema.ChunkDelta{Role: "assistant", Content: &empty}}}},
			head + `[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}`},
		{"finish", schema.ChatCompletionChunk{Choices: []schema.ChunkChoice{{Index: 2, FinishReason: &stop}}},
			head + `[{"index":2,"delta":{},"logprobs":null,"finish_reason":"stop"}]}`},
		{"role only", schema.ChatCompletionChunk{Choices: []schema.ChunkChoice{{Delta: schema.ChunkDelta{Role: "assistant"}}}},
			head + `[{"index":0,"delta":{"role":"assistant"},"logprobs":null,"finish_reason":null}]}`},
		{"logprobs kept", schema.ChatCompletionChunk{Choices: []schema.ChunkChoice{{Logprobs: json.RawMessage(` {"content":[]} `)}}},
			head + `[{"index":0,"delta":{},"logprobs":{"content":[]},"finish_reason":null}]}`},
		{"invalid logprobs dropped", schema.ChatCompletionChunk{Choices: []schema.ChunkChoice{{Logprobs: json.RawMessage(`{`)}}},
			head + `[{"index":0,"delta":{},"logprobs":null,"finish_reason":null}]}`},
		{"no usage key without include_usage", schema.ChatCompletionChunk{}, head + `[]}`},
		{"usage null with include_usage", schema.ChatCompletionChunk{IncludeUsage: true}, head + `[],"usage":null}`},
		{"usage chunk", schema.ChatCompletionChunk{IncludeUsage: true, Usage: usage},
			head + `[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}`},
		{"usage set without the flag", schema.ChatCompletionChunk{Usage: usage},
			head + `[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}`},
		{"system fingerprint", schema.ChatCompletionChunk{SystemFingerprint: &fp},
			strings.Replace(head, `"system_fingerprint":null`, `"system_fingerprint":"fp_1"`, 1) + `[]}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.chunk
			c.ID, c.Object, c.Created, c.Model = "c1", schema.ObjectChunk, 5, "m"
			if got := string(c.AppendJSON(nil)); got != tc.want {
				t.Errorf("AppendJSON\n got %s\nwant %s", got, tc.want)
			}
			b, err := json.Marshal(c)
			if err != nil || string(b) != tc.want {
				t.Errorf("json.Marshal = %s, %v", b, err)
			}
			var back schema.ChatCompletionChunk
			if err := json.Unmarshal(b, &back); err != nil {
				t.Fatal(err)
			}
			// What comes back: the flag is not on the wire, logprobs come
			// back compacted, or not at all when they were not JSON.
			want := c
			want.IncludeUsage = false
			want.Choices = nil
			for _, ch := range c.Choices {
				switch {
				case len(ch.Logprobs) > 0 && json.Valid(ch.Logprobs):
					var b bytes.Buffer
					_ = json.Compact(&b, ch.Logprobs)
					ch.Logprobs = b.Bytes()
				default:
					ch.Logprobs = nil
				}
				want.Choices = append(want.Choices, ch)
			}
			for i := range back.Choices {
				if string(back.Choices[i].Logprobs) == "null" {
					back.Choices[i].Logprobs = nil
				}
			}
			if len(back.Choices) == 0 {
				back.Choices = nil
			}
			if !reflect.DeepEqual(back, want) {
				t.Errorf("round trip\n got %+v\nwant %+v", back, want)
			}
		})
	}
}

func TestChunkAppendJSONDoesNotAllocate(t *testing.T) {
	content := strings.Repeat("안녕하세요 \"world\"\n", 4)
	c := schema.ChatCompletionChunk{ID: "chatcmpl-x", Object: schema.ObjectChunk, Created: 1, Model: "m", IncludeUsage: true,
		Choices: []schema.ChunkChoice{{Delta: schema.ChunkDelta{Content: &content}}}}
	buf := make([]byte, 0, 4096)
	if n := testing.AllocsPerRun(100, func() { buf = c.AppendJSON(buf[:0]) }); n != 0 {
		t.Errorf("AppendJSON allocates %v times per chunk", n)
	}
}

func TestParseStreamOptions(t *testing.T) {
	cases := []struct {
		name    string
		body    string
		want    schema.StreamOptions
		param   string // a 400 naming this param, or "" for none
		message string
	}{
		{"absent", `{"model":"m","stream":true}`, schema.StreamOptions{}, "", ""},
		{"null", `{"model":"m","stream":true,"stream_options":null}`, schema.StreamOptions{}, "", ""},
		{"empty object", `{"model":"m","stream":true,"stream_options":{}}`, schema.StreamOptions{}, "", ""},
		{"include_usage true", `{"model":"m","stream":true,"stream_options":{"include_usage":true}}`, schema.StreamOptions{IncludeUsage: true}, "", ""},
		{"include_usage false", `{"model":"m","stream":true,"stream_options":{"include_usage":false}}`, schema.StreamOptions{}, "", ""},
		{"include_usage null", `{"model":"m","stream":true,"stream_options":{"include_usage":null}}`, schema.StreamOptions{}, "", ""},
		{"unknown keys ignored", `{"model":"m","stream":true,"stream_options":{"include_obfuscation":false,"include_usage":true}}`, schema.StreamOptions{IncludeUsage: true}, "", ""},
		{"string", `{"model":"m","stream":true,"stream_options":"yes"}`, schema.StreamOptions{}, "stream_options", "expected an object, got JSON string"},
		{"array", `{"model":"m","stream":true,"stream_options":[]}`, schema.StreamOptions{}, "stream_options", "expected an object, got JSON array"},
		{"number", `{"model":"m","stream":true,"stream_options":1}`, schema.StreamOptions{}, "stream_options", "expected an object, got JSON number"},
		{"include_usage string", `{"model":"m","stream":true,"stream_options":{"include_usage":"yes"}}`, schema.StreamOptions{}, "stream_options.include_usage", "expected a boolean, got JSON string"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, err := schema.DecodeChatRequest([]byte(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			got, err := req.ParseStreamOptions()
			checkStreamInvalid(t, err, tc.param, tc.message)
			if got != tc.want {
				t.Errorf("options = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestValidateStreamOptions(t *testing.T) {
	msgs := `"messages":[{"role":"user","content":"hi"}]`
	cases := []struct {
		name, body, param, message string
	}{
		{"stream", `{"model":"m","stream":true,` + msgs + `}`, "", ""},
		{"stream with include_usage", `{"model":"m","stream":true,"stream_options":{"include_usage":true},` + msgs + `}`, "", ""},
		{"options without stream", `{"model":"m","stream_options":{"include_usage":true},` + msgs + `}`, "stream_options", "only allowed when 'stream' is enabled"},
		{"options with stream false", `{"model":"m","stream":false,"stream_options":{},` + msgs + `}`, "stream_options", "only allowed when 'stream' is enabled"},
		{"null options without stream", `{"model":"m","stream_options":null,` + msgs + `}`, "", ""},
		{"bad shape", `{"model":"m","stream":true,"stream_options":[true],` + msgs + `}`, "stream_options", "expected an object"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, err := schema.DecodeChatRequest([]byte(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			checkStreamInvalid(t, req.Validate(), tc.param, tc.message)
		})
	}
}

// checkStreamInvalid wants nil when param is "", else a 400 invalid_request_error
// naming param with a message containing message.
func checkStreamInvalid(t *testing.T, err error, param, message string) {
	t.Helper()
	if param == "" {
		if err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
		return
	}
	var e *schema.Error
	if !errors.As(err, &e) {
		t.Fatalf("want a 400 *schema.Error, got %v", err)
	}
	if e.Status != 400 || e.Type != schema.TypeInvalidRequest || e.Param != param || !strings.Contains(e.Message, message) {
		t.Errorf("error = %+v, want 400 invalid_request_error param %q message containing %q", e, param, message)
	}
}
