package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats.go"

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
	deadline   time.Time
	answer     <-chan []byte // the worker's raw schema.Reply
}

// chatCompletions validates a chat request, queues it and waits for its answer.
func (g *Gateway) chatCompletions(c echo.Context) error {
	r := c.Request()
	body, err := io.ReadAll(http.MaxBytesReader(c.Response(), r.Body, g.maxBody))
	if err != nil {
		return err
	}
	req, err := schema.DecodeChatRequest(body)
	if err != nil {
		return err
	}
	if err := req.Validate(); err != nil {
		return err
	}
	model, ok := g.catalog.Lookup(req.Model)
	if !ok {
		return schema.ModelNotFound(req.Model)
	}
	p, err := g.enqueue(r.Context(), c.Response().Header().Get(HeaderRequestID), model, body)
	if err != nil {
		return err
	}
	defer g.corr.forget(p.id)
	return g.awaitAnswer(c, p)
}

// enqueue registers the caller and publishes the request. On success the
// caller must eventually forget p.id.
func (g *Gateway) enqueue(ctx context.Context, id string, model schema.Model, body []byte) (*pending, error) {
	now := time.Now()
	p := &pending{id: id, model: model, enqueuedAt: now, deadline: now.Add(model.Deadline())}
	data, err := json.Marshal(schema.Envelope{ID: id, Model: model.Alias, EnqueuedAt: now, Deadline: p.deadline, Request: body})
	if err != nil {
		return nil, fmt.Errorf("encode envelope: %w", err)
	}
	p.answer = g.corr.expect(id) // before publishing: a fast reply is never missed
	if err := g.publish(ctx, id, data); err != nil {
		g.corr.forget(id)
		return nil, err
	}
	return p, nil
}

// awaitAnswer waits for the worker's reply and writes it as one JSON answer.
func (g *Gateway) awaitAnswer(c echo.Context, p *pending) error {
	timer := time.NewTimer(time.Until(p.deadline))
	defer timer.Stop()
	select {
	case raw := <-p.answer:
		rep, err := g.decodeReply(c, raw)
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, rep.Completion)
	case <-c.Request().Context().Done():
		return clientGone(c.Request().Context().Err())
	case <-timer.C:
		return p.timeout()
	}
}

func clientGone(cause error) *schema.Error {
	return &schema.Error{Status: statusClientClosed, Type: schema.TypeInvalidRequest, Message: "client closed request", Cause: cause}
}

// timeout is the error for a caller whose deadline passed without an answer.
func (p *pending) timeout() *schema.Error {
	return &schema.Error{
		Status: http.StatusGatewayTimeout, Type: schema.TypeTimeout, Code: schema.CodeDeadlineExceeded,
		Message: fmt.Sprintf("No answer within the model's %s timeout; the request was queued at %s.",
			p.model.Deadline(), p.enqueuedAt.UTC().Format(time.RFC3339)),
	}
}

// publish puts one request on the stream and waits for the stream's ack.
func (g *Gateway) publish(ctx context.Context, id string, data []byte) error {
	msg := &nats.Msg{Subject: g.cfg.Subject, Data: data, Header: nats.Header{}}
	msg.Header.Set(schema.HeaderReplyTo, g.corr.subject(id))
	msg.Header.Set(schema.HeaderMsgID, id)
	ctx, cancel := context.WithTimeout(ctx, g.cfg.PublishTimeout)
	defer cancel()
	if _, err := g.js.PublishMsg(ctx, msg); err != nil {
		if errors.Is(err, context.Canceled) {
			return clientGone(err)
		}
		return &schema.Error{
			Status: http.StatusServiceUnavailable, Type: schema.TypeServer, Code: schema.CodeQueueUnavailable,
			Message: "The request queue is unavailable; try again shortly.", RetryAfter: 1,
			Cause: fmt.Errorf("publish %s: %w", id, err),
		}
	}
	return nil
}

// decodeReply parses a worker's reply and sets the timing headers. It
// returns the reply's error, if it carries one, as an *schema.Error.
func (g *Gateway) decodeReply(c echo.Context, raw []byte) (*schema.Reply, error) {
	var rep schema.Reply
	if err := json.Unmarshal(raw, &rep); err != nil {
		return nil, fmt.Errorf("decode reply: %w", err)
	}
	h := c.Response().Header()
	h.Set(HeaderQueueMs, strconv.FormatInt(rep.QueueMs, 10))
	h.Set(HeaderUpstreamMs, strconv.FormatInt(rep.UpstreamMs, 10))
	h.Set(HeaderAttempts, strconv.Itoa(rep.Attempts))
	if err := rep.Err(); err != nil {
		return nil, err
	}
	if rep.Completion == nil {
		return nil, errors.New("reply has neither completion nor error")
	}
	return &rep, nil
}
