package schema

import (
	"fmt"
	"net/http"
)

// Validate checks a chat request against what LaaS can run, before anything
// is queued. It returns a 400 *Error naming the first problem found.
func (r *ChatCompletionRequest) Validate() error {
	if r.Model == "" {
		return Invalid("model", CodeInvalidValue, "The 'model' field is required.")
	}
	if len(r.Messages) == 0 {
		return Invalid("messages", CodeInvalidValue, "The 'messages' field is required and must hold at least one message.")
	}
	if r.Stream {
		return unsupported("stream", "Streaming ('stream': true) is not supported by this bridge yet; send the request without it.")
	}
	if r.N != nil && *r.N != 1 {
		return unsupported("n", "LaaS returns one choice per request; 'n' must be 1 or absent.")
	}
	for _, f := range []struct {
		name  string
		value []byte
	}{{"tools", r.Tools}, {"tool_choice", r.ToolChoice}, {"functions", r.Functions}, {"function_call", r.FunctionCall}} {
		if len(f.value) > 0 && string(f.value) != "null" {
			return unsupported(f.name, fmt.Sprintf("LaaS does not support tool or function calling; remove '%s'.", f.name))
		}
	}
	for i, m := range r.Messages {
		if err := validateMessage(i, &m); err != nil {
			return err
		}
	}
	for name, v := range r.Params {
		if _, err := ParamString(name, v); err != nil {
			return err
		}
	}
	return nil
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
	if len(m.ToolCalls) > 0 && string(m.ToolCalls) != "null" {
		return unsupported(param+".tool_calls", fmt.Sprintf("messages[%d] carries tool_calls; LaaS does not support tool calling.", i))
	}
	for j, p := range m.Content.Parts {
		pp := fmt.Sprintf("%s.content[%d]", param, j)
		switch p.Type {
		case "text":
		case "image_url":
			if p.ImageURL == nil || p.ImageURL.URL == "" {
				return Invalid(pp+".image_url", CodeInvalidValue, "messages[%d].content[%d] is an image_url part without a url.", i, j)
			}
		case "document":
			if p.DocumentURL == nil || p.DocumentURL.URL == "" {
				return Invalid(pp+".document_url", CodeInvalidValue, "messages[%d].content[%d] is a document part without a document_url.url.", i, j)
			}
		default:
			return Invalid(pp+".type", CodeInvalidValue,
				"messages[%d].content[%d] has type '%s'; LaaS accepts text, image_url and document parts.", i, j, p.Type)
		}
	}
	return nil
}

func unsupported(param, msg string) *Error {
	return &Error{Status: http.StatusBadRequest, Type: TypeInvalidRequest, Code: CodeUnsupported, Param: param, Message: msg}
}
