package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/gif"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/shared"
	goopenai "github.com/sashabaranov/go-openai"

	"github.com/laas-bridge/laas-bridge/admission/multimodal"
	"github.com/laas-bridge/laas-bridge/admission/multimodal/multimodaltest"
	"github.com/laas-bridge/laas-bridge/laas/laasmock"
)

// The tests in this file drive the whole bridge (run → serve, embedded NATS,
// gateway, workers, LaaS mock) over real HTTP with two client libraries
// nobody here wrote: the official github.com/openai/openai-go and
// github.com/sashabaranov/go-openai. Every scenario is written once, as an
// sdkRequest, and each sdkClient turns it into its own request types.

// sdkRequest is a chat request independent of any SDK.
type sdkRequest struct {
	model        string
	messages     []sdkMessage
	n            int            // sent when > 0
	logprobs     bool           // sent when true
	tools        bool           // one function tool
	includeUsage bool           // stream_options.include_usage (streamed requests)
	params       map[string]any // the top-level "params" (extra body)
}

// sdkMessage is a system, user or tool message: text, or parts when set.
type sdkMessage struct {
	role  string
	text  string
	parts []sdkPart
}

// sdkPart is a content part of a user message.
type sdkPart struct {
	kind string // "text", "image" or "pdf"
	text string // of a text part
	url  string // of an image, or a PDF's data URL (or remote URL)
}

func textPart(s string) sdkPart  { return sdkPart{kind: "text", text: s} }
func imagePart(u string) sdkPart { return sdkPart{kind: "image", url: u} }
func pdfPart(u string) sdkPart   { return sdkPart{kind: "pdf", url: u} }

func userParts(parts ...sdkPart) sdkMessage { return sdkMessage{role: "user", parts: parts} }

// askText is a request for model with one user message of text.
func askText(model, text string) sdkRequest {
	return sdkRequest{model: model, messages: []sdkMessage{{role: "user", text: text}}}
}

// sdkAnswer is what a client made of the bridge's answer.
type sdkAnswer struct {
	content string
	model   string
	role    string // of the message; of the first chunk's delta when streamed
	finish  string
	usage   *sdkUsage // nil when the answer carried none
	// For streamed answers only:
	contentDeltas int      // chunks carrying a non-empty content delta
	usageChunks   int      // chunks carrying usage
	ids           []string // distinct chunk ids, in order of arrival
}

type sdkUsage struct{ prompt, completion, total int64 }

// sdkError is an SDK's typed error, reduced to OpenAI's error fields.
type sdkError struct {
	status                    int
	typ, code, param, message string
}

// sdkClient is one client library.
type sdkClient struct {
	name string
	// complete and stream send req to the bridge at url.
	complete func(ctx context.Context, url string, req sdkRequest) (sdkAnswer, error)
	stream   func(ctx context.Context, url string, req sdkRequest) (sdkAnswer, error)
	// typed returns err as the SDK's typed API error; false if it is not one.
	typed func(err error) (sdkError, bool)
}

var clientSDKs = []sdkClient{
	{name: "openai-go", complete: openaiGoComplete, stream: openaiGoStream, typed: openaiGoError},
	{name: "go-openai", complete: goOpenAIComplete, stream: goOpenAIStream, typed: goOpenAIError},
}

// --- github.com/openai/openai-go ---

func openaiGoClient(url string) openai.Client {
	return openai.NewClient(option.WithBaseURL(url+"/v1/"), option.WithAPIKey("sk-any"), option.WithMaxRetries(0))
}

