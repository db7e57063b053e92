package bridge

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/labstack/echo/v4"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/packages/ssestream"
	goopenai "github.com/sashabaranov/go-openai"

	"github.com/laas-bridge/laas-bridge/schema"
)

// pieces cuts s as a streamed answer does.
func pieces(s string, maxRunes int) []string {
	var out []string
	for s != "" {
		n := nextPiece(s, maxRunes)
		out = append(out, s[:n])
		s = s[n:]
	}
	return out
}

func TestNextPiece(t *testing.T) {
	cases := []struct {
		name string
		text string
		want []string // nil: check only the properties
	}{
		{"ASCII", "Hello, world! How are you?", []string{"Hello, ", "world! ", "How ", "are ", "you?"}},
		{"Korean without spaces", "안녕하세요반갑습니다오늘날씨가정말좋네요그렇죠", []string{"안녕하세요반갑습니다오늘날씨가정", "말좋네요그렇죠"}},
		{"Korean with spaces", "안녕하세요, 반갑습니다. 오늘 날씨가 좋네요.", []string{"안녕하세요, ", "반갑습니다. ", "오늘 ", "날씨가 ", "좋네요."}},
		{"mixed", "LaaS는 원티드랩의 LLM 서비스입니다 (v2).", []string{"LaaS는 ", "원티드랩의 ", "LLM ", "서비스입니다 ", "(v2)."}},
		{"emoji", "👋🏽 hi 🇰🇷🇰🇷 family: 👨‍👩‍👧‍👦👨‍👩‍👧‍👦👨‍👩‍👧‍👦!", nil},
		{"spaces and newlines", "  lead\n\n  two   spaces\t\ttab\n", []string{"  lead\n\n  ", "two   ", "spaces\t\t", "tab\n"}},
		{"ideographic space", "第一\u3000第二", []string{"第一\u3000", "第二"}},
		{"only whitespace", " \n\t \n", []string{" \n\t \n"}},
		{"long whitespace", strings.Repeat("\n", 20) + "x", []string{strings.Repeat("\n", 16), "\n\n\n\nx"}},
		{"empty", "", nil},
		{"one word", "word", []string{"word"}},
		{"long word", "supercalifragilisticexpialidocious is long", []string{"supercalifragili", "sticexpialidocio", "us ", "is ", "long"}},
		{"exactly the limit", "0123456789abcdef next", []string{"0123456789abcdef", " next"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := pieces(tc.text, maxPieceRunes)
			if tc.want != nil && !slices.Equal(got, tc.want) {
				t.Errorf("pieces = %q, want %q", got, tc.want)
			}
			checkPieces(t, tc.text, got, maxPieceRunes)
			if strings.Count(strings.TrimSpace(tc.text), " ") > 0 && len(got) < 2 {
				t.Errorf("multi-word text in %d piece(s)", len(got))
			}
		})
	}
	t.Run("any limit", func(t *testing.T) {
		text := "가나다라 마바사아자차카타파하 🇰🇷👨‍👩‍👧‍👦 abc  \n def"
		for limit := 0; limit <= 20; limit++ {
			checkPieces(t, text, pieces(text, limit), max(limit, 1))
		}
	})
	t.Run("no allocations", func(t *testing.T) {
		text := strings.Repeat("안녕하세요 반갑습니다 hello world ", 50)
		allocs := testing.AllocsPerRun(20, func() {
			for s := text; s != ""; {
				s = s[nextPiece(s, maxPieceRunes):]
			}
		})
		if allocs != 0 {
			t.Errorf("%v allocations to cut %d bytes", allocs, len(text))
		}
	})
}

// checkPieces: every piece is non-empty valid UTF-8 of at most maxRunes
// runes, and together they are text.
func checkPieces(t *testing.T, text string, got []string, maxRunes int) {
	t.Helper()
	for i, p := range got {
		if p == "" || !utf8.ValidString(p) || utf8.RuneCountInString(p) > maxRunes {
			t.Errorf("piece %d = %q: empty, invalid UTF-8 or over %d runes", i, p, maxRunes)
		}
	}
	if joined := strings.Join(got, ""); joined != text {
		t.Errorf("pieces join to %q, want %q", joined, text)
	}
}

// sseEvent is one event of an event-stream body: a comment or one data
// line, after an event name line (name) or not.
type sseEvent struct {
	comment string
	data    string
	name    string
}

