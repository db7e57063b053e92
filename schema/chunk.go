package schema

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"unicode/utf8"
)

// ObjectChunk is the "object" of every event of a streamed chat completion.
const ObjectChunk = "chat.completion.chunk"

// ChatCompletionChunk is one event of a streamed chat completion, as OpenAI
// sends it with "stream": true. Every chunk of a stream carries the same ID,
// Created and Model.
//
// Encode it with AppendJSON (or json.Marshal, which calls it): the "usage"
// key follows OpenAI's stream_options.include_usage rules, which the struct
// tags alone cannot express. Decoding with json.Unmarshal works as usual.
type ChatCompletionChunk struct {
	ID                string        `json:"id"`
	Object            string        `json:"object"`
	Created           int64         `json:"created"`
	Model             string        `json:"model"`
	SystemFingerprint *string       `json:"system_fingerprint"`
	Choices           []ChunkChoice `json:"choices"`
	// Usage counts the tokens of the whole completion. Only the last chunk
	// of a stream that asked for it (include_usage) has one; its Choices is
	// then empty.
	Usage *Usage `json:"usage"`
	// IncludeUsage writes "usage": null on a chunk whose Usage is nil, as
	// OpenAI does on every chunk of a stream with include_usage. Without it
	// a nil Usage leaves the key out, as in a stream without include_usage.
	// It is not part of the wire format.
	IncludeUsage bool `json:"-"`
}

// ChunkChoice is one choice's part of a chunk.
type ChunkChoice struct {
	Index int        `json:"index"`
	Delta ChunkDelta `json:"delta"`
	// Logprobs is written as given, or as null when it is empty or not
	// valid JSON. The bridge never has any: LaaS does not return them.
	Logprobs json.RawMessage `json:"logprobs"`
	// FinishReason is null until the choice's last chunk.
	FinishReason *string `json:"finish_reason"`
}

// ChunkDelta is what a chunk adds to a choice's message. The first delta
// carries the role (and empty content); later ones carry content only; the
// last one is empty.
type ChunkDelta struct {
	Role    string  `json:"role,omitempty"`
	Content *string `json:"content,omitempty"`
}

// MarshalJSON writes the chunk as AppendJSON does.
func (c ChatCompletionChunk) MarshalJSON() ([]byte, error) {
	return c.AppendJSON(nil), nil
}

// AppendJSON appends the chunk's JSON to dst and returns the extended
// buffer. It writes what encoding/json would write for the struct tags (with
// HTML escaping off), except for "usage" (see IncludeUsage), and allocates
// nothing beyond growing dst: streamed answers write hundreds of chunks.
func (c *ChatCompletionChunk) AppendJSON(dst []byte) []byte {
	dst = append(dst, `{"id":`...)
	dst = appendString(dst, c.ID)
	dst = append(dst, `,"object":`...)
	dst = appendString(dst, c.Object)
	dst = append(dst, `,"created":`...)
	dst = strconv.AppendInt(dst, c.Created, 10)
	dst = append(dst, `,"model":`...)
	dst = appendString(dst, c.Model)
	dst = append(dst, `,"system_fingerprint":`...)
	dst = appendStringPtr(dst, c.SystemFingerprint)
	dst = append(dst, `,"choices":[`...)
	for i := range c.Choices {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = c.Choices[i].appendJSON(dst)
	}
	dst = append(dst, ']')
	switch {
	case c.Usage != nil:
		u := c.Usage
		dst = append(dst, `,"usage":{"prompt_tokens":`...)
		dst = strconv.AppendInt(dst, int64(u.PromptTokens), 10)
		dst = append(dst, `,"completion_tokens":`...)
		dst = strconv.AppendInt(dst, int64(u.CompletionTokens), 10)
		dst = append(dst, `,"total_tokens":`...)
		dst = strconv.AppendInt(dst, int64(u.TotalTokens), 10)
		dst = append(dst, '}')
	case c.IncludeUsage:
		dst = append(dst, `,"usage":null`...)
	}
	return append(dst, '}')
}

