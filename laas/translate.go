package laas

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/laas-bridge/laas-bridge/schema"
)

// ToLaaS translates an OpenAI chat request, which should have passed
// req.Validate and multimodal.Check, into the LaaS call that runs it on
// model m. It checks nothing it does not need to translate:
//
//   - hash is m.PresetHash (a model without one is a configuration error:
//     a 500 *schema.Error); model is m.LaaSModel and service_type
//     m.ServiceType, both omitted when empty.
//   - Each message keeps its role; its content always becomes an array of
//     parts: a string is one text part, and content with no parts (an empty
//     string, null or []) is one empty text part. Name, tool calls and tool
//     call ids are dropped.
//   - Parts LaaS knows keep their own fields only: a text part its text, an
//     image_url part its image_url ({url, detail}), a document part its
//     document_url. OpenAI's "file" part (file.file_data) and the
//     Responses-style "input_file" part (file_data) become LaaS document
//     parts, {"type": "document", "document_url": {"url": <file_data>}}, where
//     a file_data without the "data:" scheme is bare base64 and gets the
//     prefix "data:application/pdf;base64,"; the filename is dropped, as LaaS
//     has no field for it. Any other part (which Validate refuses) is copied
//     as it is.
//   - params holds every req.Params value converted by schema.ParamString
//     (whose 400 *schema.Error is returned for an object or array); it is
//     never nil, so LaaS always receives an object, {} when there are none.
//   - temperature, top_p, max_tokens, frequency_penalty, presence_penalty,
//     response_format, stop, seed and user are copied; max_completion_tokens
//     becomes max_tokens when max_tokens is absent. A JSON null
//     response_format or stop is omitted.
//
// The result shares no memory with req.
func ToLaaS(req *schema.ChatCompletionRequest, m schema.Model) (*schema.LaaSRequest, error) {
	if req == nil {
		return nil, errors.New("worker: nil chat request")
	}
	if m.PresetHash == "" {
		return nil, &schema.Error{
			Status: http.StatusInternalServerError, Type: schema.TypeServer,
			Message: fmt.Sprintf("The model '%s' has no LaaS preset configured on this bridge.", m.Alias),
		}
	}
	out := &schema.LaaSRequest{
		Hash:             m.PresetHash,
		Params:           make(map[string]string, len(req.Params)),
		Messages:         make([]schema.LaaSMessage, len(req.Messages)),
		Model:            m.LaaSModel,
		ServiceType:      m.ServiceType,
		Temperature:      clonePtr(req.Temperature),
		TopP:             clonePtr(req.TopP),
		MaxTokens:        clonePtr(req.MaxTokens),
		FrequencyPenalty: clonePtr(req.FrequencyPenalty),
		PresencePenalty:  clonePtr(req.PresencePenalty),
		ResponseFormat:   cloneRaw(req.ResponseFormat),
		Stop:             cloneRaw(req.Stop),
		Seed:             clonePtr(req.Seed),
		User:             req.User,
	}
	if out.MaxTokens == nil {
		out.MaxTokens = clonePtr(req.MaxCompletionTokens)
	}
	for name, v := range req.Params {
		s, err := schema.ParamString(name, v)
		if err != nil {
			return nil, err
		}
		out.Params[name] = s
	}
	for i, msg := range req.Messages {
		out.Messages[i] = schema.LaaSMessage{Role: msg.Role, Content: laasParts(msg.Content)}
	}
	return out, nil
}

// laasParts returns c as a non-empty array of LaaS parts.
func laasParts(c schema.Content) []schema.ContentPart {
	if len(c.Parts) == 0 {
		return []schema.ContentPart{{Type: "text", Text: c.Text}}
	}
	parts := make([]schema.ContentPart, len(c.Parts))
	for i, p := range c.Parts {
		parts[i] = laasPart(p)
	}
	return parts
}

// laasPart translates one part, sharing no memory with p (strings aside,
// which are immutable: a 43 MB base64 string is not copied, except once
// when a bare file_data gets its data URL prefix).
func laasPart(p schema.ContentPart) schema.ContentPart {
	switch p.Type {
	case "text":
		return schema.ContentPart{Type: p.Type, Text: p.Text}
	case "image_url":
		return schema.ContentPart{Type: p.Type, ImageURL: clonePtr(p.ImageURL)}
	case "document":
		return schema.ContentPart{Type: p.Type, DocumentURL: clonePtr(p.DocumentURL)}
	case "file":
		data := ""
		if p.File != nil {
			data = p.File.FileData
		}
		return documentPart(data)
	case "input_file":
		return documentPart(p.FileData)
	}
	p.ImageURL = clonePtr(p.ImageURL)
	p.DocumentURL = clonePtr(p.DocumentURL)
	p.File = clonePtr(p.File)
	return p
}

