package batchcli

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

// HTTPClient talks to a bridge's OpenAI Batch API with the official
// openai-go client, so the CLI exercises exactly what SDK users call.
type HTTPClient struct{ c openai.Client }

// NewHTTPClient reaches the bridge at base (http(s)://host[:port]) with key
// as its bearer key; an empty key sends "none", which a bridge without
// BRIDGE_MASTER_KEY takes. It does no I/O.
func NewHTTPClient(base, key string) (*HTTPClient, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%q: want http(s)://host[:port]", base)
	}
	if key == "" {
		key = "none"
	}
	return &HTTPClient{c: openai.NewClient(
		option.WithBaseURL(strings.TrimSuffix(u.String(), "/")+"/v1/"),
		option.WithAPIKey(key),
		option.WithMaxRetries(2),
	)}, nil
}

// Submit uploads the file with purpose batch and creates a 24h batch of
// /v1/chat/completions on it.
func (h *HTTPClient) Submit(ctx context.Context, name string, r io.Reader, metadata map[string]string) (Batch, error) {
	f, err := h.c.Files.New(ctx, openai.FileNewParams{
		File:    openai.File(r, name, "application/jsonl"),
		Purpose: openai.FilePurposeBatch,
	})
	if err != nil {
		return Batch{}, apiErr("upload "+name, err)
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
		return Batch{}, apiErr("create batch on "+f.ID, err)
	}
	return fromOpenAI(b), nil
}

// Get returns batch id.
func (h *HTTPClient) Get(ctx context.Context, id string) (Batch, error) {
	b, err := h.c.Batches.Get(ctx, id)
	if err != nil {
		return Batch{}, apiErr("batch "+id, err)
	}
	return fromOpenAI(b), nil
}

// Cancel asks the bridge to cancel batch id.
func (h *HTTPClient) Cancel(ctx context.Context, id string) (Batch, error) {
	b, err := h.c.Batches.Cancel(ctx, id)
	if err != nil {
		return Batch{}, apiErr("cancel batch "+id, err)
	}
	return fromOpenAI(b), nil
}

// Content returns the bytes of file fileID.
func (h *HTTPClient) Content(ctx context.Context, fileID string) (io.ReadCloser, error) {
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

func fromOpenAI(b *openai.Batch) Batch {
	var i Batch
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
