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
	// Stream asks for OpenAI's Responses event stream instead of one
	// answer; Background for a response that runs on without the caller
	// (polled, cancelled, streamed later); Store (default true, as
	// OpenAI's) keeps it for GET and previous_response_id.
	Stream             bool   `json:"stream"`
	Background         bool   `json:"background"`
	Store              *bool  `json:"store"`
	PreviousResponseID string `json:"previous_response_id"`
	// ServiceTier "flex" runs the response in the batch lane.
	ServiceTier string `json:"service_tier"`

	// The bridge's extensions, as chat requests take them.
	Params     map[string]json.RawMessage `json:"params"`
	PresetHash string                     `json:"preset_hash"`
}

// responsesFields are the top-level fields DecodeResponsesRequest knows,
// with what it does with each. A field not listed is refused by name.
var responsesFields = map[string]func(v json.RawMessage) *Error{
	"model": nil, "input": nil, "instructions": nil, "max_output_tokens": nil,
	"temperature": nil, "top_p": nil, "metadata": nil, "user": nil,
	"params": nil, "preset_hash": nil, "stream": nil, "background": nil, "store": nil, "previous_response_id": nil,
	"tools":               refuseIfPresent("tools", "LaaS does not support tool or function calling; remove 'tools'."),
	"tool_choice":         refuseIfPresent("tool_choice", "LaaS does not support tool or function calling; remove 'tool_choice'."),
	"parallel_tool_calls": refuseIfPresent("parallel_tool_calls", "LaaS does not support tool or function calling; remove 'parallel_tool_calls'."),
	"prompt":              refuseIfPresent("prompt", "The bridge does not support stored prompts; remove 'prompt' and send the text in 'input'."),
	"conversation":        refuseIfPresent("conversation", "The bridge does not support conversations; remove 'conversation' and send the whole conversation in 'input'."),
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
	"truncation":   oneOf("truncation", "The bridge does not truncate input; 'truncation' must be \"disabled\" or absent.", `"disabled"`),
	"service_tier": oneOf("service_tier", serviceTierMessage, `"auto"`, `"default"`, `"flex"`),
}

// Stores reports whether r is kept for GET and previous_response_id:
// "store" true or absent, as OpenAI's default.
func (r *ResponsesRequest) Stores() bool { return r.Store == nil || *r.Store }