// parseSSE splits a body into events, failing on anything that is not a
// one-line comment or data event (after an event line or not) ended by a
// blank line.
func parseSSE(t *testing.T, body []byte) []sseEvent {
	t.Helper()
	s := string(body)
	if s == "" {
		return nil
	}
	if !strings.HasSuffix(s, "\n\n") {
		t.Fatalf("the stream does not end with a blank line: %q", s[max(0, len(s)-80):])
	}
	var out []sseEvent
	for block := range strings.SplitSeq(strings.TrimSuffix(s, "\n\n"), "\n\n") {
		var name string
		if rest, ok := strings.CutPrefix(block, "event: "); ok {
			name, block, _ = strings.Cut(rest, "\n")
		}
		switch {
		case strings.Contains(block, "\n"):
			t.Fatalf("event of more than one line: %q", block)
		case strings.HasPrefix(block, ": "):
			out = append(out, sseEvent{comment: block[2:]})
		case strings.HasPrefix(block, "data: "):
			out = append(out, sseEvent{data: block[6:], name: name})
		default:
			t.Fatalf("not an SSE event: %q", block)
		}
	}
	return out
}

// leadingComments returns the number of keep-alive comments before the
// first data event, and fails if a comment comes later.
func leadingComments(t *testing.T, events []sseEvent) int {
	t.Helper()
	n := 0
	for n < len(events) && events[n].comment != "" {
		if c := events[n].comment; c != "keep-alive" && !queuedComment.MatchString(c) {
			t.Errorf("comment %q, want keep-alive or the queue position", c)
		}
		n++
	}
	for _, e := range events[n:] {
		if e.comment != "" {
			t.Errorf("keep-alive after the first data event")
		}
	}
	return n
}

// textAnswer answers with the last message's text exactly, after delay.
// Text "!429" is refused at once as rate limited; "!502" fails with an
// upstream error after delay.
func textAnswer(delay time.Duration, usage *schema.Usage) func(schema.Envelope) schema.Reply {
	return func(env schema.Envelope) schema.Reply {
		var req schema.ChatCompletionRequest
		_ = json.Unmarshal(env.Request, &req)
		text := req.Messages[len(req.Messages)-1].Content.Text
		if text == "!429" {
			r := schema.ErrorReply(env.ID, &schema.Error{Status: 429, Type: schema.TypeRateLimit, Code: schema.CodeRateLimitExceeded,
				Message: "LaaS is rate limiting", RetryAfter: 7})
			r.Attempts = 5
			return r
		}
		time.Sleep(delay)
		if text == "!502" {
			return schema.ErrorReply(env.ID, &schema.Error{Status: 502, Type: schema.TypeUpstream, Code: schema.CodeUpstreamError, Message: "LaaS failed"})
		}
		return schema.Reply{ID: env.ID, Status: 200, Attempts: 1, QueueMs: 7, UpstreamMs: 11, Completion: &schema.ChatCompletion{
			ID: "chatcmpl-" + env.ID, Object: "chat.completion", Created: 1730000000, Model: env.Model, Usage: usage,
			Choices: []schema.Choice{{Message: schema.AssistantMessage{Role: "assistant", Content: text}, FinishReason: "stop"}},
		}}
	}
}

var testUsage = schema.Usage{PromptTokens: 12, CompletionTokens: 34, TotalTokens: 46}

