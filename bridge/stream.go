package bridge

import (
	"encoding/json"
	"errors"
	"net/http"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/labstack/echo/v4"

	"github.com/laas-bridge/laas-bridge/schema"
)

// maxPieceRunes is the most runes one content delta of a streamed answer
// holds. A word longer than this (or text without spaces, as Korean and
// Japanese often are) is cut on rune boundaries.
const maxPieceRunes = 16

// SSE framing.
const (
	sseData      = "data: "
	sseEnd       = "\n\n"
	sseKeepAlive = ": keep-alive\n\n"
	sseDone      = "data: [DONE]\n\n"
)

// streamAnswer answers a request made with "stream": true. LaaS does not
// stream, so the request is queued like any other; the caller is sent SSE
// comments every Config.KeepAlive while it waits, then the whole answer as
// OpenAI's chat.completion.chunk events, then "data: [DONE]".
//
// Until the first keep-alive nothing is written, so an error that arrives
// before it (a worker's 429, the deadline of a fast model) is returned and
// becomes a normal HTTP error. Once the stream has started the status is
// 200; an error then is sent as one {"error": {...}} event and the stream
// ends without [DONE], as OpenAI does.
func (g *Gateway) streamAnswer(c echo.Context, p *pending, opts schema.StreamOptions) error {
	s := newSSEWriter(c.Response())
	raw, err := g.awaitStreamed(c, s, p, nil)
	if err != nil {
		if callerGone(err) {
			return err
		}
		return g.streamFailed(c, s, err)
	}
	rep, err := g.decodeReply(c, raw) // the timing headers count only if not yet started
	if err != nil {
		return g.streamFailed(c, s, err)
	}
	if o := observed(c); o != nil {
		o.SetUsage(rep.Completion.Usage)
	}
	if err := s.completion(rep.Completion, p, opts.IncludeUsage); err != nil {
		return clientGone(err)
	}
	return nil
}

// awaitStreamed waits for the worker's raw reply to p while it sends the
// caller an SSE comment every Config.KeepAlive (begin, when set, writes
// the stream's first events before the first of them). It returns an
// error only when no reply will come: the caller went away (callerGone),
// the deadline passed or the gateway is shutting down.
func (g *Gateway) awaitStreamed(c echo.Context, s *sseWriter, p *pending, begin func() error) ([]byte, error) {
	ctx := c.Request().Context()
	deadline := time.NewTimer(time.Until(p.deadline))
	defer deadline.Stop()
	keepAlive := time.NewTicker(g.cfg.KeepAlive)
	defer keepAlive.Stop()
	for {
		select {
		case raw := <-p.answer:
			return raw, nil
		case <-ctx.Done():
			return nil, clientGone(ctx.Err())
		case <-deadline.C:
			return nil, p.expired()
		case <-g.closing:
			return nil, shuttingDown()
		case <-keepAlive.C:
			if begin != nil && !s.started {
				if err := begin(); err != nil {
					return nil, clientGone(err)
				}
			}
			if err := s.write(g.keepAliveComment(ctx, p)); err != nil {
				return nil, clientGone(err)
			}
		}
	}
}

// callerGone reports whether err is a caller that went away (499).
func callerGone(err error) bool {
	se, ok := errors.AsType[*schema.Error](err)
	return ok && se.Status == statusClientClosed
}

// streamFailed returns err for the HTTP error handler while nothing has been
// written; after that it logs err (the handler no longer can) and sends it
// as the stream's last event.
func (g *Gateway) streamFailed(c echo.Context, s *sseWriter, err error) error {
	if !s.started {
		return err
	}
	e := schema.AsError(err)
	g.observeStreamError(c, e)
	if werr := s.error(e); werr != nil {
		return clientGone(werr)
	}
	return nil
}

// observeStreamError records e, the error that ends a stream already
// started (its 200 sent), for the request's metrics and access line, and
// logs it when it is the bridge's fault (5xx): the HTTP error handler no
// longer sees it.
func (g *Gateway) observeStreamError(c echo.Context, e *schema.Error) {
	if o := observed(c); o != nil {
		o.errorCode = e.Code
	}
	if e.Status >= 500 {
		g.log.Error("stream failed", "request_id", c.Response().Header().Get(HeaderRequestID),
			"status", e.Status, "code", e.Code, "error", e.Message, "cause", e.Cause)
	}
}

// sseWriter writes one response's server-sent events through a buffer it
// reuses for every event, and flushes each event as it is written. Not safe
// for concurrent use.
type sseWriter struct {
	w       *echo.Response
	rc      *http.ResponseController
	buf     []byte
	started bool // the headers and at least one event were written
}

func newSSEWriter(w *echo.Response) *sseWriter {
	// The controller wraps the underlying writer, not echo's Response,
	// whose Flush drops the error that says the caller went away.
	return &sseWriter{w: w, rc: http.NewResponseController(w.Writer), buf: make([]byte, 0, 512)}
}

