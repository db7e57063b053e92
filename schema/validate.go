package schema

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
)

// Validate checks a chat request against what LaaS can run, before anything
// is queued. It returns a 400 *Error naming the first problem found, the
// checks running in a fixed order: model, messages present, the streaming
// fields, the request-level fields LaaS does not support (n, tools,
// tool_choice, functions, function_call, parallel_tool_calls, logprobs,
// top_logprobs, audio, modalities: code unsupported_parameter), then each
// message in order (its role, its tool_calls, its parts in order), then
// params in the order of their names.
//
// Validate checks the structure of content parts only; the LaaS limits on
// images and PDFs (types, sizes, counts, pages) are checked by package
// admission/multimodal, after Validate.
func (r *ChatCompletionRequest) Validate() error {
	if r.Model == "" {
		return Invalid("model", CodeInvalidValue, "The 'model' field is required.")
	}
	if len(r.Messages) == 0 {
		return Invalid("messages", CodeInvalidValue, "The 'messages' field is required and must hold at least one message.")
	}
	if err := r.validateStreamOptions(); err != nil {
		return err
	}
	if err := r.refuseUnsupported(); err != nil {
		return err
	}
	if err := r.validateServiceTier(); err != nil {
		return err
	}
	if err := r.validateCache(); err != nil {
		return err
	}
	for i, m := range r.Messages {
		if err := validateMessage(i, &m); err != nil {
			return err
		}
	}
	for _, name := range slices.Sorted(maps.Keys(r.Params)) {
		if _, err := ParamString(name, r.Params[name]); err != nil {
			return err
		}
	}
	return nil
}

// Service tiers a request may ask for: ServiceTierFlex runs it in the
// batch lane; "auto" and ServiceTierDefault interactively.
const (
	ServiceTierDefault = "default"
	ServiceTierFlex    = "flex"
)

const serviceTierMessage = `'service_tier' must be "auto", "default", "flex" (the batch lane: slower, waits instead of failing under a rate limit) or absent; LaaS has no priority tier.`

func (r *ChatCompletionRequest) validateServiceTier() error {
	switch r.ServiceTier {
	case "", "auto", ServiceTierDefault, ServiceTierFlex:
		return nil
	}
	return unsupported("service_tier", serviceTierMessage)
}

// refuseUnsupported returns a 400 unsupported_parameter for the first
// request-level field LaaS cannot honour, in this order: n other than 1,
// tools, tool_choice, functions, function_call, parallel_tool_calls,
// logprobs true, top_logprobs, audio, modalities other than "text". A JSON
// null counts as absent.
func (r *ChatCompletionRequest) refuseUnsupported() error {
	if r.N != nil && *r.N != 1 {
		return unsupported("n", "LaaS returns one choice per request; 'n' must be 1 or absent.")
	}
	for _, f := range []struct {
		name  string
		value []byte
	}{
		{"tools", r.Tools}, {"tool_choice", r.ToolChoice}, {"functions", r.Functions},
		{"function_call", r.FunctionCall}, {"parallel_tool_calls", r.ParallelToolCalls},
	} {
		if present(f.value) {
			return unsupported(f.name, fmt.Sprintf("LaaS does not support tool or function calling; remove '%s'.", f.name))
		}
	}
	if r.Logprobs != nil && *r.Logprobs {
		return unsupported("logprobs", "LaaS does not support log probabilities; remove 'logprobs' or set it to false.")
	}
	if present(r.TopLogprobs) {
		return unsupported("top_logprobs", "LaaS does not support log probabilities; remove 'top_logprobs'.")
	}
	if present(r.Audio) {
		return unsupported("audio", "LaaS does not support audio output; remove 'audio'.")
	}
	for _, m := range r.Modalities {
		if m != "text" {
			return unsupported("modalities", fmt.Sprintf("LaaS does not support the '%s' output modality; 'modalities' may hold only \"text\".", m))
		}
	}
	return nil
}

