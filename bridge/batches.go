package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/laas-bridge/laas-bridge/batch"
	"github.com/laas-bridge/laas-bridge/schema"
)

// The Batch API: batches live in the KV bucket schema.BucketBatches and are
// run by the batch.Runner of any gateway (see package batch).

// batchNewRequest is the body of POST /v1/batches.
type batchNewRequest struct {
	InputFileID      string            `json:"input_file_id"`
	Endpoint         string            `json:"endpoint"`
	CompletionWindow string            `json:"completion_window"`
	Metadata         map[string]string `json:"metadata"`
}

// Metadata limits, as OpenAI's: 16 pairs, keys of 64 and values of 512 characters.
const (
	maxMetadataPairs = 16
	maxMetadataKey   = 64
	maxMetadataValue = 512
)

// createBatch answers POST /v1/batches: the batch starts as validating;
// a runner picks it up within seconds.
func (g *Gateway) createBatch(c echo.Context) error {
	r := c.Request()
	var in batchNewRequest
	dec := json.NewDecoder(http.MaxBytesReader(c.Response(), r.Body, 1<<20))
	if err := dec.Decode(&in); err != nil {
		if mbe, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return mbe
		}
		return schema.Invalid("", schema.CodeInvalidJSON, "The request body is not a valid JSON batch request: %v.", err)
	}
	switch {
	case in.InputFileID == "":
		return schema.Invalid("input_file_id", schema.CodeInvalidValue, "'input_file_id' is required.")
	case in.Endpoint != schema.BatchEndpoint:
		return schema.Invalid("endpoint", schema.CodeInvalidValue, "'endpoint' must be %s; this bridge runs chat completions only, got %q.", schema.BatchEndpoint, in.Endpoint)
	case in.CompletionWindow != schema.BatchCompletionWindow:
		return schema.Invalid("completion_window", schema.CodeInvalidValue, "'completion_window' must be %q, got %q.", schema.BatchCompletionWindow, in.CompletionWindow)
	case len(in.Metadata) > maxMetadataPairs:
		return schema.Invalid("metadata", schema.CodeInvalidValue, "'metadata' holds at most %d pairs, got %d.", maxMetadataPairs, len(in.Metadata))
	}
	for k, v := range in.Metadata {
		if len(k) > maxMetadataKey || len(v) > maxMetadataValue {
			return schema.Invalid("metadata", schema.CodeInvalidValue, "'metadata' keys hold at most %d characters and values %d.", maxMetadataKey, maxMetadataValue)
		}
	}
	f, err := g.ownFile(c, in.InputFileID)
	if err != nil {
		if errors.Is(err, batch.ErrNotFound) {
			return &schema.Error{Status: http.StatusNotFound, Type: schema.TypeInvalidRequest, Code: "file_not_found", Param: "input_file_id",
				Message: fmt.Sprintf("No such File object: %s", in.InputFileID)}
		}
		return g.fileError(in.InputFileID, err)
	}
	if f.Purpose != schema.PurposeBatch {
		return schema.Invalid("input_file_id", schema.CodeInvalidValue, "The file %s has purpose %q; a batch needs a file uploaded with purpose \"batch\".", f.ID, f.Purpose)
	}
	owner := callerOf(c).Owner()
	if owner != "" {
		n, err := g.batches.Unfinished(r.Context(), owner)
		if err != nil {
			return batchStoreUnavailable(fmt.Errorf("count batches: %w", err))
		}
		if n >= g.cfg.BatchMaxPerOwner {
			return &schema.Error{Status: http.StatusTooManyRequests, Type: schema.TypeRateLimit, Code: schema.CodeRateLimitExceeded,
				Message: fmt.Sprintf("This key has %d batches not finished yet, the most it may have (BRIDGE_BATCH_MAX_PER_OWNER is %d); create this batch when one of them ends, or cancel one.", n, g.cfg.BatchMaxPerOwner)}
		}
	}
	b := batch.NewBatch(in.InputFileID, in.Metadata, time.Now())
	if err := g.batches.CreateBatch(r.Context(), &batch.Record{Batch: b, CreatedBy: owner, Traceparent: g.cfg.Tracer.Traceparent(r.Context())}); err != nil {
		return batchStoreUnavailable(fmt.Errorf("create batch: %w", err))
	}
	g.log.Info("batch created", "request_id", c.Response().Header().Get(HeaderRequestID), "batch_id", b.ID, "input_file_id", b.InputFileID)
	return c.JSON(http.StatusOK, b)
}