// pdfDataURLPrefix turns bare base64 into a data URL LaaS reads as a PDF.
const pdfDataURLPrefix = "data:application/pdf;base64,"

// documentPart is the LaaS document part for a file_data value: a data URL
// as it is, bare base64 as a PDF data URL.
func documentPart(fileData string) schema.ContentPart {
	url := fileData
	if len(url) < 5 || !strings.EqualFold(url[:5], "data:") {
		url = pdfDataURLPrefix + url
	}
	return schema.ContentPart{Type: "document", DocumentURL: &schema.URLRef{URL: url}}
}

func clonePtr[T any](p *T) *T {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}

// cloneRaw copies a JSON value, dropping an absent or null one.
func cloneRaw(v json.RawMessage) json.RawMessage {
	t := bytes.TrimSpace(v)
	if len(t) == 0 || bytes.Equal(t, []byte("null")) {
		return nil
	}
	return bytes.Clone(t)
}

// createdMillisThreshold: a created value above it is taken to be in
// milliseconds (1e11 seconds is in the year 5138; 1e11 ms is in 1973).
const createdMillisThreshold = 1e11

// FromLaaS normalises a LaaS answer into an OpenAI chat.completion:
//
//   - id is id; object is "chat.completion"; model is alias, the name the
//     caller asked for (not LaaS's model name).
//   - created is in seconds: a value above 1e11 is taken as milliseconds and
//     divided by 1000; a value of 0 or less becomes now.
//   - Each choice, indexed by its position, has its content as a string (the
//     parts' texts joined with ""), role "assistant" when empty and
//     finish_reason "stop" when empty. Extra keys LaaS sends are ignored.
//   - usage takes prompt_tokens, else input_tokens; completion_tokens, else
//     output_tokens; total_tokens, else their sum. Without usage from LaaS,
//     usage is omitted.
//
// An answer that is nil or has no choices is an error wrapping
// ErrInvalidAnswer, whose message suits the caller ("the LaaS answer has no
// choices").
func FromLaaS(resp *schema.LaaSResponse, id, alias string, now time.Time) (*schema.ChatCompletion, error) {
	if resp == nil {
		return nil, invalidAnswerError("there is no LaaS answer")
	}
	if len(resp.Choices) == 0 {
		return nil, invalidAnswerError("the LaaS answer has no choices")
	}
	created := resp.Created
	switch {
	case created <= 0:
		created = now.Unix()
	case created > createdMillisThreshold:
		created /= 1000
	}
	out := &schema.ChatCompletion{
		ID:      id,
		Object:  "chat.completion",
		Created: created,
		Model:   alias,
		Choices: make([]schema.Choice, len(resp.Choices)),
		Usage:   openAIUsage(resp.Usage),
	}
	for i, c := range resp.Choices {
		role, finish := c.Message.Role, c.FinishReason
		if role == "" {
			role = "assistant"
		}
		if finish == "" {
			finish = "stop"
		}
		out.Choices[i] = schema.Choice{
			Index:        i,
			Message:      schema.AssistantMessage{Role: role, Content: contentText(c.Message.Content)},
			FinishReason: finish,
		}
	}
	return out, nil
}

// contentText returns content as one string: its text, or its parts' texts
// joined with "".
func contentText(c schema.Content) string {
	if c.Parts == nil {
		return c.Text
	}
	var b strings.Builder
	for _, p := range c.Parts {
		b.WriteString(p.Text)
	}
	return b.String()
}

func openAIUsage(u *schema.LaaSUsage) *schema.Usage {
	if u == nil {
		return nil
	}
	first := func(ps ...*int) int {
		for _, p := range ps {
			if p != nil {
				return *p
			}
		}
		return 0
	}
	out := &schema.Usage{
		PromptTokens:     first(u.PromptTokens, u.InputTokens),
		CompletionTokens: first(u.CompletionTokens, u.OutputTokens),
	}
	out.TotalTokens = out.PromptTokens + out.CompletionTokens
	if u.TotalTokens != nil {
		out.TotalTokens = *u.TotalTokens
	}
	return out
}

// invalidAnswerError is an error that matches ErrInvalidAnswer with its own
// message.
type invalidAnswerError string

func (e invalidAnswerError) Error() string        { return string(e) }
func (e invalidAnswerError) Is(target error) bool { return target == ErrInvalidAnswer }
