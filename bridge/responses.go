package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/laas-bridge/laas-bridge/admission"
	"github.com/laas-bridge/laas-bridge/queue/jobstore"
	"github.com/laas-bridge/laas-bridge/schema"
)

// OpenAI's Responses API, on the chat path: a Responses request is
// translated to the chat request that runs it (schema.ResponsesRequest.
// ChatRequest), which the admission core checks and queues, the response
// cache and the idempotency store keep, and the workers run, as any chat
// request; the chat completion is then answered as a response object
// (schema.NewResponse), or streamed as Responses events.
//
// A stored response ("store" true, OpenAI's default) is kept in the KV
// bucket schema.BucketResponses (responsestore.go) for GET, DELETE and
// previous_response_id. A background response is a job (the jobs API's
// store): its record is written before it is queued, and its status and
// answer are its job's until the record has them.

// responses answers POST /v1/responses.
func (g *Gateway) responses(c echo.Context) error {
	rr, chatBody, rec, releaseBody, err := g.translateResponse(c)
	if err != nil {
		return err
	}
	defer releaseBody()
	if rr.Background {
		return g.startBackground(c, rr, rec, chatBody, releaseBody)
	}
	created := time.Now().Unix()
	if rec != nil {
		created = rec.CreatedAt
	}
	req, err := g.request(c.Response().Header().Get(HeaderRequestID), admission.DoorChat, c.Request().Header, chatBody)
	if err != nil {
		return err
	}
	req.Caller = callerOf(c) // not Streamable: the chat request never streams
	ck, obs, err := g.checkRequest(c, req)
	if err != nil {
		return err
	}
	p, replayed, err := g.admitCached(c, ck)
	if err != nil {
		return err
	}
	answerKey := ck.AnswerKey
	chatBody, req, ck = nil, admission.Request{}, nil
	releaseBody() // queued (or answered): hold none of it while waiting
	return g.answerWaiting(c, p, obs, replayed, answerKey, func() error {
		if rr.Stream {
			return g.streamResponse(c, p, rr, rec, created)
		}
		resp, err := g.awaitResponse(c, p, rr, rec, created)
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, resp)
	})
}

// translateResponse reads and decodes a Responses request, and returns
// it with the chat request that runs it (after the previous response's
// conversation, with previous_response_id), its record when it is to be
// stored, and the release of the body's claim on the bodies in memory,
// held until the chat request is queued. The request keeps what the
// answer echoes, not its input.
func (g *Gateway) translateResponse(c echo.Context) (rr *schema.ResponsesRequest, chatBody []byte, rec *schema.StoredResponse, releaseBody func(), err error) {
	body, release, err := g.readBody(c)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	defer func() {
		if err != nil { // the results are cleared by then: release is the claim's
			release()
		}
	}()
	rr, err = schema.DecodeResponsesRequest(body)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	var history []schema.Message
	if rr.PreviousResponseID != "" {
		if history, err = g.previousTurn(c, rr.PreviousResponseID); err != nil {
			return nil, nil, nil, nil, err
		}
	}
	chat, err := rr.ChatRequest(history)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	chatBody, err = json.Marshal(chat)
	if err != nil {
		return nil, nil, nil, nil, fmt.Errorf("encode the chat request of a response: %w", err)
	}
	switch {
	case !rr.Stores():
	case !g.stored.ok() && rr.Background:
		return nil, nil, nil, nil, g.stored.unavailable(nil)
	case !g.stored.ok():
		rr.Store = new(bool) // answered, and said not to be kept
	default:
		rec = &schema.StoredResponse{ID: c.Response().Header().Get(HeaderRequestID), Owner: callerOf(c).Owner(),
			CreatedAt: time.Now().Unix(), Background: rr.Background, Conversation: rr.Conversation(chat)}
	}
	rr.Input = nil // what the answer echoes is kept; the input is on its way
	if rec != nil {
		rec.Request = *rr
	}
	return rr, chatBody, rec, release, nil
}

// awaitResponse waits for p's reply and makes it the response to rr,
// stored (rec) when asked.
func (g *Gateway) awaitResponse(c echo.Context, p *pending, rr *schema.ResponsesRequest, rec *schema.StoredResponse, created int64) (*schema.Response, error) {
	rep, err := g.awaitReply(c, p)
	if err != nil {
		return nil, err
	}
	return g.answered(c, p.id, rr, rec, created, rep.Completion)
}

