package schema

import (
	"net/http"
	"strings"
	"time"
)

// Jobs: requests nobody waits for on a connection. A producer (the HTTP
// jobs API, the Batch API, or any program with a NATS client) publishes an
// Envelope with Job set on SubjectSubmit, with Nats-Msg-Id set to the job
// id; the worker publishes the JobResult on the job's results subject,
// captured by StreamResults, and records the job's state in BucketJobs.
// These names are part of the public contract (see docs/queue-contract.md,
// "Direct queue API").
const (
	// StreamResults keeps job results, one message per job on its results
	// subject: a limits stream (reading does not consume), kept for a
	// configurable time (default 24 h), so a producer that was offline
	// collects its results later.
	StreamResults = "LAAS_RESULTS"
	// SubjectResults prefixes results subjects; the stream captures
	// SubjectResults + ".>".
	SubjectResults = "laas.results"
	// BucketJobs is the KV bucket of job states (JobState), keyed by job id.
	BucketJobs = "LAAS_JOBS"
)

// CodeJobCancelled is the error code of a job cancelled before it finished.
const CodeJobCancelled = "job_cancelled"

// StatusJobCancelled is the status code in the result of a cancelled job:
// nginx's "client closed request", as the HTTP API logs a caller that left.
const StatusJobCancelled = 499

// JobStatus is where a job is in its life.
type JobStatus string

// Job statuses. Queued and running move on; the others are final.
const (
	JobQueued    JobStatus = "queued"
	JobRunning   JobStatus = "running"
	JobSucceeded JobStatus = "succeeded"
	JobFailed    JobStatus = "failed"
	JobCancelled JobStatus = "cancelled"
)

// Final reports whether s is an end state: succeeded, failed or cancelled.
func (s JobStatus) Final() bool {
	return s == JobSucceeded || s == JobFailed || s == JobCancelled
}

// JobState is a job's entry in BucketJobs (key: the job id). The HTTP jobs
// API writes it queued; the worker running the job writes running, then
// the final status once the result is on the results stream. Fields are
// only ever added.
type JobState struct {
	ID     string    `json:"id"`
	Status JobStatus `json:"status"`
	// Model is the public model alias the job asked for.
	Model string `json:"model"`
	// ResultsSubject is where the result is (or will be) published.
	ResultsSubject string    `json:"results_subject"`
	CreatedAt      time.Time `json:"created_at"`
	UpdatedAt      time.Time `json:"updated_at"`
	// Attempts is the delivery count of the worker's latest attempt.
	Attempts int `json:"attempts,omitempty"`
	// Owner is the job's owner, Envelope.Owner: the token of the virtual
	// key that submitted it, "" for the admin (and for jobs recorded
	// before owners were).
	Owner string `json:"owner,omitempty"`
	// Seq is the request-stream sequence of the message a worker runs (set
	// while running): a redelivery of that message runs on, another message
	// with the same job id (a duplicate published after the duplicate
	// window) is dropped.
	Seq uint64 `json:"seq,omitempty"`
	// QueuedSeq and QueuedLane are the request-stream sequence and the
	// lane subject of the message that queued the job (set once it is
	// published, while it is queued): where it stands in its lane.
	QueuedSeq  uint64 `json:"queued_seq,omitempty"`
	QueuedLane string `json:"queued_lane,omitempty"`
}

// JobResult is the message a worker publishes on a job's results subject:
// the chat completion (Status succeeded, StatusCode 200) or an OpenAI
// error (failed or cancelled). Fields are only ever added.
type JobResult struct {
	// ID is the job id (Envelope.ID).
	ID     string    `json:"id"`
	Status JobStatus `json:"status"`
	// Model is the public model alias the job asked for.
	Model string `json:"model"`
	// StatusCode is the HTTP status /v1/chat/completions would have
	// answered with: 200, 4xx/5xx for an error, 499 for a cancelled job.
	StatusCode int             `json:"status_code"`
	Completion *ChatCompletion `json:"completion,omitempty"`
	// CompletionRef names the object in BucketBodies that holds Completion
	// when it is too large for a NATS message. Readers do not delete it;
	// the bucket's TTL does.
	CompletionRef string       `json:"completion_ref,omitempty"`
	Error         *ErrorDetail `json:"error,omitempty"`
	// RetryAfter in seconds, for a 429 or 503 error.
	RetryAfter int `json:"retry_after,omitempty"`
	// Attempts is the delivery count of the attempt that produced this.
	Attempts int `json:"attempts"`
	// QueueMs is how long the job waited before a worker took it.
	QueueMs int64 `json:"queue_ms"`
	// UpstreamMs is how long the last LaaS call took.
	UpstreamMs int64     `json:"upstream_ms"`
	FinishedAt time.Time `json:"finished_at"`
}

// Err returns the result's error as an *Error, or nil for a success.
func (r *JobResult) Err() *Error {
	if r.Error == nil {
		return nil
	}
	rep := Reply{ID: r.ID, Status: r.StatusCode, Error: r.Error, RetryAfter: r.RetryAfter}
	return rep.Err()
}

// JobResultOf turns a worker's reply into a job result.
func JobResultOf(rep Reply, model string, finishedAt time.Time) JobResult {
	r := JobResult{
		ID: rep.ID, Model: model, StatusCode: rep.Status, Completion: rep.Completion, CompletionRef: rep.CompletionRef,
		Error: rep.Error, RetryAfter: rep.RetryAfter, Attempts: rep.Attempts, QueueMs: rep.QueueMs, UpstreamMs: rep.UpstreamMs,
		FinishedAt: finishedAt.UTC(),
	}
	switch {
	case rep.Error == nil && rep.Status == http.StatusOK:
		r.Status = JobSucceeded
	case rep.Error != nil && rep.Error.Code != nil && *rep.Error.Code == CodeJobCancelled:
		r.Status = JobCancelled
	default:
		r.Status = JobFailed
	}
	return r
}

// JobCancelledError is the error in the result of a cancelled job.
func JobCancelledError() *Error {
	return &Error{Status: StatusJobCancelled, Type: TypeInvalidRequest, Code: CodeJobCancelled,
		Message: "The job was cancelled before it finished."}
}

// ResultsSubject is a job's default results subject: laas.results.<id>.
func ResultsSubject(id string) string { return SubjectResults + "." + id }

// maxResultsTokens bounds the tokens a producer may put between
// SubjectResults and the job id.
const maxResultsTokens = 8

// ValidResultsSubject reports whether s may carry job id's result:
// laas.results.<id>, or laas.results.<t1>...<tn>.<id> with 1 to 8 tokens of
// 1-64 [A-Za-z0-9_-] before the id. Ending in the job id makes the subject
// the job's own, so one job's result is never mistaken for another's; a
// producer subscribes to laas.results.<t1>.> for all of its jobs. Nothing
// outside laas.results.> is ever valid, so a producer cannot make a worker
// publish anywhere else.
func ValidResultsSubject(s, id string) bool {
	rest, ok := strings.CutPrefix(s, SubjectResults+".")
	if !ok || !ValidRequestID(id) {
		return false
	}
	tokens := strings.Split(rest, ".")
	if len(tokens) > maxResultsTokens+1 || tokens[len(tokens)-1] != id {
		return false
	}
	for _, t := range tokens {
		if !ValidRequestID(t) {
			return false
		}
	}
	return true
}

// ResultsTo is where the result of job e goes: e.ResultsSubject, or
// laas.results.<id> when it is empty. It does not validate.
func (e *Envelope) ResultsTo() string {
	if e.ResultsSubject != "" {
		return e.ResultsSubject
	}
	return ResultsSubject(e.ID)
}