func streamBody(model, text string, streamOptions string) string {
	body := `{"model":` + jsonString(model) + `,"stream":true,"messages":[{"role":"user","content":` + jsonString(text) + `}]`
	if streamOptions != "" {
		body += `,"stream_options":` + streamOptions
	}
	return body + "}"
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// rawChunk is a chunk with its keys kept raw, to tell null from absent.
type rawChunk map[string]json.RawMessage

func decodeChunk(t *testing.T, data string) (schema.ChatCompletionChunk, rawChunk) {
	t.Helper()
	var c schema.ChatCompletionChunk
	var raw rawChunk
	if err := json.Unmarshal([]byte(data), &c); err != nil {
		t.Fatalf("chunk %s: %v", data, err)
	}
	if err := json.Unmarshal([]byte(data), &raw); err != nil {
		t.Fatal(err)
	}
	return c, raw
}

func rawChoice(t *testing.T, raw rawChunk) map[string]json.RawMessage {
	t.Helper()
	var choices []map[string]json.RawMessage
	if err := json.Unmarshal(raw["choices"], &choices); err != nil || len(choices) != 1 {
		t.Fatalf("choices = %s, want one choice", raw["choices"])
	}
	return choices[0]
}

// checkAnswerEvents checks the data events of a streamed answer to text,
// from the role chunk to [DONE], exactly.
func checkAnswerEvents(t *testing.T, events []sseEvent, requestID, model, text string, usage *schema.Usage) {
	t.Helper()
	if len(events) == 0 || events[len(events)-1].data != "[DONE]" {
		t.Fatalf("the stream does not end with [DONE]: %+v", events)
	}
	want := pieces(text, maxPieceRunes)
	nChunks := 1 + len(want) + 1
	if usage != nil {
		nChunks++
	}
	chunks := events[:len(events)-1]
	if len(chunks) != nChunks {
		t.Fatalf("%d chunks, want %d: %+v", len(chunks), nChunks, chunks)
	}
	var content strings.Builder
	for i, e := range chunks {
		c, raw := decodeChunk(t, e.data)
		if c.ID != "chatcmpl-"+requestID || c.Object != "chat.completion.chunk" || c.Created != 1730000000 || c.Model != model {
			t.Errorf("chunk %d: id %q object %q created %d model %q", i, c.ID, c.Object, c.Created, c.Model)
		}
		u, hasUsage := raw["usage"]
		switch {
		case usage == nil && hasUsage:
			t.Errorf("chunk %d has usage %s without include_usage", i, u)
		case usage != nil && i < len(chunks)-1 && string(u) != "null":
			t.Errorf("chunk %d: usage = %q, want null", i, u)
		}
		if usage != nil && i == len(chunks)-1 { // the usage chunk
			if string(raw["choices"]) != "[]" || c.Usage == nil || *c.Usage != *usage {
				t.Errorf("usage chunk = %s", e.data)
			}
			continue
		}
		ch := rawChoice(t, raw)
		delta, finish := string(ch["delta"]), string(ch["finish_reason"])
		if string(ch["index"]) != "0" || string(ch["logprobs"]) != "null" {
			t.Errorf("chunk %d: choice = %s", i, raw["choices"])
		}
		switch {
		case i == 0:
			if delta != `{"role":"assistant","content":""}` || finish != "null" {
				t.Errorf("first chunk: delta %s finish_reason %s", delta, finish)
			}
		case i == 1+len(want):
			if delta != `{}` || finish != `"stop"` {
				t.Errorf("last chunk: delta %s finish_reason %s", delta, finish)
			}
		default:
			d := c.Choices[0].Delta
			if d.Role != "" || d.Content == nil || finish != "null" || delta != `{"content":`+jsonString(*d.Content)+`}` {
				t.Errorf("content chunk %d: delta %s finish_reason %s", i, delta, finish)
				continue
			}
			if *d.Content != want[i-1] || !utf8.ValidString(*d.Content) {
				t.Errorf("content chunk %d = %q, want %q", i, *d.Content, want[i-1])
			}
			content.WriteString(*d.Content)
		}
	}
	if content.String() != text {
		t.Errorf("content = %q, want %q", content.String(), text)
	}
}

func TestStreamRoundTrip(t *testing.T) {
	f := newFixture(t, Config{})
	f.fakeWorker(t, t.Context(), 1, textAnswer(0, &testUsage))
	text := "  안녕하세요!  LaaS는 스트리밍을 하지 않지만,\n\n브리지는 OpenAI처럼 답합니다. 👋🏽 supercalifragilisticexpialidocious\t끝 "
	cases := []struct {
		name, options, text string
		usage               *schema.Usage
	}{
		{"no stream_options", "", text, nil},
		{"include_usage", `{"include_usage":true}`, text, &testUsage},
		{"include_usage false", `{"include_usage":false}`, text, nil},
		{"stream_options null", `null`, text, nil},
		{"empty answer", `{"include_usage":true}`, "", &testUsage},
		{"one word", "", "word", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := f.do(t, "POST", "/v1/chat/completions", streamBody("claude-3.5-sonnet", tc.text, tc.options))
			if resp.StatusCode != 200 {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			for h, want := range map[string]string{
				"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no", "Connection": "keep-alive",
				HeaderQueueMs: "7", HeaderUpstreamMs: "11", HeaderAttempts: "1",
			} {
				if got := resp.Header.Get(h); got != want {
					t.Errorf("%s = %q, want %q", h, got, want)
				}
			}
			events := parseSSE(t, body)
			if n := leadingComments(t, events); n != 0 {
				t.Errorf("%d keep-alives before a fast answer", n)
			}
			checkAnswerEvents(t, events, resp.Header.Get(HeaderRequestID), "claude-3.5-sonnet", tc.text, tc.usage)
			if tc.text == text && len(events) < 10 {
				t.Errorf("the answer came in %d events; want it cut into many", len(events))
			}
		})
	}
	if p := f.gw.corr.pending(); p != 0 {
		t.Errorf("%d callers still registered", p)
	}
}

// TestStreamKeepAlive: while the answer is queued the caller gets the
// headers and keep-alive comments, then the answer.
func TestStreamKeepAlive(t *testing.T) {
	f := newFixture(t, Config{KeepAlive: 50 * time.Millisecond})
	f.fakeWorker(t, t.Context(), 1, textAnswer(300*time.Millisecond, nil))
	text := "느린 답도 끝까지 옵니다."
	start := time.Now()
	resp, err := http.Post(f.srv.URL+"/v1/chat/completions", "application/json", strings.NewReader(streamBody("claude-3.5-sonnet", text, "")))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if waited := time.Since(start); resp.StatusCode != 200 || waited > 250*time.Millisecond {
		t.Fatalf("status %d after %s; want 200 with the first keep-alive, before the answer", resp.StatusCode, waited)
	}
	br := bufio.NewReader(resp.Body)
	line, err := br.ReadString('\n')
	if err != nil || (line != ": keep-alive\n" && !queuedComment.MatchString(strings.TrimPrefix(strings.TrimSuffix(line, "\n"), ": "))) {
		t.Fatalf("first line %q, %v", line, err)
	}
	rest, err := io.ReadAll(br)
	if err != nil {
		t.Fatal(err)
	}
	events := parseSSE(t, append([]byte(line), rest...))
	if n := leadingComments(t, events); n < 3 {
		t.Errorf("%d keep-alives in 300ms at a 50ms interval", n)
	}
	checkAnswerEvents(t, events[leadingComments(t, events):], resp.Header.Get(HeaderRequestID), "claude-3.5-sonnet", text, nil)
	if h := resp.Header.Get(HeaderQueueMs); h != "" {
		t.Errorf("%s = %q on headers sent before the answer", HeaderQueueMs, h)
	}
}

// TestStreamErrorBeforeStart: an error known before anything was written is
// a plain HTTP error in OpenAI's format.
func TestStreamErrorBeforeStart(t *testing.T) {
	f := newFixture(t, Config{})
	f.fakeWorker(t, t.Context(), 1, textAnswer(0, nil))

	t.Run("worker error", func(t *testing.T) {
		resp, body := f.do(t, "POST", "/v1/chat/completions", streamBody("claude-3.5-sonnet", "!429", `{"include_usage":true}`))
		if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "7" || resp.Header.Get(HeaderAttempts) != "5" ||
			!strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
			t.Fatalf("status %d, Retry-After %q, attempts %q, Content-Type %q: %s", resp.StatusCode,
				resp.Header.Get("Retry-After"), resp.Header.Get(HeaderAttempts), resp.Header.Get("Content-Type"), body)
		}
		want := `{"error":{"message":"LaaS is rate limiting","type":"rate_limit_error","param":null,"code":"rate_limit_exceeded"}}`
		if got := strings.TrimSpace(string(body)); got != want {
			t.Errorf("body = %s\nwant   %s", got, want)
		}
	})
	t.Run("deadline", func(t *testing.T) {
		g := newFixture(t, Config{}) // no worker: team/fast times out after 300ms
		resp, body := g.do(t, "POST", "/v1/chat/completions", streamBody("team/fast", "nobody will answer", ""))
		if resp.StatusCode != 504 || !strings.Contains(string(body), `"code":"deadline_exceeded"`) {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
	})
	t.Run("bad stream_options", func(t *testing.T) {
		for _, tc := range []struct{ body, param, msg string }{
			{streamBody("claude-3.5-sonnet", "x", `"yes"`), "stream_options", "expected an object"},
			{streamBody("claude-3.5-sonnet", "x", `{"include_usage":1}`), "stream_options.include_usage", "expected a boolean"},
			{`{"model":"claude-3.5-sonnet","stream":false,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"x"}]}`,
				"stream_options", "only allowed when 'stream' is enabled"},
		} {
			resp, body := f.do(t, "POST", "/v1/chat/completions", tc.body)
			var eb schema.ErrorBody
			if err := json.Unmarshal(body, &eb); err != nil || resp.StatusCode != 400 || eb.Error.Type != "invalid_request_error" ||
				deref(eb.Error.Param) != tc.param || !strings.Contains(eb.Error.Message, tc.msg) {
				t.Errorf("%s: status %d: %s", tc.body, resp.StatusCode, body)
			}
		}
	})
}

// TestStreamErrorAfterStart: once keep-alives went out, an error is the
// stream's last event, in OpenAI's error format, with no [DONE].
func TestStreamErrorAfterStart(t *testing.T) {
	f := newFixture(t, Config{KeepAlive: 30 * time.Millisecond})
	f.fakeWorker(t, t.Context(), 1, textAnswer(200*time.Millisecond, nil))
	cases := []struct {
		name, model, text, want string
	}{
		{"worker error", "claude-3.5-sonnet", "!502", `{"error":{"message":"LaaS failed","type":"upstream_error","param":null,"code":"upstream_error"}}`},
		{"deadline", "team/fast", "!never", `"type":"timeout_error","param":null,"code":"deadline_exceeded"}}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := f
			if tc.name == "deadline" {
				g = newFixture(t, Config{KeepAlive: 30 * time.Millisecond}) // no worker
			}
			resp, body := g.do(t, "POST", "/v1/chat/completions", streamBody(tc.model, tc.text, `{"include_usage":true}`))
			if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
				t.Fatalf("status %d, Content-Type %q: %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
			}
			events := parseSSE(t, body)
			n := leadingComments(t, events)
			if n == 0 || len(events) != n+1 {
				t.Fatalf("want keep-alives then one error event, got %+v", events)
			}
			last := events[n].data
			if !strings.HasPrefix(last, `{"error":{"message":"`) || !strings.HasSuffix(last, tc.want) {
				t.Errorf("error event = %s, want it to end with %s", last, tc.want)
			}
		})
	}
}

// TestStreamCallerGoesAway: a caller that hangs up while its answer is
// queued frees its place.
func TestStreamCallerGoesAway(t *testing.T) {
	f := newFixture(t, Config{KeepAlive: 20 * time.Millisecond})
	ctx, cancel := context.WithCancel(t.Context())
	req, _ := http.NewRequestWithContext(ctx, "POST", f.srv.URL+"/v1/chat/completions",
		strings.NewReader(streamBody("claude-3.5-sonnet", "nobody will answer", "")))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if line, err := bufio.NewReader(resp.Body).ReadString('\n'); err != nil || (line != ": keep-alive\n" && line != ": queued position=0\n") {
		t.Fatalf("first line %q, %v; want a keep-alive", line, err)
	}
	if p := f.gw.corr.pending(); p != 1 {
		t.Errorf("%d callers registered while streaming, want 1", p)
	}
	cancel()
	resp.Body.Close()
	for deadline := time.Now().Add(5 * time.Second); f.gw.corr.pending() != 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the caller is still registered after it went away")
		}
	}
}