func openaiGoParams(r sdkRequest) (openai.ChatCompletionNewParams, []option.RequestOption) {
	p := openai.ChatCompletionNewParams{Model: r.model}
	for _, m := range r.messages {
		switch {
		case m.role == "system":
			p.Messages = append(p.Messages, openai.SystemMessage(m.text))
		case m.role == "tool":
			p.Messages = append(p.Messages, openai.ToolMessage(m.text, "call_1"))
		case m.parts == nil:
			p.Messages = append(p.Messages, openai.UserMessage(m.text))
		default:
			var parts []openai.ChatCompletionContentPartUnionParam
			for _, part := range m.parts {
				switch part.kind {
				case "text":
					parts = append(parts, openai.TextContentPart(part.text))
				case "image":
					parts = append(parts, openai.ImageContentPart(openai.ChatCompletionContentPartImageImageURLParam{URL: part.url}))
				case "pdf": // what the current OpenAI SDKs send for a PDF
					parts = append(parts, openai.FileContentPart(openai.ChatCompletionContentPartFileFileParam{
						FileData: openai.String(part.url), Filename: openai.String("document.pdf")}))
				}
			}
			p.Messages = append(p.Messages, openai.UserMessage(parts))
		}
	}
	if r.n > 0 {
		p.N = openai.Int(int64(r.n))
	}
	if r.logprobs {
		p.Logprobs = openai.Bool(true)
	}
	if r.tools {
		p.Tools = []openai.ChatCompletionToolUnionParam{openai.ChatCompletionFunctionTool(shared.FunctionDefinitionParam{Name: "lookup"})}
	}
	if r.includeUsage {
		p.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	}
	var opts []option.RequestOption
	if r.params != nil {
		opts = append(opts, option.WithJSONSet("params", r.params))
	}
	return p, opts
}

func openaiGoComplete(ctx context.Context, url string, r sdkRequest) (sdkAnswer, error) {
	p, opts := openaiGoParams(r)
	c := openaiGoClient(url)
	cc, err := c.Chat.Completions.New(ctx, p, opts...)
	if err != nil {
		return sdkAnswer{}, err
	}
	if len(cc.Choices) != 1 {
		return sdkAnswer{}, fmt.Errorf("%d choices", len(cc.Choices))
	}
	a := sdkAnswer{content: cc.Choices[0].Message.Content, model: cc.Model, role: string(cc.Choices[0].Message.Role), finish: cc.Choices[0].FinishReason}
	if cc.JSON.Usage.Valid() {
		a.usage = &sdkUsage{cc.Usage.PromptTokens, cc.Usage.CompletionTokens, cc.Usage.TotalTokens}
	}
	return a, nil
}

// openaiGoStream rebuilds the answer with the SDK's ChatCompletionAccumulator.
func openaiGoStream(ctx context.Context, url string, r sdkRequest) (sdkAnswer, error) {
	p, opts := openaiGoParams(r)
	c := openaiGoClient(url)
	s := c.Chat.Completions.NewStreaming(ctx, p, opts...)
	defer s.Close()
	var acc openai.ChatCompletionAccumulator
	var a sdkAnswer
	for s.Next() {
		ch := s.Current()
		if !acc.AddChunk(ch) {
			return sdkAnswer{}, fmt.Errorf("the accumulator refused chunk %s", ch.RawJSON())
		}
		if a.ids == nil && len(ch.Choices) > 0 {
			a.role = ch.Choices[0].Delta.Role // OpenAI sends the role in the first chunk
		}
		a.ids = appendNewID(a.ids, ch.ID)
		for _, choice := range ch.Choices {
			if choice.Delta.Content != "" {
				a.contentDeltas++
			}
		}
		if ch.JSON.Usage.Valid() {
			a.usageChunks++
		}
	}
	if err := s.Err(); err != nil {
		return sdkAnswer{}, err
	}
	if len(acc.Choices) != 1 {
		return sdkAnswer{}, fmt.Errorf("accumulated %d choices", len(acc.Choices))
	}
	a.content, a.model, a.finish = acc.Choices[0].Message.Content, acc.Model, acc.Choices[0].FinishReason
	if a.usageChunks > 0 {
		a.usage = &sdkUsage{acc.Usage.PromptTokens, acc.Usage.CompletionTokens, acc.Usage.TotalTokens}
	}
	return a, nil
}

func openaiGoError(err error) (sdkError, bool) {
	var e *openai.Error
	if !errors.As(err, &e) {
		return sdkError{}, false
	}
	return sdkError{status: e.StatusCode, typ: e.Type, code: e.Code, param: e.Param, message: e.Message}, true
}

// --- github.com/sashabaranov/go-openai ---

