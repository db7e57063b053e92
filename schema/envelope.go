package schema

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strconv"
	"strings"
	"time"
)

// Stream, consumer and subject names. Programs other than the bridge publish
// to these, so they are part of the public contract (see
// docs/queue-contract.md).
const (
	// StreamRequests is the work-queue stream that holds pending requests.
	StreamRequests = "LAAS_REQUESTS"
	// SubjectRequests is the prefix of every request subject.
	SubjectRequests = "laas.requests"
	// SubjectSubmit is where programs other than the bridge publish jobs
	// (the direct queue API): the admission door (consumer
	// ConsumerAdmission) checks each as the HTTP API checks a request and
	// queues it on the batch lane, or answers it with a failed result.
	SubjectSubmit = SubjectRequests + ".batch"
	// SubjectSubmitInteractive is taken like SubjectSubmit, for producers
	// that named the interactive lane, and queued on that lane.
	SubjectSubmitInteractive = SubjectRequests + ".interactive"
	// SubjectLanes prefixes the lanes: only the bridge's admission core
	// publishes there, and workers trust what it wrote.
	SubjectLanes = SubjectRequests + ".lane"
	// SubjectInteractive is the lane of requests whose caller waits on HTTP.
	SubjectInteractive = SubjectLanes + ".interactive"
	// SubjectBatch is the lane of requests nobody waits on over HTTP: jobs,
	// batch lines, direct producers' jobs, replayed dead letters.
	SubjectBatch = SubjectLanes + ".batch"
	// --- dead letters (see deadletter.go) ---
	// StreamDead keeps jobs that ran out of attempts, one message each, on
	// SubjectDead.<request id> (see DeadLetterSubject). A limits stream, not
	// a work queue: reading it does not consume it.
	StreamDead = "LAAS_DEAD"
	// SubjectDead prefixes dead-letter subjects; the stream captures
	// SubjectDead + ".>".
	SubjectDead = "laas.dead"
	// --- end dead letters ---
	// ConsumerWorkers is the durable pull consumer every worker shares for
	// the interactive lane (SubjectInteractive).
	ConsumerWorkers = "laas-workers"
	// ConsumerAdmission is the admission door's durable consumer of the
	// submit subjects (SubjectSubmit, SubjectSubmitInteractive); every
	// gateway shares it.
	ConsumerAdmission = "laas-admission"
	// ConsumerBatch is the workers' shared consumer for the batch lane
	// (SubjectBatch). Workers take an interactive job first whenever one is
	// waiting, so a batch backlog never starves interactive callers.
	ConsumerBatch = "laas-workers-batch"
	// SubjectReplies prefixes reply subjects: laas.reply.<instance>.<request id>.
	// A reply its gateway did not take on the fast path
	// (SubjectDirectReplies) is published there through JetStream into
	// StreamReplies, so a gateway that was disconnected when its reply came
	// can still read it; gateways receive them on a plain subscription.
	SubjectReplies = "laas.reply"
	// StreamReplies keeps recent replies (minutes) for gateways that
	// reconnect.
	StreamReplies = "LAAS_REPLIES"
	// SubjectDirectReplies prefixes the fast path of replies,
	// laas.direct.<instance>.<request id>, which no stream captures. A
	// worker first sends the reply there as a core NATS request; the
	// gateway answers with an empty message once the reply is its caller's
	// (or nobody waits for it any more). Only when no answer comes (no
	// gateway listening, a timeout, a disconnect) does the worker publish
	// the reply into StreamReplies on the SubjectReplies subject.
	SubjectDirectReplies = "laas.direct"
	// SubjectCancel prefixes cancellations: a gateway whose caller went away
	// publishes a message on laas.cancel.<request id> (core NATS), whose
	// payload is the job's deadline (CancelPayload) or empty; every worker
	// hears it, skips the job or aborts its LaaS call.
	SubjectCancel = "laas.cancel"
	// BucketAnswers is the KV bucket of finished replies to requests that
	// carried an Idempotency-Key, keyed by Envelope.IdempotencyKey.
	BucketAnswers = "LAAS_ANSWERS"
	// BucketBodies is the JetStream Object Store bucket that holds request
	// bodies and answers too large for a NATS message (a claim check): the
	// envelope then carries RequestRef instead of Request, the reply
	// CompletionRef instead of Completion.
	BucketBodies = "LAAS_BODIES"
)

// Header names on a request message.
const (
	// HeaderReplyTo names the core NATS subject where the worker publishes the
	// Reply. JetStream does not keep a message's reply subject, so the
	// publisher sets this header instead.
	HeaderReplyTo = "Laas-Reply-To"
	// HeaderMsgID is JetStream's de-duplication header; the bridge sets it to
	// the request id.
	HeaderMsgID = "Nats-Msg-Id"
	// HeaderTraceparent and HeaderTracestate carry the request's trace
	// context (W3C Trace Context, lower case as the standard spells them)
	// when tracing is on; a worker continues the trace from them. Absent
	// when tracing is off; a malformed one starts a new trace.
	HeaderTraceparent = "traceparent"
	HeaderTracestate  = "tracestate"
)