// getBatch answers GET /v1/batches/{id}; another's batch is not found.
func (g *Gateway) getBatch(c echo.Context) error {
	rec, _, err := g.batches.Batch(c.Request().Context(), c.Param("id"))
	if err == nil && !callerOf(c).Sees(rec.CreatedBy) {
		err = batch.ErrNotFound
	}
	if err != nil {
		return batchError(c.Param("id"), err)
	}
	return c.JSON(http.StatusOK, rec.Batch)
}

// listBatches answers GET /v1/batches?limit=&after=: the caller's
// batches (every batch for the admin), newest first.
func (g *Gateway) listBatches(c echo.Context) error {
	limit := 20
	if v := c.QueryParam("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100 {
			return schema.Invalid("limit", schema.CodeInvalidValue, "'limit' must be a whole number from 1 to 100, got %q.", v)
		}
		limit = n
	}
	data, more, err := g.batches.Batches(c.Request().Context(), callerOf(c), c.QueryParam("after"), limit)
	if err != nil {
		return batchStoreUnavailable(fmt.Errorf("list batches: %w", err))
	}
	out := schema.List[schema.Batch]{Object: "list", Data: data, HasMore: more}
	if out.Data == nil {
		out.Data = []schema.Batch{}
	}
	if n := len(out.Data); n > 0 {
		out.FirstID, out.LastID = &out.Data[0].ID, &out.Data[n-1].ID
	}
	return c.JSON(http.StatusOK, out)
}

// cancelBatch answers POST /v1/batches/{id}/cancel: the batch turns
// cancelling at once, and cancelled once its runner has stopped its lines
// and written what was answered. Another's batch is not found.
func (g *Gateway) cancelBatch(c echo.Context) error {
	id := c.Param("id")
	rec, err := g.batches.Cancel(c.Request().Context(), callerOf(c), id, time.Now())
	switch {
	case err == nil, batch.IsUnchanged(err):
		return c.JSON(http.StatusOK, rec.Batch)
	case errors.Is(err, batch.ErrNotCancellable):
		return &schema.Error{Status: http.StatusConflict, Type: schema.TypeInvalidRequest, Code: "batch_not_cancellable",
			Message: fmt.Sprintf("Cannot cancel a batch with status %s.", rec.Batch.Status)}
	}
	return batchError(id, err)
}

func batchError(id string, err error) error {
	if errors.Is(err, batch.ErrNotFound) {
		return &schema.Error{Status: http.StatusNotFound, Type: schema.TypeInvalidRequest, Code: "batch_not_found", Param: "batch_id",
			Message: fmt.Sprintf("No such Batch object: %s", id)}
	}
	if errors.Is(err, context.Canceled) {
		return clientGone(err)
	}
	return batchStoreUnavailable(fmt.Errorf("batch %s: %w", id, err))
}

func batchStoreUnavailable(cause error) *schema.Error {
	return storeUnavailable("The store of files and batches", cause)
}

// storeUnavailable is the 503 of a JetStream store (what names it) that
// did not answer: try again in a second.
func storeUnavailable(what string, cause error) *schema.Error {
	return &schema.Error{
		Status: http.StatusServiceUnavailable, Type: schema.TypeServer, Code: schema.CodeQueueUnavailable,
		Message: what + " is unavailable; try again shortly.", RetryAfter: 1, Cause: cause,
	}
}