// go-openai models neither the file/document content parts nor extra body
// fields such as "params": its ChatMessagePart has only text and image_url,
// and its chat request has no extra-body option. A go-openai application
// that needs them rewrites the request body in its HTTP client, as
// bodyEditor does; the request is still sent, and the answer or error still
// decoded, by go-openai. PDFs go as the LaaS "document" part, the other
// part shape the bridge accepts.

// bodyEditor is a go-openai HTTP client that applies edit to each request's
// JSON body before sending it.
type bodyEditor struct{ edit func(body map[string]any) }

func (b bodyEditor) Do(r *http.Request) (*http.Response, error) {
	if b.edit != nil && r.Body != nil {
		var body map[string]any
		dec := json.NewDecoder(r.Body)
		dec.UseNumber()
		if err := dec.Decode(&body); err != nil {
			return nil, fmt.Errorf("bodyEditor: %w", err)
		}
		r.Body.Close()
		b.edit(body)
		data, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("bodyEditor: %w", err)
		}
		r.Body, r.ContentLength, r.GetBody = io.NopCloser(bytes.NewReader(data)), int64(len(data)), nil
	}
	return http.DefaultClient.Do(r)
}

func goOpenAIClient(url string, edit func(map[string]any)) *goopenai.Client {
	cfg := goopenai.DefaultConfig("sk-any")
	cfg.BaseURL = url + "/v1"
	cfg.HTTPClient = bodyEditor{edit: edit}
	return goopenai.NewClientWithConfig(cfg)
}

// goOpenAIRequest returns the go-openai request for r and the body edit
// that adds what go-openai cannot express (nil when nothing).
func goOpenAIRequest(r sdkRequest) (goopenai.ChatCompletionRequest, func(map[string]any)) {
	req := goopenai.ChatCompletionRequest{Model: r.model, N: r.n, LogProbs: r.logprobs}
	var edits []func(map[string]any)
	for i, m := range r.messages {
		msg := goopenai.ChatCompletionMessage{Role: m.role, Content: m.text}
		if m.role == "tool" {
			msg.ToolCallID = "call_1"
		}
		for j, part := range m.parts {
			switch part.kind {
			case "text":
				msg.MultiContent = append(msg.MultiContent, goopenai.ChatMessagePart{Type: goopenai.ChatMessagePartTypeText, Text: part.text})
			case "image":
				msg.MultiContent = append(msg.MultiContent, goopenai.ChatMessagePart{Type: goopenai.ChatMessagePartTypeImageURL,
					ImageURL: &goopenai.ChatMessageImageURL{URL: part.url}})
			case "pdf": // a placeholder, replaced by the document part
				msg.MultiContent = append(msg.MultiContent, goopenai.ChatMessagePart{Type: goopenai.ChatMessagePartTypeText})
				url := part.url
				edits = append(edits, func(body map[string]any) {
					content := body["messages"].([]any)[i].(map[string]any)["content"].([]any)
					content[j] = map[string]any{"type": "document", "document_url": map[string]any{"url": url}}
				})
			}
		}
		req.Messages = append(req.Messages, msg)
	}
	if r.tools {
		req.Tools = []goopenai.Tool{{Type: goopenai.ToolTypeFunction, Function: &goopenai.FunctionDefinition{Name: "lookup"}}}
	}
	if r.includeUsage {
		req.StreamOptions = &goopenai.StreamOptions{IncludeUsage: true}
	}
	if r.params != nil {
		edits = append(edits, func(body map[string]any) { body["params"] = r.params })
	}
	if edits == nil {
		return req, nil
	}
	return req, func(body map[string]any) {
		for _, e := range edits {
			e(body)
		}
	}
}

func goOpenAIComplete(ctx context.Context, url string, r sdkRequest) (sdkAnswer, error) {
	req, edit := goOpenAIRequest(r)
	resp, err := goOpenAIClient(url, edit).CreateChatCompletion(ctx, req)
	if err != nil {
		return sdkAnswer{}, err
	}
	if len(resp.Choices) != 1 {
		return sdkAnswer{}, fmt.Errorf("%d choices", len(resp.Choices))
	}
	u := resp.Usage
	return sdkAnswer{content: resp.Choices[0].Message.Content, model: resp.Model, role: resp.Choices[0].Message.Role,
		finish: string(resp.Choices[0].FinishReason), usage: &sdkUsage{int64(u.PromptTokens), int64(u.CompletionTokens), int64(u.TotalTokens)}}, nil
}

