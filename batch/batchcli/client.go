package batchcli

import (
	"context"
	"io"
	"strings"
)

// Batch is what the CLI needs of an OpenAI batch object.
type Batch struct {
	ID           string `json:"id"`
	Status       string `json:"status"`
	InputFileID  string `json:"input_file_id"`
	OutputFileID string `json:"output_file_id,omitempty"`
	ErrorFileID  string `json:"error_file_id,omitempty"`
	CreatedAt    int64  `json:"created_at"`
	Counts       struct {
		Total     int64 `json:"total"`
		Completed int64 `json:"completed"`
		Failed    int64 `json:"failed"`
	} `json:"request_counts"`
	Errors []string `json:"errors,omitempty"`
}

// Final reports whether a batch in this status will not change again.
func (b Batch) Final() bool {
	switch b.Status {
	case "completed", "failed", "cancelled", "expired":
		return true
	}
	return false
}

// Done is how many of the batch's lines have ended, completed or failed.
func (b Batch) Done() int64 { return b.Counts.Completed + b.Counts.Failed }

// ErrorsText is the batch's errors as ": e1; e2", or "" without any.
func (b Batch) ErrorsText() string {
	if len(b.Errors) == 0 {
		return ""
	}
	return ": " + strings.Join(b.Errors, "; ")
}

// Client is the Batch API as the CLI uses it. Errors are one line that
// names what failed and never holds a key.
type Client interface {
	// Submit uploads the JSONL file and creates a batch on it.
	Submit(ctx context.Context, name string, r io.Reader, metadata map[string]string) (Batch, error)
	Get(ctx context.Context, id string) (Batch, error)
	Cancel(ctx context.Context, id string) (Batch, error)
	// Content returns a file's bytes (an output or error file); the
	// caller closes it.
	Content(ctx context.Context, fileID string) (io.ReadCloser, error)
}

var (
	_ Client = (*HTTPClient)(nil)
	_ Client = (*NATSClient)(nil)
)
