package laasmock

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/laas-bridge/laas-bridge/schema"
)

// LogCapacity is how many entries Log keeps; older ones are dropped.
const LogCapacity = 100_000

// MaxBodyBytes bounds a request body; a larger one is answered 413. It
// admits the largest request within LaaS's limits for one message: a 32 MB
// PDF (about 42.7 MiB as base64) and three 4 MB images (16 MiB as base64)
// come to about 58.7 MiB with their JSON, leaving some 5 MiB for text.
const MaxBodyBytes = 64 << 20

// StatusClientClosed is the status Log and the access log record for a
// request whose client went away while the mock was waiting out its latency.
const StatusClientClosed = 499

// DefaultModel is the answer's model when the request names none.
const DefaultModel = "mock-model"

// Config configures a Mock. The zero value is valid: any non-empty
// credentials, no latency, no injected failures.
type Config struct {
	// ProjectCode and APIKey, when non-empty, are the only accepted values of
	// the "project" and "apiKey" headers. When empty, any non-empty value is
	// accepted.
	ProjectCode, APIKey string
	// Latency is how long each answer-stage request waits before it is
	// answered. Must be >= 0.
	Latency time.Duration
	// Rate429 and Rate500 are the fractions, each in [0, 1] and together at
	// most 1, of answer-stage requests answered 429 (with Retry-After: 1) and
	// 500 instead of an answer.
	Rate429, Rate500 float64
	// Seed seeds the injection's random source, so a sequence of requests
	// meets the same failures on every run.
	Seed int64
	// Wild selects the answer shape seen in the wild (see the package doc).
	Wild bool
	// AccessLog, when set, receives one JSON line per request. Writes are
	// serialised; write errors are ignored.
	AccessLog io.Writer
}

// Validate reports every problem with c, joined.
func (c Config) Validate() error {
	var errs []error
	if c.Latency < 0 {
		errs = append(errs, fmt.Errorf("laasmock: latency %v is negative", c.Latency))
	}
	for _, r := range []struct {
		name string
		v    float64
	}{{"Rate429", c.Rate429}, {"Rate500", c.Rate500}} {
		if !(r.v >= 0 && r.v <= 1) { // also catches NaN
			errs = append(errs, fmt.Errorf("laasmock: %s %v is outside [0, 1]", r.name, r.v))
		}
	}
	if c.Rate429+c.Rate500 > 1 {
		errs = append(errs, fmt.Errorf("laasmock: Rate429 + Rate500 = %v exceeds 1", c.Rate429+c.Rate500))
	}
	return errors.Join(errs...)
}

// Entry records one request that reached the answer stage.
type Entry struct {
	// Time is when the request reached the answer stage.
	Time time.Time
	// Hash is the request's preset hash.
	Hash string
	// LastUser is the text of the last user message ("" when there is none).
	LastUser string
	// Status is the status answered: 200, 429, 500 or StatusClientClosed; 0
	// while the request is still being handled.
	Status int
	// InFlight is how many requests the mock was handling when this one
	// arrived, itself included: requests in flight at once, as LaaS sees
	// them.
	InFlight int
}

// Mock is a LaaS look-alike http.Handler. It is safe for concurrent use.
type Mock struct {
	cfg Config

	calls  atomic.Int64
	served atomic.Int64

	inFlight    atomic.Int64 // requests being handled now
	maxInFlight atomic.Int64 // the most at once

	rngMu sync.Mutex
	rng   *rand.Rand

	maxBody int64 // MaxBodyBytes; smaller in tests

	logMu  sync.Mutex
	logCap int
	ring   []logSlot
	seq    uint64 // entries ever logged

	accessMu sync.Mutex

	faultMu   sync.Mutex
	faultSeen map[[32]byte]int // status directives with a count: requests seen per body
	faultKeys [][32]byte       // faultSeen's keys, oldest first from faultNext once full
	faultNext int
}

type logSlot struct {
	seq   uint64
	entry Entry
}

var _ http.Handler = (*Mock)(nil)

// New returns a Mock for cfg, or cfg's validation error.
func New(cfg Config) (*Mock, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Mock{
		cfg:     cfg,
		rng:     rand.New(rand.NewPCG(uint64(cfg.Seed), 0)),
		maxBody: MaxBodyBytes,
		logCap:  LogCapacity,
	}, nil
}

// MaxInFlight returns the most requests the mock handled at once.
func (m *Mock) MaxInFlight() int { return int(m.maxInFlight.Load()) }