// goOpenAIStream concatenates the deltas, as a go-openai application does.
func goOpenAIStream(ctx context.Context, url string, r sdkRequest) (sdkAnswer, error) {
	req, edit := goOpenAIRequest(r)
	s, err := goOpenAIClient(url, edit).CreateChatCompletionStream(ctx, req)
	if err != nil {
		return sdkAnswer{}, err
	}
	defer s.Close()
	var a sdkAnswer
	var content strings.Builder
	for {
		ch, err := s.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return sdkAnswer{}, err
		}
		if a.ids == nil && len(ch.Choices) > 0 {
			a.role = ch.Choices[0].Delta.Role // OpenAI sends the role in the first chunk
		}
		a.ids = appendNewID(a.ids, ch.ID)
		a.model = ch.Model
		for _, choice := range ch.Choices {
			if choice.Delta.Content != "" {
				a.contentDeltas++
				content.WriteString(choice.Delta.Content)
			}
			if choice.FinishReason != "" {
				a.finish = string(choice.FinishReason)
			}
		}
		if u := ch.Usage; u != nil {
			a.usageChunks++
			a.usage = &sdkUsage{int64(u.PromptTokens), int64(u.CompletionTokens), int64(u.TotalTokens)}
		}
	}
	a.content = content.String()
	return a, nil
}

func goOpenAIError(err error) (sdkError, bool) {
	var e *goopenai.APIError
	if !errors.As(err, &e) {
		return sdkError{}, false
	}
	code, _ := e.Code.(string)
	var param string
	if e.Param != nil {
		param = *e.Param
	}
	return sdkError{status: e.HTTPStatusCode, typ: e.Type, code: code, param: param, message: e.Message}, true
}

func appendNewID(ids []string, id string) []string {
	for _, have := range ids {
		if have == id {
			return ids
		}
	}
	return append(ids, id)
}

// words counts words as the mock counts tokens.
func mockWords(texts ...string) int64 {
	n := 0
	for _, s := range texts {
		n += len(strings.Fields(s))
	}
	return int64(n)
}

// wantTyped requires err to be sdk's typed error with want's status, type,
// code and param, and a message that contains want.message.
func wantTyped(t *testing.T, s sdkClient, err error, want sdkError) {
	t.Helper()
	got, ok := s.typed(err)
	if !ok {
		t.Fatalf("want the SDK's typed API error, got %T: %v", err, err)
	}
	if got.status != want.status || got.typ != want.typ || got.code != want.code || got.param != want.param ||
		!strings.Contains(got.message, want.message) {
		t.Errorf("error = %d type=%q code=%q param=%q message=%q\nwant    %d type=%q code=%q param=%q message containing %q",
			got.status, got.typ, got.code, got.param, got.message, want.status, want.typ, want.code, want.param, want.message)
	}
}