func refuseIfPresent(param, msg string) func(json.RawMessage) *Error {
	return func(v json.RawMessage) *Error {
		if present(v) {
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

// ChatRequest is the chat request that runs r after the conversation
// history (an earlier turn's input and output, for previous_response_id):
// instructions as a first system message, then history, then the input's
// messages (developer messages as system ones), max_output_tokens as
// max_tokens. Input items and parts LaaS cannot take are refused here,
// named by their place in 'input'; the chat path's Validate checks the
// rest. Conversation(chat) is what a stored response keeps of it.
func (r *ResponsesRequest) ChatRequest(history []Message) (*ChatCompletionRequest, error) {
	if r.Model == "" {
		return nil, Invalid("model", CodeInvalidValue, "The 'model' field is required.")
	}
	if r.MaxOutputTokens != nil && *r.MaxOutputTokens < 1 {
		return nil, Invalid("max_output_tokens", CodeInvalidValue, "'max_output_tokens' must be at least 1, got %d.", *r.MaxOutputTokens)
	}
	if r.Background && !r.Stores() {
		return nil, Invalid("store", CodeInvalidValue, "A background response is kept until it is fetched: 'store' must be true (or absent) with 'background': true.")
	}
	chat := &ChatCompletionRequest{Model: r.Model, Temperature: r.Temperature, TopP: r.TopP, MaxTokens: r.MaxOutputTokens,
		User: r.User, Params: r.Params, PresetHash: r.PresetHash}
	if r.ServiceTier == ServiceTierFlex { // "auto" and "default" are the chat default
		chat.ServiceTier = ServiceTierFlex
	}
	if r.hasInstructions() {
		chat.Messages = append(chat.Messages, Message{Role: "system", Content: Content{Text: *r.Instructions}})
	}
	input, err := inputMessages(r.Input)
	if err != nil {
		return nil, err
	}
	if len(input) == 0 {
		return nil, Invalid("input", CodeInvalidValue, "The 'input' field is required and must hold text or at least one message.")
	}
	chat.Messages = append(append(chat.Messages, history...), input...)
	return chat, nil
}

func (r *ResponsesRequest) hasInstructions() bool {
	return r.Instructions != nil && *r.Instructions != ""
}

// Conversation is what of chat, r's ChatRequest, the next turn continues
// (previous_response_id): its messages without r's instructions, which
// OpenAI does not carry over from one turn to the next.
func (r *ResponsesRequest) Conversation(chat *ChatCompletionRequest) []Message {
	if r.hasInstructions() {
		return chat.Messages[1:]
	}
	return chat.Messages
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
	Error              *ResponseError     `json:"error"`
	IncompleteDetails  *IncompleteDetails `json:"incomplete_details"`
	Instructions       *string            `json:"instructions"`
	MaxOutputTokens    *int               `json:"max_output_tokens"`
	Model              string             `json:"model"`
	Output             []ResponseOutput   `json:"output"`
	ParallelToolCalls  bool               `json:"parallel_tool_calls"`
	PreviousResponseID *string            `json:"previous_response_id"`
	ServiceTier        string             `json:"service_tier"`
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

// Response statuses.
const (
	ResponseQueued     = "queued"
	ResponseInProgress = "in_progress"
	ResponseCompleted  = "completed"
	ResponseIncomplete = "incomplete"
	ResponseFailed     = "failed"
	ResponseCancelled  = "cancelled"
)

// Final reports whether the response has ended: completed, incomplete,
// failed or cancelled.
func (r *Response) Final() bool {
	return r.Status != ResponseQueued && r.Status != ResponseInProgress
}

// OutputText is the text of the response's output message ("" without one).
func (r *Response) OutputText() string {
	if len(r.Output) == 0 || len(r.Output[0].Content) == 0 {
		return ""
	}
	return r.Output[0].Content[0].Text
}

// ResponseError is the error of a failed response.
type ResponseError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
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

// ResponseShell is the response object of r, request id id, created at
// createdAt (Unix seconds), with status and no output yet: a background
// response while it waits or runs, the start of a streamed one, or (with
// Fail) a failed one.
func ResponseShell(id string, r *ResponsesRequest, createdAt int64, status string) *Response {
	resp := &Response{
		ID: "resp_" + id, Object: "response", CreatedAt: createdAt, Status: status, Background: r.Background,
		Instructions: r.Instructions, MaxOutputTokens: r.MaxOutputTokens, Model: r.Model, Temperature: r.Temperature,
		Text: json.RawMessage(`{"format":{"type":"text"}}`), ToolChoice: "none", Tools: []json.RawMessage{}, TopP: r.TopP,
		Truncation: "disabled", Metadata: r.Metadata, Output: []ResponseOutput{}, Store: r.Stores(), ServiceTier: ServiceTierDefault,
	}
	if r.ServiceTier == ServiceTierFlex {
		resp.ServiceTier = ServiceTierFlex
	}
	if r.PreviousResponseID != "" {
		resp.PreviousResponseID = &r.PreviousResponseID
	}
	if resp.Metadata == nil {
		resp.Metadata = map[string]string{}
	}
	return resp
}

// Fail makes resp failed with e's code and message (cancelled for a
// cancelled job's error).
func (r *Response) Fail(e *Error) *Response {
	r.Status, r.Error = ResponseFailed, &ResponseError{Code: e.Code, Message: e.Message}
	if e.Code == CodeJobCancelled {
		r.Status, r.Error = ResponseCancelled, nil
	}
	return r
}

// NewResponse is the response object that answers r, request id id,
// from the chat completion cc that ran it. A completion cut by its token
// limit is "incomplete" (reason max_output_tokens), one stopped by a
// content filter "incomplete" (reason content_filter). The service tier
// is the one that ran it, when the worker says.
func NewResponse(id string, r *ResponsesRequest, cc *ChatCompletion) *Response {
	resp := ResponseShell(id, r, cc.Created, ResponseCompleted)
	if cc.ServiceTier != "" {
		resp.ServiceTier = cc.ServiceTier
	}
	if len(cc.Choices) > 0 {
		ch := cc.Choices[0]
		switch ch.FinishReason {
		case "length":
			resp.Status, resp.IncompleteDetails = ResponseIncomplete, &IncompleteDetails{Reason: "max_output_tokens"}
		case "content_filter":
			resp.Status, resp.IncompleteDetails = ResponseIncomplete, &IncompleteDetails{Reason: "content_filter"}
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

// BucketResponses is the KV bucket of stored responses (StoredResponse),
// keyed by request id (a response's id without "resp_"), kept as long as
// job results.
const BucketResponses = "LAAS_RESPONSES"

// StoredResponse is a response kept for GET /v1/responses/{id}, cancel,
// DELETE and previous_response_id: what was asked, the conversation so
// far, and the response once it has ended. A background response runs as
// a job (its id the request id): until its record has the final response,
// its status and answer are the job's. Fields are only ever added.
type StoredResponse struct {
	// ID is the request id; the response's id is "resp_" + ID.
	ID string `json:"id"`
	// Owner is the token of the virtual key that made it ("" the admin's),
	// as a job's owner.
	Owner      string `json:"owner,omitempty"`
	CreatedAt  int64  `json:"created_at"`
	Background bool   `json:"background"`
	// Request is the request without its input (in Conversation).
	Request ResponsesRequest `json:"request"`
	// Conversation is the messages the next turn continues: the earlier
	// turns' and this one's input, without instructions. Dropped (and
	// ConversationDropped set) when too large to keep.
	Conversation        []Message `json:"conversation,omitempty"`
	ConversationDropped bool      `json:"conversation_dropped,omitempty"`
	// Response is the response once it has ended; nil before.
	Response *Response `json:"response,omitempty"`
	// Revision is the record's revision in the bucket, as last read or
	// written (0: not written yet); not stored.
	Revision uint64 `json:"-"`
}

// ResponseEvent is one event of a streamed response (OpenAI's Responses
// streaming events), the fields each type has.
type ResponseEvent struct {
	Type           string              `json:"type"`
	SequenceNumber int                 `json:"sequence_number"`
	Response       *Response           `json:"response,omitempty"`
	OutputIndex    *int                `json:"output_index,omitempty"`
	ItemID         string              `json:"item_id,omitempty"`
	ContentIndex   *int                `json:"content_index,omitempty"`
	Item           *ResponseOutput     `json:"item,omitempty"`
	Part           *ResponseOutputText `json:"part,omitempty"`
	Delta          *string             `json:"delta,omitempty"`
	Text           *string             `json:"text,omitempty"`
	Logprobs       json.RawMessage     `json:"logprobs,omitempty"`
	// An "error" event's; Param is null there, absent elsewhere.
	Code    string          `json:"code,omitempty"`
	Message string          `json:"message,omitempty"`
	Param   json.RawMessage `json:"param,omitempty"`
}

// ErrorEvent is an "error" event numbered seq.
func ErrorEvent(seq int, code, message string) ResponseEvent {
	return ResponseEvent{Type: "error", SequenceNumber: seq, Code: code, Message: message, Param: json.RawMessage("null")}
}

// ResponseEvents is the event stream of a response, numbered from 0:
// response.created (start as it is), response.queued (a background
// response), response.in_progress (a background response's only once it
// has ended); then, for end's output message (end is the ended
// response): output_item.added, content_part.added, one
// output_text.delta per piece of the text (piece returns the length of
// the next one), output_text.done, content_part.done, output_item.done;
// and last response.completed, response.incomplete or response.failed,
// or for a cancelled response an "error" event (code
// response_cancelled). With end nil it is the events before the output's.
// The same response always gives the same events, so a stream resumes
// after any sequence number.
func ResponseEvents(start, end *Response, piece func(string) int) []ResponseEvent {
	var evs []ResponseEvent
	add := func(e ResponseEvent) *ResponseEvent {
		e.SequenceNumber = len(evs)
		evs = append(evs, e)
		return &evs[len(evs)-1]
	}
	state := func(status string) *Response {
		r := *start
		r.Status = status
		return &r
	}
	add(ResponseEvent{Type: "response.created", Response: start})
	if start.Background {
		add(ResponseEvent{Type: "response.queued", Response: state(ResponseQueued)})
		if end == nil { // in progress once it has answered: it may wait long
			return evs
		}
	}
	add(ResponseEvent{Type: "response.in_progress", Response: state(ResponseInProgress)})
	if end == nil {
		return evs
	}
	zero := new(int)
	if len(end.Output) > 0 {
		item := end.Output[0]
		added := item
		added.Status, added.Content = ResponseInProgress, []ResponseOutputText{}
		add(ResponseEvent{Type: "response.output_item.added", OutputIndex: zero, Item: &added})
		add(ResponseEvent{Type: "response.content_part.added", ItemID: item.ID, OutputIndex: zero, ContentIndex: zero,
			Part: &ResponseOutputText{Type: "output_text", Annotations: []json.RawMessage{}}})
		text := end.OutputText()
		noLogprobs := json.RawMessage("[]")
		for rest := text; rest != ""; {
			n := piece(rest)
			d := rest[:n]
			rest = rest[n:]
			add(ResponseEvent{Type: "response.output_text.delta", ItemID: item.ID, OutputIndex: zero, ContentIndex: zero, Delta: &d, Logprobs: noLogprobs})
		}
		add(ResponseEvent{Type: "response.output_text.done", ItemID: item.ID, OutputIndex: zero, ContentIndex: zero, Text: &text, Logprobs: noLogprobs})
		part := item.Content[0]
		add(ResponseEvent{Type: "response.content_part.done", ItemID: item.ID, OutputIndex: zero, ContentIndex: zero, Part: &part})
		add(ResponseEvent{Type: "response.output_item.done", OutputIndex: zero, Item: &item})
	}
	switch end.Status {
	case ResponseCompleted:
		add(ResponseEvent{Type: "response.completed", Response: end})
	case ResponseIncomplete:
		add(ResponseEvent{Type: "response.incomplete", Response: end})
	case ResponseCancelled:
		add(ErrorEvent(0, "response_cancelled", "The response was cancelled before it finished."))
	default:
		add(ResponseEvent{Type: "response.failed", Response: end})
	}
	return evs
}
