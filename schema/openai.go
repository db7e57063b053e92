package schema

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
)

// ChatCompletionRequest is the body of POST /v1/chat/completions: the fields
// of OpenAI's API that the bridge reads, plus the LaaS extras that OpenAI
// SDKs send as extra body (params, preset_hash).
type ChatCompletionRequest struct {
	Model    string    `json:"model"`
	Messages []Message `json:"messages"`

	Stream        bool            `json:"stream,omitempty"`
	StreamOptions json.RawMessage `json:"stream_options,omitempty"`

	Temperature         *float64        `json:"temperature,omitempty"`
	TopP                *float64        `json:"top_p,omitempty"`
	MaxTokens           *int            `json:"max_tokens,omitempty"`
	MaxCompletionTokens *int            `json:"max_completion_tokens,omitempty"`
	FrequencyPenalty    *float64        `json:"frequency_penalty,omitempty"`
	PresencePenalty     *float64        `json:"presence_penalty,omitempty"`
	ResponseFormat      json.RawMessage `json:"response_format,omitempty"`
	Stop                json.RawMessage `json:"stop,omitempty"`
	Seed                *int64          `json:"seed,omitempty"`
	User                string          `json:"user,omitempty"`
	// ServiceTier "flex" queues the request in the batch lane, where it
	// waits instead of being refused under a rate limit (admission);
	// "auto" and "default" keep it interactive.
	ServiceTier string `json:"service_tier,omitempty"`

	// Fields LaaS cannot honour; read only to refuse them clearly (see
	// Validate). A JSON null counts as absent.
	N                 *int            `json:"n,omitempty"`
	Tools             json.RawMessage `json:"tools,omitempty"`
	ToolChoice        json.RawMessage `json:"tool_choice,omitempty"`
	Functions         json.RawMessage `json:"functions,omitempty"`
	FunctionCall      json.RawMessage `json:"function_call,omitempty"`
	ParallelToolCalls json.RawMessage `json:"parallel_tool_calls,omitempty"`
	Logprobs          *bool           `json:"logprobs,omitempty"`
	TopLogprobs       json.RawMessage `json:"top_logprobs,omitempty"`
	Audio             json.RawMessage `json:"audio,omitempty"`
	Modalities        []string        `json:"modalities,omitempty"`

	// Params are the preset's template variables (extra_body={"params": {...}}).
	Params map[string]json.RawMessage `json:"params,omitempty"`
	// PresetHash overrides the model's preset where the config allows it.
	PresetHash string `json:"preset_hash,omitempty"`
	// Cache holds LiteLLM's per-request cache controls (see ParseCache).
	Cache json.RawMessage `json:"cache,omitempty"`
}

// Message is one chat message. Content is a string or an array of parts.
type Message struct {
	Role       string          `json:"role"`
	Content    Content         `json:"content"`
	Name       string          `json:"name,omitempty"`
	ToolCalls  json.RawMessage `json:"tool_calls,omitempty"`
	ToolCallID string          `json:"tool_call_id,omitempty"`
}

// Content is a message's content: either plain text or a list of parts.
type Content struct {
	Text  string
	Parts []ContentPart // non-nil when the content was an array
}

// UnmarshalJSON accepts a string, an array of parts or null.
func (c *Content) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case len(b) == 0 || bytes.Equal(b, []byte("null")):
		*c = Content{}
		return nil
	case b[0] == '"':
		*c = Content{}
		return json.Unmarshal(b, &c.Text)
	case b[0] == '[':
		var parts []ContentPart
		if err := json.Unmarshal(b, &parts); err != nil {
			return err
		}
		if parts == nil {
			parts = []ContentPart{}
		}
		*c = Content{Parts: parts}
		return nil
	}
	return errors.New("content must be a string or an array of content parts")
}

// MarshalJSON writes the form the content was read in.
func (c Content) MarshalJSON() ([]byte, error) {
	if c.Parts != nil {
		return json.Marshal(c.Parts)
	}
	return json.Marshal(c.Text)
}

// ContentPart is one part of a multi-part message. Type selects which
// fields matter:
//
//	"text"        Text
//	"image_url"   ImageURL: {"url": "https://..." or "data:image/png;base64,...", "detail"}
//	"document"    DocumentURL: {"url": "data:application/pdf;base64,..."} (LaaS's own part)
//	"file"        File: {"file_data", "file_id", "filename"} (OpenAI Chat Completions)
//	"input_file"  FileData, FileID, FileURL, Filename at the top level (OpenAI Responses style)
//
// file_data is a data URL or bare base64 (taken as a PDF). The worker sends
// "file" and "input_file" parts to LaaS as "document" parts.
type ContentPart struct {
	Type        string  `json:"type"`
	Text        string  `json:"text,omitempty"`
	ImageURL    *URLRef `json:"image_url,omitempty"`
	DocumentURL *URLRef `json:"document_url,omitempty"`
	// File is the body of a "file" part.
	File *FileRef `json:"file,omitempty"`
	// FileData, FileID, FileURL and Filename are the fields of an
	// "input_file" part.
	FileData string `json:"file_data,omitempty"`
	FileID   string `json:"file_id,omitempty"`
	FileURL  string `json:"file_url,omitempty"`
	Filename string `json:"filename,omitempty"`
}