// TestClientChat: plain completions, streamed completions whose SDK-rebuilt
// text is exact (Korean included), and include_usage, with both SDKs.
func TestClientChat(t *testing.T) {
	clearEnv(t)
	in := startDemo(t)
	const korean = "안녕하세요, 반갑습니다. 오늘 날씨가 정말 좋네요! 한국어 답이 그대로 와야 합니다."
	for _, s := range clientSDKs {
		t.Run(s.name, func(t *testing.T) {
			for _, tc := range []struct{ name, model, preset, system, text string }{
				{"Korean with a system message", "claude-3.5-sonnet", "demo-preset", "be brief", korean},
				{"English", "claude-3.5-sonnet", "demo-preset", "", "What is the capital of Korea?"},
				{"model with its own preset", "own-preset", "own-hash", "", "a model with its own preset"},
			} {
				t.Run("completion/"+tc.name, func(t *testing.T) {
					req := askText(tc.model, tc.text)
					if tc.system != "" {
						req.messages = append([]sdkMessage{{role: "system", text: tc.system}}, req.messages...)
					}
					a, err := s.complete(t.Context(), in.url, req)
					if err != nil {
						t.Fatal(err)
					}
					content := "mock[" + tc.preset + "]: " + tc.text
					want := sdkAnswer{content: content, model: tc.model, role: "assistant", finish: "stop",
						usage: &sdkUsage{mockWords(tc.system, tc.text), mockWords(content), mockWords(tc.system, tc.text, content)}}
					checkSDKAnswer(t, a, want)
				})
			}
			for _, includeUsage := range []bool{false, true} {
				t.Run(fmt.Sprintf("stream include_usage=%v", includeUsage), func(t *testing.T) {
					req := askText("claude-3.5-sonnet", korean)
					req.includeUsage = includeUsage
					a, err := s.stream(t.Context(), in.url, req)
					if err != nil {
						t.Fatal(err)
					}
					want := sdkAnswer{content: "mock[demo-preset]: " + korean, model: "claude-3.5-sonnet", role: "assistant", finish: "stop"}
					if includeUsage {
						// The usage of the same request, not streamed.
						plain, err := s.complete(t.Context(), in.url, askText("claude-3.5-sonnet", korean))
						if err != nil || plain.usage == nil {
							t.Fatalf("not streamed: usage %v, error %v", plain.usage, err)
						}
						want.usage = plain.usage
						if a.usageChunks != 1 {
							t.Errorf("usage in %d chunks, want 1", a.usageChunks)
						}
					}
					if a.usage != nil && want.usage == nil {
						t.Errorf("usage %+v without include_usage", *a.usage)
					}
					checkSDKAnswer(t, a, want)
					if a.contentDeltas < 2 || len(a.ids) != 1 || !strings.HasPrefix(a.ids[0], "chatcmpl-") {
						t.Errorf("%d content deltas with ids %q; want several deltas, one chatcmpl- id", a.contentDeltas, a.ids)
					}
				})
			}
		})
	}
}

// checkSDKAnswer compares the fields every answer has.
func checkSDKAnswer(t *testing.T, got, want sdkAnswer) {
	t.Helper()
	if got.content != want.content {
		t.Errorf("content = %q, want %q", got.content, want.content)
	}
	if got.model != want.model || got.role != want.role || got.finish != want.finish {
		t.Errorf("model %q role %q finish %q, want %q %q %q", got.model, got.role, got.finish, want.model, want.role, want.finish)
	}
	switch {
	case want.usage == nil:
	case got.usage == nil:
		t.Errorf("no usage, want %+v", *want.usage)
	case *got.usage != *want.usage || got.usage.total != got.usage.prompt+got.usage.completion:
		t.Errorf("usage = %+v, want %+v (total = prompt + completion)", *got.usage, *want.usage)
	}
}

