package bridge

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/laas-bridge/laas-bridge/admission/multimodal"
	"github.com/laas-bridge/laas-bridge/queue/failover"
	"github.com/laas-bridge/laas-bridge/schema"
)

// Answer headers that say where the time went.
const (
	HeaderQueueMs    = "X-Laas-Bridge-Queue-Ms"
	HeaderUpstreamMs = "X-Laas-Bridge-Upstream-Ms"
	HeaderAttempts   = "X-Laas-Bridge-Attempts"
)

// pending is one queued request whose caller is waiting.
type pending struct {
	id         string
	model      schema.Model
	enqueuedAt time.Time
	timeout    time.Duration // how long the caller waits: deadline - enqueuedAt
	deadline   time.Time
	answer     <-chan []byte // the worker's raw schema.Reply
	release    func()        // forgets the caller; nil when nothing to release
}

// readBody reads the request body up to MaxBodyBytes, refusing a larger
// declared length before reading.
func (g *Gateway) readBody(c echo.Context) ([]byte, error) {
	r := c.Request()
	if r.ContentLength > g.cfg.MaxBodyBytes {
		return nil, &http.MaxBytesError{Limit: g.cfg.MaxBodyBytes}
	}
	buf := bytes.NewBuffer(make([]byte, 0, max(0, r.ContentLength)))
	if _, err := buf.ReadFrom(http.MaxBytesReader(c.Response(), r.Body, g.cfg.MaxBodyBytes)); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// chatCompletions validates a chat request, queues it and waits for its answer.
func (g *Gateway) chatCompletions(c echo.Context) error {
	r := c.Request()
	body, err := g.readBody(c)
	if err != nil {
		return err
	}
	req, err := schema.DecodeChatRequest(body)
	if err != nil {
		return err
	}
	obs := observationOf(c)
	obs.request(req, g.catalog)
	if err := req.Validate(); err != nil {
		return err
	}
	model, ok := g.catalog.Lookup(req.Model)
	if !ok {
		return schema.ModelNotFound(req.Model)
	}
	if req.PresetHash != "" && !g.cfg.AllowPresetOverride {
		return schema.PresetOverrideDisabled()
	}
	timeout, err := requestTimeout(r.Header, model)
	if err != nil {
		return err
	}
	idem, err := idempotencyKey(r.Header, body)
	if err != nil {
		return err
	}
	subject, err := g.lane(r.Header)
	if err != nil {
		return err
	}
	// The costly checks (decoding images, reading PDFs) come last.
	report, err := multimodal.Check(r.Context(), req)
	if err != nil {
		return err
	}
	for _, w := range report.Warnings {
		g.log.Info("request accepted with a warning", "request_id", c.Response().Header().Get(HeaderRequestID), "param", w.Param, "warning", w.Message)
	}
	id := c.Response().Header().Get(HeaderRequestID)
	var p *pending
	if idem != "" {
		raw, found, err := g.storedAnswer(r.Context(), idem)
		if err != nil {
			return err
		}
		if found {
			c.Response().Header().Set(HeaderIdempotentReplayed, "true")
			ch := make(chan []byte, 1)
			ch <- raw
			now := time.Now()
			p = &pending{id: id, model: model, enqueuedAt: now, timeout: timeout, deadline: now.Add(timeout), answer: ch}
		}
	}
	if p == nil {
		if p, err = g.enqueue(r.Context(), subject, id, model, timeout, body, idem); err != nil {
			return err
		}
	}
	if p.release != nil {
		defer p.release()
	}
	obs.queued = true
	defer g.metrics.callerWaiting()()
	if req.Stream {
		err = g.streamAnswer(c, p, req)
	} else {
		err = g.awaitAnswer(c, p)
	}
	// Nobody will read the answer: stop the job. A caller with an
	// Idempotency-Key will come back for it, so its job keeps running.
	if se, ok := errors.AsType[*schema.Error](err); ok && (se.Status == statusClientClosed || se.Code == CodeShuttingDown) && idem == "" {
		g.cancelJob(p.id)
	}
	return err
}

// enqueue registers the caller and publishes the request. On success the
// caller must eventually forget p.id.
func (g *Gateway) enqueue(ctx context.Context, subject, id string, model schema.Model, timeout time.Duration, body []byte, idem string) (*pending, error) {
	now := time.Now()
	p := &pending{id: id, model: model, enqueuedAt: now, timeout: timeout, deadline: now.Add(timeout)}
	env := schema.Envelope{ID: id, Model: model.Alias, EnqueuedAt: now, Deadline: p.deadline, Request: body, IdempotencyKey: idem}
	msgID := id
	if idem != "" {
		msgID = "idem." + idem // a retry within the dedupe window is not queued again
	}
	if len(body) > g.inlineMax {
		if err := g.storeBody(ctx, id, body); err != nil {
			return nil, err
		}
		env.Request, env.RequestRef = nil, id
	}
	data, err := json.Marshal(env)
	if err != nil {
		return nil, fmt.Errorf("encode envelope: %w", err)
	}
	p.answer = g.corr.expect(id) // before publishing: a fast reply is never missed
	p.release = func() { g.corr.forget(id) }
	duplicate, err := g.publish(ctx, subject, id, msgID, data)
	if err != nil || duplicate {
		g.corr.forget(id)
		if env.RequestRef != "" {
			g.dropBody(id)
		}
	}
	if err != nil {
		return nil, err
	}
	if duplicate { // the first request with this key is queued or running: wait for its answer
		if p.answer, p.release, err = g.watchAnswer(ctx, idem); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// storeBody puts a body too large for a queue message in the object store,
// under the request id; the worker deletes it when the job ends.
func (g *Gateway) storeBody(ctx context.Context, id string, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, g.cfg.PublishTimeout+time.Duration(len(body)>>20)*time.Second)
	defer cancel()
	if _, err := g.bodies.PutBytes(ctx, id, body); err != nil {
		if errors.Is(err, context.Canceled) {
			return clientGone(err)
		}
		return &schema.Error{
			Status: http.StatusServiceUnavailable, Type: schema.TypeServer, Code: schema.CodeQueueUnavailable,
			Message: "The store for large requests is unavailable or full; try again shortly.", RetryAfter: 1,
			Cause: fmt.Errorf("store body of %s (%d bytes): %w", id, len(body), err),
		}
	}
	return nil
}

// claimCompletion fetches an answer too large for a NATS message from the
// object store, and deletes it there.
func (g *Gateway) claimCompletion(ctx context.Context, ref string) (json.RawMessage, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	data, err := g.bodies.GetBytes(ctx, ref)
	if err != nil {
		return nil, fmt.Errorf("fetch large answer %s: %w", ref, err)
	}
	if err := g.bodies.Delete(ctx, ref); err != nil {
		g.log.Warn("could not delete a large answer after reading it", "completion_ref", ref, "error", err)
	}
	if !json.Valid(data) {
		return nil, fmt.Errorf("decode large answer %s: not JSON", ref)
	}
	return data, nil
}

// dropBody deletes a stored body whose request never reached the queue.
func (g *Gateway) dropBody(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := g.bodies.Delete(ctx, id); err != nil {
		g.log.Warn("could not delete the body of a request that was not queued", "request_id", id, "error", err)
	}
}

// awaitAnswer waits for the worker's reply and writes it as one JSON answer.
func (g *Gateway) awaitAnswer(c echo.Context, p *pending) error {
	timer := time.NewTimer(time.Until(p.deadline))
	defer timer.Stop()
	select {
	case raw := <-p.answer:
		rep, err := g.decodeRawReply(c, raw)
		if err != nil {
			return err
		}
		// The completion goes out as the worker encoded it.
		return c.JSONBlob(http.StatusOK, rep.Completion)
	case <-c.Request().Context().Done():
		return clientGone(c.Request().Context().Err())
	case <-timer.C:
		return p.expired()
	case <-g.closing:
		return shuttingDown()
	}
}

// HeaderLane selects the queue lane: "interactive" (the default) or
// "batch". Workers take interactive jobs first.
const HeaderLane = "X-Laas-Bridge-Lane"

// lane is the subject a request is published to.
func (g *Gateway) lane(h http.Header) (string, error) {
	switch v := strings.ToLower(strings.TrimSpace(h.Get(HeaderLane))); v {
	case "":
		return g.cfg.Subject, nil
	case "interactive":
		return schema.SubjectInteractive, nil
	case "batch":
		return schema.SubjectBatch, nil
	default:
		return "", schema.Invalid("", schema.CodeInvalidValue, "The %s header must be interactive or batch, got %q.", HeaderLane, v)
	}
}

// Request headers that set a request's timeout, in seconds: LiteLLM's name
// and a generic one. They override the model's timeout.
const (
	HeaderLiteLLMTimeout = "X-Litellm-Timeout"
	HeaderRequestTimeout = "X-Request-Timeout"
)

// requestTimeout is the request's timeout: a header's, else the model's.
func requestTimeout(h http.Header, model schema.Model) (time.Duration, error) {
	for _, name := range []string{HeaderLiteLLMTimeout, HeaderRequestTimeout} {
		v := strings.TrimSpace(h.Get(name))
		if v == "" {
			continue
		}
		secs, err := strconv.ParseFloat(v, 64)
		if err != nil || math.IsNaN(secs) || secs < 0.001 || secs > schema.MaxRequestTimeout.Seconds() {
			return 0, schema.Invalid("", schema.CodeInvalidValue,
				"The %s header must be a number of seconds from 0.001 to %d, got %q.", name, int(schema.MaxRequestTimeout.Seconds()), v)
		}
		return time.Duration(secs * float64(time.Second)), nil
	}
	return model.Deadline(), nil
}

// cancelJob tells every worker that nobody waits for id any more: a job
// not yet started is skipped, a LaaS call under way is aborted.
func (g *Gateway) cancelJob(id string) {
	if err := g.nc.Publish(schema.SubjectCancel+"."+id, nil); err != nil {
		g.log.Warn("could not publish a cancellation", "request_id", id, "error", err)
	}
}

func clientGone(cause error) *schema.Error {
	return &schema.Error{Status: statusClientClosed, Type: schema.TypeInvalidRequest, Message: "client closed request", Cause: cause}
}

// expired is the error for a caller whose deadline passed without an answer.
func (p *pending) expired() *schema.Error {
	return &schema.Error{
		Status: http.StatusGatewayTimeout, Type: schema.TypeTimeout, Code: schema.CodeDeadlineExceeded,
		Message: fmt.Sprintf("No answer within the request's %s timeout; the request was queued at %s.",
			p.timeout, p.enqueuedAt.UTC().Format(time.RFC3339)),
	}
}

// publish puts one request on the stream and waits for the stream's ack.
// duplicate reports that the stream already had a message with msgID.
func (g *Gateway) publish(ctx context.Context, subject, id, msgID string, data []byte) (duplicate bool, err error) {
	msg := &nats.Msg{Subject: subject, Data: data, Header: nats.Header{}}
	msg.Header.Set(schema.HeaderReplyTo, g.corr.subject(id))
	msg.Header.Set(schema.HeaderMsgID, msgID)
	ctx, cancel := context.WithTimeout(ctx, g.cfg.PublishTimeout)
	defer cancel()
	// Retried across a stream leader election (a NATS node lost) until
	// PublishTimeout; the Nats-Msg-Id keeps a retry from queuing it twice.
	ack, maybeStored, err := failover.Publish(ctx, g.js, msg)
	if err != nil {
		if errors.Is(err, context.Canceled) {
			return false, clientGone(err)
		}
		if queueFull(err) {
			return false, &schema.Error{
				Status: http.StatusTooManyRequests, Type: schema.TypeRateLimit, Code: schema.CodeQueueFull,
				Message: "The request queue is full; retry after the time in Retry-After.", RetryAfter: 1,
				Cause: fmt.Errorf("publish %s: %w", id, err),
			}
		}
		return false, &schema.Error{
			Status: http.StatusServiceUnavailable, Type: schema.TypeServer, Code: schema.CodeQueueUnavailable,
			Message: "The request queue is unavailable; try again shortly.", RetryAfter: 1,
			Cause: fmt.Errorf("publish %s: %w", id, err),
		}
	}
	// A duplicate of this request's own earlier attempt (its ack lost in
	// a failover) is not another caller's request with the same key.
	return ack.Duplicate && !(maybeStored && msgID == id), nil
}

// queueFull reports a publish refused because the stream is at its
// MaxMsgs or MaxBytes (it discards new messages). The server gives these the
// generic store-failure code, so the description tells them apart.
func queueFull(err error) bool {
	var api *jetstream.APIError
	if !errors.As(err, &api) || api.ErrorCode != jsErrStoreFailed {
		return false
	}
	return strings.Contains(api.Description, "maximum messages exceeded") || strings.Contains(api.Description, "maximum bytes exceeded")
}

// jsErrStoreFailed is nats-server's JSStreamStoreFailedF.
const jsErrStoreFailed jetstream.ErrorCode = 10077

// rawReply is a worker's reply with the completion left encoded.
type rawReply struct {
	schema.Reply
	Completion json.RawMessage `json:"completion,omitempty"` // shadows Reply.Completion
}

// decodeRawReply parses a worker's reply and sets the timing headers. It
// returns the reply's error, if it carries one, as an *schema.Error; else
// the reply has the completion's JSON (fetched from the object store when
// it was too large for a message).
func (g *Gateway) decodeRawReply(c echo.Context, raw []byte) (*rawReply, error) {
	var rep rawReply
	if err := json.Unmarshal(raw, &rep); err != nil {
		return nil, fmt.Errorf("decode reply: %w", err)
	}
	if rep.CompletionRef != "" {
		data, err := g.claimCompletion(c.Request().Context(), rep.CompletionRef)
		if err != nil {
			return nil, err
		}
		rep.Completion = data
	}
	h := c.Response().Header()
	h.Set(HeaderQueueMs, strconv.FormatInt(rep.QueueMs, 10))
	h.Set(HeaderUpstreamMs, strconv.FormatInt(rep.UpstreamMs, 10))
	h.Set(HeaderAttempts, strconv.Itoa(rep.Attempts))
	if err := rep.Err(); err != nil {
		return nil, err
	}
	if len(rep.Completion) == 0 || string(rep.Completion) == "null" {
		return nil, errors.New("reply has neither completion nor error")
	}
	return &rep, nil
}

// decodeReply is decodeRawReply with the completion decoded.
func (g *Gateway) decodeReply(c echo.Context, raw []byte) (*schema.Reply, error) {
	rep, err := g.decodeRawReply(c, raw)
	if err != nil {
		return nil, err
	}
	rep.Reply.Completion = new(schema.ChatCompletion)
	if err := json.Unmarshal(rep.Completion, rep.Reply.Completion); err != nil {
		return nil, fmt.Errorf("decode reply's completion: %w", err)
	}
	return &rep.Reply, nil
}