// answered is the response to rr made of the completion the worker
// answered with; a stored one is kept (rec) before it is answered, so the
// next turn finds it. A response that could not be kept is answered all
// the same, with "store": false.
func (g *Gateway) answered(c echo.Context, id string, rr *schema.ResponsesRequest, rec *schema.StoredResponse, created int64, completion json.RawMessage) (*schema.Response, error) {
	var cc schema.ChatCompletion
	if err := json.Unmarshal(completion, &cc); err != nil {
		return nil, fmt.Errorf("decode reply's completion: %w", err)
	}
	resp := schema.NewResponse(id, rr, &cc)
	resp.CreatedAt = created
	if rec != nil {
		rec.Response = resp
		if err := g.stored.put(c.Request().Context(), rec); err != nil {
			g.log.Warn("could not keep a response; answered without storing it", "request_id", id, "error", err)
			resp.Store = false
		}
	}
	return resp, nil
}

// streamResponse answers a streamed response: its first events
// (response.created, response.in_progress) once the stream starts (the
// first keep-alive, as a streamed chat completion starts), then SSE
// comments while it is queued, then the answer's events. An error before
// the stream starts is an HTTP error; after, a failed answer is
// response.failed and a reply that will not come (deadline, shutdown) an
// "error" event.
func (g *Gateway) streamResponse(c echo.Context, p *pending, rr *schema.ResponsesRequest, rec *schema.StoredResponse, created int64) error {
	s := newSSEWriter(c.Response())
	w := &responseEvents{s: s, start: schema.ResponseShell(p.id, rr, created, schema.ResponseInProgress)}
	raw, err := g.awaitStreamed(c, s, p, w.head)
	if err != nil {
		if callerGone(err) || !s.started {
			return err
		}
		return g.broken(c, w, schema.AsError(err))
	}
	rep, err := g.decodeRawReply(c, raw)
	var end *schema.Response
	if err == nil {
		if o := observed(c); o != nil && g.access != nil {
			o.SetUsageJSON(rep.Completion)
		}
		end, err = g.answered(c, p.id, rr, rec, created, rep.Completion)
	}
	if err != nil {
		if !s.started {
			return err
		}
		e := schema.AsError(err)
		g.observeStreamError(c, e)
		end = schema.ResponseShell(p.id, rr, created, "").Fail(e)
	}
	return w.finish(end)
}

// responseEvents writes a response's events (schema.ResponseEvents) to an
// event stream, each once, from sequence number sent on.
type responseEvents struct {
	s     *sseWriter
	start *schema.Response
	sent  int // events below this sequence number are sent (or skipped)
}

// head sends the events up to response.in_progress.
func (w *responseEvents) head() error {
	return w.send(schema.ResponseEvents(w.start, nil, pieceOf))
}

// finish sends the rest, up to the end of the ended response end.
func (w *responseEvents) finish(end *schema.Response) error {
	if err := w.send(schema.ResponseEvents(w.start, end, pieceOf)); err != nil {
		return clientGone(err)
	}
	return nil
}

// broken ends a stream cut off from its response (the gateway is
// shutting down, the caller's deadline passed) with an "error" event. It
// bears the number of the last event sent, so that a resume after the
// last number seen misses nothing. The stream's request is observed as
// failed (and logged, for a 5xx), as streamFailed does for chat.
func (g *Gateway) broken(c echo.Context, w *responseEvents, e *schema.Error) error {
	g.observeStreamError(c, e)
	ev := schema.ErrorEvent(w.sent-1, e.Code, e.Message)
	if err := w.write(&ev); err != nil {
		return clientGone(err)
	}
	return nil
}

func (w *responseEvents) send(evs []schema.ResponseEvent) error {
	for ; w.sent < len(evs); w.sent++ {
		if err := w.write(&evs[w.sent]); err != nil {
			return err
		}
	}
	w.s.start() // a resumed stream past its last event still answers 200
	return nil
}

// write sends one event as OpenAI does: its type as the SSE event name.
func (w *responseEvents) write(ev *schema.ResponseEvent) error {
	data, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	w.s.buf = append(append(append(w.s.buf[:0], "event: "...), ev.Type...), '\n')
	w.s.buf = append(append(append(w.s.buf, sseData...), data...), sseEnd...)
	return w.s.flush()
}

// pieceOf cuts a streamed response's text as a streamed chat completion's.
func pieceOf(s string) int { return nextPiece(s, maxPieceRunes) }