// TestClientMultimodal: images and PDFs, up to LaaS's limits, reach the mock
// intact: its answer names the digest of the bytes it received, which must be
// the digest the test computed. Large requests run one at a time, and their
// data is built only for the case that sends it.
func TestClientMultimodal(t *testing.T) {
	clearEnv(t)
	in := startDemo(t)
	png, jpeg := multimodaltest.PNG(64, 48, 0), multimodaltest.JPEG(40, 30)
	pngURL, jpegURL := multimodaltest.DataURL("image/png", png), multimodaltest.DataURL("image/jpeg", jpeg)
	pdf20 := multimodaltest.PDF(multimodal.MaxDocumentPages, 0)
	digest := func(kind string, data []byte) string {
		return "[" + kind + " sha256:" + multimodaltest.Digest(data) + "]"
	}

	cases := []struct {
		name string
		// only, when set, is the one SDK that runs the case.
		only string
		// build returns the parts of the user message and the answer's
		// expected text after "mock[demo-preset]: ".
		build func(t *testing.T) ([]sdkPart, string)
	}{
		{name: "PNG with text", build: func(*testing.T) ([]sdkPart, string) {
			return []sdkPart{textPart("What is in this picture?"), imagePart(pngURL)}, "What is in this picture? " + digest("image", png)
		}},
		{name: "PNG and JPEG", build: func(*testing.T) ([]sdkPart, string) {
			return []sdkPart{imagePart(pngURL), textPart("그리고"), imagePart(jpegURL)}, digest("image", png) + " 그리고 " + digest("image", jpeg)
		}},
		{name: "20-page PDF", build: func(*testing.T) ([]sdkPart, string) {
			return []sdkPart{textPart("summarise"), pdfPart(multimodaltest.DataURL("application/pdf", pdf20))}, "summarise " + digest("document", pdf20)
		}},
		// The largest request each SDK can make by itself. Under -race one
		// pass of such a request through the bridge takes some 35 s, so each
		// SDK sends one, not both.
		//
		// go-openai's largest part of its own is an image: one at exactly the
		// 4 MB limit. It has no file part, so it could send a PDF only through
		// bodyEditor, which would exercise the same bridge path as openai-go's
		// request below, at the same cost again.
		{name: "4 MB image", only: "go-openai", build: func(t *testing.T) ([]sdkPart, string) {
			img := multimodaltest.PNG(48, 32, multimodal.MaxImageBytes)
			return []sdkPart{textPart("at the limit"), imagePart(multimodaltest.DataURL("image/png", img))}, "at the limit " + digest("image", img)
		}},
		// openai-go sends a PDF as the file part, as the current OpenAI SDKs
		// do; the bridge turns it into a LaaS document part. This is the
		// issue's 32 MB PDF round trip through serve --demo.
		{name: "32 MB 20-page PDF", only: "openai-go", build: func(t *testing.T) ([]sdkPart, string) {
			pdf := multimodaltest.PDF(multimodal.MaxDocumentPages, multimodal.MaxDocumentBytes)
			if len(pdf) != multimodal.MaxDocumentBytes {
				t.Fatalf("the PDF is %d bytes, want %d", len(pdf), multimodal.MaxDocumentBytes)
			}
			return []sdkPart{textPart("요약해 주세요"), pdfPart(multimodaltest.DataURL("application/pdf", pdf))}, "요약해 주세요 " + digest("document", pdf)
		}},
	}
	for _, s := range clientSDKs {
		t.Run(s.name, func(t *testing.T) {
			for _, tc := range cases {
				if tc.only != "" && tc.only != s.name {
					continue
				}
				t.Run(tc.name, func(t *testing.T) {
					parts, want := tc.build(t)
					req := sdkRequest{model: "claude-3.5-sonnet", messages: []sdkMessage{userParts(parts...)}}
					a, err := s.complete(t.Context(), in.url, req)
					if err != nil {
						t.Fatal(err)
					}
					if want = "mock[demo-preset]: " + want; a.content != want {
						t.Errorf("content = %q, want %q", a.content, want)
					}
				})
			}
		})
	}
}