// Envelope is the body of a request message on the queue.
type Envelope struct {
	// ID is the request id, unique per request; also the X-Request-Id.
	ID string `json:"id"`
	// Model is the public model alias, as configured in config.yaml.
	Model string `json:"model"`
	// EnqueuedAt is when the request was published.
	EnqueuedAt time.Time `json:"enqueued_at"`
	// Deadline is when the caller stops waiting; a worker never starts an
	// upstream call after it.
	Deadline time.Time `json:"deadline"`
	// Request is the OpenAI chat completion request as the caller sent it.
	// Absent when RequestRef is set.
	Request json.RawMessage `json:"request,omitempty"`
	// RequestRef names the object in BucketBodies that holds Request, for a
	// request too large for a NATS message. The worker deletes the object
	// once the job is finished.
	RequestRef string `json:"request_ref,omitempty"`
	// IdempotencyKey, when set, is the key (a hash of the caller's
	// Idempotency-Key header) under which the worker keeps the final Reply
	// in BucketAnswers; a job whose answer is already there is answered from
	// it without calling LaaS.
	IdempotencyKey string `json:"idempotency_key,omitempty"`
	// Job marks a job (see jobs.go): nobody waits for a reply; the worker
	// publishes a JobResult on ResultsSubject (default laas.results.<id>),
	// keeps the job's state in BucketJobs, and answers a job id it has
	// already finished from its kept result, without calling LaaS again.
	// IdempotencyKey is ignored on a job: the job id is its key.
	Job bool `json:"job,omitempty"`
	// ResultsSubject is where a job's result goes: empty for
	// laas.results.<id>, else a subject ValidResultsSubject accepts.
	ResultsSubject string `json:"results_subject,omitempty"`
	// Owner is the token (hash) of the virtual key that sent the request,
	// "" for the admin. Set by the admission core, never taken from a
	// message; the worker counts the key's usage and releases its limits
	// under it.
	Owner string `json:"owner,omitempty"`
	// NotBefore, when set, is the rpm slot the core reserved ahead for a
	// request that waits for its key's rate limit: no worker starts its
	// call earlier.
	NotBefore time.Time `json:"not_before,omitzero"`
}

// Reply is what a worker publishes on the request's reply subject: either a
// completion (Status 200) or an OpenAI error.
type Reply struct {
	ID         string          `json:"id"`
	Status     int             `json:"status"`
	Completion *ChatCompletion `json:"completion,omitempty"`
	// CompletionRef names the object in BucketBodies that holds Completion
	// when it is too large for a NATS message; the receiver deletes it.
	CompletionRef string       `json:"completion_ref,omitempty"`
	Error         *ErrorDetail `json:"error,omitempty"`
	// RetryAfter in seconds, for a 429 or 503 error.
	RetryAfter int `json:"retry_after,omitempty"`
	// Attempts is the delivery count of the job that produced this reply.
	Attempts int `json:"attempts"`
	// QueueMs is how long the job waited before a worker took it.
	QueueMs int64 `json:"queue_ms"`
	// UpstreamMs is how long the last LaaS call took.
	UpstreamMs int64 `json:"upstream_ms"`
	// Ran is what the worker ran for a 200 answer (RunDigest of the LaaS
	// model, service type and preset it called): the response cache keeps
	// an answer only for what runs now. Empty from a worker older than it.
	Ran string `json:"ran,omitempty"`
}

// RunDigest names what a LaaS call ran (Reply.Ran): 16 hex characters of
// the SHA-256 of the LaaS model, the service type and the preset hash.
func RunDigest(laasModel, serviceType, preset string) string {
	// Every worker answer carries it: one buffer, one hash, no fmt.
	buf := make([]byte, 0, 128)
	for _, s := range [...]string{laasModel, serviceType, preset} {
		buf = append(strconv.AppendInt(buf, int64(len(s)), 10), ':')
		buf = append(buf, s...)
	}
	sum := sha256.Sum256(buf)
	return hex.EncodeToString(sum[:8])
}

// Err returns the reply's error as an *Error, or nil for a success.
func (r *Reply) Err() *Error {
	if r.Error == nil {
		return nil
	}
	e := &Error{Status: r.Status, Type: r.Error.Type, Message: r.Error.Message, RetryAfter: r.RetryAfter}
	if r.Error.Code != nil {
		e.Code = *r.Error.Code
	}
	if r.Error.Param != nil {
		e.Param = *r.Error.Param
	}
	return e
}

// ErrorReply builds the reply that carries err to the caller.
func ErrorReply(id string, err *Error) Reply {
	d := err.Body().Error
	return Reply{ID: id, Status: err.Status, Error: &d, RetryAfter: err.RetryAfter}
}

// ValidRequestID reports whether id can name a request (or a gateway
// instance): 1-64 of [A-Za-z0-9_-], one NATS subject token with no wildcard
// or separator, so it is safe inside subjects and object names. A loop, not
// a regexp: it runs several times per request.
func ValidRequestID(id string) bool {
	if len(id) == 0 || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		switch c := id[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// ValidReplySubject reports whether s is a reply subject,
// laas.reply.<instance>.<request id>, and nothing a worker must not
// publish to.
func ValidReplySubject(s string) bool {
	rest, ok := strings.CutPrefix(s, SubjectReplies+".")
	if !ok {
		return false
	}
	instance, id, ok := strings.Cut(rest, ".")
	return ok && ValidRequestID(instance) && ValidRequestID(id)
}

// DirectReplySubject is the fast-path subject (SubjectDirectReplies) of
// the reply subject replyTo, laas.reply.<instance>.<request id>; false if
// replyTo is not a reply subject.
func DirectReplySubject(replyTo string) (string, bool) {
	if !ValidReplySubject(replyTo) {
		return "", false
	}
	return SubjectDirectReplies + replyTo[len(SubjectReplies):], true
}
