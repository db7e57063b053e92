package bridge

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/laas-bridge/laas-bridge/admission"
	"github.com/laas-bridge/laas-bridge/schema"
)

// responses answers POST /v1/responses (OpenAI's Responses API), not
// streamed, on the chat path: the request is translated to the chat
// request that runs it (schema.ResponsesRequest.ChatRequest), which the
// admission core checks and queues, the response cache and the
// idempotency store keep, and the workers run, as any chat request; the
// chat completion is then answered as a response object
// (schema.NewResponse). Errors, timing headers and Retry-After are the
// chat path's.
func (g *Gateway) responses(c echo.Context) error {
	body, releaseBody, err := g.readBody(c)
	if err != nil {
		return err
	}
	defer releaseBody()
	rr, err := schema.DecodeResponsesRequest(body)
	if err != nil {
		return err
	}
	chat, err := rr.ChatRequest()
	if err != nil {
		return err
	}
	chatBody, err := json.Marshal(chat)
	if err != nil {
		return fmt.Errorf("encode the chat request of a response: %w", err)
	}
	body, chat = nil, nil
	releaseBody()
	rr.Input = nil // what the answer echoes is kept; the input is on its way
	id := c.Response().Header().Get(HeaderRequestID)
	req, err := g.request(id, admission.DoorChat, c.Request().Header, chatBody)
	if err != nil {
		return err
	}
	req.Caller = callerOf(c) // not Streamable: stream is refused above
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
	if replayed {
		c.Response().Header().Set(HeaderIdempotentReplayed, "true")
	}
	if p.release != nil {
		defer p.release()
	}
	obs.queued = true
	defer g.metrics.callerWaiting()()
	rep, err := g.awaitReply(c, p)
	if err != nil {
		// Nobody will read the answer: stop the job (as chatCompletions).
		if se, ok := errors.AsType[*schema.Error](err); ok && (se.Status == statusClientClosed || se.Code == CodeShuttingDown) && answerKey == "" {
			g.cancelJob(p.id, p.deadline)
		}
		return err
	}
	var cc schema.ChatCompletion
	if err := json.Unmarshal(rep.Completion, &cc); err != nil {
		return fmt.Errorf("decode reply's completion: %w", err)
	}
	return c.JSON(http.StatusOK, schema.NewResponse(id, rr, &cc))
}
