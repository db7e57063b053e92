package schema

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
)

// ResponsesRequest is the body of POST /v1/responses (OpenAI's Responses
// API) as far as LaaS can run it: one turn, text, images and PDFs in, text
// out. The bridge answers it by translating it to a ChatCompletionRequest
// (ChatRequest) that goes the chat path's way, and the chat completion
// back to a Response (NewResponse).
type ResponsesRequest struct {
	Model           string            `json:"model"`
	Input           json.RawMessage   `json:"input"` // a string or a list of input items
	Instructions    *string           `json:"instructions"`
	MaxOutputTokens *int              `json:"max_output_tokens"`
	Temperature     *float64          `json:"temperature"`
	TopP            *float64          `json:"top_p"`
	Metadata        map[string]string `json:"metadata"`
	User            string            `json:"user"`

	// The bridge's extensions, as chat requests take them.
	Params     map[string]json.RawMessage `json:"params"`
	PresetHash string                     `json:"preset_hash"`
}

// responsesFields are the top-level fields DecodeResponsesRequest knows,
// with what it does with each. A field not listed is refused by name.
var responsesFields = map[string]func(v json.RawMessage) *Error{
	"model": nil, "input": nil, "instructions": nil, "max_output_tokens": nil,
	"temperature": nil, "top_p": nil, "metadata": nil, "user": nil,
	"params": nil, "preset_hash": nil,
	"tools":               refuseIfPresent("tools", "LaaS does not support tool or function calling; remove 'tools'."),
	"tool_choice":         refuseIfPresent("tool_choice", "LaaS does not support tool or function calling; remove 'tool_choice'."),
	"parallel_tool_calls": refuseIfPresent("parallel_tool_calls", "LaaS does not support tool or function calling; remove 'parallel_tool_calls'."),
	"previous_response_id": refuseIfPresent("previous_response_id",
		"'previous_response_id' is not supported yet: the bridge does not store responses. Send the whole conversation in 'input'."),
	"prompt":       refuseIfPresent("prompt", "The bridge does not support stored prompts; remove 'prompt' and send the text in 'input'."),
	"conversation": refuseIfPresent("conversation", "The bridge does not support conversations; remove 'conversation' and send the whole conversation in 'input'."),
	"reasoning": func(v json.RawMessage) *Error {
		if !present(v) {
			return nil
		}
		// {"effort": null} (and other fields null) asks for nothing.
		var r map[string]json.RawMessage
		if json.Unmarshal(v, &r) == nil && !slices.ContainsFunc(slices.Collect(maps.Values(r)), func(f json.RawMessage) bool { return present(f) }) {
			return nil
		}
		return unsupported("reasoning", "LaaS does not expose reasoning controls; remove 'reasoning' or send it as null.")
	},
	"include": func(v json.RawMessage) *Error {
		if !present(v) || emptyArray(v) {
			return nil
		}
		return unsupported("include", "The bridge includes no extra output data; 'include' must be empty or absent.")
	},
	"background": refuseIfTrue("background", "Background responses are not supported yet; remove 'background' or set it to false."),
	"stream":     refuseIfTrue("stream", "Streamed responses are not supported yet; remove 'stream' or set it to false."),
	"store": refuseIfTrue("store",
		"The bridge does not store responses yet; set 'store' to false (the official clients send true unless told otherwise)."),
	"text": func(v json.RawMessage) *Error {
		var t map[string]json.RawMessage
		if !present(v) {
			return nil
		}
		if err := json.Unmarshal(v, &t); err != nil {
			return Invalid("text", CodeInvalidJSON, "Invalid type for 'text': expected an object.")
		}
		for _, name := range slices.Sorted(maps.Keys(t)) {
			switch f := t[name]; {
			case name == "format" && present(f) && !compactEqual(f, `{"type":"text"}`):
				return unsupported("text.format", `LaaS answers plain text only; 'text.format' must be {"type": "text"} or absent.`)
			case name != "format" && present(f):
				return unsupported("text."+name, fmt.Sprintf("The bridge does not support 'text.%s'; remove it.", name))
			}
		}
		return nil
	},
	"truncation": oneOf("truncation", "The bridge does not truncate input; 'truncation' must be \"disabled\" or absent.", `"disabled"`),
	"service_tier": oneOf("service_tier",
		"LaaS has one service tier; 'service_tier' must be \"auto\", \"default\" or absent.", `"auto"`, `"default"`),
}