// discardWriter is a flushable http.ResponseWriter that keeps nothing.
type discardWriter struct{ h http.Header }

var _ http.Flusher = (*discardWriter)(nil)

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *discardWriter) WriteHeader(int)             {}
func (w *discardWriter) Flush()                      {}

// TestStreamCompletionAllocations: once the writer's buffer has grown,
// writing an answer of any length allocates nothing.
func TestStreamCompletionAllocations(t *testing.T) {
	p := &pending{id: "req", model: schema.Model{Alias: "m"}}
	for _, n := range []int{1, 100} {
		text := strings.Repeat("안녕하세요 반갑습니다, hello world! ", n)
		cc := textAnswer(0, &testUsage)(schema.Envelope{ID: "req", Model: "m",
			Request: []byte(`{"messages":[{"role":"user","content":` + jsonString(text) + `}]}`)}).Completion
		s := newSSEWriter(echo.NewResponse(&discardWriter{h: http.Header{}}, echo.New()))
		allocs := testing.AllocsPerRun(20, func() {
			if err := s.completion(cc, p, true); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != 0 {
			t.Errorf("%v allocations to stream %d bytes in %d pieces", allocs, len(text), len(pieces(text, maxPieceRunes)))
		}
	}
}

func BenchmarkStreamCompletion(b *testing.B) {
	p := &pending{id: "req", model: schema.Model{Alias: "m"}}
	text := strings.Repeat("안녕하세요 반갑습니다, hello world! ", 100)
	cc := &schema.ChatCompletion{ID: "chatcmpl-req", Created: 1, Usage: &testUsage,
		Choices: []schema.Choice{{Message: schema.AssistantMessage{Role: "assistant", Content: text}, FinishReason: "stop"}}}
	s := newSSEWriter(echo.NewResponse(&discardWriter{h: http.Header{}}, echo.New()))
	b.SetBytes(int64(len(text)))
	b.ReportAllocs()
	for b.Loop() {
		if err := s.completion(cc, p, true); err != nil {
			b.Fatal(err)
		}
	}
}

// sdkFixtures: slow answers after 100ms with keep-alives every 20ms, so
// clients see comments and errors inside the stream; fast has the default
// keep-alive, so an error comes before the stream starts.
func sdkFixtures(t *testing.T) (slow, fast *fixture) {
	slow = newFixture(t, Config{KeepAlive: 20 * time.Millisecond})
	slow.fakeWorker(t, t.Context(), 1, textAnswer(100*time.Millisecond, &testUsage))
	fast = newFixture(t, Config{})
	fast.fakeWorker(t, t.Context(), 1, textAnswer(0, &testUsage))
	return slow, fast
}

const sdkText = "OpenAI SDK로 받은 답: 한국어도 그대로,   공백도\n\n줄바꿈도 그대로 🇰🇷 supercalifragilisticexpialidocious."

func TestStreamOpenAIGo(t *testing.T) {
	slow, fast := sdkFixtures(t)
	client := func(f *fixture) openai.Client {
		return openai.NewClient(option.WithBaseURL(f.srv.URL+"/v1/"), option.WithAPIKey("sk-test"), option.WithMaxRetries(0))
	}
	params := func(text string, includeUsage bool) openai.ChatCompletionNewParams {
		p := openai.ChatCompletionNewParams{Model: "claude-3.5-sonnet", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(text)}}
		if includeUsage {
			p.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
		}
		return p
	}
	for _, f := range []*fixture{fast, slow} {
		for _, includeUsage := range []bool{false, true} {
			name := map[bool]string{false: "fast", true: "with keep-alives"}[f == slow] + map[bool]string{false: "", true: ", include_usage"}[includeUsage]
			t.Run(name, func(t *testing.T) {
				c := client(f)
				stream := c.Chat.Completions.NewStreaming(t.Context(), params(sdkText, includeUsage))
				var acc openai.ChatCompletionAccumulator
				chunks := 0
				for stream.Next() {
					if !acc.AddChunk(stream.Current()) {
						t.Fatalf("the accumulator refused chunk %d: %s", chunks, stream.Current().RawJSON())
					}
					chunks++
				}
				if err := stream.Err(); err != nil {
					t.Fatal(err)
				}
				if len(acc.Choices) != 1 || acc.Choices[0].Message.Content != sdkText || acc.Choices[0].FinishReason != "stop" ||
					acc.Choices[0].Message.Role != "assistant" {
					t.Fatalf("accumulated %+v", acc.Choices)
				}
				if !strings.HasPrefix(acc.ID, "chatcmpl-") || acc.Model != "claude-3.5-sonnet" || acc.Object != "chat.completion" || chunks < 10 {
					t.Errorf("id %q model %q object %q after %d chunks", acc.ID, acc.Model, acc.Object, chunks)
				}
				want := openai.CompletionUsage{}
				if includeUsage {
					want = openai.CompletionUsage{PromptTokens: 12, CompletionTokens: 34, TotalTokens: 46}
				}
				if u := acc.Usage; u.PromptTokens != want.PromptTokens || u.CompletionTokens != want.CompletionTokens || u.TotalTokens != want.TotalTokens {
					t.Errorf("usage = %d/%d/%d, want %d/%d/%d", u.PromptTokens, u.CompletionTokens, u.TotalTokens,
						want.PromptTokens, want.CompletionTokens, want.TotalTokens)
				}
			})
		}
	}
	t.Run("rate limited before the stream starts", func(t *testing.T) {
		c := client(fast)
		stream := c.Chat.Completions.NewStreaming(t.Context(), params("!429", true))
		if stream.Next() {
			t.Fatal("a chunk from a refused request")
		}
		var apiErr *openai.Error
		if !errors.As(stream.Err(), &apiErr) || apiErr.StatusCode != 429 || apiErr.Code != "rate_limit_exceeded" ||
			apiErr.Response.Header.Get("Retry-After") != "7" {
			t.Fatalf("want a 429 *openai.Error, got %v", stream.Err())
		}
	})
	t.Run("error inside the stream", func(t *testing.T) {
		c := client(slow)
		stream := c.Chat.Completions.NewStreaming(t.Context(), params("!502", false))
		for stream.Next() {
			t.Errorf("unexpected chunk %s", stream.Current().RawJSON())
		}
		var se *ssestream.StreamError
		if !errors.As(stream.Err(), &se) || !strings.Contains(se.Message, "LaaS failed") || !strings.Contains(string(se.Event.Data), `"code":"upstream_error"`) {
			t.Fatalf("want a stream error carrying the upstream error, got %v", stream.Err())
		}
	})
}

func TestStreamGoOpenAI(t *testing.T) {
	slow, fast := sdkFixtures(t)
	client := func(f *fixture) *goopenai.Client {
		cfg := goopenai.DefaultConfig("sk-test")
		cfg.BaseURL = f.srv.URL + "/v1"
		return goopenai.NewClientWithConfig(cfg)
	}
	request := func(text string, includeUsage bool) goopenai.ChatCompletionRequest {
		r := goopenai.ChatCompletionRequest{Model: "claude-3.5-sonnet", Stream: true,
			Messages: []goopenai.ChatCompletionMessage{{Role: goopenai.ChatMessageRoleUser, Content: text}}}
		if includeUsage {
			r.StreamOptions = &goopenai.StreamOptions{IncludeUsage: true}
		}
		return r
	}
	for _, f := range []*fixture{fast, slow} {
		for _, includeUsage := range []bool{false, true} {
			name := map[bool]string{false: "fast", true: "with keep-alives"}[f == slow] + map[bool]string{false: "", true: ", include_usage"}[includeUsage]
			t.Run(name, func(t *testing.T) {
				stream, err := client(f).CreateChatCompletionStream(t.Context(), request(sdkText, includeUsage))
				if err != nil {
					t.Fatal(err)
				}
				defer stream.Close()
				var content strings.Builder
				var usage *goopenai.Usage
				var finish goopenai.FinishReason
				ids := map[string]bool{}
				for {
					resp, err := stream.Recv()
					if errors.Is(err, io.EOF) {
						break
					}
					if err != nil {
						t.Fatal(err)
					}
					ids[resp.ID] = true
					for _, ch := range resp.Choices {
						content.WriteString(ch.Delta.Content)
						if ch.FinishReason != "" {
							finish = ch.FinishReason
						}
					}
					if resp.Usage != nil {
						if usage != nil {
							t.Error("usage sent twice")
						}
						usage = resp.Usage
					}
				}
				if content.String() != sdkText || finish != goopenai.FinishReasonStop || len(ids) != 1 {
					t.Errorf("content %q, finish %q, ids %v", content.String(), finish, ids)
				}
				switch {
				case includeUsage && (usage == nil || usage.PromptTokens != 12 || usage.CompletionTokens != 34 || usage.TotalTokens != 46):
					t.Errorf("usage = %+v, want 12/34/46", usage)
				case !includeUsage && usage != nil:
					t.Errorf("usage %+v without include_usage", usage)
				}
			})
		}
	}
	t.Run("rate limited before the stream starts", func(t *testing.T) {
		_, err := client(fast).CreateChatCompletionStream(t.Context(), request("!429", true))
		var apiErr *goopenai.APIError
		if !errors.As(err, &apiErr) || apiErr.HTTPStatusCode != 429 || apiErr.Code != "rate_limit_exceeded" || apiErr.Type != "rate_limit_error" {
			t.Fatalf("want a 429 *openai.APIError, got %v", err)
		}
	})
	t.Run("error inside the stream", func(t *testing.T) {
		stream, err := client(slow).CreateChatCompletionStream(t.Context(), request("!502", false))
		if err != nil {
			t.Fatal(err)
		}
		defer stream.Close()
		// go-openai collects every non-data line, the keep-alive comments
		// included, as the body of a possible error, so once comments were
		// sent it cannot parse the error event. It must still fail, not end
		// the stream as if it were complete.
		_, err = stream.Recv()
		if err == nil || errors.Is(err, io.EOF) {
			t.Fatalf("the stream ended without an error: %v", err)
		}
	})
}