// start commits the 200 and the event-stream headers.
func (s *sseWriter) start() {
	if s.started {
		return
	}
	s.started = true
	h := s.w.Header()
	h.Set(echo.HeaderContentType, "text/event-stream")
	h.Set(echo.HeaderCacheControl, "no-cache")
	h.Set(echo.HeaderConnection, "keep-alive") // net/http drops it on HTTP/2, where it is not allowed
	h.Set("X-Accel-Buffering", "no")           // nginx: pass events on as they come
	s.w.WriteHeader(http.StatusOK)
}

// write sends text as it is and flushes it.
func (s *sseWriter) write(text string) error {
	s.buf = append(s.buf[:0], text...)
	return s.flush()
}

// flush sends the buffer and flushes it to the caller.
func (s *sseWriter) flush() error {
	s.start()
	if _, err := s.w.Write(s.buf); err != nil {
		return err
	}
	return s.rc.Flush()
}

// chunk sends one chat.completion.chunk event.
func (s *sseWriter) chunk(c *schema.ChatCompletionChunk) error {
	s.buf = append(s.buf[:0], sseData...)
	s.buf = c.AppendJSON(s.buf)
	s.buf = append(s.buf, sseEnd...)
	return s.flush()
}

// error sends OpenAI's error body as an event.
func (s *sseWriter) error(e *schema.Error) error {
	body, err := json.Marshal(e.Body())
	if err != nil {
		return err
	}
	s.buf = append(s.buf[:0], sseData...)
	s.buf = append(s.buf, body...)
	s.buf = append(s.buf, sseEnd...)
	return s.flush()
}

// completion sends cc as OpenAI streams a completion: per choice, a delta
// with the role and empty content, the content cut into pieces, and an
// empty delta with the finish reason; then, when the caller asked for it, a
// chunk with the usage and no choices; then [DONE].
func (s *sseWriter) completion(cc *schema.ChatCompletion, p *pending, includeUsage bool) error {
	chunk := schema.ChatCompletionChunk{
		ID: cc.ID, Object: schema.ObjectChunk, Created: cc.Created, Model: p.model.Alias,
		IncludeUsage: includeUsage,
	}
	if chunk.ID == "" {
		chunk.ID = "chatcmpl-" + p.id
	}
	if chunk.Created == 0 {
		chunk.Created = time.Now().Unix()
	}
	var (
		choice  [1]schema.ChunkChoice
		content string // the delta's content; pieces of the answer are substrings
		finish  string
	)
	chunk.Choices = choice[:]
	for i := range cc.Choices {
		ch := &cc.Choices[i]
		role := ch.Message.Role
		if role == "" {
			role = "assistant"
		}
		content = ""
		choice[0] = schema.ChunkChoice{Index: ch.Index, Delta: schema.ChunkDelta{Role: role, Content: &content}}
		if err := s.chunk(&chunk); err != nil {
			return err
		}
		choice[0].Delta.Role = ""
		for text := ch.Message.Content; text != ""; {
			n := nextPiece(text, maxPieceRunes)
			content, text = text[:n], text[n:]
			if err := s.chunk(&chunk); err != nil {
				return err
			}
		}
		finish = ch.FinishReason
		if finish == "" {
			finish = "stop"
		}
		choice[0].Delta = schema.ChunkDelta{}
		choice[0].FinishReason = &finish
		if err := s.chunk(&chunk); err != nil {
			return err
		}
	}
	if includeUsage {
		chunk.Choices = choice[:0] // "choices": []
		chunk.Usage = cc.Usage
		if chunk.Usage == nil { // LaaS gave no counts; clients expect the chunk
			chunk.Usage = &schema.Usage{}
		}
		if err := s.chunk(&chunk); err != nil {
			return err
		}
	}
	return s.write(sseDone)
}

// nextPiece returns the length in bytes of the first piece of s that a
// streamed answer sends as one content delta: a word and the whitespace
// after it (whitespace at the very start belongs to the first word), or the
// first maxRunes runes of a longer piece. Pieces end on rune boundaries, so
// every piece of valid UTF-8 is valid UTF-8, and the pieces of s, in order,
// make up s exactly. It returns 0 only for an empty s.
func nextPiece(s string, maxRunes int) int {
	maxRunes = max(maxRunes, 1)
	runes := 0
	inWord, afterWord := false, false
	for i := 0; i < len(s); {
		r, size := rune(s[i]), 1
		if r >= utf8.RuneSelf {
			r, size = utf8.DecodeRuneInString(s[i:])
		}
		space := unicode.IsSpace(r)
		if (afterWord && !space) || runes == maxRunes {
			return i
		}
		switch {
		case !space:
			inWord = true
		case inWord:
			afterWord = true
		}
		runes++
		i += size
	}
	return len(s)
}
