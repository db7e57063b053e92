package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/shared"
)

// httpBatchClient talks to a bridge's OpenAI Batch API with the official
// openai-go client, so the CLI exercises exactly what SDK users call.
type httpBatchClient struct{ c openai.Client }

func newHTTPBatchClient(base, key string) (*httpBatchClient, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("--url %q: want http(s)://host[:port]", base)
	}
	if key == "" {
		key = "none" // a bridge without BRIDGE_MASTER_KEY takes any key
	}
	return &httpBatchClient{c: openai.NewClient(
		option.WithBaseURL(strings.TrimSuffix(u.String(), "/")+"/v1/"),
		option.WithAPIKey(key),
		option.WithMaxRetries(2),
	)}, nil
}

func (h *httpBatchClient) submit(ctx context.Context, name string, r io.Reader, metadata map[string]string) (batchInfo, error) {
	f, err := h.c.Files.New(ctx, openai.FileNewParams{
		File:    openai.File(r, name, "application/jsonl"),
		Purpose: openai.FilePurposeBatch,
	})
	if err != nil {
		return batchInfo{}, apiErr("upload "+name, err)
	}
	p := openai.BatchNewParams{
		InputFileID:      f.ID,
		Endpoint:         openai.BatchNewParamsEndpointV1ChatCompletions,
		CompletionWindow: openai.BatchNewParamsCompletionWindow24h,
	}
	if len(metadata) > 0 {
		p.Metadata = shared.Metadata(metadata)
	}
	b, err := h.c.Batches.New(ctx, p)
	if err != nil {
		return batchInfo{}, apiErr("create batch on "+f.ID, err)
	}
	return toBatchInfo(b), nil
}

func (h *httpBatchClient) get(ctx context.Context, id string) (batchInfo, error) {
	b, err := h.c.Batches.Get(ctx, id)
	if err != nil {
		return batchInfo{}, apiErr("batch "+id, err)
	}
	return toBatchInfo(b), nil
}

func (h *httpBatchClient) cancel(ctx context.Context, id string) (batchInfo, error) {
	b, err := h.c.Batches.Cancel(ctx, id)
	if err != nil {
		return batchInfo{}, apiErr("cancel batch "+id, err)
	}
	return toBatchInfo(b), nil
}

func (h *httpBatchClient) content(ctx context.Context, fileID string) (io.ReadCloser, error) {
	res, err := h.c.Files.Content(ctx, fileID)
	if err != nil {
		return nil, apiErr("file "+fileID, err)
	}
	return res.Body, nil
}

// apiErr turns an SDK error into one line: the bridge's OpenAI error
// message and status, never the request (which carries the key).
func apiErr(what string, err error) error {
	var e *openai.Error
	if errors.As(err, &e) {
		msg := e.Message
		if msg == "" {
			msg = strings.TrimSpace(e.RawJSON())
		}
		return fmt.Errorf("%s: %d %s", what, e.StatusCode, msg)
	}
	return fmt.Errorf("%s: %w", what, err)
}

func toBatchInfo(b *openai.Batch) batchInfo {
	var i batchInfo
	i.ID, i.Status, i.InputFileID = b.ID, string(b.Status), b.InputFileID
	i.OutputFileID, i.ErrorFileID, i.CreatedAt = b.OutputFileID, b.ErrorFileID, b.CreatedAt
	i.Counts.Total, i.Counts.Completed, i.Counts.Failed = b.RequestCounts.Total, b.RequestCounts.Completed, b.RequestCounts.Failed
	for _, e := range b.Errors.Data {
		s := e.Message
		if e.Code != "" {
			s = e.Code + ": " + s
		}
		if e.Line > 0 {
			s = fmt.Sprintf("line %d: %s", e.Line, s)
		}
		i.Errors = append(i.Errors, s)
	}
	return i
}