func (ch *ChunkChoice) appendJSON(dst []byte) []byte {
	dst = append(dst, `{"index":`...)
	dst = strconv.AppendInt(dst, int64(ch.Index), 10)
	dst = append(dst, `,"delta":{`...)
	sep := false
	if ch.Delta.Role != "" {
		dst = append(dst, `"role":`...)
		dst = appendString(dst, ch.Delta.Role)
		sep = true
	}
	if ch.Delta.Content != nil {
		if sep {
			dst = append(dst, ',')
		}
		dst = append(dst, `"content":`...)
		dst = appendString(dst, *ch.Delta.Content)
	}
	dst = append(dst, `},"logprobs":`...)
	if len(ch.Logprobs) > 0 && json.Valid(ch.Logprobs) {
		dst = append(dst, bytes.TrimSpace(ch.Logprobs)...)
	} else {
		dst = append(dst, "null"...)
	}
	dst = append(dst, `,"finish_reason":`...)
	dst = appendStringPtr(dst, ch.FinishReason)
	return append(dst, '}')
}

func appendStringPtr(dst []byte, s *string) []byte {
	if s == nil {
		return append(dst, "null"...)
	}
	return appendString(dst, *s)
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string, escaped as encoding/json does
// with HTML escaping off: quotes, backslashes and control characters are
// escaped, invalid UTF-8 becomes U+FFFD, and U+2028 and U+2029 are escaped
// so the output is also valid JavaScript.
func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		if b := s[i]; b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '"', '\\':
				dst = append(dst, '\\', b)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// StreamOptions is a chat request's stream_options object.
type StreamOptions struct {
	// IncludeUsage asks for a last chunk that carries the usage.
	IncludeUsage bool `json:"include_usage"`
}

// ParseStreamOptions reads r.StreamOptions: absent or null is the zero
// value; anything other than an object whose include_usage is a boolean (or
// null) is a 400. Unknown keys are ignored, as OpenAI adds new ones.
func (r *ChatCompletionRequest) ParseStreamOptions() (StreamOptions, error) {
	raw := bytes.TrimSpace(r.StreamOptions)
	if len(raw) == 0 || string(raw) == "null" {
		return StreamOptions{}, nil
	}
	if raw[0] != '{' {
		return StreamOptions{}, Invalid("stream_options", CodeInvalidValue,
			"Invalid type for 'stream_options': expected an object, got JSON %s.", jsonKind(raw[0]))
	}
	var o struct {
		IncludeUsage *bool `json:"include_usage"`
	}
	if err := json.Unmarshal(raw, &o); err != nil {
		if typ, ok := errors.AsType[*json.UnmarshalTypeError](err); ok {
			return StreamOptions{}, Invalid("stream_options.include_usage", CodeInvalidValue,
				"Invalid type for 'stream_options.include_usage': expected a boolean, got JSON %s.", typ.Value)
		}
		return StreamOptions{}, Invalid("stream_options", CodeInvalidValue, "'stream_options' could not be parsed: %s.", err.Error())
	}
	return StreamOptions{IncludeUsage: o.IncludeUsage != nil && *o.IncludeUsage}, nil
}

// validateStreamOptions refuses stream_options on a request that does not
// stream, as OpenAI does, and a stream_options of the wrong shape.
func (r *ChatCompletionRequest) validateStreamOptions() error {
	if s := bytes.TrimSpace(r.StreamOptions); !r.Stream && len(s) > 0 && string(s) != "null" {
		return Invalid("stream_options", CodeInvalidValue,
			"The 'stream_options' parameter is only allowed when 'stream' is enabled.")
	}
	_, err := r.ParseStreamOptions()
	return err
}

// jsonKind names the JSON type a value starting with b has.
func jsonKind(b byte) string {
	switch b {
	case '"':
		return "string"
	case '[':
		return "array"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	}
	return "number"
}