// Calls returns how many requests reached the answer stage: authenticated and
// valid, including those answered with an injected failure and those whose
// client went away.
func (m *Mock) Calls() int64 { return m.calls.Load() }

// Served returns how many requests were answered 200.
func (m *Mock) Served() int64 { return m.served.Load() }

// Log returns a copy of the last LogCapacity answer-stage entries, oldest
// first (arrival order).
func (m *Mock) Log() []Entry {
	m.logMu.Lock()
	defer m.logMu.Unlock()
	out := make([]Entry, 0, len(m.ring))
	if len(m.ring) < m.logCap {
		for _, s := range m.ring {
			out = append(out, s.entry)
		}
		return out
	}
	start := int(m.seq % uint64(m.logCap))
	for i := range m.ring {
		out = append(out, m.ring[(start+i)%m.logCap].entry)
	}
	return out
}

// ServeHTTP answers one request as described in the package doc. The
// counters, the log and the access log are updated before the answer is
// written, so a client that has its answer sees them up to date.
func (m *Mock) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	// Counted out before the answer leaves: net/http sends a small body
	// when the handler returns, so a client never holds an answer while
	// its request still counts.
	n := m.inFlight.Add(1)
	defer m.inFlight.Add(-1)
	for most := m.maxInFlight.Load(); n > most && !m.maxInFlight.CompareAndSwap(most, n); most = m.maxInFlight.Load() {
	}
	out := m.serve(w, r, int(n))
	if out.fault != nil {
		m.serveFault(w, r, start, out.seq, out.hash, out.fault, out.body, int(n))
		return
	}
	m.access(start, out.status, out.hash, int(n))
	if out.status == StatusClientClosed {
		return // nobody is listening
	}
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	switch out.status {
	case http.StatusMethodNotAllowed:
		h.Set("Allow", http.MethodPost)
	case http.StatusTooManyRequests:
		h.Set("Retry-After", out.retryAfter)
	}
	w.WriteHeader(out.status)
	_, _ = w.Write(out.body)
}

// outcome is what serve decided: the status, the JSON body and the request's
// preset hash when the body got far enough to have one.
type outcome struct {
	status     int
	body       []byte
	hash       string
	retryAfter string // a 429's Retry-After
	fault      *fault // set: serveFault writes the answer (body) its way
	seq        uint64 // the log entry, with fault
}

func failure(status int, msg, hash string) outcome {
	return outcome{status: status, body: errorBody(status, msg), hash: hash}
}

// serve checks r and decides its answer; it writes nothing to w (which only
// the body size limit uses).
func (m *Mock) serve(w http.ResponseWriter, r *http.Request, inFlight int) outcome {
	if r.URL.Path != schema.LaaSChatPath {
		return failure(http.StatusNotFound, "no route for "+r.URL.Path, "")
	}
	if r.Method != http.MethodPost {
		return failure(http.StatusMethodNotAllowed, "method "+r.Method+" is not allowed; use POST", "")
	}
	if msg := m.authProblem(r); msg != "" {
		return failure(http.StatusUnauthorized, msg, "")
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, m.maxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return failure(http.StatusRequestEntityTooLarge, fmt.Sprintf("request body exceeds %d bytes", tooBig.Limit), "")
		}
		return failure(http.StatusBadRequest, "could not read the request body", "")
	}
	req, msg := parseRequest(body)
	if msg != "" {
		return failure(http.StatusBadRequest, msg, req.Hash)
	}
	lastUser := lastUserText(req.Messages)
	f, msg := parseFault(lastUser)
	if msg != "" {
		return failure(http.StatusBadRequest, msg, req.Hash)
	}

	m.calls.Add(1)
	seq := m.record(Entry{Time: time.Now(), Hash: req.Hash, LastUser: lastUser, InFlight: inFlight})
	if f != nil {
		switch {
		case f.status == 0:
			return outcome{body: mustJSON(m.answer(body, req, lastUser)), hash: req.Hash, fault: f, seq: seq}
		case m.statusApplies(f, body):
			m.finish(seq, f.status)
			out := failure(f.status, "status injected by a "+FaultPrefix+"status directive", req.Hash)
			out.retryAfter = f.retryAfter
			return out
		}
		// A counted status used up: handled as a request without
		// directives.
	}
	status := m.inject()
	if m.cfg.Latency > 0 {
		t := time.NewTimer(m.cfg.Latency)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			m.finish(seq, StatusClientClosed)
			return outcome{status: StatusClientClosed, hash: req.Hash}
		}
	}
	var out outcome
	switch status {
	case http.StatusTooManyRequests:
		out = failure(status, "rate limit exceeded (injected by laasmock)", req.Hash)
		out.retryAfter = "1"
	case http.StatusInternalServerError:
		out = failure(status, "internal error (injected by laasmock)", req.Hash)
	default:
		out = outcome{status: http.StatusOK, body: mustJSON(m.answer(body, req, lastUser)), hash: req.Hash}
		m.served.Add(1)
	}
	m.finish(seq, status)
	return out
}

