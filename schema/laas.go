package schema

import "encoding/json"

// LaaSChatPath is the LaaS endpoint that runs a preset, relative to its base URL.
const LaaSChatPath = "/api/preset/v2/chat/completions"

// LaaS authentication header names (LaaS uses these, not a Bearer token).
const (
	LaaSHeaderProject = "project"
	LaaSHeaderAPIKey  = "apiKey"
)

// LaaSRequest is the body of a LaaS preset call.
type LaaSRequest struct {
	Hash             string            `json:"hash"`
	Params           map[string]string `json:"params"`
	Messages         []LaaSMessage     `json:"messages"`
	Model            string            `json:"model,omitempty"`
	ServiceType      string            `json:"service_type,omitempty"`
	Temperature      *float64          `json:"temperature,omitempty"`
	TopP             *float64          `json:"top_p,omitempty"`
	MaxTokens        *int              `json:"max_tokens,omitempty"`
	FrequencyPenalty *float64          `json:"frequency_penalty,omitempty"`
	PresencePenalty  *float64          `json:"presence_penalty,omitempty"`
	ResponseFormat   json.RawMessage   `json:"response_format,omitempty"`
	Stop             json.RawMessage   `json:"stop,omitempty"`
	Seed             *int64            `json:"seed,omitempty"`
	User             string            `json:"user,omitempty"`
}

// LaaSMessage is a message appended to the preset's own. The bridge always
// sends content as an array of parts, as the earlier handler did.
type LaaSMessage struct {
	Role    string        `json:"role"`
	Content []ContentPart `json:"content"`
}

// LaaSResponse is LaaS's answer as it arrives: OpenAI-like, with the
// variants seen in the wild (content as parts, created in milliseconds,
// Anthropic-style usage). The worker normalises it into a ChatCompletion.
type LaaSResponse struct {
	ID      string       `json:"id"`
	Object  string       `json:"object"`
	Created int64        `json:"created"`
	Model   string       `json:"model"`
	Choices []LaaSChoice `json:"choices"`
	Usage   *LaaSUsage   `json:"usage,omitempty"`
}

// LaaSChoice is one choice of a LaaS answer; Content is a string or parts.
type LaaSChoice struct {
	Index        int        `json:"index"`
	Message      LaaSAnswer `json:"message"`
	FinishReason string     `json:"finish_reason"`
}

// LaaSAnswer is the message of a LaaS choice.
type LaaSAnswer struct {
	Role    string  `json:"role"`
	Content Content `json:"content"`
}

// LaaSUsage holds both OpenAI- and Anthropic-style token counts.
type LaaSUsage struct {
	PromptTokens     *int `json:"prompt_tokens,omitempty"`
	CompletionTokens *int `json:"completion_tokens,omitempty"`
	TotalTokens      *int `json:"total_tokens,omitempty"`
	InputTokens      *int `json:"input_tokens,omitempty"`
	OutputTokens     *int `json:"output_tokens,omitempty"`
}