// FileRef is the "file" object of OpenAI's file content part. LaaS needs
// the bytes: FileData (a data URL, or bare base64 taken as a PDF); a FileID
// alone is refused.
type FileRef struct {
	FileData string `json:"file_data,omitempty"`
	FileID   string `json:"file_id,omitempty"`
	Filename string `json:"filename,omitempty"`
}

// MarshalJSON always writes a text part's "text", even when empty.
func (p ContentPart) MarshalJSON() ([]byte, error) {
	type plain ContentPart
	if p.Type != "text" {
		return json.Marshal(plain(p))
	}
	return json.Marshal(struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}{p.Type, p.Text})
}

// URLRef is {"url": "..."}; a bare string is accepted too, as older clients
// send it.
type URLRef struct {
	URL    string `json:"url"`
	Detail string `json:"detail,omitempty"`
}

// UnmarshalJSON accepts an object or a bare URL string.
func (u *URLRef) UnmarshalJSON(b []byte) error {
	if s := bytes.TrimSpace(b); len(s) > 0 && s[0] == '"' {
		*u = URLRef{}
		return json.Unmarshal(s, &u.URL)
	}
	type plain URLRef
	return json.Unmarshal(b, (*plain)(u))
}

// ChatCompletion is OpenAI's non-streamed answer.
type ChatCompletion struct {
	ID                string   `json:"id"`
	Object            string   `json:"object"`
	Created           int64    `json:"created"`
	Model             string   `json:"model"`
	Choices           []Choice `json:"choices"`
	Usage             *Usage   `json:"usage,omitempty"`
	SystemFingerprint *string  `json:"system_fingerprint"`
	// ServiceTier is the tier that ran it: "flex" (the batch lane) or
	// "default" (interactive); empty from a worker of an older release.
	ServiceTier string `json:"service_tier,omitempty"`
}

// Choice is one answer of a chat completion.
type Choice struct {
	Index        int              `json:"index"`
	Message      AssistantMessage `json:"message"`
	FinishReason string           `json:"finish_reason"`
	Logprobs     json.RawMessage  `json:"logprobs"`
}

// AssistantMessage is the answer's message.
type AssistantMessage struct {
	Role    string  `json:"role"`
	Content string  `json:"content"`
	Refusal *string `json:"refusal"`
}

// Usage counts tokens.
type Usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

// ModelObject is one entry of GET /v1/models.
type ModelObject struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

// ModelList is the body of GET /v1/models.
type ModelList struct {
	Object string        `json:"object"`
	Data   []ModelObject `json:"data"`
}

// DecodeChatRequest parses a chat completion request body. A body that is not
// valid JSON, or whose fields have the wrong types, is a 400 that says where.
func DecodeChatRequest(body []byte) (*ChatCompletionRequest, error) {
	var req ChatCompletionRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, decodeError(body, err)
	}
	return &req, nil
}

// decodeError words a failure to decode a request body as a 400 that says
// where: the same words for every API that takes a JSON body.
func decodeError(body []byte, err error) *Error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case len(bytes.TrimSpace(body)) == 0:
		return Invalid("", CodeInvalidJSON, "The request body is empty; expected a JSON object.")
	case errors.As(err, &syn):
		return Invalid("", CodeInvalidJSON, "The request body is not valid JSON (at byte %d): %s.", syn.Offset, syn.Error())
	case errors.As(err, &typ) && typ.Field == "":
		return Invalid("", CodeInvalidJSON, "The request body must be a JSON object, got JSON %s.", typ.Value)
	case errors.As(err, &typ):
		return Invalid(typ.Field, CodeInvalidJSON, "Invalid type for '%s': expected %s, got JSON %s.", typ.Field, goTypeKind(typ.Type), typ.Value)
	default:
		return Invalid("", CodeInvalidJSON, "The request body could not be parsed: %s.", err.Error())
	}
}

// goTypeKind names what JSON a Go type decodes from, for error messages.
func goTypeKind(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "an array"
	}
	return "an object"
}

// ParamString converts one params value to the string LaaS expects: strings
// as they are, numbers and booleans as their JSON text, null as "". Objects and
// arrays are refused.
func ParamString(name string, v json.RawMessage) (string, error) {
	v = bytes.TrimSpace(v)
	if len(v) == 0 || bytes.Equal(v, []byte("null")) {
		return "", nil
	}
	switch v[0] {
	case '"':
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return "", err
		}
		return s, nil
	case '{', '[':
		return "", Invalid("params."+name, CodeInvalidValue,
			"params.%s must be a string, number or boolean; LaaS template variables cannot hold objects or arrays.", name)
	}
	return string(v), nil
}

// String renders a short description for logs, without message content.
func (r *ChatCompletionRequest) String() string {
	return fmt.Sprintf("chat(model=%q messages=%d)", r.Model, len(r.Messages))
}
