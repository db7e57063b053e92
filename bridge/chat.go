package bridge

import (
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

	"github.com/laas-bridge/laas-bridge/admission"
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
	seq        uint64        // the queued message's stream sequence; 0 when none was queued
	lane       string        // the lane subject it was queued on
	answer     <-chan []byte // the worker's raw schema.Reply
	release    func()        // forgets the caller; nil when nothing to release
}

// chatCompletions admits a chat request through the core and waits for
// its answer.
func (g *Gateway) chatCompletions(c echo.Context) error {
	r := c.Request()
	body, releaseBody, err := g.readBody(c)
	if err != nil {
		return err
	}
	defer releaseBody()
	id := c.Response().Header().Get(HeaderRequestID)
	req, err := g.request(id, admission.DoorChat, r.Header, body)
	if err != nil {
		return err
	}
	req.Caller, req.Streamable = callerOf(c), true
	ck, obs, err := g.checkRequest(c, req)
	if err != nil {
		return err
	}
	opts, err := ck.Chat.ParseStreamOptions() // Validate has refused a bad shape already
	if err != nil {
		return err
	}
	p, replayed, err := g.admitCached(c, ck) // the response cache, else the queue (cache.go)
	if err != nil {
		return err
	}
	// The body is queued (or answered): hold none of it while waiting.
	stream, answerKey := ck.Chat.Stream, ck.AnswerKey
	body, req, ck = nil, admission.Request{}, nil
	releaseBody()
	return g.answerWaiting(c, p, obs, replayed, answerKey, func() error {
		if stream {
			return g.streamAnswer(c, p, opts)
		}
		return g.awaitAnswer(c, p)
	})
}

// answerWaiting answers the caller of admitted request p with answer,
// while it counts as a caller waiting; then p is released, and a job
// nobody will read the answer of (the caller went away, the gateway shuts
// down) is stopped. A caller with an Idempotency-Key (answerKey) will come
// back for it, so its job keeps running.
func (g *Gateway) answerWaiting(c echo.Context, p *pending, obs *observation, replayed bool, answerKey string, answer func() error) error {
	if replayed {
		c.Response().Header().Set(HeaderIdempotentReplayed, "true")
	}
	if p.release != nil {
		defer p.release()
	}
	obs.queued = true
	defer g.metrics.callerWaiting()()
	err := answer()
	if se, ok := errors.AsType[*schema.Error](err); ok && (se.Status == statusClientClosed || se.Code == CodeShuttingDown) && answerKey == "" {
		g.cancelJob(p.id, p.deadline)
	}
	return err
}

// checkRequest runs the admission core's check on req and tells the request's
// observation (metrics, access log) its lane and model, refused or not.
func (g *Gateway) checkRequest(c echo.Context, req admission.Request) (*admission.Checked, *observation, error) {
	ck, err := g.core.Check(req)
	obs := observationOf(c)
	obs.lane = string(ck.Lane) // the core's choice (service_tier flex is the batch lane)
	if ck.Chat != nil {
		obs.request(ck.Chat, g.core.Catalog())
	}
	return ck, obs, err
}

// request is the admission request of a caller who waits on this
// gateway: the body, and what the headers say (timeout, lane, idempotency
// key); the reply comes to this gateway's reply subject.
func (g *Gateway) request(id string, door admission.Door, h http.Header, body []byte) (admission.Request, error) {
	timeout, err := headerTimeout(h)
	if err != nil {
		return admission.Request{}, err
	}
	lane, err := g.lane(h)
	if err != nil {
		return admission.Request{}, err
	}
	wait, err := queueWait(h)
	if err != nil {
		return admission.Request{}, err
	}
	return admission.Request{ID: id, Body: body, Door: door, Lane: lane, Timeout: timeout,
		IdempotencyKey: h.Get(HeaderIdempotencyKey), ReplyTo: g.corr.subject(id), QueueWait: wait}, nil
}

// HeaderQueue set to "wait" lets a request over its key's rpm_limit wait
// in the queue for its slot, up to its timeout, instead of a 429.
const HeaderQueue = "X-Laas-Bridge-Queue"

// queueWait reads HeaderQueue: "wait", or absent.
func queueWait(h http.Header) (bool, error) {
	switch v := strings.ToLower(strings.TrimSpace(h.Get(HeaderQueue))); v {
	case "":
		return false, nil
	case "wait":
		return true, nil
	default:
		return false, schema.Invalid("", schema.CodeInvalidValue, "The %s header must be wait, got %q.", HeaderQueue, v)
	}
}