// TestClientRefusals: each request LaaS cannot run is refused before it is
// queued, and each SDK surfaces the refusal as its typed error with the exact
// status, type, code and param.
func TestClientRefusals(t *testing.T) {
	clearEnv(t)
	in := startDemo(t)
	png := multimodaltest.DataURL("image/png", multimodaltest.PNG(8, 8, 0))
	var gifData bytes.Buffer
	if err := gif.Encode(&gifData, image.NewPaletted(image.Rect(0, 0, 4, 4), color.Palette{color.Black, color.White}), nil); err != nil {
		t.Fatal(err)
	}
	withText := func(parts ...sdkPart) sdkRequest {
		return sdkRequest{model: "claude-3.5-sonnet", messages: []sdkMessage{userParts(append([]sdkPart{textPart("look")}, parts...)...)}}
	}
	with := func(edit func(*sdkRequest)) sdkRequest {
		r := askText("claude-3.5-sonnet", "hi")
		edit(&r)
		return r
	}
	const (
		invalid     = "invalid_request_error"
		unsupported = "unsupported_parameter"
	)
	cases := []struct {
		name   string
		req    sdkRequest
		stream bool
		want   sdkError
	}{
		{"tools", with(func(r *sdkRequest) { r.tools = true }), false, sdkError{400, invalid, unsupported, "tools", "LaaS does not support tool or function calling"}},
		{"tools streamed", with(func(r *sdkRequest) { r.tools = true }), true, sdkError{400, invalid, unsupported, "tools", "LaaS does not support tool or function calling"}},
		{"n=2", with(func(r *sdkRequest) { r.n = 2 }), false, sdkError{400, invalid, unsupported, "n", "'n' must be 1"}},
		{"logprobs", with(func(r *sdkRequest) { r.logprobs = true }), false, sdkError{400, invalid, unsupported, "logprobs", "LaaS does not support log probabilities"}},
		{"tool-role message", with(func(r *sdkRequest) { r.messages = append(r.messages, sdkMessage{role: "tool", text: "42"}) }), false,
			sdkError{400, invalid, "invalid_value", "messages[1].role", "messages[1] has role 'tool'"}},
		{"4th image in one message", withText(imagePart(png), imagePart(png), imagePart(png), imagePart(png)), false,
			sdkError{400, invalid, multimodal.CodeTooManyImages, "messages[0].content[4]", "messages[0].content[4]: this is image 4 of message 0; LaaS accepts at most 3 images per message"}},
		{"image over 4 MB", withText(imagePart(multimodaltest.DataURL("image/png", multimodaltest.PNG(8, 8, multimodal.MaxImageBytes+1)))), false,
			sdkError{400, invalid, multimodal.CodeImageTooLarge, "messages[0].content[1]", "messages[0].content[1]: the image is 4194305 bytes (4.0 MB); LaaS accepts at most 4 MB"}},
		{"GIF image", withText(imagePart(multimodaltest.DataURL("image/gif", gifData.Bytes()))), false,
			sdkError{400, invalid, multimodal.CodeUnsupportedMediaType, "messages[0].content[1]", "messages[0].content[1]: the image's media type is image/gif"}},
		{"JPEG declared as PNG", withText(imagePart(multimodaltest.DataURL("image/png", multimodaltest.JPEG(8, 8)))), false,
			sdkError{400, invalid, multimodal.CodeMediaTypeMismatch, "messages[0].content[1]", "messages[0].content[1]: the image is declared image/png but its data is image/jpeg"}},
		{"21-page PDF", withText(pdfPart(multimodaltest.DataURL("application/pdf", multimodaltest.PDF(multimodal.MaxDocumentPages+1, 0)))), false,
			sdkError{400, invalid, multimodal.CodeTooManyPages, "messages[0].content[1]", "messages[0].content[1]: the PDF has 21 pages; LaaS accepts at most 20 pages"}},
		{"PDF over the page count's budget", withText(pdfPart(multimodaltest.DataURL("application/pdf", multimodaltest.PDFObjectStreams(2000, 2<<10)))), false,
			sdkError{400, invalid, multimodal.CodeDocumentTooComplex, "messages[0].content[1]", "messages[0].content[1]: the PDF is too complex to check"}},
		{"remote PDF URL", withText(pdfPart("https://example.com/report.pdf")), false,
			sdkError{400, invalid, multimodal.CodeUnsupportedURL, "messages[0].content[1]", "messages[0].content[1]: "}},
		{"base64 that does not decode", withText(imagePart("data:image/png;base64,this is not base64!")), false,
			sdkError{400, invalid, multimodal.CodeInvalidBase64, "messages[0].content[1]", "messages[0].content[1]: the image's data is not valid base64"}},
		{"data URL without a media type", withText(imagePart("data:;base64,iVBORw0KGgo=")), false,
			sdkError{400, invalid, multimodal.CodeInvalidDataURL, "messages[0].content[1]", "messages[0].content[1]: the image's data URL has no media type"}},
		{"params with an object value", with(func(r *sdkRequest) { r.params = map[string]any{"name": "Kim", "obj": map[string]any{"a": 1}} }), false,
			sdkError{400, invalid, "invalid_value", "params.obj", "params.obj must be a string, number or boolean"}},
		{"unknown model", askText("gpt-4o", "hi"), false, sdkError{404, invalid, "model_not_found", "model", "The model 'gpt-4o' does not exist"}},
		{"unknown model streamed", askText("gpt-4o", "hi"), true, sdkError{404, invalid, "model_not_found", "model", "The model 'gpt-4o' does not exist"}},
	}
	for _, s := range clientSDKs {
		t.Run(s.name, func(t *testing.T) {
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					send := s.complete
					if tc.stream {
						send = s.stream
					}
					a, err := send(t.Context(), in.url, tc.req)
					if err == nil {
						t.Fatalf("accepted, answered %q", a.content)
					}
					wantTyped(t, s, err, tc.want)
				})
			}
		})
	}
	// The accepted half of the params case: string and number values pass.
	for _, s := range clientSDKs {
		t.Run(s.name+"/params with string and number values", func(t *testing.T) {
			if _, err := s.complete(t.Context(), in.url, with(func(r *sdkRequest) { r.params = map[string]any{"name": "Kim", "n": 3} })); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestClientRateLimited: LaaS answering every call 429 (Retry-After: 1)
// until the model's 4 s timeout runs out reaches each SDK as its rate-limit
// error, 429 rate_limit_error / rate_limit_exceeded, with Retry-After.
//
// Each client gets a bridge and a LaaS of its own: the workers hold every
// call off for Retry-After after a 429, so a request sent right after
// another one's 429 would start in that cooldown, and this test is about one
// request meeting a LaaS that is rate limiting, from its first call to its
// deadline.
func TestClientRateLimited(t *testing.T) {
	const project, apiKey = "proj-429", "key-429"
	clearEnv(t)
	cfg := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(cfg, []byte("model_list:\n  - model_name: limited\n    litellm_params:\n      model: laas/claude-3.5-sonnet\n      timeout: 4\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("LAAS_PROJECT_CODE", project)
	t.Setenv("LAAS_API_KEY", apiKey)
	t.Setenv("LAAS_PRESET_HASH", "preset-429")
	// limited starts a LaaS mock that answers every call 429 and a bridge
	// that calls it; it returns the bridge's URL and the mock.
	limited := func(t *testing.T) (string, *laasmock.Mock) {
		t.Helper()
		mock, err := laasmock.New(laasmock.Config{ProjectCode: project, APIKey: apiKey, Rate429: 1})
		if err != nil {
			t.Fatal(err)
		}
		up := httptest.NewServer(mock)
		t.Cleanup(up.Close)
		t.Setenv("LAAS_BASE_URL", up.URL)
		in := startRun(t, "serve", "--listen", "127.0.0.1:0", "--nats-listen", "", "--data-dir", t.TempDir(), "--config", cfg)
		return in.url, mock
	}
	// retried requires that LaaS was called more than once (twice, with a
	// 2 s timeout and Retry-After: 1) and never answered: the 429 came when
	// the retries ran out.
	retried := func(t *testing.T, mock *laasmock.Mock) {
		t.Helper()
		if calls, served := mock.Calls(), mock.Served(); calls < 2 || served != 0 {
			t.Errorf("LaaS was called %d time(s) and answered %d; want at least 2 calls, all answered 429", calls, served)
		}
	}
	want := sdkError{status: 429, typ: "rate_limit_error", code: "rate_limit_exceeded", message: "LaaS is rate limiting the bridge (HTTP 429)"}
	for _, s := range clientSDKs {
		t.Run(s.name, func(t *testing.T) {
			url, mock := limited(t)
			a, err := s.complete(t.Context(), url, askText("limited", "hi"))
			if err == nil {
				t.Fatalf("answered %q", a.content)
			}
			retried(t, mock)
			wantTyped(t, s, err, want)
			var oe *openai.Error // go-openai's APIError does not keep the headers
			if errors.As(err, &oe) && oe.Response.Header.Get("Retry-After") != "1" {
				t.Errorf("openai-go sees Retry-After %q, want 1", oe.Response.Header.Get("Retry-After"))
			}
		})
	}
	t.Run("raw HTTP", func(t *testing.T) {
		url, mock := limited(t)
		req, _ := http.NewRequestWithContext(t.Context(), "POST", url+"/v1/chat/completions",
			strings.NewReader(`{"model":"limited","messages":[{"role":"user","content":"hi"}]}`))
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		retried(t, mock)
		var eb struct {
			Error struct{ Type, Code string }
		}
		if err := json.Unmarshal(body, &eb); err != nil || resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "1" ||
			eb.Error.Type != want.typ || eb.Error.Code != want.code {
			t.Errorf("status %d, Retry-After %q, body %s", resp.StatusCode, resp.Header.Get("Retry-After"), body)
		}
	})
}