// authProblem returns why r's credentials are refused, or "". The message
// never contains a header value.
func (m *Mock) authProblem(r *http.Request) string {
	for _, h := range []struct{ name, want string }{
		{schema.LaaSHeaderProject, m.cfg.ProjectCode},
		{schema.LaaSHeaderAPIKey, m.cfg.APIKey},
	} {
		got := r.Header.Get(h.name)
		switch {
		case got == "":
			return "missing " + h.name + " header"
		case h.want != "" && got != h.want:
			return "invalid " + h.name + " header"
		}
	}
	return ""
}

// request is the part of a LaaS request body the mock reads. Messages use
// schema.Message so content may be a string or parts, as LaaS accepts both.
type request struct {
	Hash     string            `json:"hash"`
	Params   map[string]string `json:"params"`
	Model    string            `json:"model"`
	Messages []schema.Message  `json:"messages"`
}

// parseRequest decodes and checks body; msg is non-empty when it is refused.
func parseRequest(body []byte) (req request, msg string) {
	if err := json.Unmarshal(body, &req); err != nil {
		return req, "request body is not a valid LaaS request: " + err.Error()
	}
	switch {
	case req.Hash == "":
		return req, "missing hash"
	case len(req.Messages) == 0:
		return req, "messages must hold at least one message"
	}
	for i, m := range req.Messages {
		switch m.Role {
		case "system", "user", "assistant":
		default:
			return req, fmt.Sprintf("messages[%d] has role %q; only system, user and assistant are allowed", i, m.Role)
		}
	}
	return req, ""
}

// inject draws the request's fate: 429, 500, or 200 for an answer.
func (m *Mock) inject() int {
	if m.cfg.Rate429 == 0 && m.cfg.Rate500 == 0 {
		return http.StatusOK
	}
	m.rngMu.Lock()
	p := m.rng.Float64()
	m.rngMu.Unlock()
	switch {
	case p < m.cfg.Rate429:
		return http.StatusTooManyRequests
	case p < m.cfg.Rate429+m.cfg.Rate500:
		return http.StatusInternalServerError
	}
	return http.StatusOK
}

// record appends e to the log and returns its sequence number.
func (m *Mock) record(e Entry) uint64 {
	m.logMu.Lock()
	defer m.logMu.Unlock()
	seq := m.seq
	m.seq++
	s := logSlot{seq: seq, entry: e}
	if len(m.ring) < m.logCap {
		m.ring = append(m.ring, s)
	} else {
		m.ring[seq%uint64(m.logCap)] = s
	}
	return seq
}

// finish sets the status of entry seq, unless it has been dropped already.
func (m *Mock) finish(seq uint64, status int) {
	m.logMu.Lock()
	defer m.logMu.Unlock()
	if i := seq % uint64(m.logCap); int(i) < len(m.ring) && m.ring[i].seq == seq {
		m.ring[i].entry.Status = status
	}
}

// access writes one access-log line.
func (m *Mock) access(start time.Time, status int, hash string, inFlight int) {
	if m.cfg.AccessLog == nil {
		return
	}
	line, err := json.Marshal(struct {
		Time        time.Time `json:"time"`
		Status      int       `json:"status"`
		Hash        string    `json:"hash"`
		LatencyMs   float64   `json:"latency_ms"`
		InFlight    int       `json:"in_flight"`
		MaxInFlight int64     `json:"max_in_flight"`
	}{start.UTC(), status, hash, float64(time.Since(start).Microseconds()) / 1000, inFlight, m.maxInFlight.Load()})
	if err != nil {
		return
	}
	m.accessMu.Lock()
	defer m.accessMu.Unlock()
	_, _ = m.cfg.AccessLog.Write(append(line, '\n'))
}

// MessageText returns the text of a message as the package doc defines it.
func MessageText(c schema.Content) string {
	if c.Parts == nil {
		return c.Text
	}
	texts := make([]string, len(c.Parts))
	for i, p := range c.Parts {
		switch p.Type {
		case "text":
			texts[i] = p.Text
		case "image_url":
			texts[i] = placeholder("image", p.ImageURL)
		case "document":
			texts[i] = placeholder("document", p.DocumentURL)
		}
	}
	return strings.Join(texts, " ")
}