// admit queues a checked request whose caller waits for its reply here,
// or finds its answer kept (replayed) or on its way for an earlier request
// with the same idempotency key. On success the caller must call
// p.release, when set, once it stops waiting.
func (g *Gateway) admit(ctx context.Context, ck *admission.Checked) (p *pending, replayed bool, err error) {
	answer := g.corr.expect(ck.ID) // before publishing: a fast reply is never missed
	t, err := g.core.Admit(ctx, ck)
	if err != nil {
		g.corr.forget(ck.ID)
		return nil, false, err
	}
	p = &pending{id: ck.ID, model: ck.Model, enqueuedAt: t.EnqueuedAt, timeout: ck.Timeout, deadline: t.Deadline, seq: t.Seq, lane: t.Subject}
	switch {
	case t.Answer != nil:
		g.corr.forget(ck.ID)
		ch := make(chan []byte, 1)
		ch <- t.Answer
		p.answer, replayed = ch, true
	case t.Duplicate: // the first request with this key is queued or running: wait for its answer
		g.corr.forget(ck.ID)
		if p.answer, p.release, err = g.core.WatchAnswer(ctx, ck.AnswerKey); err != nil {
			return nil, false, err
		}
	default:
		p.answer, p.release = answer, func() { g.corr.forget(ck.ID) }
	}
	return p, replayed, nil
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

// awaitAnswer waits for the worker's reply and writes it as one JSON answer.
func (g *Gateway) awaitAnswer(c echo.Context, p *pending) error {
	rep, err := g.awaitReply(c, p)
	if err != nil {
		return err
	}
	// The completion goes out as the worker encoded it.
	return c.JSONBlob(http.StatusOK, rep.Completion)
}

// awaitReply waits for the worker's reply to p and decodes it
// (decodeRawReply); a reply that carries an error returns it.
func (g *Gateway) awaitReply(c echo.Context, p *pending) (*rawReply, error) {
	timer := time.NewTimer(time.Until(p.deadline))
	defer timer.Stop()
	select {
	case raw := <-p.answer:
		rep, err := g.decodeRawReply(c, raw)
		if err != nil {
			return nil, err
		}
		if o := observed(c); o != nil && g.access != nil {
			o.SetUsageJSON(rep.Completion)
		}
		return rep, nil
	case <-c.Request().Context().Done():
		return nil, clientGone(c.Request().Context().Err())
	case <-timer.C:
		return nil, p.expired()
	case <-g.closing:
		return nil, shuttingDown()
	}
}

// HeaderLane selects the queue lane: "interactive" (the default) or
// "batch". Workers take interactive jobs first.
const HeaderLane = "X-Laas-Bridge-Lane"

// lane is the lane a request asks for in its headers, else the
// gateway's default.
func (g *Gateway) lane(h http.Header) (admission.Lane, error) {
	v := strings.ToLower(strings.TrimSpace(h.Get(HeaderLane)))
	def := admission.Interactive
	if g.cfg.Subject == schema.SubjectBatch {
		def = admission.Batch
	}
	lane, err := admission.ParseLane(v, def)
	if err != nil {
		return "", schema.Invalid("", schema.CodeInvalidValue, "The %s header must be interactive or batch, got %q.", HeaderLane, v)
	}
	return lane, nil
}

// Request headers that set a request's timeout, in seconds: LiteLLM's name
// and a generic one. They override the model's timeout.
const (
	HeaderLiteLLMTimeout = "X-Litellm-Timeout"
	HeaderRequestTimeout = "X-Request-Timeout"
)

// headerTimeout is the timeout a request's headers set, or 0 for none
// (the model's).
func headerTimeout(h http.Header) (time.Duration, error) {
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
	return 0, nil
}

// cancelJob tells every worker that nobody waits for id any more: a job
// not yet started is skipped, a LaaS call under way is aborted. The job's
// deadline goes with it, so workers forget id once it has passed.
func (g *Gateway) cancelJob(id string, deadline time.Time) {
	if err := g.nc.Publish(schema.SubjectCancel+"."+id, schema.CancelPayload(deadline)); err != nil {
		g.log.Warn("could not publish a cancellation", "request_id", id, "error", err)
	}
}

func clientGone(cause error) *schema.Error { return admission.CallerGone(cause) }

// expired is the error for a caller whose deadline passed without an answer.
func (p *pending) expired() *schema.Error {
	return &schema.Error{
		Status: http.StatusGatewayTimeout, Type: schema.TypeTimeout, Code: schema.CodeDeadlineExceeded,
		Message: fmt.Sprintf("No answer within the request's %s timeout; the request was queued at %s.",
			p.timeout, p.enqueuedAt.UTC().Format(time.RFC3339)),
	}
}

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
	if o := observed(c); o != nil {
		o.SetReply(&rep.Reply)
	}
	if err := rep.Err(); err != nil {
		return nil, err
	}
	if len(rep.Completion) == 0 || string(rep.Completion) == "null" {
		return nil, errors.New("reply has neither completion nor error")
	}
	g.keepAnswer(c, &rep)
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