// present reports whether a raw JSON field was sent with a value other than
// null.
func present(v []byte) bool {
	v = bytes.TrimSpace(v)
	return len(v) > 0 && !bytes.Equal(v, []byte("null"))
}

func emptyArray(v []byte) bool {
	var items []json.RawMessage
	return json.Unmarshal(v, &items) == nil && len(items) == 0
}

func validateMessage(i int, m *Message) error {
	param := fmt.Sprintf("messages[%d]", i)
	switch m.Role {
	case "system", "user", "assistant":
	case "":
		return Invalid(param+".role", CodeInvalidValue, "messages[%d] has no 'role'; use system, user or assistant.", i)
	default:
		return Invalid(param+".role", CodeInvalidValue,
			"messages[%d] has role '%s'; LaaS accepts only system, user and assistant messages.", i, m.Role)
	}
	// An empty list names no call: clients echo "tool_calls": [] back.
	if present(m.ToolCalls) && !emptyArray(m.ToolCalls) {
		return unsupported(param+".tool_calls", fmt.Sprintf("messages[%d] carries tool_calls; LaaS does not support tool calling.", i))
	}
	for j := range m.Content.Parts {
		if err := validatePart(i, j, &m.Content.Parts[j]); err != nil {
			return err
		}
	}
	return nil
}

// validatePart checks that part j of message i is of a kind the bridge can
// send to LaaS and carries the field that kind needs. It does not look
// inside URLs or data: the LaaS limits on images and PDFs are checked by
// package admission/multimodal.
func validatePart(i, j int, p *ContentPart) error {
	pp := fmt.Sprintf("messages[%d].content[%d]", i, j)
	switch p.Type {
	case "text":
	case "image_url":
		if p.ImageURL == nil || p.ImageURL.URL == "" {
			return Invalid(pp+".image_url", CodeInvalidValue, "%s is an image_url part without a url.", pp)
		}
	case "document":
		if p.DocumentURL == nil || p.DocumentURL.URL == "" {
			return Invalid(pp+".document_url", CodeInvalidValue, "%s is a document part without a document_url.url.", pp)
		}
	case "file":
		if p.File == nil {
			return Invalid(pp+".file", CodeInvalidValue, "%s is a file part without a file object; send {\"file\": {\"file_data\": \"data:application/pdf;base64,...\"}}.", pp)
		}
		return fileData(pp, p.Type, pp+".file.", p.File.FileData, p.File.FileID, "")
	case "input_file":
		return fileData(pp, p.Type, pp+".", p.FileData, p.FileID, p.FileURL)
	default:
		return Invalid(pp+".type", CodeInvalidValue,
			"%s has type '%s'; the bridge accepts text, image_url, document, file and input_file parts.", pp, p.Type)
	}
	return nil
}

// fileData checks that a file or input_file part carries its bytes inline:
// LaaS can read neither an uploaded file's id nor a remote file URL.
// kind is the part's type and fieldPrefix the prefix of its fields' param
// names.
func fileData(pp, kind, fieldPrefix, data, id, url string) error {
	switch {
	case data != "":
		return nil
	case id != "":
		return unsupported(fieldPrefix+"file_id", pp+" refers to an uploaded file by file_id; LaaS does not support file ids: send the PDF inline as file_data (base64).")
	case url != "":
		return unsupported(fieldPrefix+"file_url", pp+" refers to a file by file_url; LaaS does not support file URLs: send the PDF inline as file_data (base64).")
	}
	return Invalid(fieldPrefix+"file_data", CodeInvalidValue, "%s is a %s part without file_data; send the PDF as base64 in file_data.", pp, kind)
}

func unsupported(param, msg string) *Error {
	return &Error{Status: http.StatusBadRequest, Type: TypeInvalidRequest, Code: CodeUnsupported, Param: param, Message: msg}
}