// placeholder is what an image or document part contributes to a message's
// text: "[<kind> sha256:<digest>]" for a base64 data URL, "[<kind>
// invalid-base64]" for a data URL whose data does not decode, "[<kind>
// <url>]" for any other URL, "[<kind>]" for none.
func placeholder(kind string, ref *schema.URLRef) string {
	if ref == nil || ref.URL == "" {
		return "[" + kind + "]"
	}
	u := ref.URL
	if len(u) < 5 || !strings.EqualFold(u[:5], "data:") {
		return "[" + kind + " " + u + "]"
	}
	header, payload, _ := strings.Cut(u[5:], ",")
	data, err := base64.StdEncoding.DecodeString(payload)
	if err != nil || !strings.HasSuffix(strings.ToLower(header), ";base64") {
		return "[" + kind + " invalid-base64]"
	}
	return "[" + kind + " sha256:" + Digest(data) + "]"
}

// Digest returns the first 16 hex digits of the SHA-256 of data: how the
// answer names the bytes of an image or document it received.
func Digest(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])[:16]
}

func lastUserText(msgs []schema.Message) string {
	for i := len(msgs) - 1; i >= 0; i-- {
		if msgs[i].Role == "user" {
			return MessageText(msgs[i].Content)
		}
	}
	return ""
}

// Answer shapes. The documented shape and the wild one differ in content,
// created, object and usage; see the package doc.
type (
	answer struct {
		ID        string         `json:"id"`
		Object    string         `json:"object"`
		Created   int64          `json:"created"`
		Model     string         `json:"model"`
		Choices   []answerChoice `json:"choices"`
		Usage     any            `json:"usage"`
		SessionID string         `json:"session_id,omitempty"`
	}
	answerChoice struct {
		Index        int           `json:"index"`
		Message      answerMessage `json:"message"`
		FinishReason string        `json:"finish_reason"`
	}
	answerMessage struct {
		Role      string          `json:"role"`
		Content   any             `json:"content"`
		ToolCalls json.RawMessage `json:"tool_calls,omitempty"`
	}
	openAIUsage struct {
		PromptTokens     int `json:"prompt_tokens"`
		CompletionTokens int `json:"completion_tokens"`
		TotalTokens      int `json:"total_tokens"`
	}
	anthropicUsage struct {
		InputTokens  int `json:"input_tokens"`
		OutputTokens int `json:"output_tokens"`
	}
	wildPart struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
)

// answer builds the 200 body for req, whose raw body is body.
func (m *Mock) answer(body []byte, req request, lastUser string) answer {
	sum := sha256.Sum256(body)
	id := "mock-" + hex.EncodeToString(sum[:])[:16]
	model := req.Model
	if model == "" {
		model = DefaultModel
	}
	content := "mock[" + req.Hash + "]: " + lastUser
	prompt := 0
	for _, msg := range req.Messages {
		prompt += len(strings.Fields(MessageText(msg.Content)))
	}
	completion := len(strings.Fields(content))

	a := answer{
		ID: id, Object: "chat.completion", Created: time.Now().Unix(), Model: model,
		Choices: []answerChoice{{Message: answerMessage{Role: "assistant", Content: content}, FinishReason: "stop"}},
		Usage:   openAIUsage{PromptTokens: prompt, CompletionTokens: completion, TotalTokens: prompt + completion},
	}
	if m.cfg.Wild {
		a.Object = "chat.completion.chunk"
		a.Created = time.Now().UnixMilli()
		a.SessionID = id
		a.Choices[0].Message.Content = []wildPart{{Type: "text", Text: content}}
		a.Choices[0].Message.ToolCalls = json.RawMessage("[]")
		a.Usage = anthropicUsage{InputTokens: prompt, OutputTokens: completion}
	}
	return a
}

// errorBody returns the mock's JSON error body.
func errorBody(status int, msg string) []byte {
	return mustJSON(struct {
		Status  int    `json:"status"`
		Error   string `json:"error"`
		Message string `json:"message"`
	}{status, http.StatusText(status), msg})
}

// mustJSON encodes v, which holds only plain structs, strings and numbers and
// so cannot fail to encode, followed by a newline.
func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("laasmock: encoding %T: %v", v, err))
	}
	return append(b, '\n')
}
