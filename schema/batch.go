package schema

import "encoding/json"

// OpenAI Batch API: the Files and Batch objects and the JSONL line shapes,
// and where the bridge keeps them in JetStream.
const (
	// BucketFiles is the Object Store bucket of uploaded files (purpose
	// "batch") and of the batches' output and error files. Objects are named
	// by their file id; internal objects (a batch's validated plan) are
	// named "<batch id>.plan" and never listed.
	BucketFiles = "LAAS_FILES"
	// BucketBatches is the KV bucket of batch records: "b.<batch id>" holds
	// a batch's state (the OpenAI object, its owner's lease, its progress),
	// "active.<batch id>" marks a batch that is not finished yet, and
	// "owner.<hash of its creator>.<batch id>" marks it as its creator's.
	BucketBatches = "LAAS_BATCHES"
)

// Batch API limits, as OpenAI's.
const (
	// MaxBatchLines is the most requests one input file may hold.
	MaxBatchLines = 50_000
	// MaxBatchFileBytes is the largest input file accepted: 200 MB.
	MaxBatchFileBytes = 200 << 20
	// BatchEndpoint is the one endpoint a batch may run.
	BatchEndpoint = "/v1/chat/completions"
	// BatchCompletionWindow is the one completion window accepted.
	BatchCompletionWindow = "24h"
)

// File purposes.
const (
	PurposeBatch       = "batch"
	PurposeBatchOutput = "batch_output"
)

// FileObject is OpenAI's file object.
type FileObject struct {
	ID            string  `json:"id"`
	Object        string  `json:"object"` // "file"
	Bytes         int64   `json:"bytes"`
	CreatedAt     int64   `json:"created_at"`
	ExpiresAt     int64   `json:"expires_at,omitempty"`
	Filename      string  `json:"filename"`
	Purpose       string  `json:"purpose"`
	Status        string  `json:"status"` // "processed"
	StatusDetails *string `json:"status_details"`
	// CreatedBy is the owner of the file (the token of the virtual key
	// that uploaded it, or of the batch that wrote it; "" for the admin).
	// Kept in the object's metadata; never part of an answer.
	CreatedBy string `json:"-"`
}

// FileDeleted is OpenAI's answer to DELETE /v1/files/{id}.
type FileDeleted struct {
	ID      string `json:"id"`
	Object  string `json:"object"` // "file"
	Deleted bool   `json:"deleted"`
}

// Batch statuses.
const (
	BatchValidating = "validating"
	BatchFailed     = "failed"
	BatchInProgress = "in_progress"
	BatchFinalizing = "finalizing"
	BatchCompleted  = "completed"
	BatchExpired    = "expired"
	BatchCancelling = "cancelling"
	BatchCancelled  = "cancelled"
)

// BatchDone reports whether status is final: nothing will change any more.
func BatchDone(status string) bool {
	switch status {
	case BatchFailed, BatchCompleted, BatchExpired, BatchCancelled:
		return true
	}
	return false
}

// Batch is OpenAI's batch object. Timestamps are Unix seconds; zero ones
// are written as null.
type Batch struct {
	ID               string             `json:"id"`
	Object           string             `json:"object"` // "batch"
	Endpoint         string             `json:"endpoint"`
	Errors           *BatchErrors       `json:"errors"`
	InputFileID      string             `json:"input_file_id"`
	CompletionWindow string             `json:"completion_window"`
	Status           string             `json:"status"`
	OutputFileID     *string            `json:"output_file_id"`
	ErrorFileID      *string            `json:"error_file_id"`
	CreatedAt        int64              `json:"created_at"`
	InProgressAt     *int64             `json:"in_progress_at"`
	ExpiresAt        *int64             `json:"expires_at"`
	FinalizingAt     *int64             `json:"finalizing_at"`
	CompletedAt      *int64             `json:"completed_at"`
	FailedAt         *int64             `json:"failed_at"`
	ExpiredAt        *int64             `json:"expired_at"`
	CancellingAt     *int64             `json:"cancelling_at"`
	CancelledAt      *int64             `json:"cancelled_at"`
	RequestCounts    BatchRequestCounts `json:"request_counts"`
	Metadata         map[string]string  `json:"metadata"`
}

// BatchRequestCounts counts a batch's requests; live while it runs.
type BatchRequestCounts struct {
	Total     int `json:"total"`
	Completed int `json:"completed"`
	Failed    int `json:"failed"`
}

// BatchErrors lists what made a whole batch fail.
type BatchErrors struct {
	Object string       `json:"object"` // "list"
	Data   []BatchError `json:"data"`
}

// BatchError is one problem with a batch's input.
type BatchError struct {
	Code    string  `json:"code"`
	Message string  `json:"message"`
	Param   *string `json:"param"`
	Line    *int    `json:"line"`
}

// BatchInputLine is one line of a batch input file.
type BatchInputLine struct {
	CustomID string          `json:"custom_id"`
	Method   string          `json:"method"`
	URL      string          `json:"url"`
	Body     json.RawMessage `json:"body"`
}

// BatchOutputLine is one line of a batch's output or error file:
// Response for a request that ran (any status), Error for one that did not.
type BatchOutputLine struct {
	ID       string               `json:"id"`
	CustomID *string              `json:"custom_id"`
	Response *BatchOutputResponse `json:"response"`
	Error    *BatchLineError      `json:"error"`
}

// BatchOutputResponse is the answer a request got.
type BatchOutputResponse struct {
	StatusCode int             `json:"status_code"`
	RequestID  string          `json:"request_id"`
	Body       json.RawMessage `json:"body"`
}

// BatchLineError is why a request did not run.
type BatchLineError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Error codes of batch lines that did not run (BatchLineError.Code).
const (
	CodeBatchExpired     = "batch_expired"
	CodeBatchCancelled   = "batch_cancelled"
	CodeDuplicateCustom  = "duplicate_custom_id"
	CodeInvalidBatchLine = "invalid_batch_line"
)

// List is OpenAI's cursor page: {"object": "list", "data": [...], ...}.
type List[T any] struct {
	Object  string  `json:"object"` // "list"
	Data    []T     `json:"data"`
	FirstID *string `json:"first_id"`
	LastID  *string `json:"last_id"`
	HasMore bool    `json:"has_more"`
}