// startBackground queues a background response as a job and answers it
// queued at once (streamed, when asked: its events as the job goes).
// Its record is kept before the job is queued, so every answer names a
// response that GET finds; a job that could not be queued takes its
// record with it.
func (g *Gateway) startBackground(c echo.Context, rr *schema.ResponsesRequest, rec *schema.StoredResponse, chatBody []byte, releaseBody func()) error {
	// The headers as for a waiting caller's request (timeout, lane:
	// interactive unless asked or flex, queue wait), but a job: nobody
	// waits on a reply subject, its id is its key.
	req, err := g.request(rec.ID, admission.DoorJobs, c.Request().Header, chatBody)
	if err != nil {
		return err
	}
	req.Caller, req.ReplyTo, req.IdempotencyKey, req.Job = callerOf(c), "", "", &admission.Job{Record: true}
	ck, _, err := g.checkRequest(c, req)
	if err != nil {
		return err
	}
	if rr.Stream { // its watch slot before it is queued: a refusal queues nothing
		release, err := g.streamSlot()
		if err != nil {
			return err
		}
		defer release()
	}
	ctx := c.Request().Context()
	if err := g.stored.put(ctx, rec); err != nil {
		return g.stored.unavailable(err)
	}
	if _, err := g.core.Admit(ctx, ck); err != nil {
		g.stored.forget(rec.ID)
		return err
	}
	releaseBody()
	g.log.Info("background response queued", "request_id", rec.ID, "model", ck.Model.Alias)
	if rr.Stream {
		return g.streamStoredHeld(c, rec, -1)
	}
	return c.JSON(http.StatusOK, schema.ResponseShell(rec.ID, rr, rec.CreatedAt, schema.ResponseQueued))
}

// streamStored streams background response rec's events after sequence
// number after (-1: all of them): those up to in_progress at once, then
// SSE comments until its job ends, then the rest. A gateway that shuts
// down ends the stream with an "error" event; the response goes on, and
// GET ?stream=true&starting_after= resumes it on any gateway.
func (g *Gateway) streamStored(c echo.Context, rec *schema.StoredResponse, after int) error {
	release, err := g.streamSlot()
	if err != nil {
		return err
	}
	defer release()
	return g.streamStoredHeld(c, rec, after)
}

// streamSlot takes one of Config.MaxJobWatchers for a stream of a
// background response (it holds a watch on the jobs bucket); the caller
// gives it back with release.
func (g *Gateway) streamSlot() (release func(), err error) {
	if !g.watch() {
		g.metrics.refused(limitJobWatchers)
		return nil, overloaded("streams of background responses")
	}
	return func() { g.watchers.Add(-1) }, nil
}

// streamStoredHeld is streamStored with its watch slot taken.
func (g *Gateway) streamStoredHeld(c echo.Context, rec *schema.StoredResponse, after int) error {
	ctx := c.Request().Context()
	w := &responseEvents{s: newSSEWriter(c.Response()), start: schema.ResponseShell(rec.ID, &rec.Request, rec.CreatedAt, schema.ResponseQueued), sent: after + 1}
	if err := w.head(); err != nil {
		return clientGone(err)
	}
	end, err := g.awaitStored(c, w.s, rec)
	if err != nil {
		if callerGone(err) {
			return err
		}
		e := *schema.AsError(err)
		if e.Code == CodeShuttingDown { // the response goes on: follow it, do not ask again
			e.Message = fmt.Sprintf("This gateway is shutting down; the response goes on: resume its stream with GET /v1/responses/resp_%s?stream=true&starting_after=%d.", rec.ID, w.sent-1)
		}
		return g.broken(c, w, &e)
	}
	if ctx.Err() != nil {
		return clientGone(ctx.Err())
	}
	return w.finish(end)
}

// awaitStored waits for background response rec's job to end, sending s
// a keep-alive comment every Config.KeepAlive, and returns the ended
// response.
func (g *Gateway) awaitStored(c echo.Context, s *sseWriter, rec *schema.StoredResponse) (*schema.Response, error) {
	ctx := c.Request().Context()
	keepAlive := time.NewTicker(g.cfg.KeepAlive)
	defer keepAlive.Stop()
	var watched time.Time // when the last watch began
	for {
		resp, err := g.responseOf(ctx, rec)
		if err != nil || resp.Final() {
			return resp, err
		}
		// A watch that ended early without the job's end (its watch
		// failed) is not begun again at once.
		if early := time.Until(watched.Add(100 * time.Millisecond)); early > 0 {
			select {
			case <-time.After(early):
			case <-ctx.Done():
				return nil, clientGone(ctx.Err())
			}
		}
		watched = time.Now()
		wctx, cancel := context.WithCancel(ctx)
		ended := make(chan struct{})
		go func() {
			defer close(ended)
			_, _, _ = g.jobs.Wait(wctx, rec.ID) // ends when the job does, or wctx
		}()
	wait:
		for {
			select {
			case <-ended:
				break wait
			case <-ctx.Done():
				cancel()
				return nil, clientGone(ctx.Err())
			case <-g.stopping:
				cancel()
				return nil, shuttingDown()
			case <-keepAlive.C:
				if err := s.write(sseKeepAlive); err != nil {
					cancel()
					return nil, clientGone(err)
				}
			}
		}
		cancel()
	}
}