func refuseIfPresent(param, msg string) func(json.RawMessage) *Error {
	return func(v json.RawMessage) *Error {
		if present(v) {
			return unsupported(param, msg)
		}
		return nil
	}
}

func refuseIfTrue(param, msg string) func(json.RawMessage) *Error {
	return func(v json.RawMessage) *Error {
		if present(v) && !compactEqual(v, "false") {
			return unsupported(param, msg)
		}
		return nil
	}
}

// oneOf accepts null and the JSON values listed.
func oneOf(param, msg string, values ...string) func(json.RawMessage) *Error {
	return func(v json.RawMessage) *Error {
		if !present(v) || slices.ContainsFunc(values, func(s string) bool { return compactEqual(v, s) }) {
			return nil
		}
		return unsupported(param, msg)
	}
}

func compactEqual(v json.RawMessage, want string) bool {
	var b bytes.Buffer
	return json.Compact(&b, v) == nil && b.String() == want
}

// DecodeResponsesRequest parses a Responses request body. Bad JSON or a
// field of the wrong type is the 400 DecodeChatRequest gives; a field LaaS
// cannot honour, or one the bridge does not know, is a 400
// unsupported_parameter naming it (the first in name order).
func DecodeResponsesRequest(body []byte) (*ResponsesRequest, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil {
		return nil, decodeError(body, err)
	}
	for _, name := range slices.Sorted(maps.Keys(fields)) {
		check, known := responsesFields[name]
		switch {
		case !known:
			return nil, unsupported(name, fmt.Sprintf("The bridge does not support the Responses API parameter '%s'; remove it (docs/api.md lists the fields it accepts).", name))
		case check != nil:
			if err := check(fields[name]); err != nil {
				return nil, err
			}
		}
	}
	var req ResponsesRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, decodeError(body, err)
	}
	return &req, nil
}

