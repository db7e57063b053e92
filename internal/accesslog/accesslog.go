// Package accesslog writes laas-bridge's access log: one JSON line per
// request (msg "access"), from the gateway's doors (HTTP, NATS) and from
// the workers for jobs nobody waits for over HTTP (door "batch"). A line
// says who asked for what and how it went; it never holds a prompt, an
// answer, a key or its hash.
package accesslog

import (
	"context"
	"io"
	"log/slog"
	"time"

	"github.com/tidwall/gjson"

	"github.com/laas-bridge/laas-bridge/schema"
)

// Log writes access lines. A nil *Log writes nothing and costs nothing.
// Safe for concurrent use: each line is one Write on the underlying writer.
type Log struct {
	log *slog.Logger
}

// New writes access lines to w.
func New(w io.Writer) *Log {
	return &Log{log: slog.New(slog.NewJSONHandler(w, nil))}
}

// The door field of a line: where the request came in.
const (
	DoorHTTP  = "http"
	DoorNATS  = "nats"
	DoorBatch = "batch" // a job in a worker: async jobs, Batch API lines, direct producers, replays
)

// Line is one access line. String fields left "" are left out, as are the
// timing without Replied and the tokens without Usage.
type Line struct {
	Start     time.Time // the line's duration_ms runs from it to Write
	Door      string
	Method    string
	Path      string // the route pattern (or the NATS subject), never the raw URL
	RequestID string
	TraceID   string
	Key       string // the virtual key's alias; "" for the admin or an alias-less key
	Model     string // a catalogue alias
	Lane      string
	Status    int
	ErrorCode string
	Stream    bool
	BytesIn   int64
	BytesOut  int64
	Timing
	Tokens
}

// Timing is what a worker's reply says of where the time went; left out of
// the line unless Replied.
type Timing struct {
	Replied    bool
	QueueMs    int64
	UpstreamMs int64
	Attempts   int
}

// SetReply takes the timing of a worker's reply.
func (t *Timing) SetReply(r *schema.Reply) {
	t.Replied, t.QueueMs, t.UpstreamMs, t.Attempts = true, r.QueueMs, r.UpstreamMs, r.Attempts
}

// Tokens is the completion's usage; left out of the line unless Usage.
type Tokens struct {
	Usage            bool
	PromptTokens     int64
	CompletionTokens int64
}

// SetUsage takes u, when there is one.
func (t *Tokens) SetUsage(u *schema.Usage) {
	if u != nil {
		t.Usage, t.PromptTokens, t.CompletionTokens = true, int64(u.PromptTokens), int64(u.CompletionTokens)
	}
}

// SetUsageJSON reads the usage of a chat.completion's JSON without
// decoding the rest of it.
func (t *Tokens) SetUsageJSON(completion []byte) {
	u := gjson.GetBytes(completion, "usage")
	if u.IsObject() {
		t.Usage, t.PromptTokens, t.CompletionTokens = true, u.Get("prompt_tokens").Int(), u.Get("completion_tokens").Int()
	}
}

// Write logs a; nothing on a nil Log.
func (l *Log) Write(a *Line) {
	if l == nil {
		return
	}
	attrs := make([]slog.Attr, 0, 22)
	str := func(k, v string) {
		if v != "" {
			attrs = append(attrs, slog.String(k, v))
		}
	}
	str("request_id", a.RequestID)
	str("trace_id", a.TraceID)
	str("key", a.Key)
	str("model", a.Model)
	str("lane", a.Lane)
	str("door", a.Door)
	str("method", a.Method)
	str("path", a.Path)
	attrs = append(attrs, slog.Int("status", a.Status))
	str("error_code", a.ErrorCode)
	if a.Replied {
		attrs = append(attrs, slog.Int64("queue_ms", a.QueueMs), slog.Int64("upstream_ms", a.UpstreamMs), slog.Int("attempts", a.Attempts))
	}
	if a.Usage {
		attrs = append(attrs, slog.Int64("prompt_tokens", a.PromptTokens), slog.Int64("completion_tokens", a.CompletionTokens))
	}
	attrs = append(attrs,
		slog.Int64("bytes_in", a.BytesIn),
		slog.Int64("bytes_out", a.BytesOut),
		slog.Int64("duration_ms", time.Since(a.Start).Milliseconds()),
		slog.Bool("stream", a.Stream))
	l.log.LogAttrs(context.Background(), slog.LevelInfo, "access", attrs...)
}