// neverQueuedAfter is how long after its creation a background response
// whose job the job store does not know is still taken as on its way
// (its record is written just before the job is queued).
const neverQueuedAfter = time.Minute

// responseOf is rec as it stands: its ended response, else (a background
// response) its job's status, or its answer once it has one, which is
// then kept in rec. A job final without a result kept, or unknown to the
// job store a minute after the response was made, is a failed response:
// it never ends otherwise.
func (g *Gateway) responseOf(ctx context.Context, rec *schema.StoredResponse) (*schema.Response, error) {
	if rec.Response != nil {
		return rec.Response, nil
	}
	st, res, err := g.jobs.Get(ctx, rec.ID)
	shell := schema.ResponseShell(rec.ID, &rec.Request, rec.CreatedAt, schema.ResponseQueued)
	switch {
	case errors.Is(err, jobstore.ErrNotFound) && time.Since(time.Unix(rec.CreatedAt, 0)) < neverQueuedAfter:
		return shell, nil // kept, and its job not recorded yet
	case errors.Is(err, jobstore.ErrNotFound): // its gateway stopped between the two, or its job is gone
		return shell.Fail(&schema.Error{Code: schema.CodeQueueUnavailable, Message: "The response's job was never queued, or is no longer kept; send the request again."}), nil
	case err != nil:
		return nil, g.stored.unavailable(err)
	}
	var resp *schema.Response
	switch {
	case res != nil && res.Status == schema.JobSucceeded && res.Completion != nil:
		resp = schema.NewResponse(rec.ID, &rec.Request, res.Completion)
		resp.CreatedAt = rec.CreatedAt
	case res != nil:
		e := res.Err()
		if e == nil {
			e = &schema.Error{Code: schema.CodeUpstreamError, Message: "The job ended without an answer."}
		}
		resp = shell.Fail(e)
	case st.Status == schema.JobCancelled:
		// Cancelled; its worker may still write what it answered, which
		// is what is kept.
		return shell.Fail(schema.JobCancelledError()), nil
	case st.Status.Final(): // its result is no longer kept (the results stream's bound)
		return shell.Fail(&schema.Error{Code: schema.CodeUpstreamError, Message: "The response ended, but its answer is no longer kept."}), nil
	case st.Status == schema.JobRunning:
		shell.Status = schema.ResponseInProgress
		return shell, nil
	default:
		return shell, nil
	}
	rec.Response = resp
	// Kept with the record, unless it was deleted or kept meanwhile;
	// else the job's result is read again next time.
	if err := g.stored.put(ctx, rec); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		g.log.Warn("could not keep a background response's answer", "request_id", rec.ID, "error", err)
	}
	return resp, nil
}

// getResponse answers GET /v1/responses/{id}: the response as it stands;
// with ?stream=true a background response's events, after
// ?starting_after= when given.
func (g *Gateway) getResponse(c echo.Context) error {
	rec, err := g.ownResponse(c, c.Param("id"))
	if err != nil {
		return err
	}
	if streamAsked(c) {
		if !rec.Background {
			return schema.Invalid("stream", schema.CodeInvalidValue, "Only a background response can be streamed again; GET it without 'stream'.")
		}
		after := -1
		if v := c.QueryParam("starting_after"); v != "" {
			if after, err = strconv.Atoi(v); err != nil || after < -1 {
				return schema.Invalid("starting_after", schema.CodeInvalidValue, "'starting_after' must be an event's sequence number, got %q.", v)
			}
		}
		return g.streamStored(c, rec, after)
	}
	resp, err := g.responseOf(c.Request().Context(), rec)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, resp)
}

// streamAsked reports whether a GET asks for a stream: ?stream=true, or
// a JSON body {"stream": true}, which the OpenAI SDKs send on a GET.
func streamAsked(c echo.Context) bool {
	if stream, err := strconv.ParseBool(c.QueryParam("stream")); err == nil {
		return stream
	}
	body, err := io.ReadAll(io.LimitReader(c.Request().Body, 4<<10))
	if err != nil || len(body) == 0 {
		return false
	}
	var b struct {
		Stream bool `json:"stream"`
	}
	return json.Unmarshal(body, &b) == nil && b.Stream
}

