package admission

import (
	"fmt"
	"time"

	"github.com/laas-bridge/laas-bridge/keys"
	"github.com/laas-bridge/laas-bridge/schema"
)

// Door names the way a request came in; it goes into logs and decides
// nothing but the namespace of idempotency keys.
type Door string

// The doors into the queue.
const (
	DoorChat     Door = "http"     // POST /v1/chat/completions
	DoorJobs     Door = "jobs"     // POST /v1/queue/jobs
	DoorBatch    Door = "batch"    // a Batch API line
	DoorMicro    Door = "nats"     // the NATS micro endpoint
	DoorProducer Door = "producer" // an envelope a program published on laas.requests.*
	DoorReplay   Door = "replay"   // laas-bridge dlq replay
)

// Lane is the queue lane a request waits in.
type Lane string

// The lanes. Workers take an interactive job first whenever one waits.
const (
	Interactive Lane = "interactive"
	Batch       Lane = "batch"
)

// Subject is the lane's subject on the request stream.
func (l Lane) Subject() string {
	if l == Batch {
		return schema.SubjectBatch
	}
	return schema.SubjectInteractive
}

// ParseLane reads a lane's name: "interactive" or "batch"; "" is def.
func ParseLane(v string, def Lane) (Lane, error) {
	switch v {
	case "":
		return def, nil
	case string(Interactive):
		return Interactive, nil
	case string(Batch):
		return Batch, nil
	}
	return "", fmt.Errorf("lane must be interactive or batch, got %q", v)
}

// Request is one request as a door received it, with what the door knows
// of its caller. Doors fill only what their transport carries; the core
// decides everything else.
type Request struct {
	// ID is the request id the door chose (its X-Request-Id), or the job
	// id of a job; 1-64 of [A-Za-z0-9_-].
	ID string
	// Body is the OpenAI chat request as the caller sent it.
	Body []byte
	// Caller is who sent it, as the door authenticated it: the zero Caller
	// (the admin) for the master key, an open bridge, a direct producer or
	// a replay. The core records its owner on the envelope and the job, and
	// enforces its key's model access and limits.
	Caller keys.Caller
	// Door is the way the request came in.
	Door Door
	// Lane is where it waits; "" is Interactive for a caller who waits,
	// Batch for a job.
	Lane Lane
	// Timeout is how long the caller waits, from now: 0 for the model's
	// timeout (MaxRequestTimeout for a job). At most
	// schema.MaxRequestTimeout.
	Timeout time.Duration
	// IdempotencyKey is the caller's own key ("" for none): the core
	// namespaces and hashes it (AnswerKey) into the key under which the
	// worker keeps the answer, so a retry with the same key and body is
	// answered once. Ignored on a job, whose id is its key.
	IdempotencyKey string
	// ReplyTo is the door's own reply subject for this request
	// (laas.reply.<gateway>.<id>), "" when nobody waits on one.
	ReplyTo string
	// Job queues the request as a job (schema.Envelope.Job): its result
	// goes to the results stream and its state to the job store.
	Job *Job
	// Line is set on a Batch API line: its answer is kept under
	// BatchAnswerKey, where the batch collects it.
	Line *BatchLine
	// Streamable is set by a door that can stream an answer (HTTP chat);
	// elsewhere "stream": true is refused.
	Streamable bool
	// QueueWait lets a request over its key's rpm_limit wait in the queue
	// for its slot, up to its deadline, instead of being refused (the
	// X-Laas-Bridge-Queue: wait header).
	QueueWait bool
	// MediaChecked says that the door has already run the multimodal
	// check on this very body and kept the outcome durably (a batch's
	// plan), so Admit does not run it again.
	MediaChecked bool
}

// Job is how a job's result is kept.
type Job struct {
	// ResultsSubject is where its result goes; "" for laas.results.<id>.
	ResultsSubject string
	// Record marks the job queued in the job store before it is
	// published (the HTTP jobs API, so GET answers at once). A job id the
	// store already knows is then not queued again.
	Record bool
}

// BatchLine names a line of a batch's input file.
type BatchLine struct {
	BatchID string
	// Line is the line's index in the file, from 0.
	Line int
	// Traceparent is the trace context of the request that created the
	// batch (batch.Record.Traceparent), "" for none: with tracing on, the
	// line's admission span links to it.
	Traceparent string
}
