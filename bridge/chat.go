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

	id := c.Response().Header().Get(HeaderRequestID)
	now := time.Now()
	deadline := now.Add(model.Deadline())
	data, err := json.Marshal(schema.Envelope{ID: id, Model: model.Alias, EnqueuedAt: now, Deadline: deadline, Request: body})
	if err != nil {
		return fmt.Errorf("encode envelope: %w", err)
	}

	answer := g.corr.expect(id) // before publishing: a fast reply is never missed
	defer g.corr.forget(id)
	if err := g.publish(r.Context(), id, data); err != nil {
		return err
	}

	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	select {
	case raw := <-answer:
		return g.writeReply(c, raw)
	case <-r.Context().Done():
		return &schema.Error{Status: statusClientClosed, Type: schema.TypeInvalidRequest, Message: "client closed request", Cause: r.Context().Err()}
	case <-timer.C:
		return &schema.Error{
			Status: http.StatusGatewayTimeout, Type: schema.TypeTimeout, Code: schema.CodeDeadlineExceeded,
			Message: fmt.Sprintf("No answer within the model's %s timeout; the request was queued at %s.", model.Deadline(), now.UTC().Format(time.RFC3339)),
		}
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
			return &schema.Error{Status: statusClientClosed, Type: schema.TypeInvalidRequest, Message: "client closed request", Cause: err}
		}
		return &schema.Error{
			Status: http.StatusServiceUnavailable, Type: schema.TypeServer, Code: schema.CodeQueueUnavailable,
			Message: "The request queue is unavailable; try again shortly.", RetryAfter: 1,
			Cause: fmt.Errorf("publish %s: %w", id, err),
		}
	}
	return nil
}

// writeReply turns a worker's reply into the HTTP answer.
func (g *Gateway) writeReply(c echo.Context, raw []byte) error {
	var rep schema.Reply
	if err := json.Unmarshal(raw, &rep); err != nil {
		return fmt.Errorf("decode reply: %w", err)
	}
	h := c.Response().Header()
	h.Set(HeaderQueueMs, strconv.FormatInt(rep.QueueMs, 10))
	h.Set(HeaderUpstreamMs, strconv.FormatInt(rep.UpstreamMs, 10))
	h.Set(HeaderAttempts, strconv.Itoa(rep.Attempts))
	if err := rep.Err(); err != nil {
		return err
	}
	if rep.Completion == nil {
		return errors.New("reply has neither completion nor error")
	}
	return c.JSON(http.StatusOK, rep.Completion)
}