// cancelResponse answers POST /v1/responses/{id}/cancel: a background
// response not ended yet is cancelled (its job: never run, or its LaaS
// call aborted); it answers the response as it then stands.
func (g *Gateway) cancelResponse(c echo.Context) error {
	rec, err := g.ownResponse(c, c.Param("id"))
	if err != nil {
		return err
	}
	if !rec.Background {
		return schema.Invalid("", schema.CodeInvalidValue, "Only a background response can be cancelled.")
	}
	ctx := c.Request().Context()
	if rec.Response == nil {
		if _, err := g.jobs.Cancel(ctx, rec.ID); err != nil && !errors.Is(err, jobstore.ErrNotFound) {
			return g.stored.unavailable(err)
		}
	}
	resp, err := g.responseOf(ctx, rec)
	if err != nil {
		return err
	}
	g.log.Info("response cancel requested", "request_id", c.Response().Header().Get(HeaderRequestID), "response_id", resp.ID, "status", resp.Status)
	return c.JSON(http.StatusOK, resp)
}

// deleteResponse answers DELETE /v1/responses/{id}: the record goes (and
// the job of a background response not ended yet is cancelled, since
// nobody can fetch its answer any more).
func (g *Gateway) deleteResponse(c echo.Context) error {
	rec, err := g.ownResponse(c, c.Param("id"))
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	if rec.Background && rec.Response == nil {
		if _, err := g.jobs.Cancel(ctx, rec.ID); err != nil && !errors.Is(err, jobstore.ErrNotFound) {
			return g.stored.unavailable(err)
		}
	}
	if err := g.stored.delete(ctx, rec.ID); err != nil {
		return g.stored.unavailable(err)
	}
	return c.JSON(http.StatusOK, map[string]any{"id": "resp_" + rec.ID, "object": "response", "deleted": true})
}

// previousTurn is what a request with previous_response_id continues: the
// conversation of that response (the caller's own, ended with an answer)
// and its answer as an assistant message.
func (g *Gateway) previousTurn(c echo.Context, respID string) ([]schema.Message, error) {
	rec, err := g.ownResponse(c, respID)
	if se, ok := errors.AsType[*schema.Error](err); ok && se.Code == CodeResponseNotFound {
		return nil, schema.Invalid("previous_response_id", "previous_response_not_found",
			"Previous response with id %q not found: it was never stored (\"store\": false), was deleted, or is older than the bridge keeps responses.", respID)
	}
	if err != nil {
		return nil, err
	}
	resp, err := g.responseOf(c.Request().Context(), rec)
	if err != nil {
		return nil, err
	}
	switch {
	case resp.Status != schema.ResponseCompleted && resp.Status != schema.ResponseIncomplete:
		return nil, schema.Invalid("previous_response_id", schema.CodeInvalidValue,
			"Previous response %q is %s; only a response that has answered can be continued.", respID, resp.Status)
	case rec.ConversationDropped:
		return nil, &schema.Error{Status: http.StatusBadRequest, Type: schema.TypeInvalidRequest, Code: schema.CodeUnsupported, Param: "previous_response_id",
			Message: fmt.Sprintf("Previous response %q was too large to keep its conversation (over %d KiB with its images and files); send the whole conversation in 'input'.", respID, maxStoredResponse>>10)}
	}
	return append(rec.Conversation[:len(rec.Conversation):len(rec.Conversation)],
		schema.Message{Role: "assistant", Content: schema.Content{Text: resp.OutputText()}}), nil
}

// CodeResponseNotFound is the error code of an unknown response id.
const CodeResponseNotFound = "response_not_found"

// ownResponse is stored response respID ("resp_<request id>") when the
// caller sees it (keys.Caller.Sees); another's is not found, as a missing
// one.
func (g *Gateway) ownResponse(c echo.Context, respID string) (*schema.StoredResponse, error) {
	notFound := &schema.Error{Status: http.StatusNotFound, Type: schema.TypeInvalidRequest, Code: CodeResponseNotFound, Param: "response_id",
		Message: fmt.Sprintf("No response with id %q: it was never stored (\"store\": false), was deleted, or is older than the bridge keeps responses.", respID)}
	id, ok := strings.CutPrefix(respID, "resp_")
	if !ok || !schema.ValidRequestID(id) {
		return nil, notFound
	}
	if !g.stored.ok() {
		return nil, g.stored.unavailable(nil)
	}
	rec, err := g.stored.get(c.Request().Context(), id)
	switch {
	case errors.Is(err, errNoResponse):
		return nil, notFound
	case err != nil:
		return nil, g.stored.unavailable(err)
	case !callerOf(c).Sees(rec.Owner):
		return nil, notFound
	}
	return rec, nil
}