// responseItem is one item of a Responses request's input list.
type responseItem struct {
	Type    string          `json:"type"`
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

// responsePart is one content part of an input message.
type responsePart struct {
	Type     string `json:"type"`
	Text     string `json:"text"`
	ImageURL string `json:"image_url"`
	Detail   string `json:"detail"`
	FileID   string `json:"file_id"`
	FileData string `json:"file_data"`
	FileURL  string `json:"file_url"`
	Filename string `json:"filename"`
}

// ChatRequest is the chat request that runs r: instructions as a first
// system message, then the input's messages (developer messages as
// system ones), max_output_tokens as max_tokens. Input items and parts
// LaaS cannot take are refused here, named by their place in 'input';
// the chat path's Validate checks the rest.
func (r *ResponsesRequest) ChatRequest() (*ChatCompletionRequest, error) {
	if r.Model == "" {
		return nil, Invalid("model", CodeInvalidValue, "The 'model' field is required.")
	}
	if r.MaxOutputTokens != nil && *r.MaxOutputTokens < 1 {
		return nil, Invalid("max_output_tokens", CodeInvalidValue, "'max_output_tokens' must be at least 1, got %d.", *r.MaxOutputTokens)
	}
	chat := &ChatCompletionRequest{Model: r.Model, Temperature: r.Temperature, TopP: r.TopP, MaxTokens: r.MaxOutputTokens,
		User: r.User, Params: r.Params, PresetHash: r.PresetHash}
	if r.Instructions != nil && *r.Instructions != "" {
		chat.Messages = append(chat.Messages, Message{Role: "system", Content: Content{Text: *r.Instructions}})
	}
	input, err := inputMessages(r.Input)
	if err != nil {
		return nil, err
	}
	if len(input) == 0 {
		return nil, Invalid("input", CodeInvalidValue, "The 'input' field is required and must hold text or at least one message.")
	}
	chat.Messages = append(chat.Messages, input...)
	return chat, nil
}

func inputMessages(input json.RawMessage) ([]Message, error) {
	input = bytes.TrimSpace(input)
	switch {
	case !present(input):
		return nil, nil
	case input[0] == '"':
		var s string
		if err := json.Unmarshal(input, &s); err != nil {
			return nil, decodeError(input, err)
		}
		if s == "" {
			return nil, nil
		}
		return []Message{{Role: "user", Content: Content{Text: s}}}, nil
	case input[0] != '[':
		return nil, Invalid("input", CodeInvalidJSON, "Invalid type for 'input': expected a string or an array of input items.")
	}
	var items []responseItem
	if err := json.Unmarshal(input, &items); err != nil {
		return nil, Invalid("input", CodeInvalidJSON, "'input' must be an array of input items: %s.", err.Error())
	}
	msgs := make([]Message, 0, len(items))
	for i, it := range items {
		m, err := inputMessage(i, &it)
		if err != nil {
			return nil, err
		}
		msgs = append(msgs, m)
	}
	return msgs, nil
}

func inputMessage(i int, it *responseItem) (Message, error) {
	pi := fmt.Sprintf("input[%d]", i)
	if it.Type != "" && it.Type != "message" {
		return Message{}, unsupported(pi+".type", fmt.Sprintf("%s is a '%s' item; the bridge accepts only message items (LaaS has no tools or stored items).", pi, it.Type))
	}
	m := Message{Role: it.Role}
	switch it.Role {
	case "user", "system", "assistant":
	case "developer":
		m.Role = "system"
	case "":
		return Message{}, Invalid(pi+".role", CodeInvalidValue, "%s has no 'role'; use user, system, developer or assistant.", pi)
	default:
		return Message{}, Invalid(pi+".role", CodeInvalidValue, "%s has role '%s'; the bridge accepts user, system, developer and assistant messages.", pi, it.Role)
	}
	c := bytes.TrimSpace(it.Content)
	switch {
	case len(c) > 0 && c[0] == '"':
		if err := json.Unmarshal(c, &m.Content.Text); err != nil {
			return Message{}, Invalid(pi+".content", CodeInvalidJSON, "%s.content: %s.", pi, err.Error())
		}
		return m, nil
	case len(c) > 0 && c[0] == '[':
	default:
		return Message{}, Invalid(pi+".content", CodeInvalidValue, "%s needs 'content': a string or an array of content parts.", pi)
	}
	var parts []responsePart
	if err := json.Unmarshal(c, &parts); err != nil {
		return Message{}, Invalid(pi+".content", CodeInvalidJSON, "%s.content must be an array of content parts: %s.", pi, err.Error())
	}
	m.Content.Parts = make([]ContentPart, 0, len(parts))
	for j, p := range parts {
		pp := fmt.Sprintf("%s.content[%d]", pi, j)
		var cp ContentPart
		switch p.Type {
		case "input_text", "output_text":
			cp = ContentPart{Type: "text", Text: p.Text}
		case "input_image":
			switch {
			case p.ImageURL != "":
			case p.FileID != "":
				return Message{}, unsupported(pp+".file_id", pp+" refers to an uploaded image by file_id; LaaS does not support file ids: send the image as image_url (a URL or a data URL).")
			default:
				return Message{}, Invalid(pp+".image_url", CodeInvalidValue, "%s is an input_image part without an image_url.", pp)
			}
			cp = ContentPart{Type: "image_url", ImageURL: &URLRef{URL: p.ImageURL, Detail: p.Detail}}
		case "input_file":
			if err := fileData(pp, p.Type, pp+".", p.FileData, p.FileID, p.FileURL); err != nil {
				return Message{}, err
			}
			cp = ContentPart{Type: "file", File: &FileRef{FileData: p.FileData, Filename: p.Filename}}
		default:
			return Message{}, Invalid(pp+".type", CodeInvalidValue,
				"%s has type '%s'; the bridge accepts input_text, input_image, input_file and output_text parts.", pp, p.Type)
		}
		m.Content.Parts = append(m.Content.Parts, cp)
	}
	return m, nil
}

// Response is OpenAI's response object, as the bridge answers it: one
// output message of text.
type Response struct {
	ID                 string             `json:"id"`
	Object             string             `json:"object"`
	CreatedAt          int64              `json:"created_at"`
	Status             string             `json:"status"`
	Background         bool               `json:"background"`
	Error              json.RawMessage    `json:"error"`
	IncompleteDetails  *IncompleteDetails `json:"incomplete_details"`
	Instructions       *string            `json:"instructions"`
	MaxOutputTokens    *int               `json:"max_output_tokens"`
	Model              string             `json:"model"`
	Output             []ResponseOutput   `json:"output"`
	ParallelToolCalls  bool               `json:"parallel_tool_calls"`
	PreviousResponseID *string            `json:"previous_response_id"`
	Store              bool               `json:"store"`
	Temperature        *float64           `json:"temperature"`
	Text               json.RawMessage    `json:"text"`
	ToolChoice         string             `json:"tool_choice"`
	Tools              []json.RawMessage  `json:"tools"`
	TopP               *float64           `json:"top_p"`
	Truncation         string             `json:"truncation"`
	Usage              *ResponseUsage     `json:"usage"`
	Metadata           map[string]string  `json:"metadata"`
}

// IncompleteDetails says why a response is incomplete.
type IncompleteDetails struct {
	Reason string `json:"reason"`
}

// ResponseOutput is one output item: an assistant message.
type ResponseOutput struct {
	Type    string               `json:"type"`
	ID      string               `json:"id"`
	Status  string               `json:"status"`
	Role    string               `json:"role"`
	Content []ResponseOutputText `json:"content"`
}

// ResponseOutputText is an output_text part.
type ResponseOutputText struct {
	Type        string            `json:"type"`
	Text        string            `json:"text"`
	Annotations []json.RawMessage `json:"annotations"`
}

// ResponseUsage counts a response's tokens.
type ResponseUsage struct {
	InputTokens         int            `json:"input_tokens"`
	InputTokensDetails  map[string]int `json:"input_tokens_details"`
	OutputTokens        int            `json:"output_tokens"`
	OutputTokensDetails map[string]int `json:"output_tokens_details"`
	TotalTokens         int            `json:"total_tokens"`
}

// NewResponse is the response object that answers r, request id id,
// from the chat completion cc that ran it. A completion cut by its token
// limit is "incomplete" (reason max_output_tokens), one stopped by a
// content filter "incomplete" (reason content_filter).
func NewResponse(id string, r *ResponsesRequest, cc *ChatCompletion) *Response {
	resp := &Response{
		ID: "resp_" + id, Object: "response", CreatedAt: cc.Created, Status: "completed",
		Error: json.RawMessage("null"), Instructions: r.Instructions, MaxOutputTokens: r.MaxOutputTokens,
		Model: r.Model, Temperature: r.Temperature, Text: json.RawMessage(`{"format":{"type":"text"}}`),
		ToolChoice: "none", Tools: []json.RawMessage{}, TopP: r.TopP, Truncation: "disabled",
		Metadata: r.Metadata, Output: []ResponseOutput{},
	}
	if resp.Metadata == nil {
		resp.Metadata = map[string]string{}
	}
	if len(cc.Choices) > 0 {
		ch := cc.Choices[0]
		switch ch.FinishReason {
		case "length":
			resp.Status, resp.IncompleteDetails = "incomplete", &IncompleteDetails{Reason: "max_output_tokens"}
		case "content_filter":
			resp.Status, resp.IncompleteDetails = "incomplete", &IncompleteDetails{Reason: "content_filter"}
		}
		resp.Output = append(resp.Output, ResponseOutput{Type: "message", ID: "msg_" + id, Status: resp.Status, Role: "assistant",
			Content: []ResponseOutputText{{Type: "output_text", Text: ch.Message.Content, Annotations: []json.RawMessage{}}}})
	}
	if u := cc.Usage; u != nil {
		resp.Usage = &ResponseUsage{InputTokens: u.PromptTokens, OutputTokens: u.CompletionTokens, TotalTokens: u.TotalTokens,
			InputTokensDetails: map[string]int{"cached_tokens": 0}, OutputTokensDetails: map[string]int{"reasoning_tokens": 0}}
	}
	return resp
}
